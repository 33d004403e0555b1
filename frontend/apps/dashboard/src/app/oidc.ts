/**
 * Signing in through the organisation's OpenID provider: authorization code flow
 * with PKCE (oidc-client-ts, a public client: no secret in the browser), tokens in
 * memory only, renewal with the refresh token before `exp`, and sign-out at the
 * provider's `end_session_endpoint`.
 *
 * Renewal runs on our own timer, not oidc-client-ts's `automaticSilentRenew`: that
 * one fires `accessTokenExpiringNotificationTimeInSeconds` (60 s) before `exp`,
 * so a token that lives less than a minute would be renewed again the moment it
 * arrives, forever. Ours renews when 30% of the token's lifetime is left (at most
 * 60 s before `exp`, never sooner than 1 s after the last renewal), so a 20 s token
 * is renewed every ~14 s and a one-hour token a minute before it ends.
 *
 * Each new access token reaches the live socket as a `refresh` frame through the
 * client's token provider (`getToken`, reason `expiring`): the timer calls
 * `client.refreshToken()`, and the server's own `token.expiring` warning waits
 * for the next renewal instead of starting one, so a server that warns about
 * every short-lived token the moment it arrives causes no extra renewals.
 */

import {
  InMemoryWebStorage,
  WebStorageStateStore,
  type SignoutRedirectArgs,
  type User,
  type UserManagerSettings,
} from 'oidc-client-ts';
import type { TokenReason } from '@secstream/client';
import type { OidcConfig } from './config';

/** Renew when this share of the token's lifetime is left... */
export const RENEW_AT_REMAINING_SHARE = 0.3;
/** ...but never earlier than this before `exp`. */
export const MAX_RENEW_LEAD_MS = 60_000;
/** Renewals are at least this far apart, whatever the provider's lifetimes. */
export const MIN_RENEW_INTERVAL_MS = 1_000;
/** Retries of a renewal the provider did not answer, while the token still lives. */
export const RENEW_RETRY_DELAYS_MS = [1_000, 2_000, 4_000] as const;

/** The parts of oidc-client-ts's `UserManager` this module uses. */
export interface SignInBackend {
  signinRedirect(): Promise<void>;
  signinRedirectCallback(url?: string): Promise<User>;
  signinSilent(): Promise<User | null>;
  signoutRedirect(args?: SignoutRedirectArgs): Promise<void>;
  removeUser(): Promise<void>;
}

/** The parts of `EventClient` a session drives. */
export interface LiveClient {
  refreshToken(): void;
  disconnect(): void;
}

export interface SignedInUser {
  sub: string;
  name: string | null;
  /** Epoch ms of the current access token's expiry (our clock). */
  expiresAt: number;
  renewals: number;
}

export type SessionState =
  | { kind: 'signed-out'; message: string | null }
  | { kind: 'signing-in' }
  | { kind: 'signed-in'; user: SignedInUser };

/** Settings for oidc-client-ts's `UserManager`: tokens in memory, our own renewal. */
export function userManagerSettings(config: OidcConfig, origin: string): UserManagerSettings {
  return {
    authority: config.issuer,
    client_id: config.client_id,
    scope: config.scope,
    response_type: 'code',
    redirect_uri: `${origin}/`,
    post_logout_redirect_uri: `${origin}/`,
    // Tokens never leave this tab's memory: a reload signs in again (the provider's
    // own session usually makes that one click). The redirect's state and PKCE
    // verifier use oidc-client-ts's default stateStore, sessionStorage, for the
    // round trip to the provider only.
    userStore: new WebStorageStateStore({ store: new InMemoryWebStorage() }),
    automaticSilentRenew: false,
    monitorSession: false,
    loadUserInfo: false,
  };
}

/** The URL is the provider's redirect back to us (a code or an error, and our state). */
export function isSignInCallback(href: string): boolean {
  const { searchParams } = new URL(href);
  return searchParams.has('state') && (searchParams.has('code') || searchParams.has('error'));
}

/** A reason for a person to read, from whatever oidc-client-ts threw. */
export function describeFailure(err: unknown): string {
  if (err && typeof err === 'object' && 'error' in err && typeof err.error === 'string') {
    const desc = 'error_description' in err && typeof err.error_description === 'string' ? err.error_description : '';
    return desc ? `${err.error}: ${desc}` : err.error;
  }
  return err instanceof Error ? err.message : String(err);
}

/** The provider answered and refused (`invalid_grant` and friends), as opposed to not answering. */
function refusedByProvider(err: unknown): boolean {
  return !!err && typeof err === 'object' && 'error' in err && typeof err.error === 'string';
}

interface Current {
  accessToken: string;
  idToken: string | undefined;
  /** Epoch ms. */
  expiresAt: number | null;
  /** Epoch ms when we received it. */
  receivedAt: number;
}

class Waiters {
  private list: { ok: (t: string) => void; fail: (e: unknown) => void }[] = [];
  wait(): Promise<string> {
    return new Promise((ok, fail) => this.list.push({ ok, fail }));
  }
  resolve(token: string): void {
    for (const w of this.list.splice(0)) w.ok(token);
  }
  reject(err: unknown): void {
    for (const w of this.list.splice(0)) w.fail(err);
  }
}

export class SignedOutError extends Error {
  override name = 'SignedOutError';
}

export interface OidcSessionOptions {
  postLogoutRedirectUri: string;
  now?: () => number;
}

/** One person's sign-in in this tab. Its state is one value, changed only here. */
export class OidcSession {
  private _state: SessionState = { kind: 'signed-out', message: null };
  private readonly listeners = new Set<() => void>();
  private current: Current | null = null;
  /** The token last handed to the client: the one its socket holds. */
  private given: string | null = null;
  private client: LiveClient | null = null;
  private timer: ReturnType<typeof setTimeout> | null = null;
  private renewing: Promise<string> | null = null;
  private readonly next = new Waiters();
  private callback: Promise<boolean> | null = null;
  private renewals = 0;
  private readonly now: () => number;

  constructor(
    private readonly backend: SignInBackend,
    private readonly options: OidcSessionOptions,
  ) {
    this.now = options.now ?? Date.now;
  }

  get state(): SessionState {
    return this._state;
  }

  /** For `useSyncExternalStore`. */
  subscribe = (fn: () => void): (() => void) => {
    this.listeners.add(fn);
    return () => this.listeners.delete(fn);
  };

  private setState(next: SessionState): void {
    this._state = next;
    for (const fn of [...this.listeners]) fn();
  }

  /** Off to the provider's login page (the page navigates away). */
  async signIn(): Promise<void> {
    try {
      await this.backend.signinRedirect();
    } catch (err) {
      this.setState({ kind: 'signed-out', message: `Could not reach the identity provider (${describeFailure(err)}).` });
    }
  }

  /**
   * Finish the redirect back from the provider, when `href` is one: true when it
   * was (signed in, or signed out with the provider's reason). Once per page load.
   */
  completeSignIn(href: string): Promise<boolean> {
    this.callback ??= this.processCallback(href);
    return this.callback;
  }

  private async processCallback(href: string): Promise<boolean> {
    if (!isSignInCallback(href)) return false;
    this.setState({ kind: 'signing-in' });
    try {
      this.accept(await this.backend.signinRedirectCallback(href));
    } catch (err) {
      this.setState({ kind: 'signed-out', message: `Sign-in failed (${describeFailure(err)}).` });
    }
    return true;
  }

  /** The client whose socket gets each renewed token; returns the detach. */
  attach(client: LiveClient): () => void {
    this.client = client;
    return () => {
      if (this.client === client) this.client = null;
    };
  }

  /** The `EventClient` token provider. */
  getToken = async (reason: TokenReason): Promise<string> => {
    const cur = this.current;
    if (!cur) throw new SignedOutError('Signed out: sign in again.');
    switch (reason) {
      case 'expiring':
        // The server warns about the socket's token. A newer one goes out as is;
        // else the scheduled renewal brings one (or now, when it is due).
        if (cur.accessToken !== this.given) return this.give(cur.accessToken);
        return this.give(this.due(cur) ? await this.renew() : await this.next.wait());
      case 'expired':
      case 'unauthorized':
        if (cur.accessToken !== this.given && !this.expired(cur)) return this.give(cur.accessToken);
        return this.give(await this.renew());
      default:
        return this.give(this.expired(cur) ? await this.renew() : cur.accessToken);
    }
  };

  /** A token for an HTTP request beside the socket. */
  accessToken = async (): Promise<string> => {
    const cur = this.current;
    if (!cur) throw new SignedOutError('Signed out: sign in again.');
    return this.expired(cur) ? await this.renew() : cur.accessToken;
  };

  /**
   * Close the socket on purpose, forget the tokens, and end the provider's
   * session (`end_session_endpoint` with `id_token_hint`; it sends the browser
   * back to `post_logout_redirect_uri`).
   */
  async signOut(): Promise<void> {
    const idToken = this.current?.idToken;
    this.end(null);
    try {
      await this.backend.signoutRedirect({
        ...(idToken ? { id_token_hint: idToken } : {}),
        post_logout_redirect_uri: this.options.postLogoutRedirectUri,
      });
    } catch (err) {
      this.setState({
        kind: 'signed-out',
        message: `Signed out here, but the identity provider's session could not be ended (${describeFailure(err)}).`,
      });
    }
  }

  // -- tokens ------------------------------------------------------------------

  private give(token: string): string {
    this.given = token;
    return token;
  }

  private expired(cur: Current): boolean {
    return cur.expiresAt !== null && cur.expiresAt <= this.now();
  }

  /** How long before `exp` to renew this token. */
  private lead(cur: Current): number {
    if (cur.expiresAt === null) return 0;
    const lifetime = Math.max(0, cur.expiresAt - cur.receivedAt);
    return Math.min(MAX_RENEW_LEAD_MS, lifetime * RENEW_AT_REMAINING_SHARE);
  }

  private due(cur: Current): boolean {
    return cur.expiresAt !== null && cur.expiresAt - this.now() <= this.lead(cur);
  }

  private accept(user: User): void {
    const now = this.now();
    const expiresAt = typeof user.expires_at === 'number' ? user.expires_at * 1000 : null;
    this.current = { accessToken: user.access_token, idToken: user.id_token, expiresAt, receivedAt: now };
    const profile = user.profile as { sub: string; name?: unknown; preferred_username?: unknown };
    const name = typeof profile.name === 'string' ? profile.name : typeof profile.preferred_username === 'string' ? profile.preferred_username : null;
    this.setState({
      kind: 'signed-in',
      user: { sub: profile.sub, name, expiresAt: expiresAt ?? Number.POSITIVE_INFINITY, renewals: this.renewals },
    });
    this.schedule(0);
  }

  /** Arm the renewal timer; `attempt` > 0 retries one the provider did not answer. */
  private schedule(attempt: number): void {
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    const cur = this.current;
    if (!cur || cur.expiresAt === null) return; // no expiry given: the server's warning drives renewal
    const delay =
      attempt === 0
        ? Math.max(MIN_RENEW_INTERVAL_MS, cur.expiresAt - this.lead(cur) - this.now())
        : RENEW_RETRY_DELAYS_MS[Math.min(attempt, RENEW_RETRY_DELAYS_MS.length) - 1]!;
    this.timer = setTimeout(() => {
      this.timer = null;
      this.renew(attempt).catch(() => undefined); // failures are handled inside
    }, delay);
  }

  /** One renewal at a time; callers during one share its token. */
  private renew(attempt = 0): Promise<string> {
    this.renewing ??= this.refreshTokenGrant(attempt).finally(() => {
      this.renewing = null;
    });
    return this.renewing;
  }

  private async refreshTokenGrant(attempt: number): Promise<string> {
    let user: User | null;
    try {
      user = await this.backend.signinSilent();
      if (!user) throw new Error('the identity provider returned no tokens');
    } catch (err) {
      const cur = this.current;
      const canRetry =
        !refusedByProvider(err) && cur !== null && !this.expired(cur) && attempt < RENEW_RETRY_DELAYS_MS.length;
      if (canRetry) {
        this.schedule(attempt + 1);
      } else if (cur !== null) {
        this.end(`Your sign-in could not be renewed (${describeFailure(err)}). Sign in again.`);
      }
      throw err;
    }
    if (!this.current) return user.access_token; // signed out meanwhile
    this.renewals++;
    this.accept(user);
    this.next.resolve(user.access_token);
    this.client?.refreshToken();
    return user.access_token;
  }

  /**
   * Close the socket on purpose (no reconnect loop with a dead token), forget
   * everything; `message` tells the person why when it was not their choice.
   */
  private end(message: string | null): void {
    this.client?.disconnect();
    if (this.timer !== null) clearTimeout(this.timer);
    this.timer = null;
    this.current = null;
    this.given = null;
    this.next.reject(new SignedOutError(message ?? 'Signed out.'));
    this.backend.removeUser().catch(() => undefined);
    this.setState({ kind: 'signed-out', message });
  }
}
