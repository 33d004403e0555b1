/**
 * Tokens for the connection: the reason handed to the application's provider
 * (a fresh token after a refusal or expiry), and the in-place `refresh` when the
 * server warns with `token.expiring`, one at a time.
 */

import type { TokenProvider, TokenReason } from './types.js';

export class TokenSource {
  private forced: TokenReason | null = null;
  private refreshing = false;

  constructor(private readonly provider: TokenProvider) {}

  /** The next token asked for gives this reason (the server refused or expired the last). */
  force(reason: TokenReason | null): void {
    this.forced = reason;
  }

  /** A token for `fallback`, or for the forced reason when one is pending. */
  async next(fallback: TokenReason): Promise<string> {
    const reason = this.forced ?? fallback;
    this.forced = null;
    return await this.provider(reason);
  }

  /** A token for exactly this reason (a probe of the HTTP API). */
  async ask(reason: TokenReason): Promise<string> {
    return await this.provider(reason);
  }

  /**
   * Answer `token.expiring`: a fresh token goes out through `send`. The server may
   * repeat the warning while one is on its way; those repeats are ignored.
   */
  async refresh(send: (token: string) => void, failed: (err: unknown) => void): Promise<void> {
    if (this.refreshing) return;
    this.refreshing = true;
    try {
      send(await this.provider('expiring'));
    } catch (err) {
      failed(err);
    } finally {
      this.refreshing = false;
    }
  }
}
