// An AI reply grows token by token in place; a user who opens the page while it is being
// written sees the text so far (generation_snapshot) and then the rest live; Stop ends it, and
// both pages show the same stored, cut-short reply. The server's development provider is
// slowed down by the test (AI_DEV_TOKENS_PER_SEC) so that the reply cannot finish first.
//
// usage: node ai-stop.mjs <base_url> <token_a> <token_b>

import {
  DESKTOP, PHONE, check, layoutProblems, openApp, run, screenshot, signIn, userIdOf,
} from './lib.mjs';

const reply = '#message-list > li.assistant';

async function replyText(page) {
  return (await page.locator(`${reply} .body`).last().textContent()) || '';
}

await run(async ({ browser, problems, args }) => {
  const [base, tokenA, tokenB] = args;
  check(base && tokenA && tokenB, 'usage: ai-stop.mjs <base_url> <token_a> <token_b>');
  const a = await openApp(browser, base, problems, 'A', DESKTOP);
  await signIn(a.page, tokenA);
  await a.page.getByLabel('New chat title').fill('Ask the AI');
  await a.page.getByRole('button', { name: 'Create', exact: true }).click();
  await a.page.locator('#room-title', { hasText: 'Ask the AI' }).waitFor();
  const chatUrl = new URL(a.page.url());
  await a.page.getByRole('button', { name: 'Add member' }).click();
  await a.page.getByLabel('User id of the new member').fill(userIdOf(tokenB));
  await a.page.getByRole('button', { name: 'Add', exact: true }).click();
  await a.page.locator('#room-notice', { hasText: 'Added' }).waitFor();

  await a.page.getByLabel('Message', { exact: true }).fill('Tell me a long story about streams');
  await a.page.getByRole('button', { name: 'Ask AI' }).click();

  // Partial text, still being written, with a Stop button.
  await a.page.locator(`${reply}.streaming`).waitFor();
  await a.page.waitForFunction((sel) => {
    const el = document.querySelector(`${sel}.streaming .body`);
    return el && el.textContent.split(' ').length >= 6;
  }, reply);
  const partialA = await replyText(a.page);
  const stop = a.page.getByRole('button', { name: 'Stop the AI reply' });
  check(await stop.isVisible(), 'no Stop button while the reply is written');
  check(await a.page.locator(`${reply}[data-seq]`).count() === 0, 'the reply is already stored');

  // B opens the chat now: the text so far at once, then more tokens live.
  const b = await openApp(browser, base, problems, 'B', PHONE);
  await signIn(b.page, tokenB);
  await b.page.goto(`/app${chatUrl.hash}`);
  await b.page.locator(`${reply}.streaming`).waitFor();
  const firstSeenB = await replyText(b.page);
  check(firstSeenB.startsWith(partialA),
    `the late joiner's first text does not contain what A had:\nA: ${partialA}\nB: ${firstSeenB}`);
  await b.page.waitForFunction(([sel, n]) => {
    const el = document.querySelector(`${sel}.streaming .body`);
    return el && el.textContent.length > n;
  }, [reply, firstSeenB.length]);
  const grewB = await replyText(b.page);
  const snapshotScreens = [await screenshot(b.page, 'ai-late-joiner-phone')];
  const layoutPhone = await layoutProblems(b.page);

  // Stop: both pages settle on the stored reply, marked as stopped.
  const beforeStop = await replyText(a.page);
  await stop.click();
  for (const page of [a.page, b.page]) {
    await page.locator(`${reply}[data-seq]`).waitFor();
    await page.locator(`${reply}.streaming`).waitFor({ state: 'detached' });
  }
  await a.page.locator(`${reply} .status`, { hasText: 'stopped' }).waitFor();
  const finalA = await replyText(a.page);
  const finalB = await replyText(b.page);
  check(finalA === finalB, `A and B show different replies:\n${finalA}\n${finalB}`);
  check(finalA.startsWith(beforeStop), 'the stored reply does not continue what was shown');
  check(await a.page.getByRole('button', { name: 'Stop the AI reply' }).count() === 0, 'Stop is still shown');
  const replies = await a.page.locator(reply).count();
  check(replies === 1, `${replies} reply bubbles on A's page`);
  const screens = [...snapshotScreens, await screenshot(a.page, 'ai-stopped-desktop')];
  check(layoutPhone.length === 0, `layout problems at 360 px:\n${layoutPhone.join('\n')}`);
  return {
    chatId: chatUrl.hash.split('/').pop(),
    partialA,
    firstSeenB,
    grewB,
    finalA,
    finalB,
    screenshots: screens,
  };
});
