// Two users in two browser contexts (a desktop and a 360 px phone) share one room: a chat
// created, renamed and deleted through the page, a member added by user id, unread counts,
// presence, the typing indicator, and each other's messages, in the same order, once each.
//
// usage: node two-users.mjs <base_url> <token_a> <token_b>

import {
  DESKTOP, PHONE, check, layoutProblems, messageTexts, openApp, run, screenshot, signIn,
  userIdOf, waitForMessage,
} from './lib.mjs';

await run(async ({ browser, problems, args }) => {
  const [base, tokenA, tokenB] = args;
  check(base && tokenA && tokenB, 'usage: two-users.mjs <base_url> <token_a> <token_b>');
  const a = await openApp(browser, base, problems, 'A', DESKTOP);
  const b = await openApp(browser, base, problems, 'B', PHONE);
  const layout = {};
  layout.signInPhone = await layoutProblems(b.page);
  await signIn(a.page, tokenA);
  await signIn(b.page, tokenB);

  // A creates the chat and adds B by user id.
  await a.page.getByLabel('New chat title').fill('Team room');
  await a.page.getByRole('button', { name: 'Create', exact: true }).click();
  await a.page.locator('#room-title', { hasText: 'Team room' }).waitFor();
  await a.page.getByRole('button', { name: 'Add member' }).click();
  await a.page.getByLabel('User id of the new member').fill(userIdOf(tokenB));
  await a.page.getByRole('button', { name: 'Add', exact: true }).click();
  await a.page.locator('#room-notice', { hasText: 'Added' }).waitFor();

  // B, on the chat list, sees the chat appear, then an unread message.
  const bLink = b.page.locator('#chat-list a', { hasText: 'Team room' });
  await bLink.waitFor();
  await a.page.getByLabel('Message', { exact: true }).fill('Hello from A');
  await a.page.getByLabel('Message', { exact: true }).press('Enter');
  await waitForMessage(a.page, 'Hello from A');
  await b.page.locator('#chat-list a .badge:not([hidden])', { hasText: '1' }).waitFor();
  const unreadLabel = await bLink.getAttribute('aria-label');
  layout.listPhone = await layoutProblems(b.page);

  // B opens it: the message is there, the badge gone, both see each other online.
  await bLink.click();
  await waitForMessage(b.page, 'Hello from A');
  await b.page.locator('#chat-list a[aria-label="Team room"]').waitFor({ state: 'attached' });
  for (const page of [a.page, b.page]) {
    await page.waitForFunction(() => document.querySelectorAll('#presence-list li').length === 2);
  }
  const presenceA = await a.page.locator('#presence-list li').allTextContents();
  const presenceB = await b.page.locator('#presence-list li').allTextContents();
  check(presenceA.length === 2, `A sees ${presenceA.length} users online: ${presenceA}`);
  check(presenceB.length === 2, `B sees ${presenceB.length} users online: ${presenceB}`);

  // B types: A sees the indicator. Then B sends with the button.
  await b.page.getByLabel('Message', { exact: true }).pressSequentially('Hi A', { delay: 20 });
  await a.page.locator('#typing', { hasText: 'is typing' }).waitFor();
  const typingA = await a.page.locator('#typing').textContent();
  await b.page.getByLabel('Message', { exact: true }).pressSequentially(', B here');
  await b.page.getByRole('button', { name: 'Send', exact: true }).click();
  await waitForMessage(a.page, 'Hi A, B here');
  await waitForMessage(b.page, 'Hi A, B here');
  await a.page.locator('#typing:empty').waitFor({ state: 'attached' });

  // A few more both ways, sent at once: the same order everywhere, each once.
  for (let i = 1; i <= 3; i += 1) {
    await a.page.getByLabel('Message', { exact: true }).fill(`A${i}`);
    await a.page.getByLabel('Message', { exact: true }).press('Enter');
    await b.page.getByLabel('Message', { exact: true }).fill(`B${i}`);
    await b.page.getByLabel('Message', { exact: true }).press('Enter');
  }
  for (const page of [a.page, b.page]) {
    await page.waitForFunction(() => document.querySelectorAll('#message-list > li[data-seq]').length === 8
      && !document.querySelector('#message-list > li.pending'));
  }
  const textsA = await messageTexts(a.page);
  const textsB = await messageTexts(b.page);
  const seqsA = await a.page.locator('#message-list > li').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  check(JSON.stringify(textsA) === JSON.stringify(textsB), `A and B differ:\n${textsA}\n${textsB}`);
  check(new Set(textsA).size === textsA.length, `a message is shown twice: ${textsA}`);
  check(seqsA.every((s, i) => s === i + 1), `seqs are not 1..8 in order: ${seqsA}`);
  layout.roomPhone = await layoutProblems(b.page);
  layout.roomDesktop = await layoutProblems(a.page);

  // A renames the chat: B's title follows.
  await a.page.getByRole('button', { name: 'Rename' }).click();
  await a.page.getByLabel('New title').fill('Renamed room');
  await a.page.getByRole('button', { name: 'Save' }).click();
  await b.page.locator('#room-title', { hasText: 'Renamed room' }).waitFor();

  const shots = [
    await screenshot(a.page, 'two-users-desktop'),
    await screenshot(b.page, 'two-users-phone'),
  ];

  // A deletes it: it leaves B's list, and B is taken back to the list.
  await a.page.getByRole('button', { name: 'Delete', exact: true }).click();
  await a.page.getByRole('button', { name: 'Delete chat' }).click();
  await a.page.locator('#chat-list a', { hasText: 'Renamed room' }).waitFor({ state: 'detached' });
  await b.page.locator('#chat-list a', { hasText: 'Renamed room' }).waitFor({ state: 'detached' });
  await b.page.locator('#chat-list-pane').waitFor();

  for (const [where, issues] of Object.entries(layout)) {
    check(issues.length === 0, `layout problems (${where}):\n${issues.join('\n')}`);
  }
  return { textsA, textsB, seqsA, presenceA, presenceB, typingA, unreadLabel, screenshots: shots };
});
