// Shared helpers of the browser scenarios: Debian's Chromium through playwright-core, sign-in
// through the page's own form, console-error and layout checks, screenshots, and the JSON
// result line the Rust test (tests/browser.rs) reads.
//
// Every scenario prints JSON lines on stdout: `{"step": …}` when it waits for the Rust side
// (which answers with a line on stdin), and last `{"result": {...}}` with `ok: true`, or
// `{"error": "..."}` and exit code 1.

import { mkdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { createInterface } from 'node:readline';
import { chromium } from 'playwright-core';

const CHROMIUM = process.env.ECHO_CHROMIUM || '/usr/bin/chromium';
const ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--no-first-run',
];
/** How long one wait for the page may take before the scenario fails. */
export const WAIT_MS = Number(process.env.ECHO_BROWSER_WAIT_MS || 20000);

export const DESKTOP = { width: 1280, height: 800 };
export const PHONE = { width: 360, height: 740 };

export async function launch() {
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: ARGS });
}

/** The `sub` of a JWT. */
export function userIdOf(token) {
  const part = token.split('.')[1];
  return JSON.parse(Buffer.from(part, 'base64url').toString('utf8')).sub;
}

/** Console errors, uncaught exceptions and failed requests of every page, by page label. */
export class Problems {
  constructor() {
    this.list = [];
    this.warnings = [];
  }

  watch(page, label) {
    page.on('console', (msg) => {
      if (msg.type() === 'error') this.list.push(`${label}: console.error: ${msg.text()}`);
      else if (msg.type() === 'warning') this.warnings.push(`${label}: ${msg.text()}`);
    });
    page.on('pageerror', (err) => this.list.push(`${label}: uncaught: ${err.message}`));
    page.on('requestfailed', (req) => {
      const why = req.failure()?.errorText || 'failed';
      // A navigation away or a finished upload aborts nothing worth reporting.
      if (why === 'net::ERR_ABORTED') return;
      this.list.push(`${label}: request failed: ${req.method()} ${req.url()}: ${why}`);
    });
  }
}

/** A new context (as one user) with a page at `/app`, watched for problems. */
export async function openApp(browser, base, problems, label, viewport = DESKTOP) {
  const context = await browser.newContext({ viewport, baseURL: base });
  const page = await context.newPage();
  page.setDefaultTimeout(WAIT_MS);
  problems.watch(page, label);
  await page.goto('/app');
  return { context, page };
}

/** Signs in by pasting the token into the sign-in form, and waits until the socket is up. */
export async function signIn(page, token) {
  await page.getByLabel('Access token (a Supabase JWT)').fill(token);
  await page.getByRole('button', { name: 'Sign in with token' }).click();
  await waitOnline(page);
}

export async function waitOnline(page) {
  await page.locator('#connection[data-state="online"]').waitFor();
}

/** Texts of the messages shown in the open room, in order (persisted and pending). */
export async function messageTexts(page) {
  return page.locator('#message-list > li .body').allTextContents();
}

/** Waits until a message with exactly `text` is shown. */
export async function waitForMessage(page, text) {
  await page.locator('#message-list > li .body', { hasText: text }).first().waitFor();
}

/**
 * Layout at the current viewport: the page must not scroll sideways, and no visible element
 * may stick out of the viewport.
 */
export async function layoutProblems(page) {
  return page.evaluate(() => {
    const out = [];
    const doc = document.documentElement;
    if (doc.scrollWidth > doc.clientWidth) out.push(`page scrolls sideways: ${doc.scrollWidth} > ${doc.clientWidth}`);
    const width = window.innerWidth;
    for (const el of document.querySelectorAll('body *')) {
      const r = el.getBoundingClientRect();
      if (r.width === 0 || r.height === 0) continue;
      const style = getComputedStyle(el);
      if (style.visibility === 'hidden' || el.closest('[hidden]')) continue;
      if (el.closest('.visually-hidden')) continue;
      // Content inside a scrolling box is reachable by scrolling that box.
      let clipped = false;
      for (let p = el.parentElement; p && p !== document.body; p = p.parentElement) {
        const o = getComputedStyle(p).overflowX;
        if (o === 'auto' || o === 'scroll' || o === 'hidden') { clipped = true; break; }
      }
      if (clipped) continue;
      if (r.right > width + 1 || r.left < -1) {
        out.push(`${el.tagName.toLowerCase()}${el.id ? `#${el.id}` : ''}.${el.className} spans ${Math.round(r.left)}..${Math.round(r.right)} of ${width}`);
      }
    }
    return out.slice(0, 10);
  });
}

/** Saves a screenshot of a page (or of one element) under the screenshot folder; returns its path. */
export async function screenshot(target, name) {
  const dir = process.env.ECHO_SCREENSHOT_DIR || join(process.cwd(), 'test-output', 'browser');
  mkdirSync(dir, { recursive: true });
  const path = join(dir, `${name}.png`);
  await target.screenshot({ path });
  return path;
}

const lines = createInterface({ input: process.stdin });
const queued = [];
const waiting = [];
lines.on('line', (line) => {
  const w = waiting.shift();
  if (w) w(line.trim());
  else queued.push(line.trim());
});

/** Tells the Rust side a step was reached and waits for its answer line. */
export async function step(name, data = {}) {
  process.stdout.write(`${JSON.stringify({ step: name, ...data })}\n`);
  const line = queued.length ? queued.shift() : await new Promise((resolve) => waiting.push(resolve));
  if (line.startsWith('error')) throw new Error(`the test driver failed at step ${name}: ${line}`);
  return line;
}

/** Fails with `message` unless `cond`. */
export function check(cond, message) {
  if (!cond) throw new Error(message);
}

/**
 * Runs a scenario: `main(ctx)` gets `{browser, problems, args}` and returns the result
 * object. Console errors anywhere fail the scenario.
 */
export async function run(main) {
  const args = process.argv.slice(2);
  const problems = new Problems();
  let browser;
  let code = 0;
  try {
    browser = await launch();
    const result = await main({ browser, problems, args });
    if (problems.list.length) {
      throw new Error(`console errors or failed requests:\n${problems.list.join('\n')}`);
    }
    process.stdout.write(`${JSON.stringify({ result: { ok: true, warnings: problems.warnings, ...result } })}\n`);
  } catch (e) {
    const shots = [];
    const name = basename(process.argv[1], '.mjs');
    for (const [i, ctx] of (browser?.contexts() || []).entries()) {
      for (const [j, page] of ctx.pages().entries()) {
        shots.push(await screenshot(page, `${name}-failure-${i}-${j}`).catch((err) => String(err)));
      }
    }
    process.stdout.write(`${JSON.stringify({ error: String(e?.stack || e), problems: problems.list, screenshots: shots })}\n`);
    code = 1;
  } finally {
    if (browser) await browser.close().catch(() => {});
    lines.close();
  }
  process.exit(code);
}
