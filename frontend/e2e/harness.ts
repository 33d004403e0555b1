/** Processes and browser for the e2e checks: a real Redis, a real `secstream serve` (`--demo` unless told otherwise), Debian chromium. */

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { chromium, type BrowserContext } from 'playwright-core';

export const REPO = resolve(__dirname, '..', '..');
const BIN = join(REPO, '.venv', 'bin');
export const CHROMIUM = process.env['CHROMIUM_PATH'] ?? '/usr/bin/chromium';

export async function freePort(): Promise<number> {
  return new Promise((ok, fail) => {
    const srv = createServer();
    srv.once('error', fail);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      const port = typeof addr === 'object' && addr ? addr.port : 0;
      srv.close(() => ok(port));
    });
  });
}

export async function waitFor<T>(what: string, check: () => Promise<T | null | undefined | false>, timeoutMs = 15_000): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown = null;
  for (;;) {
    try {
      const v = await check();
      if (v) return v;
    } catch (err) {
      last = err;
    }
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${String(last)}` : ''}`);
    await new Promise((r) => setTimeout(r, 100));
  }
}

function track(child: ChildProcess, name: string, log: string[]): ChildProcess {
  const keep = (b: Buffer) => {
    log.push(...b.toString().split('\n').filter(Boolean).map((l) => `[${name}] ${l}`));
    if (log.length > 400) log.splice(0, log.length - 400);
  };
  child.stdout?.on('data', keep);
  child.stderr?.on('data', keep);
  return child;
}

export interface ServeOptions {
  /** `--demo` (the default): demo tokens and the simulator. */
  demo?: boolean;
  /** More environment for `secstream serve` (e.g. the OpenID Connect settings). */
  env?: Record<string, string>;
  /** A port chosen beforehand (an OpenID provider must know the redirect URI first). */
  port?: number;
}

export class Stack {
  readonly dir = mkdtempSync(join(tmpdir(), 'secstream-e2e-'));
  readonly log: string[] = [];
  redisPort = 0;
  port = 0;
  private redis: ChildProcess | null = null;
  private service: ChildProcess | null = null;

  constructor(private readonly serve: ServeOptions = {}) {}

  get redisUrl(): string {
    return `redis://127.0.0.1:${this.redisPort}/0`;
  }
  get baseUrl(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async start(): Promise<void> {
    this.redisPort = await freePort();
    this.port = this.serve.port ?? (await freePort());
    this.redis = track(
      spawn(join(BIN, 'redis-server'), ['--port', String(this.redisPort), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'yes', '--dir', this.dir], {
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
      'redis',
      this.log,
    );
    await waitFor('redis', async () => {
      const r = spawnSync(join(BIN, 'redis-cli'), ['-p', String(this.redisPort), 'ping'], { encoding: 'utf8' });
      return r.stdout.trim() === 'PONG';
    });
    await this.startService();
  }

  async startService(): Promise<void> {
    this.service = track(
      spawn(join(BIN, 'secstream'), ['serve', ...(this.serve.demo === false ? [] : ['--demo']), '--host', '127.0.0.1', '--port', String(this.port), '--redis-url', this.redisUrl], {
        env: { ...process.env, SECSTREAM_DATA_DIR: this.dir, ...this.serve.env },
        stdio: ['ignore', 'pipe', 'pipe'],
      }),
      'serve',
      this.log,
    );
    await waitFor(
      'GET /health/ready 200',
      async () => (await fetch(`${this.baseUrl}/health/ready`)).status === 200,
      20_000,
    );
  }

  /** SIGTERM the service and wait for it to exit (contract: within 10 s, code 0). */
  async stopService(): Promise<number | null> {
    const child = this.service;
    this.service = null;
    if (!child || child.exitCode !== null) return child?.exitCode ?? null;
    const exited = new Promise<number | null>((ok) => child.once('exit', (code) => ok(code)));
    child.kill('SIGTERM');
    const timer = setTimeout(() => child.kill('SIGKILL'), 12_000);
    const code = await exited;
    clearTimeout(timer);
    return code;
  }

  async stop(): Promise<void> {
    await this.stopService();
    if (this.redis && this.redis.exitCode === null) {
      const r = this.redis;
      const done = new Promise((ok) => r.once('exit', ok));
      r.kill('SIGTERM');
      await Promise.race([done, new Promise((ok) => setTimeout(ok, 5000))]);
      if (r.exitCode === null) r.kill('SIGKILL');
    }
    rmSync(this.dir, { recursive: true, force: true });
  }

  async token(sub: string, roles: string[]): Promise<string> {
    const res = await fetch(`${this.baseUrl}/api/v1/dev/token`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify({ sub, roles }),
    });
    if (!res.ok) throw new Error(`dev/token: HTTP ${res.status}`);
    return ((await res.json()) as { token: string }).token;
  }

  async publish(token: string, body: Record<string, unknown>): Promise<string> {
    const res = await fetch(`${this.baseUrl}/api/v1/events`, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${token}` },
      body: JSON.stringify(body),
    });
    if (res.status !== 202) throw new Error(`publish: HTTP ${res.status} ${await res.text()}`);
    return ((await res.json()) as { id: string }).id;
  }

  /** `secstream publish`: straight into Redis, no service needed. */
  publishCli(eventType: string, data: Record<string, unknown>): void {
    const r = spawnSync(
      join(BIN, 'secstream'),
      ['publish', '--redis-url', this.redisUrl, '--event-type', eventType, '--data', JSON.stringify(data)],
      { encoding: 'utf8', timeout: 20_000 },
    );
    if (r.status !== 0) throw new Error(`secstream publish exited ${r.status}: ${r.stderr}`);
  }
}

/** A fresh persistent chromium profile per scenario (own --user-data-dir). */
export async function launchContext(): Promise<{ context: BrowserContext; close: () => Promise<void> }> {
  const dataDir = mkdtempSync(join(tmpdir(), 'secstream-chromium-'));
  const context = await chromium.launchPersistentContext(dataDir, {
    executablePath: CHROMIUM,
    headless: true,
    args: [
      '--headless',
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
    ],
    viewport: { width: 1440, height: 900 },
    timeout: 30_000,
  });
  return {
    context,
    close: async () => {
      await context.close().catch(() => undefined);
      rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
