// Job events with the library against a real echo-server: a video uploaded over REST is
// processed, and every session of its owner follows it through `job` events to COMPLETED;
// `client.jobs()` lists it while it runs.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { test } from 'node:test';

import { client, startServer, tempDir, user, waitFor, within } from './helpers.mjs';

/** A 2-second MP4 with sound, made with the ffmpeg CLI (as tests/browser.rs does). */
function testVideo(dir) {
  const path = join(dir, 'clip.mp4');
  try {
    execFileSync('ffmpeg', ['-hide_banner', '-loglevel', 'error', '-y',
      '-f', 'lavfi', '-i', 'testsrc=duration=2:size=320x240:rate=15',
      '-f', 'lavfi', '-i', 'sine=frequency=440:duration=2',
      '-c:v', 'libx264', '-pix_fmt', 'yuv420p', '-c:a', 'aac', '-shortest', path], { stdio: ['ignore', 'ignore', 'pipe'] });
  } catch (e) {
    throw new Error(`the ffmpeg CLI is required to make the test video (apt-get install -y ffmpeg): ${e.stderr || e}`);
  }
  return path;
}

test('job events follow an upload to COMPLETED', { timeout: 120000 }, async (t) => {
  const dir = tempDir(t);
  const video = readFileSync(testVideo(dir));
  const server = await startServer(t);
  const alice = user(server.url);
  const c = client(t, { url: server.url, getToken: () => alice.token });
  await waitFor('online', () => c.state === 'online');
  const events = [];
  c.on('job', (job) => events.push(job));

  const accepted = await c.rest.uploadVideo(new Blob([video], { type: 'video/mp4' }), 'clip.mp4');
  assert.equal(accepted.status, 'PENDING');
  const listed = await c.jobs();
  const finished = await within(90000, 'the job finishes', waitFor('COMPLETED', () => events.find(
    (j) => j.id === accepted.job_id && ['COMPLETED', 'FAILED', 'CANCELLED'].includes(j.status)), 90000));
  assert.equal(finished.status, 'COMPLETED', JSON.stringify(finished));
  assert.equal(finished.progress, 100);
  const mine = events.filter((j) => j.id === accepted.job_id);
  assert.ok(mine.some((j) => j.status === 'PROCESSING'), 'progress events while it ran');
  // `jobs` lists pending and processing jobs: this one, unless it had already finished.
  assert.ok(Array.isArray(listed) && listed.length <= 1, JSON.stringify(listed));
  for (const j of listed) {
    assert.equal(j.id, accepted.job_id);
    assert.ok(['PENDING', 'PROCESSING'].includes(j.status), j.status);
  }
  const stored = await c.rest.job(accepted.job_id);
  assert.equal(stored.status, 'COMPLETED');
});
