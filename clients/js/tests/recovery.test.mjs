// The library against a real echo-server on SQLite: the server is SIGKILLed and restarted on the
// same data directory; messages sent by the client while it is down, and by others meanwhile,
// all arrive once, in order, and each send is stored exactly once.

import assert from 'node:assert/strict';
import { test } from 'node:test';

import { DisconnectedError, EchoClient, memoryStorage } from '../src/echo-client.js';
import { client, once, startServer, user, waitFor, within } from './helpers.mjs';

/** A chat of `alice` with `bob` as a member. */
async function sharedChat(alice, bob, title) {
  await bob.rest.me(); // bob's row exists before he is added
  const chat = await alice.rest.createChat(title);
  await alice.rest.addMember(chat.id, bob.id);
  return chat;
}

test('after a SIGKILL and a restart the room resumes: nothing lost, nothing doubled', { timeout: 90000 }, async (t) => {
  let server = await startServer(t);
  const alice = user(server.url);
  const bob = user(server.url);
  const chat = await sharedChat(alice, bob, 'restart');

  const c = client(t, { url: server.url, getToken: () => alice.token });
  const opens = [];
  c.on('open', (e) => opens.push(e));
  const room = c.subscribe(chat.id);
  const seen = [];
  room.on('message', (m) => seen.push(m));
  const subscriptions = [];
  room.on('subscribed', (e) => subscriptions.push(e));
  await within(10000, 'first subscription', room.ready);

  const before = await Promise.all([room.send('a1'), room.send('a2')]);
  await bob.rest.postMessage(chat.id, 'b1');
  await waitFor('3 messages', () => seen.length === 3);

  const dropped = once(c, 'close');
  await server.kill('SIGKILL');
  const closed = await within(10000, 'the client notices', dropped);
  assert.equal(closed.welcomed, true);
  assert.notEqual(c.state, 'online');

  // Written while the server is gone: queued in the outbox.
  const whileDown = [room.send('a3 (offline)'), room.send('a4 (offline)')];
  assert.equal(c.pendingSends(chat.id).length, 2);

  server = await startServer(t, { port: server.port, dataDir: server.dataDir });
  // Others write before the client is back.
  await bob.rest.postMessage(chat.id, 'b2');
  await bob.rest.postMessage(chat.id, 'b3');

  const after = await within(30000, 'the offline sends', Promise.all(whileDown));
  assert.deepEqual(after.map((m) => m.content), ['a3 (offline)', 'a4 (offline)']);
  await waitFor('every message', () => seen.length >= 7);
  await room.send('a5');
  await waitFor('a5', () => seen.length >= 8);

  assert.equal(opens.length, 2, 'one reconnect');
  assert.equal(opens[1].reconnect, true);
  const resumed = subscriptions[1];
  assert.equal(resumed.resumed, true);
  assert.equal(resumed.recovered, true);
  assert.equal(resumed.sinceSeq, 3, 'resumed after the last seq held');
  // Every message once, in seq order, with no gap.
  assert.deepEqual(seen.map((m) => m.seq), [1, 2, 3, 4, 5, 6, 7, 8]);
  const texts = seen.map((m) => m.content);
  assert.deepEqual(texts.slice(0, 3), ['a1', 'a2', 'b1']);
  assert.deepEqual(new Set(texts.slice(3, 7)), new Set(['b2', 'b3', 'a3 (offline)', 'a4 (offline)']));
  assert.equal(texts[7], 'a5');
  assert.deepEqual(before.map((m) => m.seq), [1, 2], 'each send resolves with its own stored message');
  // Stored exactly once each.
  const stored = await alice.rest.messages(chat.id, { limit: 100 });
  assert.deepEqual(stored.map((m) => m.content).sort(), [...texts].sort());
  assert.equal(c.pendingSends().length, 0);
});

test('a send issued while disconnected is stored exactly once, even by the next client', { timeout: 90000 }, async (t) => {
  let server = await startServer(t);
  const alice = user(server.url);
  const chat = await alice.rest.createChat('outbox');
  const storage = memoryStorage(); // shared by both clients: the "persistent" outbox

  const first = client(t, { url: server.url, getToken: () => alice.token, outbox: storage });
  await within(10000, 'subscribed', first.subscribe(chat.id).ready);
  const gone = once(first, 'close');
  await server.kill('SIGKILL');
  await gone;
  const pending = first.send(chat.id, 'sent while disconnected');
  assert.deepEqual(storage.load().map((e) => e.content), ['sent while disconnected']);
  // The program ends before the server is back: the promise fails, the entry stays stored.
  first.close();
  await assert.rejects(pending, DisconnectedError);
  assert.equal(storage.load().length, 1);

  server = await startServer(t, { port: server.port, dataDir: server.dataDir });
  const [entry] = storage.load();
  const second = client(t, { url: server.url, getToken: () => alice.token, outbox: storage });
  const delivered = second.waitForSend(entry.client_msg_id);
  second.subscribe(chat.id);
  const message = await within(20000, 'the stored send', delivered);
  assert.equal(message.content, 'sent while disconnected');
  assert.equal(storage.load().length, 0, 'the outbox is empty once stored');

  // The server stored a send whose ack never arrived (the page closed first): the outbox
  // sends it again under the same client_msg_id and gets the original message back.
  const lostAck = '2b7d0c9e-3f41-4a6b-8d5e-1c2f3a4b5c6d';
  const original = await alice.rest.postMessage(chat.id, 'stored, ack lost', { clientMsgId: lostAck });
  storage.save([{ client_msg_id: lostAck, chat_id: chat.id, content: 'stored, ack lost', created_at: Date.now() }]);
  const third = client(t, { url: server.url, getToken: () => alice.token, outbox: storage });
  const settled = third.waitForSend(lostAck);
  third.subscribe(chat.id);
  const again = await within(20000, 'the duplicate send settles', settled);
  assert.equal(again.id, original.id);
  assert.equal(again.seq, original.seq);

  const stored = await alice.rest.messages(chat.id, { limit: 100 });
  assert.deepEqual(stored.map((m) => m.content), ['sent while disconnected', 'stored, ack lost']);
});

test('a gap longer than the server replays is reported as recovered: false and read over REST', { timeout: 60000 }, async (t) => {
  const env = { WS_RECOVERY_LIMIT: '3' };
  let server = await startServer(t, { env });
  const alice = user(server.url);
  const bob = user(server.url);
  const chat = await sharedChat(alice, bob, 'gap');
  // getToken waits on a gate: the client cannot reconnect until the test lets it.
  let gate = Promise.resolve();
  const c = client(t, { url: server.url, getToken: async () => { await gate; return alice.token; } });
  const room = c.subscribe(chat.id);
  const seen = [];
  room.on('message', (m) => seen.push(m));
  const subscriptions = [];
  room.on('subscribed', (e) => subscriptions.push(e));
  await within(10000, 'subscribed', room.ready);
  await room.send('a1');

  let release = () => {};
  gate = new Promise((r) => { release = r; });
  const dropped = once(c, 'close');
  await server.kill('SIGKILL');
  await dropped;
  server = await startServer(t, { port: server.port, dataDir: server.dataDir, env });
  for (let i = 2; i <= 6; i += 1) await bob.rest.postMessage(chat.id, `missed ${i}`);
  const resubscribed = once(room, 'subscribed');
  release();
  const gap = await within(20000, 'the resubscription', resubscribed);

  assert.equal(gap.resumed, true);
  assert.equal(gap.recovered, false);
  assert.equal(gap.sinceSeq, 1);
  assert.deepEqual(gap.missed, { afterSeq: 1, throughSeq: 6 });
  assert.deepEqual(seen.map((m) => m.seq), [1], 'nothing replayed over the socket');
  const missed = await room.fetchMissed(gap.missed);
  assert.deepEqual(missed.map((m) => m.seq), [2, 3, 4, 5, 6]);
  assert.deepEqual(missed.map((m) => m.content), ['missed 2', 'missed 3', 'missed 4', 'missed 5', 'missed 6']);
  // Live messages carry on after the gap.
  await bob.rest.postMessage(chat.id, 'live');
  await waitFor('the live message', () => seen.length === 2);
  assert.equal(seen[1].seq, 7);
  assert.equal(subscriptions.length, 2);
});

test('two clients sharing one outbox storage (two tabs) keep each other\'s unsent messages', () => {
  const storage = memoryStorage();
  const options = { url: 'http://127.0.0.1:9', getToken: () => null, outbox: storage };
  const tabA = new EchoClient(options);
  const tabB = new EchoClient(options);
  const chat = '3b0d6c1e-5a7f-4c2b-9e1d-2f4a6b8c0d11';
  const sent = [tabA.send(chat, 'from A'), tabB.send(chat, 'from B')];
  assert.deepEqual(storage.load().map((e) => e.content).sort(), ['from A', 'from B']);
  // A third tab opened now restores both.
  const tabC = new EchoClient(options);
  assert.deepEqual(tabC.pendingSends(chat).map((e) => e.content).sort(), ['from A', 'from B']);
  // A drops its own: B's stays.
  tabA.discardSend(tabA.pendingSends(chat)[0].client_msg_id);
  assert.deepEqual(storage.load().map((e) => e.content), ['from B']);
  for (const p of sent) p.catch(() => {});
  for (const c of [tabA, tabB, tabC]) c.close();
});
