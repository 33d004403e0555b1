/**
 * The client's subscriptions: what it asked for, their server ids on the current
 * connection, their replays, and handing each event to the ones it matches.
 */

import { matchesPatterns, type ClientMessage, type EventEnvelope, type Offset, type SubscribedFrame } from './protocol.js';
import type { ReplayResult, SubscribeOptions, Subscription } from './types.js';

/** Past the server's inbound rate (20/s, burst 40 by default) a refused subscribe is sent again after this. */
export const SUBSCRIBE_RETRY_MS = 1000;

interface LocalSubscription {
  key: number;
  eventTypes: string[];
  testId: string | undefined;
  since: Offset | undefined;
  latest: boolean;
  listener: (event: EventEnvelope) => void;
  onReplayed: ((result: ReplayResult) => void) | undefined;
  serverId: string | null;
  /** Its replay from `since` completed once: later subscribes resume from the last id. */
  replayDone: boolean;
  removed: boolean;
}

export class Subscriptions {
  private readonly subs = new Map<number, LocalSubscription>();
  private readonly pending = new Map<string, LocalSubscription>();
  private nextKey = 1;

  constructor(
    private readonly send: (message: ClientMessage) => boolean,
    private readonly ref: (prefix: string) => string,
  ) {}

  add(eventTypes: readonly string[], listener: (event: EventEnvelope) => void, options: SubscribeOptions) {
    const sub: LocalSubscription = {
      key: this.nextKey++,
      eventTypes: [...eventTypes],
      testId: options.testId,
      since: options.since,
      latest: options.latest === true,
      listener,
      onReplayed: options.onReplayed,
      serverId: null,
      replayDone: false,
      removed: false,
    };
    this.subs.set(sub.key, sub);
    const handle: Subscription = {
      eventTypes: sub.eventTypes,
      testId: sub.testId,
      unsubscribe: () => this.remove(sub),
    };
    return { sub, handle };
  }

  /** A new connection: every subscription goes out again (none has a server id yet). */
  sendAll(from: Offset | undefined): void {
    this.pending.clear();
    for (const sub of this.subs.values()) {
      sub.serverId = null;
      this.sendOne(sub, from);
    }
  }

  /** A replay asked for runs from its own `since` until it has completed once; then from `from`. */
  sendOne(sub: LocalSubscription, from: Offset | undefined): void {
    const since = sub.since !== undefined && !sub.replayDone ? sub.since : (from ?? sub.since);
    const ref = this.ref('s');
    this.pending.set(ref, sub);
    this.send({
      type: 'subscribe',
      id: ref,
      event_types: sub.eventTypes,
      ...(sub.testId !== undefined ? { test_id: sub.testId } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(sub.latest ? { latest: true } : {}),
    });
  }

  subscribed(frame: SubscribedFrame): void {
    const sub = this.take(frame.ref);
    if (!sub) return;
    sub.serverId = frame.subscription;
    if (sub.removed) this.send({ type: 'unsubscribe', subscription: frame.subscription });
  }

  /** An `error` answering a frame: the subscription it refused, if it was one. */
  refused(ref: string | number | null | undefined): LocalSubscription | undefined {
    return this.take(ref);
  }

  /**
   * A subscribe refused for the rate: sent again a little later, from `from()`, when the
   * connection is the same (`same()`) and the subscription is still wanted.
   */
  retryLater(sub: LocalSubscription, same: () => boolean, from: () => Offset | undefined): void {
    setTimeout(() => {
      if (!same() || sub.removed || sub.serverId !== null || !this.subs.has(sub.key)) return;
      this.sendOne(sub, from());
    }, SUBSCRIBE_RETRY_MS);
  }

  /** A `replayed` frame: the subscription's test id (for `truncated`), and its callback runs. */
  replayed(subscription: string, result: ReplayResult): { testId: string | null } {
    let sub: LocalSubscription | undefined;
    for (const s of this.subs.values()) if (s.serverId === subscription) sub = s;
    if (sub && !sub.removed) {
      sub.replayDone = true;
      try {
        sub.onReplayed?.(result);
      } catch (err) {
        console.error('secstream onReplayed callback failed', err);
      }
    }
    return { testId: sub?.testId ?? null };
  }

  deliver(event: EventEnvelope): void {
    for (const sub of this.subs.values()) {
      if (sub.removed || !matchesPatterns(sub.eventTypes, event.event_type)) continue;
      if (sub.testId !== undefined && event.data?.['test_id'] !== sub.testId) continue;
      try {
        sub.listener(event);
      } catch (err) {
        console.error('secstream subscription listener failed', err);
      }
    }
  }

  /** Every pattern of every subscription (`*` when there is none), for polling. */
  patterns(): string[] {
    const all = new Set<string>();
    for (const sub of this.subs.values()) for (const p of sub.eventTypes) all.add(p);
    return all.size ? [...all] : ['*'];
  }

  private remove(sub: LocalSubscription): void {
    if (sub.removed) return;
    sub.removed = true;
    this.subs.delete(sub.key);
    if (sub.serverId !== null) this.send({ type: 'unsubscribe', subscription: sub.serverId });
  }

  private take(ref: string | number | null | undefined): LocalSubscription | undefined {
    if (ref === undefined || ref === null) return undefined;
    const sub = this.pending.get(String(ref));
    this.pending.delete(String(ref));
    return sub;
  }
}

export type { LocalSubscription };
