/**
 * EventClient: one connection to `GET /ws` (contract section 4) with
 * reconnects, resume, dedup, batched acks, heartbeat watchdog, token refresh,
 * and a long-polling fallback. Framework-agnostic: no React in here.
 *
 * Its state is one value (`status.ts`), changed only through `transition`; the
 * parts around it live in their own files: acks (`acks.ts`), the resume point
 * and end of the log (`resume.ts`), polling (`polling.ts`), tokens
 * (`tokens.ts`), subscriptions (`subscriptions.ts`) and the socket (`socket.ts`).
 */

import { AckBatcher } from './acks.js';
import { describeClose, describeHttpStatus, describeProbe, gaveUp, tokenFailure, type ClientError } from './codes.js';
import { WEBSOCKET_BLOCKED, WS_1006_ABNORMAL_CLOSURE, WS_4002_HEARTBEAT_TIMEOUT } from './codes.js';
import { Emitter } from './emitter.js';
import { dispatchFrame, sendableText, type FrameHost, type SendableFrame } from './frames.js';
import { clientIdOf, INITIAL_STATUS, resolveOptions, type ResolvedOptions } from './options.js';
import { PollingFallback } from './polling.js';
import { parseFrame, type ClientMessage, type EventEnvelope, type Offset, type WelcomeFrame } from './protocol.js';
import { askLog, ResumePoint } from './resume.js';
import { dropSocket, OPEN, openSocket } from './socket.js';
import { StatusMachine } from './status.js';
import { Subscriptions } from './subscriptions.js';
import { ClientTimers } from './timers.js';
import { TokenSource } from './tokens.js';
import { ConnectionState, LIVE, type ClientStatus, type EventClientEvents, type EventClientOptions } from './types.js';
import type { FrameMessage, SubscribeOptions, Subscription, WebSocketLike } from './types.js';

export * from './types.js';
export { httpBaseOf } from './socket.js';
export { IllegalTransition, TRANSITIONS } from './status.js';
export type { SendableFrame } from './frames.js';

const S = ConnectionState;

export class EventClient {
  private readonly o: ResolvedOptions;
  readonly clientId: string | null;
  /** The last frame the server sent; a `frame` event tells when it changes. */
  lastFrame: FrameMessage | null = null;
  private readonly emitter = new Emitter<EventClientEvents>();
  private readonly machine: StatusMachine;
  private readonly tokens: TokenSource;
  private readonly resume: ResumePoint;
  private readonly acks: AckBatcher;
  private readonly subs: Subscriptions;
  private readonly polling: PollingFallback;
  private readonly frames: FrameHost;

  private socket: WebSocketLike | null = null;
  /** Bumped for every socket: callbacks of an older one are ignored. */
  private generation = 0;
  /** The socket of this generation opened (a refused handshake never does). */
  private openedGeneration = -1;
  /** The subscriptions went out on this generation (after the resume point was known). */
  private subscribedGeneration = -1;
  private welcomes = 0;
  private authRefusals = 0;
  private nextRef = 1;
  private readonly timers: ClientTimers;
  private heartbeatMs = 0;

  constructor(options: EventClientOptions) {
    this.o = resolveOptions(options);
    this.clientId = clientIdOf(options);
    this.machine = new StatusMachine(INITIAL_STATUS, (status) => this.emitter.emit('state', status));
    this.timers = new ClientTimers(this.o.backoff, this.o.random);
    this.tokens = new TokenSource(options.getToken);
    this.resume = new ResumePoint(this.o.dedupCapacity);
    this.subs = new Subscriptions((m) => this.send(m), (prefix) => `${prefix}${this.nextRef++}`);
    this.acks = new AckBatcher({
      intervalMs: this.o.ackIntervalMs,
      everyEvents: this.o.ackEveryEvents,
      ready: () => this.clientId !== null && this.machine.state === S.Connected,
      // the resume point, not the last id: a history replay's ids are older than it
      offset: () => (this.resume.lastId === null ? null : this.resume.offset()),
      send: (m) => this.send(m),
      ref: () => `a${this.nextRef++}`,
    });
    this.polling = new PollingFallback(
      { httpUrl: this.o.httpUrl, fetch: this.o.fetch, waitSeconds: this.o.pollWaitSeconds, backoff: this.o.backoff, random: this.o.random },
      {
        wanted: () => !this.machine.stopped && this.machine.state !== S.Connected,
        status: () => this.machine.status,
        transition: (to, patch) => this.machine.transition(to, patch),
        token: () => this.tokens.next('reconnect'),
        cursor: () => this.resume.offset(),
        patterns: () => this.subs.patterns(),
        deliver: (events, next) => {
          this.authRefusals = 0;
          for (const event of events) this.handleEvent(event);
          if (next) this.resume.advance(next);
          this.machine.publish();
        },
        truncated: () => this.emitter.emit('truncated', { subscription: null, testId: null, source: 'poll' }),
        authRefused: (status) => {
          if (this.authRefused(status)) return true;
          // The server answered, so it is back: the socket tries now with the fresh token
          // instead of waiting out its backoff (a restart of a demo server, a rotated key).
          if (!this.socket) {
            this.timers.cancelRetry();
            this.scheduleRetry(0, true);
          }
          return false;
        },
      },
    );
    this.frames = {
      emitter: this.emitter,
      subs: this.subs,
      welcome: (frame) => this.onWelcome(frame),
      event: (event) => this.handleEvent(event),
      ping: () => {
        this.send({ type: 'pong' });
        this.armHeartbeat();
      },
      expiring: () =>
        void this.tokens.refresh(
          (token) => this.send({ type: 'refresh', id: `r${this.nextRef++}`, token }),
          (err) => this.emitter.emit('error', tokenFailure(err, true)),
        ),
      sync: (sync) => this.machine.update({ sync }),
      retrySubscribe: (sub) => {
        const gen = this.generation;
        const same = () => gen === this.generation && this.machine.state === S.Connected;
        this.subs.retryLater(sub, same, () => this.resume.offset() ?? undefined);
      },
    };
  }

  // -- public API -------------------------------------------------------------

  getStatus(): ClientStatus {
    return this.machine.status;
  }

  get state(): ConnectionState {
    return this.machine.state;
  }

  get lastEventId(): Offset | null {
    return this.resume.lastId;
  }

  on<K extends keyof EventClientEvents>(name: K, fn: (payload: EventClientEvents[K]) => void): () => void {
    return this.emitter.on(name, fn);
  }

  connect(): void {
    if (!this.machine.stopped) return; // already running
    this.authRefusals = 0;
    this.start();
  }

  /** Close on purpose: state `disconnected`, no retries. */
  disconnect(): void {
    this.acks.flush();
    this.clearTimers();
    this.polling.stop();
    this.dropSocket(1000, 'client disconnect');
    this.machine.transition(S.Disconnected, { error: null, nextRetryAt: null, transport: null });
  }

  /** Try the WebSocket now (the retry button), from any state but `connected`. */
  retryNow(): void {
    const state = this.machine.state;
    if (state === S.Connected) return;
    if (this.machine.stopped) {
      this.authRefusals = 0;
      this.tokens.force(state === S.Error ? 'unauthorized' : null);
      this.start();
      return;
    }
    if (this.socket) return; // an attempt is in flight
    this.timers.cancelRetry();
    if (!this.o.WebSocket) this.polling.start();
    else void this.open();
  }

  /**
   * The application renewed its token before the server warned (an OpenID Connect
   * sign-in renews on its own schedule): ask the token provider with reason
   * `expiring` and send the answer as `refresh` on the open socket, without
   * reconnecting. Shares the path of `token.expiring`, so a renewal and a warning
   * that arrive together send one `refresh`. Nothing happens when not connected:
   * the next connection asks the provider anyway.
   */
  refreshToken(): void {
    if (this.machine.state !== S.Connected) return;
    this.frames.expiring();
  }

  /** Send `ping`, `ack` or `refresh` (TypeError for others); false when not connected. */
  sendFrame(message: SendableFrame): boolean {
    return this.machine.state === S.Connected && this.send(message, sendableText(message));
  }

  subscribe(
    eventTypes: readonly string[],
    listener: (event: EventEnvelope) => void,
    options: SubscribeOptions = {},
  ): Subscription {
    const { sub, handle } = this.subs.add(eventTypes, listener, options);
    if (this.machine.state === S.Connected && this.subscribedGeneration === this.generation) {
      this.subs.sendOne(sub, this.resume.offset() ?? undefined);
    }
    return handle;
  }

  // -- connection lifecycle ------------------------------------------------------

  /** Out of `disconnected`/`error`: the WebSocket, or polling when there is none. */
  private start(): void {
    const first = this.welcomes === 0 && this.machine.status.failures === 0;
    if (!this.o.WebSocket) {
      this.machine.transition(first ? S.Connecting : S.Reconnecting, { error: WEBSOCKET_BLOCKED });
      this.polling.start();
      return;
    }
    this.machine.transition(first ? S.Connecting : S.Reconnecting, { nextRetryAt: null });
    void this.open();
  }

  private async open(): Promise<void> {
    const ctor = this.o.WebSocket;
    if (!ctor || this.machine.stopped) return;
    const gen = ++this.generation;
    this.timers.cancelRetry();
    const state = this.machine.state;
    this.machine.transition(state === S.Polling || state === S.Connecting ? state : S.Reconnecting, { nextRetryAt: null });
    let token: string;
    try {
      token = await this.tokens.next(this.welcomes > 0 ? 'reconnect' : 'connect');
    } catch (err) {
      if (gen !== this.generation || this.machine.stopped) return;
      this.fail(tokenFailure(err, false));
      return;
    }
    if (gen !== this.generation || this.machine.stopped) return;
    let socket: WebSocketLike;
    try {
      socket = openSocket(ctor, this.o.url, token, this.clientId, this.o.tokenTransport);
    } catch {
      this.afterClose(gen, WS_1006_ABNORMAL_CLOSURE, '');
      return;
    }
    this.socket = socket;
    socket.onopen = () => {
      if (gen === this.generation) this.openedGeneration = gen;
    };
    socket.onmessage = (ev) => {
      const frame = gen === this.generation && typeof ev.data === 'string' ? parseFrame(ev.data) : null;
      if (!frame) return;
      this.lastFrame = { data: ev.data as string, json: frame, timeStamp: Date.now() };
      this.emitter.emit('frame', this.lastFrame);
      dispatchFrame(frame, this.frames);
    };
    socket.onerror = () => undefined; // a close event always follows
    socket.onclose = (ev) => this.afterClose(gen, ev.code, ev.reason);
    this.timers.waitForWelcome(this.o.welcomeTimeoutMs, () => {
      if (gen !== this.generation || this.machine.state === S.Connected) return;
      this.dropSocket(4000, 'no welcome');
      this.afterClose(gen, WS_1006_ABNORMAL_CLOSURE, 'no welcome');
    });
  }

  private afterClose(gen: number, code: number, reason: string): void {
    if (gen !== this.generation) return;
    this.generation++; // later callbacks of this socket are stale
    const wasOpened = this.openedGeneration === gen;
    const wasWelcomed = this.machine.state === S.Connected;
    this.socket = null;
    this.timers.clearConnection();
    this.acks.cancel();
    const polling = this.machine.state === S.Polling;
    const gone = { connectionId: null, transport: polling ? ('polling' as const) : null, sync: LIVE };
    if (this.machine.stopped) {
      this.machine.update(gone);
      return;
    }
    const info = describeClose(code, reason);
    if (info.refreshToken) this.tokens.force('expired');
    if (wasWelcomed) {
      this.machine.transition(S.Reconnecting, { ...gone, error: info.error, failures: 0 });
      this.emitter.emit('error', info.error);
      this.scheduleRetry(info.minDelayMs);
      return;
    }
    const failures = this.machine.status.failures + 1;
    this.machine.update({ ...gone, failures });
    if (failures >= this.o.pollAfterFailures) this.polling.start();
    if (wasOpened || this.polling.active) {
      // accepted then dropped, or polling already tells us about HTTP
      this.machine.update({ error: this.machine.state === S.Polling ? WEBSOCKET_BLOCKED : info.error });
      this.scheduleRetry(info.minDelayMs);
      return;
    }
    void this.probe(this.generation);
  }

  /** The handshake failed and a browser hides why: ask the HTTP API with the same token. */
  private async probe(gen: number): Promise<void> {
    const { status } = await askLog(this.o.httpUrl, this.o.fetch, () => this.tokens.ask('reconnect'));
    if (gen !== this.generation || this.machine.stopped) return;
    if (status === 401 || status === 403) {
      if (!this.authRefused(status)) this.scheduleRetry(0, true); // the server answered: retry now
      return;
    }
    if (status !== null && status < 300) this.authRefusals = 0;
    this.machine.update({ error: describeProbe(status) });
    this.scheduleRetry(0);
  }

  /** A 401/403: try once with a fresh token, then stop and ask the person. True when stopped. */
  private authRefused(status: number): boolean {
    this.authRefusals++;
    if (status === 401 && this.authRefusals < 2) {
      this.tokens.force('unauthorized');
      return false;
    }
    this.fail(describeHttpStatus(status));
    return true;
  }

  private fail(error: ClientError): void {
    this.clearTimers();
    this.polling.stop();
    this.dropSocket(1000, 'auth');
    this.machine.transition(S.Error, { error, nextRetryAt: null, transport: null });
    this.emitter.emit('error', error);
  }

  private scheduleRetry(minDelayMs: number, now = false): void {
    if (this.machine.stopped || this.timers.retryPending) return;
    const at = this.timers.scheduleRetry(minDelayMs, now, () => void this.open());
    if (at === null) {
      this.clearTimers();
      this.polling.stop();
      const error = gaveUp(this.machine.status.error);
      this.machine.transition(S.Disconnected, { nextRetryAt: null, transport: null, error });
      return;
    }
    const polling = this.machine.state === S.Polling;
    this.machine.transition(polling ? S.Polling : S.Reconnecting, { nextRetryAt: at });
  }

  private onWelcome(frame: WelcomeFrame): void {
    this.welcomes++;
    this.authRefusals = 0;
    this.timers.welcomed();
    const from = this.resume.offset();
    this.polling.stop();
    this.heartbeatMs = Math.max(1, frame.heartbeat_interval) * 1000 + this.o.heartbeatTimeoutMs;
    this.armHeartbeat();
    this.machine.transition(S.Connected, {
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
    const gen = this.generation;
    if (from === null && frame.resume_from === null) {
      // Nothing to resume from yet: pin "now" as an offset, so that a reconnect
      // before the first event still resumes without a gap.
      void askLog(this.o.httpUrl, this.o.fetch, () => this.tokens.ask('reconnect')).then(({ next }) => {
        if (gen !== this.generation || this.machine.state !== S.Connected) return;
        if (next !== null) this.resume.pin(next);
        this.subscribeAll(gen);
      });
    } else {
      this.subscribeAll(gen);
    }
    this.acks.resumed();
  }

  private subscribeAll(gen: number): void {
    this.subscribedGeneration = gen;
    this.subs.sendAll(this.resume.offset() ?? undefined);
  }

  private handleEvent(event: EventEnvelope): void {
    if (typeof event.id !== 'string' || !this.resume.accept(event.id)) return;
    this.machine.quietly({ lastEventId: this.resume.lastId }); // no emit per event
    this.acks.counted();
    this.emitter.emit('event', event);
    this.subs.deliver(event);
  }

  private send(message: ClientMessage, text = JSON.stringify(message)): boolean {
    if (!this.socket || this.socket.readyState !== OPEN) return false;
    this.socket.send(text);
    return true;
  }

  // -- timers -----------------------------------------------------------------------

  private armHeartbeat(): void {
    const gen = this.generation;
    this.timers.armHeartbeat(this.heartbeatMs, () => {
      if (gen !== this.generation) return;
      this.dropSocket(4000, 'heartbeat timeout');
      this.afterClose(gen, WS_4002_HEARTBEAT_TIMEOUT, 'no ping from server');
    });
  }

  private dropSocket(code: number, reason: string): void {
    dropSocket(this.socket, code, reason);
    this.socket = null;
  }

  private clearTimers(): void {
    this.timers.clearAll();
    this.acks.cancel();
  }
}
