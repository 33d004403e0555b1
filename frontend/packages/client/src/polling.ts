/**
 * Polling while the WebSocket cannot connect: the `Poller` loop, the patterns it
 * asks for, and what each answer does to the client (contract section 5). The
 * client keeps trying the WebSocket meanwhile; a `welcome` stops the polling.
 */

import type { BackoffOptions } from './backoff.js';
import { describeHttpStatus, NETWORK_UNREACHABLE, WEBSOCKET_BLOCKED, type ClientError } from './codes.js';
import { Poller, type PollOutcome } from './poller.js';
import type { EventEnvelope, Offset } from './protocol.js';
import { ConnectionState, type ClientStatus } from './types.js';

/** What polling needs from the client. */
export interface PollHost {
  /** Whether answers still count: not stopped and not connected by WebSocket. */
  wanted(): boolean;
  status(): ClientStatus;
  transition(to: ConnectionState, patch: Partial<ClientStatus>): void;
  token(): Promise<string>;
  cursor(): Offset | null;
  patterns(): string[];
  deliver(events: EventEnvelope[], next: Offset | null): void;
  truncated(): void;
  /** A 401/403: true when the client gave up and stopped. */
  authRefused(status: number): boolean;
}

export interface PollingOptions {
  httpUrl: string;
  fetch: typeof fetch;
  waitSeconds: number;
  backoff: BackoffOptions;
  random: () => number;
}

export class PollingFallback {
  private readonly poller: Poller;
  /** A typed poll was refused (403): ask for everything the roles allow and filter here. */
  private everything = false;

  constructor(
    o: PollingOptions,
    private readonly host: PollHost,
  ) {
    this.poller = new Poller({
      baseUrl: o.httpUrl,
      fetch: o.fetch,
      getToken: () => host.token(),
      cursor: () => host.cursor(),
      types: () => (this.everything ? ['*'] : host.patterns()),
      waitSeconds: o.waitSeconds,
      backoff: o.backoff,
      random: o.random,
      onOutcome: (outcome) => this.answer(outcome),
    });
  }

  get active(): boolean {
    return this.poller.active;
  }

  start(): void {
    if (!this.poller.active && this.host.wanted()) this.poller.start();
  }

  stop(): void {
    this.poller.stop();
  }

  /** One answer; false stops the loop. */
  private answer(outcome: PollOutcome): boolean {
    const host = this.host;
    if (!host.wanted()) return false;
    const state = host.status().state;
    if (outcome.kind === 'ok') {
      host.transition(ConnectionState.Polling, { transport: 'polling', error: WEBSOCKET_BLOCKED });
      const { events, next, truncated } = outcome.response;
      host.deliver(events, next ?? null);
      if (truncated) host.truncated();
      return true;
    }
    if (outcome.kind === 'http' && outcome.status === 403 && !this.everything) {
      this.everything = true;
      return true;
    }
    if (outcome.kind === 'http' && (outcome.status === 401 || outcome.status === 403)) {
      if (host.authRefused(outcome.status)) return false;
    }
    const error: ClientError =
      outcome.kind === 'network' ? NETWORK_UNREACHABLE : describeHttpStatus(outcome.status);
    const to = state === ConnectionState.Polling ? ConnectionState.Reconnecting : state;
    host.transition(to, { transport: null, error });
    return true;
  }
}
