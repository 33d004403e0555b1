/**
 * The two npm packages as others get them: `npm pack` of each, installed into a fresh
 * project, a minimal app compiled against them with `tsc --strict` (NodeNext, the
 * strictest resolution), and the packed client run in Node against a real service.
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { gunzipSync } from 'node:zlib';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Stack } from './harness';

const FRONTEND = resolve(__dirname, '..');
const work = mkdtempSync(join(tmpdir(), 'secstream-packages-'));
const stack = new Stack();

function run(cmd: string, args: string[], cwd: string): string {
  return execFileSync(cmd, args, { cwd, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 240_000 });
}

function pack(dir: string): string {
  const out = run('npm', ['pack', '--pack-destination', work, '--json'], join(FRONTEND, dir));
  const [info] = JSON.parse(out.slice(out.indexOf('['))) as { filename: string }[];
  return join(work, info!.filename);
}

function versionOf(name: string): string {
  return (JSON.parse(readFileSync(join(FRONTEND, 'node_modules', name, 'package.json'), 'utf8')) as { version: string }).version;
}

/** Names in a tarball (ustar headers: the name is the first 100 bytes of each 512-byte header). */
function tarNames(tgz: string): string[] {
  const tar = gunzipSync(readFileSync(tgz));
  const names: string[] = [];
  for (let at = 0; at + 512 <= tar.length; ) {
    const name = tar.subarray(at, at + 100).toString('utf8').replace(/\0.*$/s, '');
    if (!name) break;
    names.push(name);
    const size = parseInt(tar.subarray(at + 124, at + 136).toString('utf8').replace(/\0.*$/s, '').trim() || '0', 8);
    at += 512 + Math.ceil(size / 512) * 512;
  }
  return names;
}

let clientTgz = '';
let reactTgz = '';
const app = join(work, 'app');

beforeAll(async () => {
  clientTgz = pack('packages/client');
  reactTgz = pack('packages/react');
  mkdirSync(join(app, 'src'), { recursive: true });
  writeFileSync(
    join(app, 'package.json'),
    JSON.stringify({
      name: 'consumer',
      private: true,
      type: 'module',
      dependencies: {
        '@secstream/client': `file:${clientTgz}`,
        '@secstream/react': `file:${reactTgz}`,
        react: versionOf('react'),
        ws: versionOf('ws'),
        '@types/react': versionOf('@types/react'),
        '@types/ws': versionOf('@types/ws'),
        '@types/node': versionOf('@types/node'),
      },
    }),
  );
  run('npm', ['install', '--no-audit', '--no-fund', '--prefer-offline'], app);
  await stack.start();
}, 300_000);

afterAll(async () => {
  await stack.stop();
  rmSync(work, { recursive: true, force: true });
});

describe('the packed npm packages', () => {
  it('carry built ESM, declarations, the CSS and a README, and no sources or tests', () => {
    const client = tarNames(clientTgz);
    const react = tarNames(reactTgz);
    for (const names of [client, react]) {
      expect(names).toContain('package/dist/index.js');
      expect(names).toContain('package/dist/index.d.ts');
      expect(names).toContain('package/README.md');
      expect(names.filter((n) => /\.test\.|\/src\//.test(n))).toEqual([]);
    }
    expect(react).toContain('package/dist/styles.css');
    const sizes = { client: statSync(clientTgz).size, react: statSync(reactTgz).size };
    console.log(`packed (gzip): @secstream/client ${sizes.client} B, @secstream/react ${sizes.react} B`);
    expect(sizes.client).toBeLessThan(100_000);
    expect(sizes.react).toBeLessThan(100_000);
  });

  it('compile into an app with tsc --strict', () => {
    writeFileSync(
      join(app, 'src', 'app.tsx'),
      `import { ConnectionState, EventClient, type EventEnvelope, type TypedEvent } from '@secstream/client';
import { ReadyState, RealTimeStatus, useWebSocket, useWebSocketSubscription, WebSocketProvider } from '@secstream/react';
import type { ReactNode } from 'react';

export const client = new EventClient({ url: 'ws://localhost:8000/ws', getToken: () => 'token', storage: null });

function Progress(): ReactNode {
  const { readyState, isConnected, lastJsonMessage, sendJsonMessage } = useWebSocket();
  useWebSocketSubscription(['test.progress'], (events: EventEnvelope[]) => console.log(events.length));
  const open: boolean = readyState === ReadyState.OPEN && isConnected;
  if (lastJsonMessage?.type === 'connection.info') console.log(lastJsonMessage.state);
  const progress = (e: TypedEvent): number | undefined => (e.event_type === 'test.progress' ? e.data.progress : undefined);
  void progress;
  return <button onClick={() => sendJsonMessage({ type: 'ping' })}>{open ? 'live' : client.state === ConnectionState.Polling ? 'polling' : 'offline'}</button>;
}

export function App(): ReactNode {
  return (
    <WebSocketProvider client={client}>
      <RealTimeStatus />
      <Progress />
    </WebSocketProvider>
  );
}
`,
    );
    writeFileSync(
      join(app, 'tsconfig.json'),
      JSON.stringify({
        compilerOptions: {
          strict: true,
          target: 'ES2022',
          module: 'NodeNext',
          moduleResolution: 'NodeNext',
          jsx: 'react-jsx',
          lib: ['ES2022', 'DOM'],
          noEmit: true,
          skipLibCheck: false,
          types: [],
        },
        include: ['src'],
      }),
    );
    run(join(FRONTEND, 'node_modules', '.bin', 'tsc'), ['-p', '.'], app);
    // and a type error is one
    writeFileSync(join(app, 'src', 'bad.ts'), `import { EventClient } from '@secstream/client';\nnew EventClient({ url: 1 });\n`);
    let failed = '';
    try {
      run(join(FRONTEND, 'node_modules', '.bin', 'tsc'), ['-p', '.'], app);
    } catch (err) {
      failed = String((err as { stdout?: unknown }).stdout);
    }
    expect(failed).toMatch(/bad\.ts.*TS2/);
    rmSync(join(app, 'src', 'bad.ts'));
  });

  it('run in Node with a WebSocket implementation passed in, against a real service', async () => {
    const token = await stack.token('node-user', ['viewer']);
    const id = await stack.publish(await stack.token('pub', ['publisher']), {
      event_type: 'system.maintenance',
      data: { message: 'packed client check' },
    });
    writeFileSync(
      join(app, 'node.mjs'),
      `import { EventClient } from '@secstream/client';
import { WebSocket } from 'ws';
const client = new EventClient({ url: process.argv[2], WebSocket, getToken: () => process.argv[3], storage: null });
const timer = setTimeout(() => { console.log('TIMEOUT', client.state); process.exit(1); }, 20000);
client.subscribe(['system.maintenance'], (event) => {
  console.log(JSON.stringify({ state: client.state, id: event.id, message: event.data.message }));
  clearTimeout(timer);
  client.disconnect();
}, { since: '0' });
client.connect();
`,
    );
    const out = run(process.execPath, ['node.mjs', stack.baseUrl.replace('http', 'ws') + '/ws', token], app);
    expect(JSON.parse(out.trim().split('\n').at(-1)!)).toEqual({ state: 'connected', id, message: 'packed client check' });
  });
});
