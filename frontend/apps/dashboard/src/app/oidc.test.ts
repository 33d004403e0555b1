import { User, type SignoutRedirectArgs } from 'oidc-client-ts';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import { ConnectionState, EventClient, type WebSocketConstructor } from '@secstream/client';
import { startTestServer, until, welcome, type TestServer } from '../../../../test/testServer';
import { isSignInCallback, OidcSession, SignedOutError, type SignInBackend } from './oidc';

const WS = WebSocket as unknown as WebSocketConstructor;
const CALLBACK = 'http://127.0.0.1:8000/?code=abc&state=xyz&iss=https%3A%2F%2Fidp';

let server: TestServer | null = null;
let client: EventClient | null = null;
afterEach(async () => {
  client?.disconnect();
  client = null;
  await server?.close();
  server = null;
});

function userWith(accessToken: string, ttlSeconds: number): User {
  const now = Date.now() / 1000;
  return new User({
    access_token: accessToken,
    id_token: `id-${accessToken}`,
    refresh_token: `rt-${accessToken}`,
    token_type: 'Bearer',
    profile: { sub: 'alice', name: 'Alice Analyst', iss: 'https://idp', aud: 'secstream-dashboard', exp: now + ttlSeconds, iat: now },
    expires_at: now + ttlSeconds,
  });
}

/**
 * The provider side as a script: each refresh-token grant answers with the next
 * entry (a token, or the error the provider or network gave).
 */
class ScriptedProvider implements SignInBackend {
  grants = 0;
  signOuts: SignoutRedirectArgs[] = [];
  removed = 0;
  callbacks = 0;
  constructor(
    private readonly ttlSeconds: number,
    private readonly script: (n: number) => User | Error | { error: string; error_description: string } = (n) =>
      userWith(`at-${n + 1}`, ttlSeconds),
  ) {}
  async signinRedirect(): Promise<void> {}
  async signinRedirectCallback(): Promise<User> {
    this.callbacks++;
    return userWith('at-1', this.ttlSeconds);
  }
  async signinSilent(): Promise<User | null> {
    const answer = this.script(++this.grants);
    if (answer instanceof User) return answer;
    throw answer;
  }
  async signoutRedirect(args?: SignoutRedirectArgs): Promise<void> {
    this.signOuts.push(args ?? {});
  }
  async removeUser(): Promise<void> {
    this.removed++;
  }
}

async function signedInWithSocket(
  provider: ScriptedProvider,
  onConnection: TestServer['options']['onConnection'] = (ws) => welcome(ws),
): Promise<OidcSession> {
  const session = new OidcSession(provider, { postLogoutRedirectUri: 'http://127.0.0.1:8000/' });
  expect(await session.completeSignIn(CALLBACK)).toBe(true);
  expect(session.state).toMatchObject({ kind: 'signed-in', user: { sub: 'alice', name: 'Alice Analyst' } });
  server = await startTestServer({ onConnection });
  client = new EventClient({ url: server.wsUrl, WebSocket: WS, getToken: session.getToken, clientId: null });
  session.attach(client);
  client.connect();
  await until(() => client!.state === ConnectionState.Connected, 5000, 'connected');
  return session;
}

const refreshes = () => server!.received.filter((f) => f['type'] === 'refresh').map((f) => f['token']);

describe('OidcSession', () => {
  it('knows the provider redirect back from other addresses', () => {
    expect(isSignInCallback(CALLBACK)).toBe(true);
    expect(isSignInCallback('http://127.0.0.1:8000/?error=access_denied&state=xyz')).toBe(true);
    expect(isSignInCallback('http://127.0.0.1:8000/')).toBe(false);
    expect(isSignInCallback('http://127.0.0.1:8000/?code=abc')).toBe(false);
  });

  it('uses a redirect back once, however often it is asked (the code is single-use)', async () => {
    const provider = new ScriptedProvider(60);
    const session = new OidcSession(provider, { postLogoutRedirectUri: 'http://x/' });
    await Promise.all([session.completeSignIn(CALLBACK), session.completeSignIn(CALLBACK)]);
    expect(provider.callbacks).toBe(1);
    expect(await session.getToken('connect')).toBe('at-1');
    await session.signOut();
  });

  it('hands each renewed token to the live socket as `refresh`, on the same connection', async () => {
    const provider = new ScriptedProvider(2); // renewed when 30% is left: every ~1.4 s
    const session = await signedInWithSocket(provider);
    expect(server!.handshakes[0]?.token).toBe('at-1');
    await until(() => refreshes().length >= 2, 6000, 'two refreshes');
    expect(refreshes().slice(0, 2)).toEqual(['at-2', 'at-3']);
    expect(server!.handshakes).toHaveLength(1);
    expect(client!.state).toBe(ConnectionState.Connected);
    expect(session.state).toMatchObject({ kind: 'signed-in', user: { renewals: provider.grants } });
    await session.signOut();
  });

  it('answers the server\'s token.expiring with the next renewal, not a renewal of its own (no loop)', async () => {
    const provider = new ScriptedProvider(2);
    // like the real server with SECSTREAM_TOKEN_EXPIRY_WARNING=60: every token lives
    // less than that, so each one is warned about the moment the socket holds it
    server = null;
    const session = await signedInWithSocket(provider, (ws) => {
      welcome(ws);
      ws.send(JSON.stringify({ type: 'token.expiring', expires_in: 2 }));
      ws.on('message', (data) => {
        const frame = JSON.parse(String(data)) as { type: string; id?: string };
        if (frame.type === 'refresh') {
          ws.send(JSON.stringify({ type: 'refreshed', ref: frame.id }));
          ws.send(JSON.stringify({ type: 'token.expiring', expires_in: 2 }));
        }
      });
    });
    await new Promise((r) => setTimeout(r, 3500));
    // 3.5 s of 2 s tokens renewed at 1.4 s: two renewals, each sent once
    expect(provider.grants).toBeGreaterThanOrEqual(2);
    expect(provider.grants).toBeLessThanOrEqual(3);
    expect(refreshes()).toEqual(Array.from({ length: provider.grants }, (_, i) => `at-${i + 2}`));
    expect(server!.handshakes).toHaveLength(1);
    await session.signOut();
  });

  it('goes back to sign-in with the provider\'s reason when the refresh token is refused, and stops the socket', async () => {
    const provider = new ScriptedProvider(2, () => ({ error: 'invalid_grant', error_description: 'grant request is invalid' }));
    const session = await signedInWithSocket(provider);
    await until(() => session.state.kind === 'signed-out', 5000, 'signed out');
    expect(session.state).toEqual({
      kind: 'signed-out',
      message: 'Your sign-in could not be renewed (invalid_grant: grant request is invalid). Sign in again.',
    });
    expect(provider.grants).toBe(1); // refused is final: no retry
    expect(client!.state).toBe(ConnectionState.Disconnected);
    expect(provider.removed).toBeGreaterThanOrEqual(1);
    await expect(session.getToken('reconnect')).rejects.toBeInstanceOf(SignedOutError);
    await new Promise((r) => setTimeout(r, 500));
    expect(server!.handshakes).toHaveLength(1); // no reconnect loop
  });

  it('retries a renewal the provider did not answer while the token still lives', async () => {
    const provider = new ScriptedProvider(3, (n) => (n === 1 ? new TypeError('Failed to fetch') : userWith(`at-${n + 1}`, 3)));
    const session = await signedInWithSocket(provider);
    await until(() => refreshes().length === 1, 6000, 'a refresh after the retry');
    expect(provider.grants).toBe(2);
    expect(refreshes()).toEqual(['at-3']);
    expect(session.state.kind).toBe('signed-in');
    await session.signOut();
  });

  it('signs out: closes the socket on purpose, forgets the tokens, ends the provider session', async () => {
    const provider = new ScriptedProvider(60);
    const session = await signedInWithSocket(provider);
    const closed = new Promise<number>((ok) => server!.sockets[0]!.once('close', (code) => ok(code)));
    await session.signOut();
    expect(await closed).toBe(1000);
    expect(client!.state).toBe(ConnectionState.Disconnected);
    expect(session.state).toEqual({ kind: 'signed-out', message: null });
    expect(provider.signOuts).toEqual([{ id_token_hint: 'id-at-1', post_logout_redirect_uri: 'http://127.0.0.1:8000/' }]);
    expect(provider.removed).toBe(1);
    await expect(session.getToken('connect')).rejects.toBeInstanceOf(SignedOutError);
    await expect(session.accessToken()).rejects.toBeInstanceOf(SignedOutError);
    await new Promise((r) => setTimeout(r, 300));
    expect(server!.handshakes).toHaveLength(1);
    expect(provider.grants).toBe(0);
  });
});
