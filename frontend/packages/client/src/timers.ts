/** The client's timers: the next attempt (with its backoff), the welcome wait and the heartbeat. */

import { backoffDelay, type BackoffOptions } from './backoff.js';

type Timer = ReturnType<typeof setTimeout> | null;

export class ClientTimers {
  private retry: Timer = null;
  private welcome: Timer = null;
  private heartbeat: Timer = null;
  private attempt = 0;

  constructor(
    private readonly backoff: BackoffOptions,
    private readonly random: () => number,
  ) {}

  get retryPending(): boolean {
    return this.retry !== null;
  }

  /**
   * The next attempt after the backoff of this attempt (at least `minDelayMs`; exactly that
   * when `now`): when it runs (epoch ms), or null when the attempts are used up.
   */
  scheduleRetry(minDelayMs: number, now: boolean, run: () => void): number | null {
    const attempt = this.attempt++;
    if (attempt >= this.backoff.maxAttempts) return null;
    const delay = now ? minDelayMs : Math.max(minDelayMs, backoffDelay(attempt, this.backoff, this.random));
    this.retry = setTimeout(() => {
      this.retry = null;
      run();
    }, delay);
    return Date.now() + delay;
  }

  /** A connection got its welcome: backoff starts over. */
  welcomed(): void {
    this.attempt = 0;
    if (this.welcome !== null) clearTimeout(this.welcome);
    this.welcome = null;
  }

  waitForWelcome(ms: number, expired: () => void): void {
    this.welcome = setTimeout(expired, ms);
  }

  /** (Re)start the watchdog: `expired` runs when no ping comes within `ms`. */
  armHeartbeat(ms: number, expired: () => void): void {
    if (this.heartbeat !== null) clearTimeout(this.heartbeat);
    this.heartbeat = setTimeout(expired, ms);
  }

  cancelRetry(): void {
    if (this.retry !== null) clearTimeout(this.retry);
    this.retry = null;
  }

  clearConnection(): void {
    for (const t of [this.welcome, this.heartbeat]) if (t !== null) clearTimeout(t);
    this.welcome = this.heartbeat = null;
  }

  clearAll(): void {
    this.clearConnection();
    this.cancelRetry();
  }
}
