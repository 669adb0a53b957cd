// The server goes away under an open page: it closes the socket (1001) and comes back on the
// same port and data, and messages are posted while the page is disconnected. The page shows
// that it is disconnected, reconnects, resubscribes with `since_seq`, and shows the missed
// messages in order, once each; then sending works again.
//
// The browser is taken offline (DevTools network emulation) before the server stops, so the
// page waits for the network instead of dialling a port that is briefly closed (which Chromium
// reports as a console error); the server's close frame still reaches the open socket.
//
// usage: node reconnect.mjs <base_url> <token> <chat_id>
// steps: prints {"step":"ready"} and waits for "restarted" (server restarted, messages posted).

import {
  PHONE, check, layoutProblems, messageTexts, openApp, run, screenshot, signIn, step,
  waitForMessage, waitOnline,
} from './lib.mjs';

await run(async ({ browser, problems, args }) => {
  const [base, token, chatId] = args;
  check(base && token && chatId, 'usage: reconnect.mjs <base_url> <token> <chat_id>');
  const { context, page } = await openApp(browser, base, problems, 'page', PHONE);
  await signIn(page, token);
  await page.goto(`/app#/chats/${chatId}`);
  await waitForMessage(page, 'before 2');

  await context.setOffline(true);
  await step('ready');
  // The server has stopped (the page saw its close frame) and is back, with new messages.
  const state = page.locator('#connection');
  const stateText = page.locator('#connection-text');
  await page.locator('#connection[data-state="offline"], #connection[data-state="reconnecting"]').waitFor({ timeout: 60000 });
  const whileDown = await stateText.textContent();
  const whileDownState = await state.getAttribute('data-state');
  check((await messageTexts(page)).length === 2, 'messages appeared while disconnected');
  // A message written while disconnected waits in the outbox, then goes out (once) on reconnect.
  await page.getByLabel('Message', { exact: true }).fill('written while offline');
  await page.getByLabel('Message', { exact: true }).press('Enter');
  await page.locator('#message-list > li.pending .status', { hasText: 'sending' }).waitFor();
  const down = await screenshot(page, 'reconnect-disconnected');

  await context.setOffline(false);
  await waitOnline(page);
  await waitForMessage(page, 'missed 3');
  await page.waitForFunction(() => [...document.querySelectorAll('#message-list > li[data-seq] .body')]
    .some((b) => b.textContent === 'written while offline'));
  await page.getByLabel('Message', { exact: true }).fill('after');
  await page.getByLabel('Message', { exact: true }).press('Enter');
  await page.waitForFunction(() => [...document.querySelectorAll('#message-list > li[data-seq] .body')]
    .some((b) => b.textContent === 'after'));
  await page.waitForFunction(() => !document.querySelector('#message-list > li.pending'));
  const texts = await messageTexts(page);
  const seqs = await page.locator('#message-list > li').evaluateAll((els) => els.map((e) => Number(e.dataset.seq)));
  check(new Set(texts).size === texts.length, `a message is shown twice: ${texts}`);
  const layout = await layoutProblems(page);
  check(layout.length === 0, `layout problems at 360 px:\n${layout.join('\n')}`);
  const up = await screenshot(page, 'reconnect-recovered');

  // The reconnect delays: exponential, capped, with jitter (equal jitter: [step/2, step]).
  const backoff = await page.evaluate(async () => {
    const { Realtime } = await import('/app/realtime.js');
    const r = new Realtime(() => null);
    const out = [];
    for (let attempt = 1; attempt <= 6; attempt += 1) {
      r.attempt = attempt;
      const xs = Array.from({ length: 200 }, () => r.backoff());
      out.push({ attempt, min: Math.min(...xs), max: Math.max(...xs) });
    }
    return out;
  });
  return { texts, seqs, whileDown, whileDownState, backoff, screenshots: [down, up] };
});
