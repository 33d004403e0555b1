/** The public types of `EventClient`: its options, its status and what it emits. */

import type { BackoffOptions } from './backoff.js';
import type { KeyValueStore } from './clientId.js';
import type { ClientError } from './codes.js';
import type { ConnectionInfoFrame, EventEnvelope, Offset, ServerFrame, WelcomeFrame } from './protocol.js';

export enum ConnectionState {
  Connecting = 'connecting',
  Connected = 'connected',
  Reconnecting = 'reconnecting',
  Disconnected = 'disconnected',
  Error = 'error',
  Polling = 'polling',
}

/** The part of the browser `WebSocket` this client uses (the `ws` package fits too). */
export interface WebSocketLike {
  readonly readyState: number;
  send(data: string): void;
  close(code?: number, reason?: string): void;
  onopen: ((ev: unknown) => void) | null;
  onmessage: ((ev: { data: unknown }) => void) | null;
  onclose: ((ev: { code: number; reason: string }) => void) | null;
  onerror: ((ev: unknown) => void) | null;
}
export type WebSocketConstructor = new (url: string, protocols?: string | string[]) => WebSocketLike;

export type TokenReason = 'connect' | 'reconnect' | 'expiring' | 'expired' | 'unauthorized';
/** Returns a JWT; `reason` says why (anything but `connect`/`reconnect` wants a fresh one). */
export type TokenProvider = (reason: TokenReason) => string | Promise<string>;

export interface EventClientOptions {
  /** WebSocket URL of `/ws`, e.g. `wss://host/ws`. */
  url: string;
  /** Base of the HTTP API for polling; derived from `url` when absent. */
  httpUrl?: string;
  WebSocket?: WebSocketConstructor | null;
  fetch?: typeof fetch;
  getToken: TokenProvider;
  tokenTransport?: 'subprotocol' | 'query';
  /** A durable consumer id; `undefined`: kept in `storage`; `null`: none (no acks). */
  clientId?: string | null;
  storage?: KeyValueStore | null;
  backoff?: Partial<BackoffOptions>;
  /** Extra time past `heartbeat_interval` before a silent socket counts as dead. */
  heartbeatTimeoutMs?: number;
  /** Time an attempt may take to get its `welcome`. */
  welcomeTimeoutMs?: number;
  ackIntervalMs?: number;
  ackEveryEvents?: number;
  /** Consecutive attempts without `welcome` before polling starts. */
  pollAfterFailures?: number;
  pollWaitSeconds?: number;
  dedupCapacity?: number;
  random?: () => number;
}

export interface ClientStatus {
  state: ConnectionState;
  error: ClientError | null;
  /** Consecutive attempts that got no `welcome`. */
  failures: number;
  /** When the next WebSocket attempt starts (epoch ms), if one is scheduled. */
  nextRetryAt: number | null;
  transport: 'websocket' | 'polling' | null;
  connectionId: string | null;
  userId: string | null;
  roles: string[];
  lastEventId: Offset | null;
  /** Where the connection stands against the log (`connection.info`); `live` when not connected. */
  sync: SyncState;
}

/** `catching_up`: the server reads the log for this connection, `behind` events wait. */
export type SyncState = { state: 'live' } | { state: 'catching_up'; behind: number | null };
export const LIVE: SyncState = { state: 'live' };

export interface ReplayResult {
  count: number;
  /** Matching events after `since` are no longer all in the log (retention or the replay limit). */
  truncated: boolean;
}

export interface SubscribeOptions {
  testId?: string;
  /**
   * Replay from here, as given, until this subscription's replay has completed
   * (`replayed`); a reconnect after that resumes from the last processed id.
   */
  since?: Offset;
  /** Queued `test.progress` events of one test may be replaced by the newest (state-only widgets). */
  latest?: boolean;
  /** Called on each `replayed` frame of this subscription. */
  onReplayed?: (result: ReplayResult) => void;
}

export interface Subscription {
  readonly eventTypes: readonly string[];
  readonly testId: string | undefined;
  unsubscribe(): void;
}

export interface EventClientEvents {
  state: ClientStatus;
  event: EventEnvelope;
  welcome: WelcomeFrame;
  /**
   * Events were no longer in the log: a subscription's replay (`replay`, with
   * its `testId` if it has one), a poll (`poll`) or catching up (`catch_up`).
   */
  truncated: { subscription: string | null; testId: string | null; source: 'replay' | 'poll' | 'catch_up' };
  /** A `connection.info` frame. */
  sync: ConnectionInfoFrame;
  /** An `error` frame, or an error the client hit (also reflected in status). */
  error: ClientError;
  /** Every frame the server sends, as text and parsed (what `lastMessage` hooks show). */
  frame: FrameMessage;
}

/** One server frame, shaped like a `MessageEvent` (`data`) with its parsed JSON beside it. */
export interface FrameMessage {
  data: string;
  json: ServerFrame;
  timeStamp: number;
}
