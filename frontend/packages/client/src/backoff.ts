/** Exponential backoff with full jitter (centrifuge-js `backoff`). */

export interface BackoffOptions {
  /** Base delay of the first retry, in ms. */
  initialDelayMs: number;
  /** Cap of any single delay, in ms. */
  maxDelayMs: number;
  /** Retries before giving up (`Infinity`: never). */
  maxAttempts: number;
}

export const DEFAULT_BACKOFF: BackoffOptions = {
  initialDelayMs: 250,
  maxDelayMs: 5000,
  maxAttempts: Number.POSITIVE_INFINITY,
};

/**
 * Delay before retry number `attempt` (0-based): uniform in
 * `[0, min(cap, initial * 2^attempt)]`. `random` is injectable for tests.
 */
export function backoffDelay(
  attempt: number,
  options: Pick<BackoffOptions, 'initialDelayMs' | 'maxDelayMs'> = DEFAULT_BACKOFF,
  random: () => number = Math.random,
): number {
  const exp = Math.min(Math.max(attempt, 0), 30);
  const ceiling = Math.min(options.maxDelayMs, options.initialDelayMs * 2 ** exp);
  return Math.floor(random() * ceiling);
}
