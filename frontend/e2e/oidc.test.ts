/**
 * Signing in through a real OpenID Provider (e2e/oidc/provider.mjs on the certified
 * `oidc-provider` package) to a real `secstream serve` that verifies its tokens by
 * discovery + JWKS: the provider's login page, events on the socket, a renewal of a
 * short-lived access token handed to the same socket as `refresh`, and sign-out; and a
 * refresh token the provider no longer honours, which ends the sign-in with its reason.
 */

import type { BrowserContext, Page, WebSocket as PageSocket } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { freePort, launchContext, Stack, waitFor } from './harness';
import { OidcProvider } from './oidc/harness';

/** Short on purpose: the test outlives at least one renewal (~14 s in). */
const ACCESS_TOKEN_TTL = 20;
const USER = 'alice';
const PASSWORD = 'correct horse battery staple';

let stack: Stack;
let idp: OidcProvider;
let ctx: { context: BrowserContext; close: () => Promise<void> } | null = null;
const log: string[] = [];

beforeAll(async () => {
  const port = await freePort();
  const base = `http://127.0.0.1:${port}`;
  const dir = (await import('node:fs')).mkdtempSync(`${(await import('node:os')).tmpdir()}/secstream-idp-`);
  idp = new OidcProvider({
    dir,
    users: {
      [USER]: { password: PASSWORD, claims: { name: 'Alice Lead', realm_access: { roles: ['soc-lead'] } } },
    },
    redirectUri: `${base}/`,
    audience: 'secstream',
    accessTokenTtl: ACCESS_TOKEN_TTL,
    log,
  });
  await idp.start();
  stack = new Stack({
    demo: false,
    port,
    env: {
      SECSTREAM_OIDC_ISSUER: idp.issuer,
      SECSTREAM_OIDC_CLIENT_ID: 'secstream-dashboard',
      SECSTREAM_JWT_AUDIENCE: 'secstream',
      SECSTREAM_ROLES_CLAIM: 'realm_access.roles',
      SECSTREAM_ROLE_MAP: 'soc-lead=admin,automation=publisher',
    },
  });
  await stack.start();
});

afterAll(async () => {
  await stack?.stop();
  await idp?.stop();
});

afterEach(async (test) => {
  if (test.task.result?.state === 'fail') console.error([...log, ...stack.log].slice(-80).join('\n'));
  await ctx?.close();
  ctx = null;
});

function status(page: Page) {
  return page.locator('[data-testid="connection-status"]');
}

async function connectionsOf(sub: string): Promise<{ id: string; user: string }[]> {
  const admin = idp.serviceToken('e2e-admin', { realm_access: { roles: ['soc-lead'] } });
  const res = await fetch(`${stack.baseUrl}/api/v1/connections`, { headers: { authorization: `Bearer ${admin}` } });
  if (res.status !== 200) throw new Error(`connections: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { connections: { id: string; user: string }[] }).connections.filter((c) => c.user === sub);
}

async function auditOf(action: string, sub: string): Promise<Record<string, unknown>[]> {
  const admin = idp.serviceToken('e2e-admin', { realm_access: { roles: ['soc-lead'] } });
  const res = await fetch(`${stack.baseUrl}/api/v1/audit?action=${action}&sub=${sub}`, { headers: { authorization: `Bearer ${admin}` } });
  if (res.status !== 200) throw new Error(`audit: HTTP ${res.status} ${await res.text()}`);
  return ((await res.json()) as { records: Record<string, unknown>[] }).records;
}

/** The audit's `ws.close` records of one connection, once there is one (the audit is written a moment after). */
async function closesOf(connectionId: string): Promise<Record<string, unknown>[]> {
  return await waitFor(`ws.close of ${connectionId} in the audit`, async () => {
    const records = (await auditOf('ws.close', USER)).filter((r) => r['connection_id'] === connectionId);
    return records.length ? records : null;
  }, 10_000);
}

async function outputLine(page: Page, testId: string, text: string): Promise<void> {
  await page
    .locator(`[data-testid="test-output"][data-test-id="${testId}"]`)
    .getByText(text)
    .waitFor({ timeout: 10_000 });
}

/** Through the provider's login page back to a connected dashboard. */
async function signIn(page: Page): Promise<void> {
  await page.goto(stack.baseUrl + '/', { timeout: 15_000 });
  await page.locator('[data-testid="oidc-login"]').click();
  await page.waitForURL((url) => url.href.startsWith(idp.issuer), { timeout: 15_000 });
  await page.locator('input[name="username"]').fill(USER);
  await page.locator('input[name="password"]').fill(PASSWORD);
  await page.locator('button[type="submit"]').click();
  await status(page).and(page.locator('[data-state="connected"]')).waitFor({ timeout: 15_000 });
}

describe('dashboard sign-in through an OpenID provider (authorization code + PKCE)', () => {
  it('signs in on the provider page, sees events, outlives a token renewal on the same socket, signs out', async () => {
    const config = (await (await fetch(`${stack.baseUrl}/api/v1/config`)).json()) as Record<string, unknown>;
    expect(config).toEqual({ oidc: { issuer: idp.issuer, client_id: 'secstream-dashboard', scope: expect.stringContaining('openid') }, demo: false });
    const publisher = idp.serviceToken('e2e-publisher', { realm_access: { roles: ['automation'] } });

    ctx = await launchContext();
    const page = await ctx.context.newPage();
    const sockets: PageSocket[] = [];
    const sent: Record<string, unknown>[] = [];
    const received: Record<string, unknown>[] = [];
    page.on('websocket', (ws) => {
      sockets.push(ws);
      ws.on('framesent', (f) => typeof f.payload === 'string' && sent.push(JSON.parse(f.payload) as Record<string, unknown>));
      ws.on('framereceived', (f) => typeof f.payload === 'string' && received.push(JSON.parse(f.payload) as Record<string, unknown>));
    });

    await page.goto(stack.baseUrl + '/', { timeout: 15_000 });
    await expect(page.locator('form[data-testid="demo-login"]').count()).resolves.toBe(0);
    const tokensBefore = (await idp.stats()).token;
    await page.locator('[data-testid="oidc-login"]').click();

    // the provider's own login page; a wrong password stays there with its error
    await page.waitForURL((url) => url.href.startsWith(idp.issuer), { timeout: 15_000 });
    await page.locator('input[name="username"]').fill(USER);
    await page.locator('input[name="password"]').fill('not the password');
    await page.locator('button[type="submit"]').click();
    await page.getByRole('alert').getByText('Wrong username or password.').waitFor({ timeout: 10_000 });
    expect(page.url().startsWith(idp.issuer)).toBe(true);
    expect(sockets).toHaveLength(0);

    await page.locator('input[name="username"]').fill(USER);
    await page.locator('input[name="password"]').fill(PASSWORD);
    await page.locator('button[type="submit"]').click();
    await page.waitForURL((url) => url.href.startsWith(stack.baseUrl), { timeout: 15_000 });
    await status(page).and(page.locator('[data-state="connected"]')).waitFor({ timeout: 15_000 });
    const signedInAt = Date.now();
    expect(page.url()).toBe(`${stack.baseUrl}/`); // the code and state are gone from the address
    await expect(page.locator('[data-testid="signed-in-user"]').textContent()).resolves.toContain('Alice Lead');
    // the provider's soc-lead, mapped by SECSTREAM_ROLE_MAP
    await page.locator('[data-testid="signed-in-roles"]').getByText('admin').waitFor({ timeout: 5000 });
    // no token in any storage that outlives the tab
    const stored = await page.evaluate(() => JSON.stringify({ ...localStorage, ...sessionStorage }));
    expect(stored).not.toMatch(/eyJ/);

    // every state the indicator takes from now on
    await page.evaluate(() => {
      const now = () => document.querySelector('[data-testid="connection-status"]')?.getAttribute('data-state') ?? 'gone';
      const seen: string[] = [now()];
      (window as unknown as { __states: string[] }).__states = seen;
      new MutationObserver(() => {
        const s = now();
        if (seen[seen.length - 1] !== s) seen.push(s);
      }).observe(document.body, { subtree: true, childList: true, attributes: true, attributeFilter: ['data-state'] });
    });
    const before = await connectionsOf(USER);
    expect(before).toHaveLength(1);
    const welcome = received.find((f) => f['type'] === 'welcome');
    expect(welcome).toMatchObject({ connection_id: before[0]!.id, user_id: USER, roles: ['admin'] });

    await stack.publish(publisher, { event_type: 'test.progress', data: { test_id: 'oidc-1', progress: 10, output: 'before the renewal' } });
    await outputLine(page, 'oidc-1', 'before the renewal');

    // past the first token's expiry: the socket lives on refreshed tokens
    await waitFor('a refresh frame after a renewal', async () => sent.some((f) => f['type'] === 'refresh'), 25_000);
    await new Promise((r) => setTimeout(r, Math.max(0, signedInAt + (ACCESS_TOKEN_TTL + 4) * 1000 - Date.now())));
    const renewals = (await idp.stats()).token - tokensBefore - 1; // less the code exchange
    console.info(`token renewals: ${renewals}, refresh frames: ${sent.filter((f) => f['type'] === 'refresh').length}, sockets: ${sockets.length}, connection: ${before[0]!.id}`);
    expect(renewals).toBeGreaterThanOrEqual(1);
    expect(renewals).toBeLessThanOrEqual(3); // ~one per 14 s, not a loop
    const refreshes = sent.filter((f) => f['type'] === 'refresh');
    expect(refreshes.length).toBe(renewals);
    expect(new Set(refreshes.map((f) => f['token'])).size).toBe(refreshes.length);
    const refreshIds = new Set(refreshes.map((f) => f['id']));
    const replies = received.filter((f) => refreshIds.has(f['ref']));
    expect(replies.map((f) => f['type'])).toEqual(refreshes.map(() => 'refreshed'));

    expect(sockets).toHaveLength(1);
    expect(sockets[0]!.isClosed()).toBe(false);
    await expect(page.evaluate(() => (window as unknown as { __states: string[] }).__states)).resolves.toEqual(['connected']);
    await expect(status(page).getAttribute('data-state')).resolves.toBe('connected');
    expect((await connectionsOf(USER)).map((c) => c.id)).toEqual([before[0]!.id]);

    await stack.publish(publisher, { event_type: 'test.progress', data: { test_id: 'oidc-1', progress: 90, output: 'after the renewal' } });
    await outputLine(page, 'oidc-1', 'after the renewal');

    // sign out: the socket closes on purpose, the provider's session ends, the sign-in is back
    const navigations: string[] = [];
    page.on('framenavigated', (frame) => frame === page.mainFrame() && navigations.push(frame.url()));
    await page.locator('[data-testid="sign-out"]').click();
    // via the provider's end_session page (it confirms by itself) back to the app
    await waitFor('end_session and back', async () => {
      const atIdp = navigations.findIndex((u) => u.startsWith(`${idp.issuer}/session/end`));
      return atIdp >= 0 && navigations.slice(atIdp).includes(`${stack.baseUrl}/`);
    }, 15_000);
    await page.locator('[data-testid="oidc-login"]').waitFor({ timeout: 15_000 });
    expect(page.url()).toBe(`${stack.baseUrl}/`);
    await waitFor('no connection of alice', async () => (await connectionsOf(USER)).length === 0, 10_000);
    // closed by the app with 1000 before the page left (a page unload would be 1001)
    const closes = await closesOf(before[0]!.id);
    expect(closes.map((r) => r['code'])).toEqual([1000]);
    // no second socket was opened; whether Playwright saw the old page's socket close
    // before the page navigated away is its own race: the server's audit above is the proof
    expect(sockets).toHaveLength(1);
    // the provider forgot the person: signing in asks for the password again
    await page.locator('[data-testid="oidc-login"]').click();
    await page.waitForURL((url) => url.href.startsWith(idp.issuer), { timeout: 15_000 });
    await page.locator('input[name="password"]').waitFor({ timeout: 10_000 });
  });

  it('goes back to the sign-in with the reason when the refresh token is refused, closing the socket once', async () => {
    ctx = await launchContext();
    const page = await ctx.context.newPage();
    const sockets: PageSocket[] = [];
    page.on('websocket', (ws) => sockets.push(ws));
    await signIn(page);
    const [conn] = await connectionsOf(USER);
    expect(conn).toBeDefined();

    // the provider restarts with an empty store: the refresh token it issued is gone
    const port = idp.port;
    await idp.stop();
    await idp.start(port);

    const message = page.locator('[data-testid="sign-in-message"]');
    await message.waitFor({ timeout: (ACCESS_TOKEN_TTL + 5) * 1000 });
    await expect(message.textContent()).resolves.toMatch(/^Your sign-in could not be renewed \(invalid_grant.*\)\. Sign in again\.$/);
    await page.locator('[data-testid="oidc-login"]').waitFor({ timeout: 5000 });
    await waitFor('no connection of alice', async () => (await connectionsOf(USER)).length === 0, 10_000);
    const closes = await closesOf(conn!.id);
    expect(closes.map((r) => r['code'])).toEqual([1000]);
    // and no reconnect loop with a dead token
    await new Promise((r) => setTimeout(r, 3000));
    expect(sockets).toHaveLength(1);
    expect((await connectionsOf(USER)).length).toBe(0);
  });
});
