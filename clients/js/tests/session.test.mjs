// The library against a real echo-server: token refresh on the live socket, AI replies (the
// server's development provider) for the asker and a late joiner, cancel, presence and typing,
// and typed errors.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { test } from 'node:test';
import WebSocket from 'ws';

import {
  BadRequestError, CloseError, ConnectionLostError, ERROR_CLASSES, GoingAwayError, HeartbeatTimeoutError, NotFoundError,
  RequestError, TokenExpiredError, TooManySessionsError, UnauthorizedError, closeError, errorFromFrame,
} from '../src/echo-client.js';
import { client, once, sleep, startServer, token, user, waitFor, within } from './helpers.mjs';

test('token refresh before expiry keeps the same socket; without it the server closes with 4001', { timeout: 60000 }, async (t) => {
  const server = await startServer(t);
  const sub = randomUUID();
  let issued = 0;
  const refreshing = client(t, {
    url: server.url,
    getToken: () => { issued += 1; return token(sub, 5); },
  });
  const opens = [];
  refreshing.on('open', (e) => opens.push(e.welcome.session_id));
  const refreshed = [];
  refreshing.on('token_refreshed', () => refreshed.push(Date.now()));
  const closes = [];
  refreshing.on('close', (e) => closes.push(e.code));

  // Not refreshing: the same token forever.
  const stale = token(sub, 5);
  const stuck = client(t, { url: server.url, getToken: () => stale });
  const stuckClosed = once(stuck, 'close');
  const stuckExpired = once(stuck, 'state', (s) => s.state === 'expired');

  await waitFor('both online', () => refreshing.state === 'online' && stuck.state === 'online');
  // Over two lifetimes of the first token (refreshes come a quarter of a lifetime early).
  await sleep(12000);
  const closed = await within(5000, 'the stale client is closed', stuckClosed);
  assert.equal(closed.code, 4001);
  assert.ok(closed.error instanceof TokenExpiredError);
  await within(5000, 'the stale client gives up', stuckExpired);

  assert.equal(refreshing.state, 'online');
  assert.equal(opens.length, 1, `one session, never reopened (closes: ${closes})`);
  assert.ok(refreshed.length >= 2, `refreshed ${refreshed.length} times`);
  assert.ok(issued >= 3);
  // The refreshed session still answers.
  assert.ok(await refreshing.ping() >= 0);
});

test('AI replies: the asker streams it, a late joiner gets the snapshot then tokens, both equal the stored reply', { timeout: 90000 }, async (t) => {
  const server = await startServer(t, {
    env: {
      AI_PROVIDER: 'dev', AI_DEV_TOKENS_PER_SEC: '15', AI_DEV_FIRST_TOKEN_MS: '100', AI_DEV_REPLY_TOKENS: '100',
    },
  });
  const alice = user(server.url);
  const bob = user(server.url);
  await bob.rest.me();
  const chat = await alice.rest.createChat('ai');
  await alice.rest.addMember(chat.id, bob.id);

  const a = client(t, { url: server.url, getToken: () => alice.token });
  const roomA = a.subscribe(chat.id);
  await roomA.ready;
  const reply = await roomA.prompt('Tell me a story');
  assert.equal(reply.chatId, chat.id);
  assert.ok(reply.promptMessageId);
  const askerDeltas = [];
  const asker = (async () => { for await (const d of reply) askerDeltas.push(d); })();
  await waitFor('some text', () => reply.text.split(' ').length >= 15);

  // Bob subscribes while it is being written.
  const b = client(t, { url: server.url, getToken: () => bob.token });
  const roomB = b.subscribe(chat.id);
  const late = await within(10000, 'the late joiner sees the reply', once(roomB, 'generation'));
  assert.equal(late.generationId, reply.generationId);
  const lateDeltas = [];
  for await (const d of late) lateDeltas.push(d);
  await asker;
  const done = await reply.result;
  const lateDone = await late.result;

  const stored = (await alice.rest.messages(chat.id)).at(-1);
  assert.equal(stored.role, 'assistant');
  assert.equal(done.finishReason, 'stop');
  assert.equal(done.message.id, stored.id);
  assert.equal(lateDone.message.id, stored.id);
  assert.equal(askerDeltas.join(''), stored.content);
  assert.equal(lateDeltas.join(''), stored.content);
  // The late joiner's first delta was the snapshot: many words at once, then single tokens.
  assert.ok(lateDeltas[0].split(' ').length >= 10, `first delta: ${JSON.stringify(lateDeltas[0])}`);
  assert.ok(lateDeltas.length > 5, 'then tokens, live');

  // Cancel: the reply ends early, stored with what was generated.
  const second = await roomA.prompt('And another one');
  const secondDeltas = [];
  const reading = (async () => { for await (const d of second) secondDeltas.push(d); })();
  await waitFor('a few tokens', () => second.text.length > 20);
  await second.cancel();
  await reading;
  const cancelled = await second.result;
  assert.equal(cancelled.finishReason, 'cancelled');
  assert.equal(secondDeltas.join(''), cancelled.message.content);
  assert.ok(cancelled.message.content.split(' ').length < 100);
  assert.equal((await alice.rest.messages(chat.id)).at(-1).content, cancelled.message.content);
});

test('presence and typing reach the other member', { timeout: 30000 }, async (t) => {
  const server = await startServer(t);
  const alice = user(server.url);
  const bob = user(server.url);
  await bob.rest.me();
  const chat = await alice.rest.createChat('presence');
  await alice.rest.addMember(chat.id, bob.id);
  const a = client(t, { url: server.url, getToken: () => alice.token });
  const roomA = a.subscribe(chat.id);
  await roomA.ready;
  const joined = once(roomA, 'presence', (p) => p.user_id === bob.id && p.state === 'join');
  const b = client(t, { url: server.url, getToken: () => bob.token });
  const roomB = b.subscribe(chat.id);
  const sub = await roomB.ready;
  await within(5000, 'join', joined);
  assert.deepEqual(new Set(sub.online), new Set([alice.id, bob.id]));
  assert.ok(roomA.online.has(bob.id));
  const typing = once(roomA, 'typing');
  roomB.typing();
  assert.equal((await within(5000, 'typing', typing)).user_id, bob.id);
  const left = once(roomA, 'presence', (p) => p.state === 'leave');
  await roomB.unsubscribe();
  assert.equal((await within(5000, 'leave', left)).user_id, bob.id);
  assert.ok(!roomA.online.has(bob.id));
});

test('error frames and close codes become typed errors', { timeout: 30000 }, async (t) => {
  // Every documented code maps to its own class.
  for (const [code, Class] of Object.entries(ERROR_CLASSES)) {
    const e = errorFromFrame({ code, message: 'm' });
    assert.ok(e instanceof Class && e instanceof RequestError, code);
    assert.equal(e.code, code);
  }
  const closes = {
    1001: GoingAwayError, 4001: TokenExpiredError, 4030: TooManySessionsError,
  };
  for (const [code, Class] of Object.entries(closes)) assert.ok(closeError(Number(code)) instanceof Class);
  assert.ok(closeError(1000, 'heartbeat timeout') instanceof HeartbeatTimeoutError);
  for (const code of [1000, 1002, 1006, 1007, 1009, 4000, 4008, 4029]) {
    const e = closeError(code);
    assert.ok(e instanceof CloseError && e.constructor !== CloseError, `${code}: ${e.constructor.name}`);
  }

  // Every close code of docs/PROTOCOL.md#close-codes has its own class (only 1006 is a lost
  // connection).
  const spec = readFileSync(new URL('../../../docs/PROTOCOL.md', import.meta.url), 'utf8');
  const table = spec.slice(spec.indexOf('## Close codes'), spec.indexOf('## Limits'));
  const documented = [...table.matchAll(/^\| (\d{4}) \| `([^`]*)`/gm)].map(([, code, reason]) => [Number(code), reason]);
  assert.ok(documented.length >= 10, `close codes read from PROTOCOL.md: ${documented}`);
  for (const [code, reason] of documented) {
    const e = closeError(code, reason);
    assert.ok(!(e instanceof ConnectionLostError), `close code ${code} (${reason}) has no class of its own`);
  }

  // And from a real server, whose AsyncAPI document lists the error codes.
  const server = await startServer(t, { env: { WS_MAX_SESSIONS_PER_USER: '1' } });
  const asyncapi = await (await fetch(`${server.url}/asyncapi.json`)).json();
  const codes = asyncapi.components.schemas.ErrorCode.oneOf.map((c) => c.const);
  assert.deepEqual(codes.sort(), Object.keys(ERROR_CLASSES).sort());
  const alice = user(server.url);
  const c = client(t, { url: server.url, getToken: () => alice.token });
  await waitFor('online', () => c.state === 'online');
  await assert.rejects(c.request({ type: 'dance' }), BadRequestError);
  const room = c.subscribe(randomUUID());
  await assert.rejects(room.ready, NotFoundError);
  await assert.rejects(c.request({ type: 'refresh_token', token: 'nope' }), UnauthorizedError);
  await assert.rejects(c.request({ type: 'cancel', generation_id: randomUUID() }), NotFoundError);
  // A second socket of the same user is over the cap: 4030.
  const second = client(t, { url: server.url, getToken: () => alice.token, WebSocket });
  const refused = await within(10000, '4030', once(second, 'close'));
  assert.equal(refused.code, 4030);
  assert.ok(refused.error instanceof TooManySessionsError);
  second.close();
});
