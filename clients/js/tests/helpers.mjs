// Test helpers: real echo-server processes (the binary named by ECHO_SERVER_BIN), HS256 tokens
// signed with their secret, throwaway Postgres databases, and waiting for conditions.

import { spawn, execFileSync } from 'node:child_process';
import { createHmac, randomUUID } from 'node:crypto';
import { accessSync, constants, mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import WebSocket from 'ws';

import { EchoRest, connect } from '../src/echo-client.js';

export const SECRET = 'js-client-secret-js-client-secret-0123';

/** The echo-server binary; the tests fail (never skip) without it. */
export function serverBin() {
  const bin = process.env.ECHO_SERVER_BIN;
  if (!bin) {
    throw new Error('ECHO_SERVER_BIN must name the echo-server binary (cargo build --bin echo-server; '
      + 'scripts/test passes target/debug/echo-server)');
  }
  accessSync(bin, constants.X_OK);
  return bin;
}

/** A free TCP port on loopback. */
export async function freePort() {
  return new Promise((resolve, reject) => {
    const s = createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = /** @type {import('node:net').AddressInfo} */ (s.address());
      s.close(() => resolve(port));
    });
  });
}

/** A temporary directory, removed by `cleanup`. */
export function tempDir(t) {
  const dir = mkdtempSync(join(tmpdir(), 'echo-js-'));
  t.after(() => rmSync(dir, { recursive: true, force: true }));
  return dir;
}

/**
 * An HS256 access token for `sub`, valid for `ttlSecs`.
 * @param {string} sub
 * @param {number} [ttlSecs]
 */
export function token(sub, ttlSecs = 3600) {
  const b64 = (o) => Buffer.from(JSON.stringify(o)).toString('base64url');
  const head = b64({ alg: 'HS256', typ: 'JWT' });
  const body = b64({
    sub, aud: 'authenticated', role: 'authenticated', email: `${sub.slice(0, 8)}@example.test`,
    exp: Math.floor(Date.now() / 1000) + ttlSecs,
  });
  const sig = createHmac('sha256', SECRET).update(`${head}.${body}`).digest('base64url');
  return `${head}.${body}.${sig}`;
}

/** A user: id, a token, and REST helpers on `url`. */
export function user(url) {
  const id = randomUUID();
  const tok = token(id);
  return { id, token: tok, rest: new EchoRest({ baseUrl: url, getToken: () => tok }) };
}

/**
 * Starts `echo-server serve` and waits until it answers. `stop()` ends it with SIGTERM,
 * `kill()` with SIGKILL; both wait for the exit. Stopped at the end of the test anyway.
 */
export async function startServer(t, { port, dataDir, env = {} } = {}) {
  const p = port ?? await freePort();
  const dir = dataDir ?? tempDir(t);
  const proc = spawn(serverBin(), ['serve'], {
    env: {
      PATH: process.env.PATH,
      SUPABASE_JWT_SECRET: SECRET,
      ECHO_DATA_DIR: dir,
      HOST: '127.0.0.1',
      PORT: String(p),
      RUST_LOG: 'warn',
      HTTP_WORKERS: '2',
      ...env,
    },
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let stderr = '';
  proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-20000); });
  const exited = new Promise((resolve) => proc.once('exit', (code, signal) => resolve({ code, signal })));
  const url = `http://127.0.0.1:${p}`;
  const server = {
    url, port: p, dataDir: dir, proc, exited,
    get log() { return stderr; },
    async kill(signal = 'SIGKILL') {
      if (proc.exitCode === null && proc.signalCode === null) proc.kill(signal);
      return exited;
    },
    stop() { return this.kill('SIGTERM'); },
  };
  t.after(() => server.kill());
  const deadline = Date.now() + 30000;
  for (;;) {
    if (proc.exitCode !== null) throw new Error(`echo-server exited at start (${proc.exitCode}):\n${stderr}`);
    try {
      const res = await fetch(`${url}/`);
      if (res.ok) break;
    } catch {
      // not listening yet
    }
    if (Date.now() > deadline) throw new Error(`echo-server did not answer within 30 s:\n${stderr}`);
    await sleep(50);
  }
  return server;
}

/** A client of the library on Node 20 (the `ws` package's WebSocket), closed after the test. */
export function client(t, options) {
  const c = connect({ WebSocket, baseDelayMs: 200, maxDelayMs: 2000, ...options });
  t.after(() => c.close());
  return c;
}

/** Resolves with the next `type` event of an emitter. */
export function once(emitter, type, pred = () => true) {
  return new Promise((resolve) => {
    const off = emitter.on(type, (v) => {
      if (!pred(v)) return;
      off();
      resolve(v);
    });
  });
}

export const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

/** Polls `fn` until it returns a truthy value; fails with `what` after `ms`. */
export async function waitFor(what, fn, ms = 20000) {
  const deadline = Date.now() + ms;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await sleep(50);
  }
}

/** Rejects after `ms` with `what` unless `promise` settles first. */
export function within(ms, what, promise) {
  let timer;
  return Promise.race([
    promise.finally(() => clearTimeout(timer)),
    new Promise((_, reject) => { timer = setTimeout(() => reject(new Error(`timed out: ${what}`)), ms); }),
  ]);
}

const PG = { host: '127.0.0.1', port: '5432', user: 'postgres' };

function psql(db, sql) {
  return execFileSync('psql', ['-h', PG.host, '-p', PG.port, '-U', PG.user, '-d', db, '-Atqc', sql], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'],
  });
}

/**
 * A throwaway Postgres database `echo_t_js_<random>` (dropped after the test; scripts/test
 * drops leftovers of `echo_t_%`). Returns its URL.
 */
export function postgresDatabase(t) {
  const name = `echo_t_js_${randomUUID().replace(/-/g, '').slice(0, 12)}`;
  try {
    psql('postgres', `create database "${name}"`);
  } catch (e) {
    throw new Error(`PostgreSQL at 127.0.0.1:5432 (user postgres, trust auth) is required: ${e.stderr || e}`);
  }
  t.after(() => {
    try { psql('postgres', `drop database if exists "${name}" with (force)`); } catch { /* best effort */ }
  });
  return `postgres://${PG.user}@${PG.host}:${PG.port}/${name}`;
}
