/**
 * Long-polling of `GET /api/v1/events` (contract section 5), the fallback
 * when WebSockets fail. One loop at a time; `stop()` aborts the request in flight.
 */

import { backoffDelay, type BackoffOptions } from './backoff.js';
import type { EventEnvelope, Offset, PollResponse } from './protocol.js';

export type PollOutcome =
  | { kind: 'ok'; response: PollResponse }
  | { kind: 'http'; status: number; retryAfterMs: number | null }
  | { kind: 'network'; error: unknown };

export interface PollerOptions {
  baseUrl: string;
  fetch: typeof fetch;
  getToken: () => Promise<string>;
  /** Where to read from: the last processed id, or null to ask for the end of the log. */
  cursor: () => Offset | null;
  types: () => string[];
  waitSeconds: number;
  backoff: Pick<BackoffOptions, 'initialDelayMs' | 'maxDelayMs'>;
  random: () => number;
  /** Called for each answer; return false to stop the loop (e.g. auth refused). */
  onOutcome: (outcome: PollOutcome) => boolean;
}

export function pollUrl(base: string, since: Offset | null, types: string[], wait: number): string {
  const params = new URLSearchParams();
  if (since !== null) {
    params.set('since', since);
    params.set('wait', String(wait));
  }
  params.set('types', types.join(','));
  return `${base.replace(/\/$/, '')}/api/v1/events?${params.toString()}`;
}

export class Poller {
  private running = false;
  private controller: AbortController | null = null;
  private sleepTimer: ReturnType<typeof setTimeout> | null = null;
  private wake: (() => void) | null = null;
  private failures = 0;

  constructor(private readonly options: PollerOptions) {}

  get active(): boolean {
    return this.running;
  }

  start(): void {
    if (this.running) return;
    this.running = true;
    this.failures = 0;
    void this.loop();
  }

  stop(): void {
    this.running = false;
    this.controller?.abort();
    this.controller = null;
    if (this.sleepTimer !== null) clearTimeout(this.sleepTimer);
    this.sleepTimer = null;
    this.wake?.();
    this.wake = null;
  }

  private async loop(): Promise<void> {
    const o = this.options;
    while (this.running) {
      const outcome = await this.once();
      if (!this.running) return;
      if (!o.onOutcome(outcome)) {
        this.stop();
        return;
      }
      if (outcome.kind === 'ok') {
        this.failures = 0;
        continue;
      }
      const retryAfter = outcome.kind === 'http' ? outcome.retryAfterMs : null;
      const delay = Math.max(retryAfter ?? 0, backoffDelay(this.failures++, o.backoff, o.random), 100);
      await this.sleep(delay);
    }
  }

  private async once(): Promise<PollOutcome> {
    const o = this.options;
    const controller = new AbortController();
    this.controller = controller;
    // A silently dropped connection must not hang the loop forever.
    const timeout = setTimeout(() => controller.abort(), (o.waitSeconds + 15) * 1000);
    try {
      const token = await o.getToken();
      const url = pollUrl(o.baseUrl, o.cursor(), o.types(), o.waitSeconds);
      const res = await o.fetch(url, {
        headers: { Authorization: `Bearer ${token}`, Accept: 'application/json' },
        signal: controller.signal,
        cache: 'no-store',
      });
      if (!res.ok) {
        const ra = Number(res.headers.get('Retry-After'));
        return { kind: 'http', status: res.status, retryAfterMs: ra > 0 ? ra * 1000 : null };
      }
      const body = (await res.json()) as PollResponse;
      const events: EventEnvelope[] = (body.events ?? []).map((e) => ({ ...e, type: 'event' }));
      return { kind: 'ok', response: { events, next: body.next, truncated: Boolean(body.truncated) } };
    } catch (error) {
      return { kind: 'network', error };
    } finally {
      clearTimeout(timeout);
      if (this.controller === controller) this.controller = null;
    }
  }

  private sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      this.wake = resolve;
      this.sleepTimer = setTimeout(() => {
        this.sleepTimer = null;
        this.wake = null;
        resolve();
      }, ms);
    });
  }
}
