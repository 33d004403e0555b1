/**
 * EventClient: one connection to `GET /ws` (contract section 4) with
 * reconnects, resume, dedup, batched acks, heartbeat watchdog, token refresh,
 * and a long-polling fallback. Framework-agnostic: no React in here.
 */

import { backoffDelay, DEFAULT_BACKOFF, type BackoffOptions } from './backoff';
import { durableClientId, type KeyValueStore } from './clientId';
import {
  describeClose,
  describeHttpStatus,
  NETWORK_UNREACHABLE,
  WEBSOCKET_BLOCKED,
  WS_1006_ABNORMAL_CLOSURE,
  WS_4002_HEARTBEAT_TIMEOUT,
  type ClientError,
} from './codes';
import { Emitter } from './emitter';
import { Poller, type PollOutcome } from './poller';
import {
  CLIENT_ID_PATTERN,
  compareOffsets,
  matchesPatterns,
  parseFrame,
  SUBPROTOCOL,
  type ClientMessage,
  type ConnectionInfoFrame,
  type EventEnvelope,
  type Offset,
  type ServerFrame,
  type WelcomeFrame,
} from './protocol';

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
const LIVE: SyncState = { state: 'live' };

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
}

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

const OPEN = 1;
const ACK_MIN_GAP_MS = 250;
/** Past the server's inbound rate (20/s, burst 40 by default) a refused subscribe is sent again after this. */
const SUBSCRIBE_RETRY_MS = 1000;

export class EventClient {
  private readonly o: Required<
    Omit<EventClientOptions, 'clientId' | 'storage' | 'backoff' | 'httpUrl' | 'WebSocket'>
  > & { backoff: BackoffOptions; httpUrl: string; WebSocket: WebSocketConstructor | null };
  readonly clientId: string | null;
  private readonly emitter = new Emitter<EventClientEvents>();
  private status: ClientStatus;

  private socket: WebSocketLike | null = null;
  private generation = 0;
  private opened = false;
  private welcomed = false;
  /** The subscriptions went out on this connection (after the resume point was known). */
  private subscribed = false;
  private everWelcomed = false;
  private intentional = true;
  private retryAttempt = 0;
  private authRefusals = 0;
  private forceToken: TokenReason | null = null;
  private refreshing = false;

  private retryTimer: ReturnType<typeof setTimeout> | null = null;
  private welcomeTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatTimer: ReturnType<typeof setTimeout> | null = null;
  private heartbeatMs = 0;
  private ackTimer: ReturnType<typeof setTimeout> | null = null;

  private readonly subs = new Map<number, LocalSubscription>();
  private readonly pendingRefs = new Map<string, LocalSubscription>();
  private nextKey = 1;
  private nextRef = 1;

  private readonly seen = new Set<Offset>();
  private lastId: Offset | null = null;
  private lastAcked: Offset | null = null;
  private lastAckAt = 0;
  private unacked = 0;

  private readonly poller: Poller;
  private pollCursor: Offset | null = null;
  private pollWorking = false;
  private pollEverything = false;

  constructor(options: EventClientOptions) {
    const ctor =
      options.WebSocket === undefined
        ? ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? null)
        : options.WebSocket;
    this.o = {
      url: options.url,
      httpUrl: options.httpUrl ?? httpBaseOf(options.url),
      WebSocket: ctor,
      fetch: options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args)),
      getToken: options.getToken,
      tokenTransport: options.tokenTransport ?? 'subprotocol',
      backoff: { ...DEFAULT_BACKOFF, ...options.backoff },
      heartbeatTimeoutMs: options.heartbeatTimeoutMs ?? 10_000,
      welcomeTimeoutMs: options.welcomeTimeoutMs ?? 10_000,
      ackIntervalMs: options.ackIntervalMs ?? 500,
      ackEveryEvents: options.ackEveryEvents ?? 100,
      pollAfterFailures: options.pollAfterFailures ?? 3,
      pollWaitSeconds: options.pollWaitSeconds ?? 25,
      dedupCapacity: options.dedupCapacity ?? 50_000,
      random: options.random ?? Math.random,
    };
    if (options.clientId === null) this.clientId = null;
    else if (options.clientId !== undefined) {
      if (!CLIENT_ID_PATTERN.test(options.clientId)) {
        throw new RangeError('clientId must match [A-Za-z0-9_-]{1,64}');
      }
      this.clientId = options.clientId;
    } else {
      const store =
        options.storage === undefined
          ? ((globalThis as { localStorage?: KeyValueStore }).localStorage ?? null)
          : options.storage;
      this.clientId = durableClientId(store);
    }
    this.status = {
      state: ConnectionState.Disconnected,
      error: null,
      failures: 0,
      nextRetryAt: null,
      transport: null,
      connectionId: null,
      userId: null,
      roles: [],
      lastEventId: null,
      sync: LIVE,
    };
    this.poller = new Poller({
      baseUrl: this.o.httpUrl,
      fetch: this.o.fetch,
      getToken: () => this.token(this.takeForcedReason('reconnect')),
      cursor: () => this.resumeOffset(),
      types: () => this.patternUnion(),
      waitSeconds: this.o.pollWaitSeconds,
      backoff: this.o.backoff,
      random: this.o.random,
      onOutcome: (outcome) => this.onPollOutcome(outcome),
    });
  }

  // -- public API -------------------------------------------------------------

  getStatus(): ClientStatus {
    return this.status;
  }

  get state(): ConnectionState {
    return this.status.state;
  }

  get lastEventId(): Offset | null {
    return this.lastId;
  }

  on<K extends keyof EventClientEvents>(name: K, fn: (payload: EventClientEvents[K]) => void): () => void {
    return this.emitter.on(name, fn);
  }

  connect(): void {
    if (!this.intentional) return; // already running
    this.intentional = false;
    this.authRefusals = 0;
    if (!this.o.WebSocket) {
      this.setStatus({ error: WEBSOCKET_BLOCKED });
      this.startPolling();
      return;
    }
    void this.open();
  }

  /** Close on purpose: state `disconnected`, no retries. */
  disconnect(): void {
    this.intentional = true;
    this.clearTimers();
    this.stopPolling();
    this.flushAck();
    this.dropSocket(1000, 'client disconnect');
    this.setStatus({
      state: ConnectionState.Disconnected,
      error: null,
      nextRetryAt: null,
      transport: null,
    });
  }

  /** Try the WebSocket now (the retry button), from any state but `connected`. */
  retryNow(): void {
    if (this.status.state === ConnectionState.Connected) return;
    if (this.intentional || this.status.state === ConnectionState.Error) {
      this.intentional = false;
      this.authRefusals = 0;
      this.forceToken = this.status.state === ConnectionState.Error ? 'unauthorized' : null;
    }
    if (this.socket && !this.welcomed) return; // an attempt is in flight
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
    if (!this.o.WebSocket) {
      this.startPolling();
      return;
    }
    void this.open();
  }

  subscribe(
    eventTypes: readonly string[],
    listener: (event: EventEnvelope) => void,
    options: SubscribeOptions = {},
  ): Subscription {
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
    if (this.welcomed && this.subscribed) this.sendSubscribe(sub, this.sinceFor(sub, this.resumeOffset() ?? undefined));
    return {
      eventTypes: sub.eventTypes,
      testId: sub.testId,
      unsubscribe: () => this.removeSubscription(sub),
    };
  }

  // -- connection lifecycle ------------------------------------------------------

  private async open(): Promise<void> {
    const ctor = this.o.WebSocket;
    if (!ctor || this.intentional) return;
    const gen = ++this.generation;
    this.retryTimer = null;
    this.opened = false;
    this.welcomed = false;
    if (!this.pollWorking) {
      const first = !this.everWelcomed && this.status.failures === 0;
      this.setStatus({
        state: first ? ConnectionState.Connecting : ConnectionState.Reconnecting,
        nextRetryAt: null,
      });
    } else {
      this.setStatus({ nextRetryAt: null });
    }
    let token: string;
    try {
      token = await this.token(this.takeForcedReason(this.everWelcomed ? 'reconnect' : 'connect'));
    } catch (err) {
      if (gen !== this.generation || this.intentional) return;
      this.fail({
        kind: 'auth',
        code: null,
        message: `Could not get a sign-in token (${errorText(err)}).`,
        action: 'Sign in again.',
      });
      return;
    }
    if (gen !== this.generation || this.intentional) return;
    let socket: WebSocketLike;
    try {
      socket = this.construct(ctor, token);
    } catch {
      this.afterClose(gen, WS_1006_ABNORMAL_CLOSURE, '');
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (gen === this.generation) this.opened = true;
    };
    socket.onmessage = (ev) => {
      if (gen === this.generation) this.onFrame(ev.data);
    };
    socket.onerror = () => undefined; // a close event always follows
    socket.onclose = (ev) => this.afterClose(gen, ev.code, ev.reason);
    this.welcomeTimer = setTimeout(() => {
      if (gen !== this.generation || this.welcomed) return;
      this.dropSocket(4000, 'no welcome');
      this.afterClose(gen, WS_1006_ABNORMAL_CLOSURE, 'no welcome');
    }, this.o.welcomeTimeoutMs);
  }

  private construct(ctor: WebSocketConstructor, token: string): WebSocketLike {
    const params = new URLSearchParams();
    if (this.clientId) params.set('client_id', this.clientId);
    const join = this.o.url.includes('?') ? '&' : '?';
    if (this.o.tokenTransport === 'subprotocol') {
      const url = params.size ? `${this.o.url}${join}${params.toString()}` : this.o.url;
      try {
        return new ctor(url, [SUBPROTOCOL, `bearer.${token}`]);
      } catch (err) {
        if (!(err instanceof Error) || err.name !== 'SyntaxError') throw err;
        // a token the browser will not put in a subprotocol: use the query
      }
    }
    params.set('token', token);
    return new ctor(`${this.o.url}${join}${params.toString()}`, [SUBPROTOCOL]);
  }

  private afterClose(gen: number, code: number, reason: string): void {
    if (gen !== this.generation) return;
    this.generation++; // later callbacks of this socket are stale
    const wasOpened = this.opened;
    const wasWelcomed = this.welcomed;
    this.socket = null;
    this.welcomed = false;
    this.opened = false;
    this.clearConnectionTimers();
    this.setStatus({ connectionId: null, transport: this.pollWorking ? 'polling' : null, sync: LIVE });
    if (this.intentional) return;
    const info = describeClose(code, reason);
    if (info.refreshToken) this.forceToken = 'expired';
    if (wasWelcomed) {
      this.setStatus({ error: info.error, failures: 0 });
      this.emitter.emit('error', info.error);
      this.scheduleRetry(info.minDelayMs);
      return;
    }
    const failures = this.status.failures + 1;
    this.setStatus({ failures });
    if (failures >= this.o.pollAfterFailures) this.startPolling();
    if (wasOpened || this.poller.active) {
      // accepted then dropped, or polling already tells us about HTTP
      this.setStatus({ error: this.pollWorking ? WEBSOCKET_BLOCKED : info.error });
      this.scheduleRetry(info.minDelayMs);
      return;
    }
    void this.probe(this.generation);
  }

  /** The handshake failed and a browser hides why: ask the HTTP API with the same token. */
  private async probe(gen: number): Promise<void> {
    let status: number | null = null;
    try {
      const token = await this.token('reconnect');
      const res = await this.o.fetch(`${this.o.httpUrl}/api/v1/events?types=*`, {
        headers: { Authorization: `Bearer ${token}` },
        cache: 'no-store',
      });
      status = res.status;
    } catch {
      status = null;
    }
    if (gen !== this.generation || this.intentional) return;
    if (status === 401 || status === 403) {
      if (this.authRefused(status)) return;
      // The server answered: try the fresh token now, not after another backoff.
      this.scheduleRetry(0, true);
      return;
    } else if (status !== null && status >= 200 && status < 300) {
      this.authRefusals = 0;
      this.setStatus({ error: WEBSOCKET_BLOCKED });
    } else if (status === null) {
      this.setStatus({ error: NETWORK_UNREACHABLE });
    } else {
      this.setStatus({ error: describeHttpStatus(status) });
    }
    this.scheduleRetry(0);
  }

  /** A 401/403: try once with a fresh token, then stop and ask the person. True when stopped. */
  private authRefused(status: number): boolean {
    this.authRefusals++;
    if (status === 401 && this.authRefusals < 2) {
      this.forceToken = 'unauthorized';
      return false;
    }
    this.fail(describeHttpStatus(status));
    return true;
  }

  private fail(error: ClientError): void {
    this.clearTimers();
    this.stopPolling();
    this.dropSocket(1000, 'auth');
    this.intentional = true;
    this.setStatus({ state: ConnectionState.Error, error, nextRetryAt: null, transport: null });
    this.emitter.emit('error', error);
  }

  private scheduleRetry(minDelayMs: number, now = false): void {
    if (this.intentional || this.retryTimer !== null) return;
    const attempt = this.retryAttempt++;
    if (attempt >= this.o.backoff.maxAttempts) {
      this.clearTimers();
      this.stopPolling();
      this.intentional = true;
      this.setStatus({
        state: ConnectionState.Disconnected,
        nextRetryAt: null,
        transport: null,
        error: {
          kind: this.status.error?.kind ?? 'network',
          code: this.status.error?.code ?? null,
          message: 'Gave up reconnecting after too many attempts.',
          action: 'Press Retry when the server is reachable again.',
        },
      });
      return;
    }
    const delay = now ? minDelayMs : Math.max(minDelayMs, backoffDelay(attempt, this.o.backoff, this.o.random));
    this.retryTimer = setTimeout(() => void this.open(), delay);
    this.setStatus({
      state: this.pollWorking ? ConnectionState.Polling : ConnectionState.Reconnecting,
      nextRetryAt: Date.now() + delay,
    });
  }

  private onWelcome(frame: WelcomeFrame): void {
    this.welcomed = true;
    this.everWelcomed = true;
    this.retryAttempt = 0;
    this.authRefusals = 0;
    if (this.welcomeTimer !== null) clearTimeout(this.welcomeTimer);
    this.welcomeTimer = null;
    const from = this.resumeOffset();
    this.stopPolling();
    this.heartbeatMs = Math.max(1, frame.heartbeat_interval) * 1000 + this.o.heartbeatTimeoutMs;
    this.armHeartbeat();
    this.setStatus({
      state: ConnectionState.Connected,
      error: null,
      failures: 0,
      nextRetryAt: null,
      transport: 'websocket',
      connectionId: frame.connection_id,
      userId: frame.user_id,
      roles: frame.roles,
      sync: LIVE,
    });
    this.emitter.emit('welcome', frame);
    this.pendingRefs.clear();
    this.subscribed = false;
    if (from === null && frame.resume_from === null) {
      // Nothing to resume from yet: pin "now" as an offset, so that a reconnect
      // before the first event still resumes without a gap.
      const gen = this.generation;
      void this.endOfLog().then((end) => {
        if (gen !== this.generation || !this.welcomed) return;
        if (end !== null && this.lastId === null && this.pollCursor === null) this.pollCursor = end;
        this.subscribeAll(this.resumeOffset() ?? undefined);
      });
    } else {
      this.subscribeAll(from ?? undefined);
    }
    if (this.lastId !== null && this.lastId !== this.lastAcked) this.scheduleAck();
  }

  private subscribeAll(from: Offset | undefined): void {
    this.subscribed = true;
    for (const sub of this.subs.values()) {
      sub.serverId = null;
      this.sendSubscribe(sub, this.sinceFor(sub, from));
    }
  }

  /** A replay asked for runs from its own `since` until it has completed once; then from `from`. */
  private sinceFor(sub: LocalSubscription, from: Offset | undefined): Offset | undefined {
    return sub.since !== undefined && !sub.replayDone ? sub.since : (from ?? sub.since);
  }

  /** `next` of `GET /api/v1/events` without `since`: the current end of the log. */
  private async endOfLog(): Promise<Offset | null> {
    try {
      const token = await this.token('reconnect');
      const res = await this.o.fetch(`${this.o.httpUrl}/api/v1/events?types=*`, {
        headers: { Authorization: `Bearer ${token}` },
        cache: 'no-store',
      });
      if (!res.ok) return null;
      const body = (await res.json()) as { next?: unknown };
      return typeof body.next === 'string' ? body.next : null;
    } catch {
      return null;
    }
  }

  // -- frames ------------------------------------------------------------------

  private onFrame(raw: unknown): void {
    const frame = typeof raw === 'string' ? parseFrame(raw) : null;
    if (!frame) return;
    this.dispatch(frame);
  }

  private dispatch(frame: ServerFrame): void {
    switch (frame.type) {
      case 'welcome':
        this.onWelcome(frame);
        break;
      case 'event':
        this.handleEvent(frame);
        break;
      case 'batch':
        for (const event of frame.events ?? []) this.handleEvent({ ...event, type: 'event' });
        break;
      case 'ping':
        this.send({ type: 'pong' });
        this.armHeartbeat();
        break;
      case 'token.expiring':
        void this.refreshToken();
        break;
      case 'subscribed': {
        const sub = frame.ref !== undefined ? this.pendingRefs.get(String(frame.ref)) : undefined;
        if (!sub) break;
        this.pendingRefs.delete(String(frame.ref));
        sub.serverId = frame.subscription;
        if (sub.removed) this.send({ type: 'unsubscribe', subscription: frame.subscription });
        break;
      }
      case 'replayed':
        this.onReplayed(frame.subscription, { count: frame.count, truncated: frame.truncated === true });
        break;
      case 'connection.info':
        this.onConnectionInfo(frame);
        break;
      case 'error': {
        const refused = frame.ref !== undefined ? this.pendingRefs.get(String(frame.ref)) : undefined;
        if (frame.ref !== undefined) this.pendingRefs.delete(String(frame.ref));
        if (refused && frame.code === 'rate_limited') this.retrySubscribe(refused);
        const kind = frame.code === 'invalid_token' || frame.code === 'forbidden' ? 'auth' : 'server';
        this.emitter.emit('error', {
          kind,
          code: frame.code,
          message: frame.message,
          action:
            frame.code === 'invalid_token'
              ? 'The new token was refused; you may need to sign in again.'
              : 'No action needed unless this keeps happening.',
        });
        break;
      }
      default:
        break; // pong, acked, refreshed, unsubscribed: nothing to do
    }
  }

  private onReplayed(subscription: string, result: ReplayResult): void {
    let sub: LocalSubscription | undefined;
    for (const s of this.subs.values()) if (s.serverId === subscription) sub = s;
    if (result.truncated) {
      this.emitter.emit('truncated', { subscription, testId: sub?.testId ?? null, source: 'replay' });
    }
    if (!sub || sub.removed) return;
    sub.replayDone = true;
    try {
      sub.onReplayed?.(result);
    } catch (err) {
      console.error('secstream onReplayed callback failed', err);
    }
  }

  private onConnectionInfo(frame: ConnectionInfoFrame): void {
    const sync: SyncState =
      frame.state === 'catching_up'
        ? { state: 'catching_up', behind: typeof frame.behind === 'number' ? frame.behind : null }
        : LIVE;
    this.setStatus({ sync });
    this.emitter.emit('sync', frame);
    if (frame.truncated === true) {
      this.emitter.emit('truncated', { subscription: null, testId: null, source: 'catch_up' });
    }
  }

  private handleEvent(event: EventEnvelope): void {
    if (typeof event.id !== 'string' || this.seen.has(event.id)) return;
    this.seen.add(event.id);
    if (this.seen.size > this.o.dedupCapacity) {
      const oldest = this.seen.values().next().value;
      if (oldest !== undefined) this.seen.delete(oldest);
    }
    if (this.lastId === null || compareOffsets(event.id, this.lastId) > 0) {
      this.lastId = event.id;
      this.status = { ...this.status, lastEventId: event.id }; // no emit per event
    }
    this.unacked++;
    this.scheduleAck();
    this.emitter.emit('event', event);
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

  private send(message: ClientMessage): boolean {
    const socket = this.socket;
    if (!socket || socket.readyState !== OPEN) return false;
    socket.send(JSON.stringify(message));
    return true;
  }

  private sendSubscribe(sub: LocalSubscription, since: Offset | undefined): void {
    const ref = `s${this.nextRef++}`;
    this.pendingRefs.set(ref, sub);
    this.send({
      type: 'subscribe',
      id: ref,
      event_types: sub.eventTypes,
      ...(sub.testId !== undefined ? { test_id: sub.testId } : {}),
      ...(since !== undefined ? { since } : {}),
      ...(sub.latest ? { latest: true } : {}),
    });
  }

  /** A subscribe refused for the rate: send it again a little later on the same connection. */
  private retrySubscribe(sub: LocalSubscription): void {
    const gen = this.generation;
    setTimeout(() => {
      if (gen !== this.generation || !this.welcomed || sub.removed || sub.serverId !== null) return;
      if (!this.subs.has(sub.key)) return;
      this.sendSubscribe(sub, this.sinceFor(sub, this.resumeOffset() ?? undefined));
    }, SUBSCRIBE_RETRY_MS);
  }

  private removeSubscription(sub: LocalSubscription): void {
    if (sub.removed) return;
    sub.removed = true;
    this.subs.delete(sub.key);
    if (sub.serverId !== null) this.send({ type: 'unsubscribe', subscription: sub.serverId });
  }

  // -- acks ----------------------------------------------------------------------

  private scheduleAck(): void {
    if (!this.clientId || !this.welcomed) return;
    if (this.unacked >= this.o.ackEveryEvents && Date.now() - this.lastAckAt >= ACK_MIN_GAP_MS) {
      this.flushAck();
      return;
    }
    if (this.ackTimer === null) {
      this.ackTimer = setTimeout(() => {
        this.ackTimer = null;
        this.flushAck();
      }, this.o.ackIntervalMs);
    }
  }

  private flushAck(): void {
    if (this.ackTimer !== null) clearTimeout(this.ackTimer);
    this.ackTimer = null;
    if (!this.clientId || !this.welcomed || this.lastId === null) return;
    // the resume point, not the last id: a history replay's ids are older than it
    const offset = this.resumeOffset() ?? this.lastId;
    if (this.lastAcked === offset) return;
    if (this.send({ type: 'ack', id: `a${this.nextRef++}`, offset })) {
      this.lastAcked = offset;
      this.lastAckAt = Date.now();
      this.unacked = 0;
    }
  }

  // -- heartbeat and token -----------------------------------------------------------

  private armHeartbeat(): void {
    if (this.heartbeatTimer !== null) clearTimeout(this.heartbeatTimer);
    const gen = this.generation;
    this.heartbeatTimer = setTimeout(() => {
      if (gen !== this.generation) return;
      this.dropSocket(4000, 'heartbeat timeout');
      this.afterClose(gen, WS_4002_HEARTBEAT_TIMEOUT, 'no ping from server');
    }, this.heartbeatMs);
  }

  private async refreshToken(): Promise<void> {
    if (this.refreshing) return; // the server may repeat the warning while a refresh is on its way
    this.refreshing = true;
    try {
      const token = await this.token('expiring');
      this.send({ type: 'refresh', id: `r${this.nextRef++}`, token });
    } catch (err) {
      this.emitter.emit('error', {
        kind: 'auth',
        code: null,
        message: `Could not renew the sign-in token (${errorText(err)}).`,
        action: 'The connection will reconnect with a new token when the old one expires.',
      });
    } finally {
      this.refreshing = false;
    }
  }

  private async token(reason: TokenReason): Promise<string> {
    return await this.o.getToken(reason);
  }

  private takeForcedReason(fallback: TokenReason): TokenReason {
    const reason = this.forceToken ?? fallback;
    this.forceToken = null;
    return reason;
  }

  // -- polling -------------------------------------------------------------------

  private startPolling(): void {
    if (this.poller.active || this.intentional) return;
    this.poller.start();
  }

  private stopPolling(): void {
    this.poller.stop();
    this.pollWorking = false;
  }

  private onPollOutcome(outcome: PollOutcome): boolean {
    if (this.intentional || this.welcomed) return false;
    if (outcome.kind === 'ok') {
      this.authRefusals = 0;
      const first = !this.pollWorking;
      this.pollWorking = true;
      if (first || this.status.state !== ConnectionState.Polling) {
        this.setStatus({ state: ConnectionState.Polling, transport: 'polling', error: WEBSOCKET_BLOCKED });
      }
      const { events, next, truncated } = outcome.response;
      for (const event of events) this.handleEvent(event);
      if (next && (this.pollCursor === null || compareOffsets(next, this.pollCursor) > 0)) {
        this.pollCursor = next;
      }
      if (truncated) this.emitter.emit('truncated', { subscription: null, testId: null, source: 'poll' });
      if (events.length) this.setStatus({});
      return true;
    }
    this.pollWorking = false;
    if (outcome.kind === 'http' && outcome.status === 403 && !this.pollEverything) {
      // an exact type the role may not receive refuses the whole poll: ask for all
      // the role may receive and filter here, as subscriptions do anyway
      this.pollEverything = true;
      return true;
    }
    if (outcome.kind === 'http' && (outcome.status === 401 || outcome.status === 403)) {
      if (this.authRefused(outcome.status)) return false;
    }
    const error = outcome.kind === 'network' ? NETWORK_UNREACHABLE : describeHttpStatus(outcome.status);
    this.setStatus({
      state: this.status.state === ConnectionState.Polling ? ConnectionState.Reconnecting : this.status.state,
      transport: null,
      error,
    });
    return true;
  }

  // -- helpers ------------------------------------------------------------------

  /**
   * Where a new subscription or poll resumes: the newer of the last processed id
   * and the poll cursor (the end of the log pinned at start, or the last poll's
   * `next`). A history replay brings ids older than that cursor, and resuming
   * from one of them would replay everything since.
   */
  private resumeOffset(): Offset | null {
    const last = this.lastId;
    const cursor = this.pollCursor;
    if (last === null || cursor === null) return last ?? cursor;
    return compareOffsets(last, cursor) >= 0 ? last : cursor;
  }

  private patternUnion(): string[] {
    if (this.pollEverything) return ['*'];
    const all = new Set<string>();
    for (const sub of this.subs.values()) for (const p of sub.eventTypes) all.add(p);
    return all.size ? [...all] : ['*'];
  }

  private dropSocket(code: number, reason: string): void {
    const socket = this.socket;
    this.socket = null;
    if (!socket) return;
    socket.onopen = null;
    socket.onmessage = null;
    socket.onclose = null;
    try {
      socket.close(code, reason);
    } catch {
      // already closing
    }
  }

  private clearConnectionTimers(): void {
    for (const t of [this.welcomeTimer, this.heartbeatTimer, this.ackTimer]) if (t !== null) clearTimeout(t);
    this.welcomeTimer = this.heartbeatTimer = this.ackTimer = null;
  }

  private clearTimers(): void {
    this.clearConnectionTimers();
    if (this.retryTimer !== null) clearTimeout(this.retryTimer);
    this.retryTimer = null;
  }

  private setStatus(patch: Partial<ClientStatus>): void {
    this.status = { ...this.status, ...patch, lastEventId: this.lastId };
    this.emitter.emit('state', this.status);
  }
}

export function httpBaseOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = u.pathname.replace(/\/ws\/?$/, '') || '/';
  u.search = '';
  return u.toString().replace(/\/$/, '');
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
