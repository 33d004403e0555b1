/** Wire frames of contract section 4, mirrored from `secstream/protocol.py`. */

export type EventType =
  | 'test.started'
  | 'test.progress'
  | 'test.completed'
  | 'test.error'
  | 'test.cancelled'
  | 'system.alert'
  | 'system.status'
  | 'system.maintenance'
  | 'user.notification'
  | 'connection.info';

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

export type Priority = 'low' | 'normal' | 'high' | 'critical';
export type Ref = string | number;
export type Offset = string;

/** One event as a client receives it (the envelope). */
export interface EventEnvelope<D = Record<string, unknown>> {
  type: 'event';
  id: Offset;
  event_type: EventType;
  timestamp: string;
  priority: Priority;
  data: D;
  user_id: string | null;
  correlation_id: string | null;
  /** W3C trace context of the publish span (contract section 8), when the server traces. */
  traceparent?: string;
}

// -- server frames ------------------------------------------------------------

export interface WelcomeFrame {
  type: 'welcome';
  connection_id: string;
  user_id: string;
  roles: string[];
  heartbeat_interval: number;
  resume_from: Offset | null;
  server_time: string;
}
export interface BatchFrame {
  type: 'batch';
  events: EventEnvelope[];
}
export interface SubscribedFrame {
  type: 'subscribed';
  ref?: Ref;
  subscription: string;
  event_types: string[];
}
export interface ReplayedFrame {
  type: 'replayed';
  ref?: Ref;
  subscription: string;
  count: number;
  truncated: boolean;
}
/**
 * The connection's place against the log (a frame of its own, not an event):
 * `catching_up` while the server reads the log for it (`behind` events known
 * to wait), `live` once it is back on live delivery. `truncated`: retention
 * took events this connection had not received yet.
 */
export interface ConnectionInfoFrame {
  type: 'connection.info';
  state: 'catching_up' | 'live';
  behind?: number;
  truncated?: boolean;
}
export interface UnsubscribedFrame {
  type: 'unsubscribed';
  ref?: Ref;
  subscription: string;
}
export interface AckedFrame {
  type: 'acked';
  ref?: Ref;
  offset: Offset;
}
export interface RefreshedFrame {
  type: 'refreshed';
  ref?: Ref;
  expires_at?: number;
}
export interface PongFrame {
  type: 'pong';
  ref?: Ref;
}
export interface PingFrame {
  type: 'ping';
  ts: number;
}
export interface TokenExpiringFrame {
  type: 'token.expiring';
  expires_in: number;
}
export type ErrorCode =
  | 'bad_request'
  | 'forbidden'
  | 'rate_limited'
  | 'invalid_token'
  | 'not_found'
  | 'no_client_id';
export interface ErrorFrame {
  type: 'error';
  code: ErrorCode | string;
  message: string;
  ref?: Ref;
}

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

export interface SubscribeMessage {
  type: 'subscribe';
  id?: Ref;
  event_types: string[];
  test_id?: string;
  since?: Offset;
  /** Queued `test.progress` events of one test may be replaced by the newest (state-only widgets). */
  latest?: boolean;
}
export interface UnsubscribeMessage {
  type: 'unsubscribe';
  id?: Ref;
  subscription: string;
}
export interface AckMessage {
  type: 'ack';
  id?: Ref;
  offset: Offset;
}
export interface PongMessage {
  type: 'pong';
  id?: Ref;
}
export interface PingMessage {
  type: 'ping';
  id?: Ref;
}
export interface RefreshMessage {
  type: 'refresh';
  id?: Ref;
  token: string;
}
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
