// Development sign-in on a 360 px phone, by keyboard only: every control is reachable with Tab,
// shows a focus ring, has a name, and nothing scrolls sideways. Then the same on a desktop, and
// signing in again as the same user by id.
//
// usage: node dev-signin.mjs <base_url>   (a server running on its development secret)

import {
  DESKTOP, PHONE, check, layoutProblems, openApp, run, screenshot, waitForMessage, waitOnline,
} from './lib.mjs';

/** Presses Tab until the element with `id` has the focus; fails after `max` presses. */
async function tabTo(page, id, max = 40) {
  for (let i = 0; i < max; i += 1) {
    if (await page.evaluate((want) => document.activeElement?.id === want, id)) return i;
    await page.keyboard.press('Tab');
  }
  throw new Error(`#${id} cannot be reached with the Tab key`);
}

/** The focused element shows a focus ring (an outline or a box shadow). */
async function focusRingShown(page) {
  return page.evaluate(() => {
    const el = document.activeElement;
    const s = getComputedStyle(el);
    return (s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0) || s.boxShadow !== 'none';
  });
}

/** Visible controls without an accessible name (label, aria-label or text). */
async function unnamedControls(page) {
  return page.evaluate(() => [...document.querySelectorAll('button, input, textarea, select, a[href]')]
    .filter((el) => el.getClientRects().length && !el.closest('[hidden]'))
    .filter((el) => {
      if (el.getAttribute('aria-label') || el.getAttribute('aria-labelledby')) return false;
      if (el.labels && el.labels.length) return false;
      return !(el.textContent || '').trim() && !el.getAttribute('title');
    })
    .map((el) => el.outerHTML.slice(0, 80)));
}

await run(async ({ browser, problems, args }) => {
  const [base] = args;
  check(base, 'usage: dev-signin.mjs <base_url>');
  const { context, page } = await openApp(browser, base, problems, 'phone', PHONE);
  const checks = {};
  await page.locator('#dev-form').waitFor();
  checks.signInLayout = await layoutProblems(page);
  checks.signInUnnamed = await unnamedControls(page);
  const formShot = await screenshot(page, 'dev-signin-form-phone');

  const presses = await tabTo(page, 'dev-name');
  await page.keyboard.type('Ada Lovelace');
  await tabTo(page, 'dev-sign-in');
  check(await focusRingShown(page), 'the focused sign-in button shows no focus ring');
  await page.keyboard.press('Enter');
  await waitOnline(page);
  await page.locator('#whoami-name', { hasText: 'Ada Lovelace' }).waitFor();
  const userId = await page.evaluate(() => {
    const token = localStorage.getItem('echo.token');
    return JSON.parse(atob(token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/'))).sub;
  });

  // Create a chat and talk in it, by keyboard.
  await tabTo(page, 'new-chat-title');
  check(await focusRingShown(page), 'the focused title field shows no focus ring');
  await page.keyboard.type('Keyboard chat');
  await page.keyboard.press('Enter');
  await page.locator('#room-title', { hasText: 'Keyboard chat' }).waitFor();
  checks.listAndRoomUnnamed = await unnamedControls(page);
  await tabTo(page, 'composer-input');
  await page.keyboard.type('Typed without a mouse');
  await page.keyboard.press('Enter');
  await waitForMessage(page, 'Typed without a mouse');
  await page.locator('#message-list > li[data-seq="1"]').waitFor();
  await tabTo(page, 'send-button');
  check(await focusRingShown(page), 'the focused Send button shows no focus ring');
  checks.roomLayout = await layoutProblems(page);
  const phoneShot = await screenshot(page, 'dev-signin-room-phone');

  // Back to the list (the phone shows one pane at a time), by keyboard.
  await page.locator('.back-link').focus();
  await page.keyboard.press('Enter');
  await page.locator('#chat-list-pane').waitFor();
  checks.listLayout = await layoutProblems(page);
  const listShot = await screenshot(page, 'dev-signin-list-phone');

  // The same page on a desktop.
  await page.setViewportSize(DESKTOP);
  await page.locator('#chat-list a', { hasText: 'Keyboard chat' }).click();
  await waitForMessage(page, 'Typed without a mouse');
  checks.desktopLayout = await layoutProblems(page);
  const desktopShot = await screenshot(page, 'dev-signin-desktop');

  // Sign out, and in again as the same user by id: the chat is still theirs.
  await page.getByRole('button', { name: 'Sign out' }).click();
  await page.locator('#dev-form').waitFor();
  await page.getByLabel('User id (optional: sign in again as an existing user)').fill(userId);
  await page.getByRole('button', { name: 'Development sign-in' }).click();
  await waitOnline(page);
  await page.locator('#chat-list a', { hasText: 'Keyboard chat' }).waitFor();
  await context.close();

  for (const [what, issues] of Object.entries(checks)) {
    check(issues.length === 0, `${what}:\n${issues.join('\n')}`);
  }
  return { userId, tabPressesToName: presses, screenshots: [formShot, phoneShot, listShot, desktopShot] };
});
