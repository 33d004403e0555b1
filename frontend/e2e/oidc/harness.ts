/**
 * The test's own OpenID Provider (`provider.mjs`, the certified `oidc-provider`
 * package) as a process, with keys the test owns, so it can also sign tokens for
 * service accounts (a publisher) that secstream verifies through the provider's JWKS.
 */

import { spawn, type ChildProcess } from 'node:child_process';
import { generateKeyPairSync, randomBytes, sign, type KeyObject } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { createInterface } from 'node:readline';

const PROVIDER = resolve(__dirname, 'provider.mjs');

export interface ProviderUser {
  password: string;
  claims: Record<string, unknown>;
}

export interface ProviderOptions {
  dir: string;
  users: Record<string, ProviderUser>;
  redirectUri: string;
  audience: string;
  accessTokenTtl: number;
  log: string[];
}

const b64url = (data: Buffer | string) => Buffer.from(data).toString('base64url');

export class OidcProvider {
  issuer = '';
  port = 0;
  private child: ChildProcess | null = null;
  private readonly privateKey: KeyObject;
  private readonly kid = `e2e-${randomBytes(4).toString('hex')}`;

  constructor(private readonly options: ProviderOptions) {
    this.privateKey = generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  }

  /**
   * Start it; `port` again after `stop()` is the same issuer with the same keys but
   * no memory of sessions, grants or refresh tokens (its store is in memory): what a
   * person whose refresh token was revoked meets.
   */
  async start(port = 0): Promise<void> {
    const { dir, users, redirectUri, audience, accessTokenTtl, log } = this.options;
    const keys = join(dir, 'jwks.json');
    const usersFile = join(dir, 'users.json');
    const jwk = { ...this.privateKey.export({ format: 'jwk' }), kid: this.kid, alg: 'RS256', use: 'sig' };
    writeFileSync(keys, JSON.stringify({ keys: [jwk] }));
    writeFileSync(usersFile, JSON.stringify(users));
    const child = spawn(
      process.execPath,
      [PROVIDER, '--port', String(port), '--users', usersFile, '--keys', keys, '--audience', audience,
        '--access-token-ttl', String(accessTokenTtl), '--redirect-uri', redirectUri],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    this.child = child;
    child.stderr?.on('data', (b: Buffer) => log.push(...b.toString().split('\n').filter(Boolean).map((l) => `[idp] ${l}`)));
    const first = await new Promise<string>((ok, fail) => {
      const timer = setTimeout(() => fail(new Error('the provider did not start within 15 s')), 15_000);
      child.once('exit', (code) => fail(new Error(`the provider exited with ${code}`)));
      createInterface({ input: child.stdout! }).once('line', (line) => {
        clearTimeout(timer);
        ok(line);
      });
    });
    ({ issuer: this.issuer, port: this.port } = JSON.parse(first) as { issuer: string; port: number });
  }

  /** Requests the provider served: `token` counts code exchanges and refresh-token grants. */
  async stats(): Promise<{ discovery: number; jwks: number; token: number }> {
    return (await (await fetch(`${this.issuer}/_test/stats`)).json()) as { discovery: number; jwks: number; token: number };
  }

  /** An access token as the provider would sign it, for a service account (no browser). */
  serviceToken(sub: string, claims: Record<string, unknown>, ttlSeconds = 600): string {
    const now = Math.floor(Date.now() / 1000);
    const header = { alg: 'RS256', typ: 'JWT', kid: this.kid };
    const payload = { iss: this.issuer, aud: this.options.audience, sub, iat: now, exp: now + ttlSeconds, ...claims };
    const input = `${b64url(JSON.stringify(header))}.${b64url(JSON.stringify(payload))}`;
    const signature = sign('sha256', Buffer.from(input), this.privateKey);
    return `${input}.${b64url(signature)}`;
  }

  async stop(): Promise<void> {
    const child = this.child;
    this.child = null;
    if (!child || child.exitCode !== null) return;
    const done = new Promise((ok) => child.once('exit', ok));
    child.kill('SIGTERM');
    await Promise.race([done, new Promise((ok) => setTimeout(ok, 3000))]);
    if (child.exitCode === null) child.kill('SIGKILL');
  }
}
