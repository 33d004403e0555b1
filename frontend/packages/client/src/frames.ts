/** What each server frame does to the client (contract section 4). */

import { describeErrorFrame } from './codes.js';
import type { Emitter } from './emitter.js';
import type { AckMessage, EventEnvelope, PingMessage, RefreshMessage, ServerFrame, WelcomeFrame } from './protocol.js';
import type { LocalSubscription, Subscriptions } from './subscriptions.js';
import { LIVE, type EventClientEvents, type SyncState } from './types.js';

/** The parts of the client a frame may touch. */
export interface FrameHost {
  readonly emitter: Emitter<EventClientEvents>;
  readonly subs: Subscriptions;
  welcome(frame: WelcomeFrame): void;
  event(event: EventEnvelope): void;
  /** A `ping`: answer `pong`, restart the heartbeat watchdog. */
  ping(): void;
  /** `token.expiring`: refresh the token in place. */
  expiring(): void;
  sync(sync: SyncState): void;
  /** A subscribe refused for the rate: send it again a little later. */
  retrySubscribe(sub: LocalSubscription): void;
}

export function dispatchFrame(frame: ServerFrame, host: FrameHost): void {
  switch (frame.type) {
    case 'welcome':
      return host.welcome(frame);
    case 'event':
      return host.event(frame);
    case 'batch':
      for (const event of frame.events ?? []) host.event({ ...event, type: 'event' });
      return;
    case 'ping':
      return host.ping();
    case 'token.expiring':
      return host.expiring();
    case 'subscribed':
      return host.subs.subscribed(frame);
    case 'replayed': {
      const result = { count: frame.count, truncated: frame.truncated === true };
      const { testId } = host.subs.replayed(frame.subscription, result);
      if (result.truncated) {
        host.emitter.emit('truncated', { subscription: frame.subscription, testId, source: 'replay' });
      }
      return;
    }
    case 'connection.info': {
      const behind = typeof frame.behind === 'number' ? frame.behind : null;
      host.sync(frame.state === 'catching_up' ? { state: 'catching_up', behind } : LIVE);
      host.emitter.emit('sync', frame);
      if (frame.truncated === true) {
        host.emitter.emit('truncated', { subscription: null, testId: null, source: 'catch_up' });
      }
      return;
    }
    case 'error': {
      const refused = host.subs.refused(frame.ref);
      if (refused && frame.code === 'rate_limited') host.retrySubscribe(refused);
      host.emitter.emit('error', describeErrorFrame(frame.code, frame.message));
      return;
    }
    default:
      return; // pong, acked, refreshed, unsubscribed: nothing to do
  }
}

/**
 * Frames an application may send itself: `ping`, `ack` and `refresh`. Subscriptions go
 * through `subscribe()`, which keeps them across reconnects.
 */
export type SendableFrame = PingMessage | AckMessage | RefreshMessage;
const SENDABLE: ReadonlySet<string> = new Set(['ping', 'ack', 'refresh']);

/** The frame as JSON text, or TypeError for a frame the client manages itself. */
export function sendableText(message: SendableFrame): string {
  const type: unknown = (message as { type?: unknown } | null)?.type;
  if (typeof type !== 'string' || !SENDABLE.has(type)) {
    throw new TypeError(`send ${String(type)} frames through the client, not by hand: ping, ack and refresh only`);
  }
  return JSON.stringify(message);
}
