/** History replays, dedup across them, `connection.info` and truncation, over a real `ws` server. */

import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, type WebSocket as WsSocket } from 'ws';
import { EventClient, type EventClientEvents, type EventClientOptions, type WebSocketConstructor } from './client.js';
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
    clientId: 'tab_h',
    backoff: { initialDelayMs: 20, maxDelayMs: 100 },
    ...extra,
  });
  return client;
}

function framesOf(s: TestServer, type: string) {
  return s.received.filter((f) => f['type'] === type);
}

type Frame = Record<string, unknown>;

/** Answers each `subscribe` with `subscribed` (id `sub-<ref>`), then what `replay` returns, then `replayed`. */
function answerSubscribes(ws: WsSocket, replay: (f: Frame) => { events: unknown[]; truncated?: boolean } | null): void {
  ws.on('message', (raw) => {
    const f = JSON.parse(String(raw)) as Frame;
    if (f['type'] !== 'subscribe') return;
    const subscription = `sub-${String(f['id'])}`;
    ws.send(JSON.stringify({ type: 'subscribed', ref: f['id'], subscription, event_types: f['event_types'] }));
    const r = replay(f);
    if (r === null) return;
    for (const e of r.events) ws.send(JSON.stringify(e));
    ws.send(
      JSON.stringify({ type: 'replayed', ref: f['id'], subscription, count: r.events.length, truncated: r.truncated ?? false }),
    );
  });
}

/** The end of the log that `GET /api/v1/events` without `since` reports. */
function endOfLog(next: string): NonNullable<Parameters<typeof startTestServer>[0]>['http'] {
  return (_req, res) =>
    res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify({ events: [], next, truncated: false }));
}

const line = (id: string, n: number, testId = 't-1') => envelope(id, 'test.progress', { test_id: testId, output: `line ${n}` });

describe('since is used as given', () => {
  it('a subscribe made before the connection keeps its since, although the end of the log is pinned', async () => {
    server = await startTestServer({ http: endOfLog('900-0'), onConnection: (ws) => welcome(ws) });
    const c = makeClient(server, { fetch: globalThis.fetch });
    c.subscribe(['*'], () => undefined);
    c.subscribe(['test.*'], () => undefined, { testId: 't-1', since: '0' });
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 2, 5000, 'two subscribes');
    const [all, history] = framesOf(server, 'subscribe');
    expect(all).toMatchObject({ event_types: ['*'], since: '900-0' });
    expect(history).toMatchObject({ event_types: ['test.*'], test_id: 't-1', since: '0' });
  });

  it('a subscribe made on a live connection with events keeps its since', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.send(JSON.stringify(line('50-0', 5)));
      },
    });
    const c = makeClient(server);
    c.subscribe(['*'], () => undefined);
    c.connect();
    await until(() => c.lastEventId === '50-0');
    c.subscribe(['test.*'], () => undefined, { testId: 't-1', since: '0' });
    c.subscribe(['system.*'], () => undefined); // no since: from the last id, as before
    await until(() => framesOf(server!, 'subscribe').length === 3);
    expect(framesOf(server, 'subscribe')[1]).toMatchObject({ test_id: 't-1', since: '0' });
    expect(framesOf(server, 'subscribe')[2]).toMatchObject({ event_types: ['system.*'], since: '50-0' });
  });

  it('a reconnect re-sends since until the replay completed, then resumes from the last id', async () => {
    let n = 0;
    server = await startTestServer({
      onConnection: (ws) => {
        n++;
        welcome(ws);
        ws.send(JSON.stringify(line(`${100 + n}-0`, 100 + n)));
        // the first connection never finishes the history replay; the second and third do
        answerSubscribes(ws, (f) => (f['test_id'] === 't-1' && n > 1 ? { events: [line('1-0', 1)] } : null));
        if (n < 3) setTimeout(() => ws.close(1001), 400);
      },
    });
    const c = makeClient(server);
    const replayed: number[] = [];
    c.subscribe(['*'], () => undefined);
    c.subscribe(['test.*'], () => undefined, { testId: 't-1', since: '0', onReplayed: (r) => replayed.push(r.count) });
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 6, 8000, 'three rounds of subscribes');
    const history = framesOf(server, 'subscribe').filter((f) => f['test_id'] === 't-1');
    expect(history.map((f) => f['since'])).toEqual(['0', '0', '102-0']);
    // The third round's reply may still be on its way when its subscribe has been seen.
    await until(() => replayed.length === 2, 8000, 'the second and third rounds replayed');
    expect(replayed).toEqual([1, 1]);
  });

  it('sends a subscribe refused for the rate again a second later, with its since', async () => {
    let refused = 0;
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.on('message', (raw) => {
          const f = JSON.parse(String(raw)) as Frame;
          if (f['type'] === 'subscribe' && refused++ === 0) {
            ws.send(JSON.stringify({ type: 'error', code: 'rate_limited', message: 'slow down', ref: f['id'] }));
          }
        });
      },
    });
    const c = makeClient(server);
    c.subscribe(['test.*'], () => undefined, { testId: 't-1', since: '0' });
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 1);
    const at = Date.now();
    await until(() => framesOf(server!, 'subscribe').length === 2, 5000, 'the second subscribe');
    expect(Date.now() - at).toBeGreaterThanOrEqual(900);
    expect(framesOf(server, 'subscribe')[1]).toMatchObject({ test_id: 't-1', since: '0' });
    await new Promise((r) => setTimeout(r, 1200));
    expect(framesOf(server, 'subscribe')).toHaveLength(2);
  });

  it('sends latest: true only when asked', async () => {
    server = await startTestServer({ onConnection: (ws) => welcome(ws) });
    const c = makeClient(server);
    c.subscribe(['test.progress'], () => undefined, { latest: true });
    c.subscribe(['test.*'], () => undefined);
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 2);
    expect(framesOf(server, 'subscribe')[0]).toMatchObject({ latest: true });
    expect(framesOf(server, 'subscribe')[1]).not.toHaveProperty('latest');
  });
});

describe('dedup across replays, catch-up and reconnects', () => {
  it('delivers each event once when a history replay overlaps live events, and resumes past both', async () => {
    let n = 0;
    server = await startTestServer({
      http: endOfLog('40-0'),
      onConnection: (ws) => {
        n++;
        welcome(ws);
        if (n === 1) {
          ws.send(JSON.stringify(line('41-0', 4)));
          ws.send(JSON.stringify(line('42-0', 5)));
          answerSubscribes(ws, (f) =>
            f['test_id'] === 't-1'
              ? // the server's replay from "0" overlaps the two live lines
                { events: [line('10-0', 1), line('20-0', 2), line('30-0', 3), line('41-0', 4), line('42-0', 5)] }
              : null,
          );
        } else {
          // after a reconnect: a catch-up from the resume point overlaps once more
          answerSubscribes(ws, () => ({ events: [line('42-0', 5), line('43-0', 6)] }));
        }
      },
    });
    const c = makeClient(server, { fetch: globalThis.fetch, ackIntervalMs: 20 });
    const all: string[] = [];
    const history: string[] = [];
    c.subscribe(['*'], (e) => all.push(e.id));
    let subscribedHistory = false;
    c.on('event', () => {
      if (subscribedHistory) return;
      subscribedHistory = true; // as the dashboard does when it learns of a test
      c.subscribe(['test.*'], (e) => history.push(e.id), { testId: 't-1', since: '0' });
    });
    c.connect();
    await until(() => all.length === 5, 5000, 'five distinct events');
    expect(all).toEqual(['41-0', '42-0', '10-0', '20-0', '30-0']);
    // added while 41-0 was being handed out, the history subscription gets it too
    expect(history).toEqual(['41-0', '42-0', '10-0', '20-0', '30-0']);
    expect(c.lastEventId).toBe('42-0');
    // the ack names the resume point, not an id of the history
    await until(() => framesOf(server!, 'ack').length > 0);
    expect(framesOf(server, 'ack').at(-1)).toMatchObject({ offset: '42-0' });

    server.sockets[0]!.close(1001);
    await until(() => all.length === 6, 5000, 'the event after the reconnect');
    await new Promise((r) => setTimeout(r, 100)); // a late duplicate would land now
    expect(all).toEqual(['41-0', '42-0', '10-0', '20-0', '30-0', '43-0']);
    const resubscribes = framesOf(server, 'subscribe').slice(2);
    expect(resubscribes.map((f) => f['since'])).toEqual(['42-0', '42-0']);
  });

  it('resumes from the pinned end of the log when only older history has arrived', async () => {
    let n = 0;
    server = await startTestServer({
      http: endOfLog('500-0'),
      onConnection: (ws) => {
        n++;
        welcome(ws);
        answerSubscribes(ws, (f) => (f['test_id'] === 't-1' && n === 1 ? { events: [line('7-0', 1)] } : { events: [] }));
        if (n === 1) setTimeout(() => ws.close(1001), 200);
      },
    });
    const c = makeClient(server, { fetch: globalThis.fetch });
    c.subscribe(['*'], () => undefined);
    c.subscribe(['test.*'], () => undefined, { testId: 't-1', since: '0' });
    c.connect();
    await until(() => framesOf(server!, 'subscribe').length === 4, 5000, 'the re-subscribes');
    expect(framesOf(server, 'subscribe').map((f) => f['since'])).toEqual(['500-0', '0', '500-0', '500-0']);
  });

  it('keeps its dedup memory bounded (dedupCapacity)', async () => {
    server = await startTestServer({
      onConnection: (ws) => {
        welcome(ws);
        ws.send(JSON.stringify({ type: 'batch', events: [1, 2, 3, 4, 5].map((i) => envelope(`${i}-0`)) }));
        // 5 is remembered; 1 was forgotten when 4 and 5 came (capacity 3)
        ws.send(JSON.stringify({ type: 'batch', events: [envelope('5-0'), envelope('1-0'), envelope('6-0')] }));
      },
    });
    const c = makeClient(server, { dedupCapacity: 3 });
    const ids: string[] = [];
    c.subscribe(['*'], (e) => ids.push(e.id));
    c.connect();
    await until(() => ids.includes('6-0'));
    expect(ids).toEqual(['1-0', '2-0', '3-0', '4-0', '5-0', '1-0', '6-0']);
  });
});

describe('connection.info and truncation', () => {
  it('exposes catching_up (with behind) and live as the status sync, and resets it on reconnect', async () => {
    let n = 0;
    let sock: WsSocket | null = null;
    server = await startTestServer({
      onConnection: (ws) => {
        n++;
        sock = ws;
        welcome(ws);
      },
    });
    const c = makeClient(server);
    const frames: EventClientEvents['sync'][] = [];
    c.on('sync', (f) => frames.push(f));
    const events: EventEnvelope[] = [];
    c.subscribe(['*'], (e) => events.push(e));
    c.connect();
    await until(() => c.state === 'connected');
    expect(c.getStatus().sync).toEqual({ state: 'live' });

    sock!.send(JSON.stringify({ type: 'connection.info', state: 'catching_up', behind: 1234 }));
    await until(() => c.getStatus().sync.state === 'catching_up');
    expect(c.getStatus().sync).toEqual({ state: 'catching_up', behind: 1234 });
    expect(c.getStatus().state).toBe('connected');

    sock!.send(JSON.stringify({ type: 'connection.info', state: 'live' }));
    await until(() => c.getStatus().sync.state === 'live');
    expect(frames.map((f) => f.state)).toEqual(['catching_up', 'live']);
    expect(events).toHaveLength(0); // a frame of its own, not an event

    sock!.send(JSON.stringify({ type: 'connection.info', state: 'catching_up', behind: 5 }));
    await until(() => c.getStatus().sync.state === 'catching_up');
    sock!.close(1001);
    await until(() => n === 2 && c.state === 'connected', 5000, 'the reconnect');
    expect(c.getStatus().sync).toEqual({ state: 'live' });
  });

  it('reports a truncated replay with its test, and a truncated catch-up for the connection', async () => {
    let sock: WsSocket | null = null;
    server = await startTestServer({
      onConnection: (ws) => {
        sock = ws;
        welcome(ws);
        answerSubscribes(ws, (f) => (f['test_id'] === 'old' ? { events: [line('9-0', 1, 'old')], truncated: true } : null));
      },
    });
    const c = makeClient(server);
    const truncated: EventClientEvents['truncated'][] = [];
    c.on('truncated', (t) => truncated.push(t));
    const results: { count: number; truncated: boolean }[] = [];
    c.subscribe(['test.*'], () => undefined, { testId: 'old', since: '0', onReplayed: (r) => results.push(r) });
    c.connect();
    await until(() => truncated.length === 1);
    expect(truncated[0]).toMatchObject({ testId: 'old', source: 'replay' });
    expect(results).toEqual([{ count: 1, truncated: true }]);

    sock!.send(JSON.stringify({ type: 'connection.info', state: 'live', truncated: true }));
    await until(() => truncated.length === 2);
    expect(truncated[1]).toEqual({ subscription: null, testId: null, source: 'catch_up' });
  });
});
