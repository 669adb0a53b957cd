// The npm package as users get it: `npm pack` makes a tarball that installs into a scratch
// project, imports by name, type-checks a TypeScript consumer, and talks to a real server
// (with Node 20's `--experimental-websocket`, no `ws` package); and the committed
// types/echo-client.d.ts is what the JSDoc of src/echo-client.js declares.

import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { test } from 'node:test';
import { fileURLToPath } from 'node:url';

import { startServer, tempDir, user } from './helpers.mjs';

const PKG = dirname(dirname(fileURLToPath(import.meta.url)));
const TSC = join(PKG, 'node_modules', 'typescript', 'bin', 'tsc');

function run(cmd, args, cwd, env = {}) {
  try {
    return execFileSync(cmd, args, { cwd, encoding: 'utf8', env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`${cmd} ${args.join(' ')} failed:\n${e.stdout}\n${e.stderr}`);
  }
}

test('types/echo-client.d.ts is up to date with the JSDoc (npm run types)', (t) => {
  const out = tempDir(t);
  run(process.execPath, [TSC, '-p', 'tsconfig.types.json', '--outDir', out], PKG);
  const fresh = readFileSync(join(out, 'echo-client.d.ts'), 'utf8');
  const committed = readFileSync(join(PKG, 'types', 'echo-client.d.ts'), 'utf8');
  assert.ok(fresh === committed, 'types/echo-client.d.ts is stale: run `npm run types` in clients/js');
});

test('npm pack makes a tarball that installs, imports, type-checks and connects', { timeout: 120000 }, async (t) => {
  const dir = tempDir(t);
  const [packed] = JSON.parse(run('npm', ['pack', '--json', '--pack-destination', dir], PKG));
  const files = packed.files.map((f) => f.path).sort();
  assert.deepEqual(files, ['README.md', 'package.json', 'src/echo-client.js', 'types/echo-client.d.ts']);

  const scratch = join(dir, 'scratch');
  run('mkdir', ['-p', scratch], dir);
  writeFileSync(join(scratch, 'package.json'), JSON.stringify({ name: 'scratch', private: true, type: 'module' }));
  run('npm', ['install', '--no-audit', '--no-fund', '--offline', join(dir, packed.filename)], scratch);
  const manifest = JSON.parse(readFileSync(join(scratch, 'package.json'), 'utf8'));
  assert.ok(manifest.dependencies['@echo/client'], 'installed as a dependency');

  // TypeScript users get the types through the package's `exports`.
  writeFileSync(join(scratch, 'check.ts'), `
import { connect, NotFoundError, type Message, type Reply } from '@echo/client';
const client = connect({ url: 'http://localhost:8000', getToken: async () => 'token' });
const room = client.subscribe('3b0d6c1e-5a7f-4c2b-9e1d-2f4a6b8c0d11', { sinceSeq: 4 });
const sent: Promise<Message> = room.send('hello');
room.on('message', (m: Message) => m.seq.toFixed());
room.on('generation', async (r: Reply) => { for await (const d of r) d.toUpperCase(); });
const e: boolean = new NotFoundError('not_found', 'x') instanceof Error;
void sent; void e;
// @ts-expect-error: content is a string
room.send(42);
`);
  writeFileSync(join(scratch, 'tsconfig.json'), JSON.stringify({
    compilerOptions: {
      strict: true, noEmit: true, module: 'nodenext', moduleResolution: 'nodenext', target: 'es2022',
      lib: ['es2022', 'dom'], types: [],
    },
    files: ['check.ts'],
  }));
  run(process.execPath, [TSC, '-p', 'tsconfig.json'], scratch);

  // A Node script using the installed package against a real server.
  const server = await startServer(t);
  const alice = user(server.url);
  writeFileSync(join(scratch, 'main.mjs'), `
import { connect } from '@echo/client';
const [url, token] = process.argv.slice(2);
const client = connect({ url, getToken: () => token });
const chat = await client.rest.createChat('from the tarball');
const message = await client.subscribe(chat.id).send('hello from npm pack');
console.log(JSON.stringify({ seq: message.seq, content: message.content, node: client.welcome.node_id }));
client.close();
`);
  const out = run(process.execPath, ['--experimental-websocket', 'main.mjs', server.url, alice.token], scratch);
  const line = JSON.parse(out.trim().split('\n').at(-1));
  assert.equal(line.seq, 1);
  assert.equal(line.content, 'hello from npm pack');
});
