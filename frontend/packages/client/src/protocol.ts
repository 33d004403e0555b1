/**
 * Wire frames of contract section 4. The shapes come from `./generated/protocol.ts`,
 * generated from docs/api/asyncapi.json, which `secstream schema` prints from the
 * service's msgspec types: the names here are the client's, the fields the server's.
 */
import type * as wire from './generated/protocol.js';

export type { wire };
export type EventType = wire.Event['event_type'];

export const EVENT_TYPES: readonly EventType[] = [
  'test.started',
  'test.progress',
  'test.completed',
  'test.error',
  'test.cancelled',
  'system.alert',
  'system.status',
  'system.maintenance',
  'user.notification',
  'connection.info',
];

export type Priority = wire.Event['priority'];
export type Ref = string | number;
export type Offset = string;

/** One event as a client receives it (the envelope); `D` narrows its `data`. */
export type EventEnvelope<D = Record<string, unknown>> = Omit<wire.Event, 'data'> & { data: D };

/** Each event type's envelope, with the `data` the service knows for it. */
export type TypedEvent =
  | wire.TestStartedEvent
  | wire.TestProgressEvent
  | wire.TestCompletedEvent
  | wire.TestErrorEvent
  | wire.TestCancelledEvent
  | wire.SystemAlertEvent
  | wire.SystemStatusEvent
  | wire.SystemMaintenanceEvent
  | wire.UserNotificationEvent
  | wire.ConnectionInfoEvent;

// -- server frames ------------------------------------------------------------

export type WelcomeFrame = wire.Welcome;
export type BatchFrame = wire.Batch;
export type SubscribedFrame = wire.Subscribed;
export type ReplayedFrame = wire.Replayed;
/**
 * The connection's place against the log (a frame of its own, not an event):
 * `catching_up` while the server reads the log for it (`behind` events known
 * to wait), `live` once it is back on live delivery. `truncated`: retention
 * took events this connection had not received yet.
 */
export type ConnectionInfoFrame = wire.ConnectionInfo;
export type UnsubscribedFrame = wire.Unsubscribed;
export type AckedFrame = wire.Acked;
export type RefreshedFrame = wire.Refreshed;
export type PongFrame = wire.PongReply;
export type PingFrame = wire.PingFrame;
export type TokenExpiringFrame = wire.TokenExpiring;
export type ErrorCode =
  | 'bad_request'
  | 'forbidden'
  | 'rate_limited'
  | 'invalid_token'
  | 'not_found'
  | 'no_client_id';
export type ErrorFrame = wire.Error;

export type ServerFrame =
  | WelcomeFrame
  | EventEnvelope
  | BatchFrame
  | SubscribedFrame
  | ReplayedFrame
  | ConnectionInfoFrame
  | UnsubscribedFrame
  | AckedFrame
  | RefreshedFrame
  | PongFrame
  | PingFrame
  | TokenExpiringFrame
  | ErrorFrame;

// -- client frames ------------------------------------------------------------

/** `latest`: queued `test.progress` events of one test may be replaced by the newest. */
export type SubscribeMessage = wire.Subscribe;
export type UnsubscribeMessage = wire.Unsubscribe;
export type AckMessage = wire.Ack;
export type PongMessage = wire.Pong;
export type PingMessage = wire.Ping;
export type RefreshMessage = wire.Refresh;
export type ClientMessage =
  | SubscribeMessage
  | UnsubscribeMessage
  | AckMessage
  | PongMessage
  | PingMessage
  | RefreshMessage;

/** Reply of `GET /api/v1/events` (section 5). */
export interface PollResponse {
  events: EventEnvelope[];
  next: Offset;
  truncated: boolean;
}

export const SUBPROTOCOL = 'secstream.v1';
export const CLIENT_ID_PATTERN = /^[A-Za-z0-9_-]{1,64}$/;

/** Parse a frame; `null` for anything that is not a JSON object with a string `type`. */
export function parseFrame(text: string): ServerFrame | null {
  let value: unknown;
  try {
    value = JSON.parse(text);
  } catch {
    return null;
  }
  if (typeof value !== 'object' || value === null) return null;
  if (typeof (value as { type?: unknown }).type !== 'string') return null;
  return value as ServerFrame;
}

/** Order of two offsets (`"0"`, `"ms"` or `"ms-seq"`): negative, zero or positive. */
export function compareOffsets(a: Offset, b: Offset): number {
  const [am, as] = splitOffset(a);
  const [bm, bs] = splitOffset(b);
  if (am !== bm) return am < bm ? -1 : 1;
  if (as !== bs) return as < bs ? -1 : 1;
  return 0;
}

function splitOffset(offset: Offset): [bigint, bigint] {
  const dash = offset.indexOf('-');
  try {
    if (dash < 0) return [BigInt(offset), 0n];
    return [BigInt(offset.slice(0, dash)), BigInt(offset.slice(dash + 1))];
  } catch {
    return [0n, 0n];
  }
}

/** Whether `eventType` is covered by a pattern list (exact, `prefix.*` or `*`). */
export function matchesPatterns(patterns: readonly string[], eventType: string): boolean {
  for (const p of patterns) {
    if (p === '*' || p === eventType) return true;
    if (p.endsWith('.*') && eventType.startsWith(p.slice(0, -1))) return true;
  }
  return false;
}
