// Two echo-server nodes sharing one Postgres database and Redis, both in the client's URL list:
// the node the client is on is SIGKILLed, and the client carries on on the other one — the
// room resumes from its last seq, and sends made during the failover are stored once.

import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { test } from 'node:test';

import { client, once, postgresDatabase, startServer, user, waitFor, within } from './helpers.mjs';

test('failover between two nodes behind one URL list', { timeout: 120000 }, async (t) => {
  const databaseUrl = postgresDatabase(t);
  const env = {
    DATABASE_URL: databaseUrl,
    REDIS_URL: process.env.ECHO_TEST_REDIS_URL || 'redis://127.0.0.1:6379',
    REDIS_CHANNEL_PREFIX: `jstest${randomUUID().slice(0, 8)}`,
  };
  // One after the other: the first runs the migrations.
  const nodeA = await startServer(t, { env: { ...env, ECHO_NODE_ID: 'node-a' } });
  const nodeB = await startServer(t, { env: { ...env, ECHO_NODE_ID: 'node-b' } });

  const alice = user(nodeB.url);
  const bob = user(nodeB.url);
  await bob.rest.me();
  const chat = await alice.rest.createChat('failover');
  await alice.rest.addMember(chat.id, bob.id);

  const c = client(t, { url: [nodeA.url, nodeB.url], getToken: () => alice.token });
  const nodes = [];
  c.on('open', (e) => nodes.push(e.welcome.node_id));
  const room = c.subscribe(chat.id);
  const seen = [];
  room.on('message', (m) => seen.push(m));
  await within(15000, 'subscribed on node A', room.ready);
  assert.deepEqual(nodes, ['node-a']);

  // Bob writes on node B; Alice, on node A, receives it through Redis.
  await bob.rest.postMessage(chat.id, 'b1 via node B');
  const a1 = await room.send('a1 via node A');
  assert.equal(a1.seq, 2);
  await waitFor('2 messages', () => seen.length === 2);

  const dropped = once(c, 'close');
  await nodeA.kill('SIGKILL');
  await within(10000, 'the client notices', dropped);
  const duringFailover = [room.send('a2 during failover'), room.send('a3 during failover')];
  await bob.rest.postMessage(chat.id, 'b2 while A is gone');

  const sent = await within(30000, 'the sends made during failover', Promise.all(duringFailover));
  assert.deepEqual(sent.map((m) => m.content), ['a2 during failover', 'a3 during failover']);
  await waitFor('5 messages', () => seen.length >= 5);
  await bob.rest.postMessage(chat.id, 'b3 after failover');
  await waitFor('6 messages', () => seen.length >= 6);

  assert.deepEqual(nodes, ['node-a', 'node-b']);
  assert.equal(c.rest.baseUrl, nodeB.url, 'REST follows the node in use');
  assert.deepEqual(seen.map((m) => m.seq), [1, 2, 3, 4, 5, 6]);
  const stored = await bob.rest.messages(chat.id, { limit: 100 });
  assert.equal(stored.length, 6);
  assert.deepEqual(stored.map((m) => m.content), seen.map((m) => m.content));
  assert.equal(new Set(stored.map((m) => m.content)).size, 6, 'nothing stored twice');
});
