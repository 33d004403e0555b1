import { afterEach, describe, expect, it, vi } from 'vitest';
import { WebSocket } from 'ws';
import { ConnectionState, EventClient, type EventClientOptions, type WebSocketConstructor } from './client.js';
import type { EventEnvelope } from './protocol.js';
import { envelope, startTestServer, until, welcome, type TestServer } from '../../../test/testServer.js';

const WS = WebSocket as unknown as WebSocketConstructor;
let server: TestServer | null = null;
let client: EventClient | null = null;

afterEach(async () => {
  client?.disconnect();
  client = null;
  await server?.close();
  server = null;
});

function makeClient(s: TestServer, extra: Partial<EventClientOptions> = {}): EventClient {
  client = new EventClient({
    url: s.wsUrl,
    WebSocket: WS,
    getToken: () => 'tok',
    clientId: 'tab_1',
    backoff: { initialDelayMs: 20, maxDelayMs: 100 },
    ...extra,
  });
  return client;
}

function framesOf(s: TestServer, type: string) {
  return s.received.filter((f) => f['type'] === type);
}

describe('EventClient over a real ws server', () => {
  it('sends the bearer subprotocol and client_id, then goes connecting -> connected', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws) });
    const c = makeClient(server);
    const states: string[] = [];
    c.on('state', (s) => states.push(s.state));
    c.subscribe(['*'], () => undefined);
    c.connect();
    await until(() => c.state === ConnectionState.Connected);
    expect(states[0]).toBe('connecting');
    expect(server.handshakes[0]?.protocols).toEqual(['secstream.v1', 'bearer.tok']);
    expect(server.handshakes[0]?.url.searchParams.get('client_id')).toBe('tab_1');
    await until(() => framesOf(server!, 'subscribe').length === 1);
    expect(framesOf(server, 'subscribe')[0]).toMatchObject({ event_types: ['*'] });
    expect(framesOf(server, 'subscribe')[0]).not.toHaveProperty('since');
  });

  it('can send the token as a query parameter', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws) });
    const c = makeClient(server, { tokenTransport: 'query' });
    c.connect();
    await until(() => c.state === ConnectionState.Connected);
    expect(server.handshakes[0]?.url.searchParams.get('token')).toBe('tok');
  });

  it('answers ping with pong', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.send(JSON.stringify({ type: 'ping', ts: 1 }));
      },
    });
    makeClient(server).connect();
    await until(() => framesOf(server!, 'pong').length === 1);
    expect(framesOf(server, 'pong')[0]).toEqual({ type: 'pong' });
  });

  it('handles event and batch frames and drops duplicate ids', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.send(JSON.stringify(envelope('1-0')));
        ws.send(JSON.stringify({ type: 'batch', events: [envelope('1-0'), envelope('2-0'), envelope('3-0')] }));
        ws.send(JSON.stringify(envelope('2-0')));
        ws.send(JSON.stringify(envelope('4-0', 'system.alert')));
      },
    });
    const c = makeClient(server);
    const seen: string[] = [];
    const alerts: string[] = [];
    c.subscribe(['test.*'], (e) => seen.push(e.id));
    c.subscribe(['system.alert'], (e) => alerts.push(e.id));
    c.connect();
    await until(() => alerts.length === 1);
    expect(seen).toEqual(['1-0', '2-0', '3-0']);
    expect(c.lastEventId).toBe('4-0');
  });

  it('filters a subscription with test_id locally and sends it to the server', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.send(JSON.stringify(envelope('1-0', 'test.progress', { test_id: 'a' })));
        ws.send(JSON.stringify(envelope('2-0', 'test.progress', { test_id: 'b' })));
      },
    });
    const c = makeClient(server);
    const got: EventEnvelope[] = [];
    c.subscribe(['test.progress'], (e) => got.push(e), { testId: 'b' });
    c.connect();
    await until(() => got.length === 1);
    await new Promise((r) => setTimeout(r, 30));
    expect(got.map((e) => e.id)).toEqual(['2-0']);
    await until(() => framesOf(server!, 'subscribe').length === 1);
    expect(framesOf(server, 'subscribe')[0]).toMatchObject({ test_id: 'b' });
  });

  it('reconnects after 1001 and resubscribes with since = last processed id', async () => {
    let n = 0;
    server = await startTestServer({
      onConnection: (ws) => {
        n++;
        welcome(ws);
        if (n === 1) {
          ws.send(JSON.stringify(envelope('5-0')));
          ws.send(JSON.stringify(envelope('6-1')));
          setTimeout(() => ws.close(1001, 'shutdown'), 50);
        } else {
          // replay overlaps what was seen: the duplicate must be dropped
          ws.send(JSON.stringify(envelope('6-1')));
          ws.send(JSON.stringify(envelope('7-0')));
        }
      },
    });
    const c = makeClient(server);
    const states: string[] = [];
    c.on('state', (s) => states.push(s.state));
    const ids: string[] = [];
    c.subscribe(['test.*'], (e) => ids.push(e.id));
    c.connect();
    await until(() => ids.length === 3, 5000, 'three events');
    expect(ids).toEqual(['5-0', '6-1', '7-0']);
    expect(states).toContain('reconnecting');
    expect(c.state).toBe('connected');
    // The server pushes events on connect, so the client's re-subscribe may land after them.
    await until(() => framesOf(server!, 'subscribe').length === 2, 2000, 'the re-subscribe');
    const subs = framesOf(server, 'subscribe');
    expect(subs).toHaveLength(2);
    expect(subs[1]).toMatchObject({ since: '6-1', event_types: ['test.*'] });
    expect(c.getStatus().error).toBeNull();
  });

  it('batches acks: one after 100 events, then one after the interval', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        const events = Array.from({ length: 100 }, (_, i) => envelope(`${i + 1}-0`));
        ws.send(JSON.stringify({ type: 'batch', events }));
        setTimeout(() => ws.send(JSON.stringify(envelope('500-0'))), 300);
      },
    });
    const c = makeClient(server, { ackIntervalMs: 200 });
    c.subscribe(['*'], () => undefined);
    c.connect();
    await until(() => framesOf(server!, 'ack').length === 1);
    expect(framesOf(server, 'ack')[0]).toMatchObject({ offset: '100-0' });
    await until(() => framesOf(server!, 'ack').length === 2, 3000, 'second ack');
    expect(framesOf(server, 'ack')[1]).toMatchObject({ offset: '500-0' });
    await new Promise((r) => setTimeout(r, 300));
    expect(framesOf(server, 'ack')).toHaveLength(2);
  });

  it('sends no ack without a client_id', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.send(JSON.stringify(envelope('1-0')));
      },
    });
    const c = makeClient(server, { clientId: null, ackIntervalMs: 20 });
    c.connect();
    await until(() => c.lastEventId === '1-0');
    await new Promise((r) => setTimeout(r, 100));
    expect(framesOf(server, 'ack')).toHaveLength(0);
    expect(server.handshakes[0]?.url.searchParams.has('client_id')).toBe(false);
  });

  it('keeps a durable client_id in storage', () => {
    const store = new Map<string, string>();
    const storage = { getItem: (k: string) => store.get(k) ?? null, setItem: (k: string, v: string) => void store.set(k, v) };
    const a = new EventClient({ url: 'ws://x/ws', WebSocket: WS, getToken: () => 't', storage });
    const b = new EventClient({ url: 'ws://x/ws', WebSocket: WS, getToken: () => 't', storage });
    expect(a.clientId).toMatch(/^[A-Za-z0-9_-]{1,64}$/);
    expect(b.clientId).toBe(a.clientId);
    expect(() => new EventClient({ url: 'ws://x/ws', getToken: () => 't', clientId: 'bad id!' })).toThrow();
  });

  it('refreshes the token on token.expiring and before reconnecting after 4001', async () => {
    let n = 0;
    server = await startTestServer({
      onConnection: (ws) => {
        n++;
        welcome(ws);
        if (n === 1) {
          ws.send(JSON.stringify({ type: 'token.expiring', expires_in: 60 }));
          setTimeout(() => ws.close(4001, 'token expired'), 100);
        }
      },
    });
    const reasons: string[] = [];
    const c = makeClient(server, {
      getToken: (reason) => {
        reasons.push(reason);
        return `tok-${reason}`;
      },
    });
    c.connect();
    await until(() => server!.handshakes.length === 2 && c.state === 'connected', 5000, 'reconnect');
    const refresh = framesOf(server, 'refresh')[0];
    expect(refresh).toMatchObject({ type: 'refresh', token: 'tok-expiring' });
    // 'reconnect' tokens serve HTTP look-ups made beside the socket
    expect(reasons.filter((r) => r !== 'reconnect').slice(0, 3)).toEqual(['connect', 'expiring', 'expired']);
    expect(server.handshakes[0]?.token).toBe('tok-connect');
    expect(server.handshakes[1]?.token).toBe('tok-expired');
  });

  it('refreshToken() sends the provider\'s token as refresh on the same socket, once per renewal', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws) });
    let current = 'tok-1';
    const c = makeClient(server, { getToken: () => current });
    c.refreshToken(); // not connected yet: nothing to send
    c.connect();
    await until(() => c.state === ConnectionState.Connected);
    current = 'tok-2';
    c.refreshToken();
    c.refreshToken(); // while the first is on its way: ignored
    await until(() => framesOf(server!, 'refresh').length === 1);
    await new Promise((r) => setTimeout(r, 50));
    expect(framesOf(server, 'refresh')).toEqual([{ type: 'refresh', id: expect.any(String), token: 'tok-2' }]);
    expect(server.handshakes).toHaveLength(1);
  });

  it('goes to error and stops when the handshake is refused with 403', async () => {
    server = await startTestServer({
      refuse: () => 403,
      http: (_req, res) => res.writeHead(403).end(),
    });
    const c = makeClient(server, { httpUrl: undefined });
    c.connect();
    await until(() => c.state === ConnectionState.Error);
    expect(c.getStatus().error).toMatchObject({ kind: 'auth', code: 403 });
    const attempts = server.handshakes.length;
    await new Promise((r) => setTimeout(r, 200));
    expect(server.handshakes.length).toBe(attempts);
  });

  it('gets a fresh token once after 401, then reports an auth error', async () => {
    server = await startTestServer({
      refuse: () => 401,
      http: (_req, res) => res.writeHead(401).end(),
    });
    const reasons: string[] = [];
    const c = makeClient(server, {
      getToken: (r) => {
        reasons.push(r);
        return 't';
      },
    });
    c.connect();
    await until(() => c.state === ConnectionState.Error);
    expect(reasons).toContain('unauthorized');
    expect(c.getStatus().error?.kind).toBe('auth');
    expect(server.handshakes.length).toBe(2);
  });

  it('reconnects when no ping arrives within heartbeat_interval + timeout', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws, { heartbeat_interval: 0.05 }) });
    const c = makeClient(server, { heartbeatTimeoutMs: 50 });
    c.connect();
    await until(() => server!.handshakes.length >= 2, 3000, 'second connection');
    await until(() => c.state === ConnectionState.Connected);
  });

  it('pins the end of the log on a fresh start so a reconnect before any event has no gap', async () => {
    let n = 0;
    server = await startTestServer({
      http: (_req, res, url) => {
        expect(url.searchParams.has('since')).toBe(false);
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ events: [], next: '9-3', truncated: false }));
      },
      onConnection: (ws) => {
        n++;
        welcome(ws);
        if (n === 1) setTimeout(() => ws.close(1001), 100);
      },
    });
    const c = makeClient(server, { fetch: globalThis.fetch });
    c.subscribe(['*'], () => undefined);
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 2, 5000, 'second subscribe');
    expect(framesOf(server, 'subscribe').map((f) => f['since'])).toEqual(['9-3', '9-3']);
  });

  it('resumes from the stored offset (no since) when welcome reports one', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws, { resume_from: '4-0' }) });
    const c = makeClient(server);
    c.subscribe(['*'], () => undefined);
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 1);
    expect(framesOf(server, 'subscribe')[0]).not.toHaveProperty('since');
  });

  it('disconnect() closes on purpose and does not retry', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws) });
    const c = makeClient(server);
    c.connect();
    await until(() => c.state === ConnectionState.Connected);
    c.disconnect();
    expect(c.state).toBe('disconnected');
    await new Promise((r) => setTimeout(r, 200));
    expect(server.handshakes).toHaveLength(1);
  });

  it('gives up after maxAttempts and says so', async () => {
    server = await startTestServer({ refuse: () => 500, http: (_q, res) => res.writeHead(500).end() });
    const c = makeClient(server, { backoff: { initialDelayMs: 5, maxDelayMs: 10, maxAttempts: 2 }, pollAfterFailures: 99 });
    c.connect();
    await until(() => c.state === ConnectionState.Disconnected && server!.handshakes.length === 3);
    expect(c.getStatus().error?.message).toMatch(/Gave up/);
  });
});

describe('polling fallback', () => {
  it('polls after 3 failed attempts, then switches back without gap or duplicate', async () => {
    let wsAllowed = false;
    const polls: URL[] = [];
    let served = 0;
    server = await startTestServer({
      refuse: () => (wsAllowed ? null : 502),
      http: (_req, res, url) => {
        if (url.pathname !== '/api/v1/events') return void res.writeHead(404).end();
        polls.push(url);
        const since = url.searchParams.get('since');
        let body;
        if (since === null) body = { events: [], next: '10-0', truncated: false };
        else if (served === 0) {
          served++;
          body = { events: [envelope('11-0'), envelope('12-0')], next: '12-0', truncated: false };
        } else {
          // the WebSocket may take over now; this long-poll hangs until aborted
          wsAllowed = true;
          return;
        }
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
      },
      onConnection: (ws) => {
        welcome(ws);
        ws.on('message', (raw) => {
          const f = JSON.parse(String(raw)) as { type: string };
          if (f.type === 'subscribe') {
            // the replay overlaps the last polled event
            ws.send(JSON.stringify(envelope('12-0')));
            ws.send(JSON.stringify(envelope('13-0')));
          }
        });
      },
    });
    const c = makeClient(server, { fetch: globalThis.fetch });
    const states: string[] = [];
    c.on('state', (s) => {
      if (states.at(-1) !== s.state) states.push(s.state);
    });
    const ids: string[] = [];
    c.subscribe(['test.*', 'system.alert'], (e) => ids.push(e.id));
    c.connect();
    await until(() => ids.length === 3, 8000, 'three events');
    expect(ids).toEqual(['11-0', '12-0', '13-0']);
    expect(states).toContain('polling');
    expect(c.state).toBe('connected');
    // the first failed handshakes are probed with `types=*` to tell auth from network errors
    const longPolls = polls.filter((u) => u.searchParams.get('types') !== '*');
    expect(longPolls[0]?.searchParams.get('types')).toBe('test.*,system.alert');
    expect(longPolls[0]?.searchParams.has('since')).toBe(false);
    expect(longPolls[1]?.searchParams.get('since')).toBe('10-0');
    expect(longPolls[1]?.searchParams.get('wait')).toBe('25');
    expect(longPolls[2]?.searchParams.get('since')).toBe('12-0');
    expect(framesOf(server, 'subscribe')[0]).toMatchObject({ since: '12-0' });
  });

  it('polls at once when there is no WebSocket at all, with a Bearer header', async () => {
    const auth: (string | undefined)[] = [];
    server = await startTestServer({
      http: (req, res) => {
        auth.push(req.headers.authorization);
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ events: [envelope(`${auth.length}-0`)], next: `${auth.length}-0`, truncated: false }),
        );
      },
    });
    const c = makeClient(server, { WebSocket: null, httpUrl: server.httpUrl });
    const ids: string[] = [];
    c.subscribe(['*'], (e) => ids.push(e.id));
    c.connect();
    await until(() => ids.length >= 2);
    expect(c.state).toBe('polling');
    expect(auth[0]).toBe('Bearer tok');
  });
  it('polls for every allowed type when an exact type is refused with 403', async () => {
    const seenTypes: string[] = [];
    server = await startTestServer({
      http: (_req, res, url) => {
        const types = url.searchParams.get('types') ?? '';
        seenTypes.push(types);
        if (types !== '*') return void res.writeHead(403).end();
        res.writeHead(200, { 'content-type': 'application/json' }).end(
          JSON.stringify({ events: [envelope(`${seenTypes.length}-0`, 'user.notification')], next: `${seenTypes.length}-0`, truncated: false }),
        );
      },
    });
    const c = makeClient(server, { WebSocket: null, httpUrl: server.httpUrl, backoff: { initialDelayMs: 1, maxDelayMs: 5 } });
    const ids: string[] = [];
    c.subscribe(['system.alert', 'user.notification'], (e) => ids.push(e.id));
    c.connect();
    await until(() => ids.length >= 1);
    expect(c.state).toBe('polling');
    expect(seenTypes[0]).toBe('system.alert,user.notification');
  });
});

describe('EventClient with a scripted socket and fake timers', () => {
  class FakeSocket {
    static last: FakeSocket | null = null;
    readyState = 0;
    sent: string[] = [];
    onopen: ((ev: unknown) => void) | null = null;
    onmessage: ((ev: { data: unknown }) => void) | null = null;
    onclose: ((ev: { code: number; reason: string }) => void) | null = null;
    onerror: ((ev: unknown) => void) | null = null;
    constructor(
      readonly url: string,
      readonly protocols?: string | string[],
    ) {
      FakeSocket.last = this;
    }
    send(data: string) {
      this.sent.push(data);
    }
    close() {
      this.readyState = 3;
    }
    open() {
      this.readyState = 1;
      this.onopen?.({});
    }
    frame(obj: unknown) {
      this.onmessage?.({ data: JSON.stringify(obj) });
    }
    drop(code: number) {
      this.readyState = 3;
      this.onclose?.({ code, reason: '' });
    }
  }

  afterEach(() => {
    vi.useRealTimers();
  });

  async function connected(extra: Partial<EventClientOptions> = {}) {
    vi.useFakeTimers();
    const c = new EventClient({
      url: 'ws://h/ws',
      WebSocket: FakeSocket as unknown as WebSocketConstructor,
      getToken: () => 't',
      clientId: 'c1',
      random: () => 0.5,
      ...extra,
    });
    client = c;
    c.connect();
    await vi.advanceTimersByTimeAsync(0);
    const s = FakeSocket.last!;
    s.open();
    s.frame({ type: 'welcome', connection_id: 'x', user_id: 'u', roles: [], heartbeat_interval: 20, resume_from: null, server_time: '' });
    return { c, s };
  }

  it('flushes an ack 500 ms after the last event', async () => {
    const { s } = await connected();
    s.frame(envelope('1-0'));
    s.frame(envelope('2-0'));
    await vi.advanceTimersByTimeAsync(499);
    expect(s.sent.filter((f) => f.includes('"ack"'))).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(2);
    expect(s.sent.filter((f) => f.includes('"ack"')).map((f) => JSON.parse(f).offset)).toEqual(['2-0']);
  });

  it('treats 30 s without ping (interval 20 + timeout 10) as a dead socket', async () => {
    const { c, s } = await connected();
    await vi.advanceTimersByTimeAsync(25_000);
    s.frame({ type: 'ping', ts: 0 });
    await vi.advanceTimersByTimeAsync(29_000);
    expect(c.state).toBe('connected');
    await vi.advanceTimersByTimeAsync(1_001);
    expect(c.state).toBe('reconnecting');
    expect(c.getStatus().error?.code).toBe(4002);
  });

  it('waits longer after 4008 than the 5 s cap', async () => {
    const { c, s } = await connected();
    const before = Date.now();
    s.drop(4008);
    expect(c.state).toBe('reconnecting');
    expect(c.getStatus().nextRetryAt! - before).toBeGreaterThanOrEqual(10_000);
  });

  it('schedules the retry after 1001 within the 5 s cap', async () => {
    const { c, s } = await connected({ random: () => 0.9999 });
    for (let i = 0; i < 6; i++) {
      const before = Date.now();
      if (i === 0) s.drop(1001);
      else {
        FakeSocket.last!.open();
        FakeSocket.last!.drop(1006);
      }
      const delay = c.getStatus().nextRetryAt! - before;
      expect(delay).toBeLessThanOrEqual(5000);
      await vi.advanceTimersByTimeAsync(delay + 1);
    }
  });
});
