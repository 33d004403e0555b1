// @vitest-environment jsdom
/** Late joiners: a test's history, the catching-up status and the truncated notice, over a real `ws` server. */
import { act, cleanup, render, renderHook, screen, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, type WebSocket as WsSocket } from 'ws';
import { EventClient, type WebSocketConstructor } from '@secstream/client';
import { envelope, startTestServer, welcome, type TestServer } from '../../../test/testServer.js';
import { RealTimeStatus } from './components/RealTimeStatus.js';
import { TestOutputStreamer } from './components/TestOutputStreamer.js';
import { useWebSocketSubscription } from './useWebSocketSubscription.js';
import { WebSocketProvider } from './WebSocketProvider.js';

let server: TestServer | null = null;
let socket: WsSocket | null = null;

afterEach(async () => {
  cleanup();
  await server?.close();
  server = null;
  socket = null;
});

type Frame = Record<string, unknown>;
type Replay = (f: Frame) => { events: unknown[]; truncated?: boolean } | null;

async function setup(replay: Replay = () => null) {
  server = await startTestServer({
    onConnection: (ws) => {
      socket = ws;
      welcome(ws);
      ws.on('message', (raw) => {
        const f = JSON.parse(String(raw)) as Frame;
        if (f['type'] !== 'subscribe') return;
        const subscription = `sub-${String(f['id'])}`;
        ws.send(JSON.stringify({ type: 'subscribed', ref: f['id'], subscription, event_types: f['event_types'] }));
        const r = replay(f);
        if (r === null) return;
        for (const e of r.events) ws.send(JSON.stringify(e));
        ws.send(JSON.stringify({ type: 'replayed', ref: f['id'], subscription, count: r.events.length, truncated: r.truncated ?? false }));
      });
    },
  });
  const client = new EventClient({
    url: server.wsUrl,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    getToken: () => 'tok',
    clientId: 'history',
    storage: null,
  });
  const wrapper = ({ children }: { children: ReactNode }) => <WebSocketProvider client={client}>{children}</WebSocketProvider>;
  return { client, wrapper };
}

const subscribes = () => server!.received.filter((f) => f['type'] === 'subscribe');
const line = (id: string, text: string, testId = 't-7') => envelope(id, 'test.progress', { test_id: testId, output: text });

function shownLines(panel: HTMLElement): string[] {
  return [...panel.querySelectorAll<HTMLElement>('[data-testid="output-line"]')]
    .sort((a, b) => Number(a.dataset['seq']) - Number(b.dataset['seq']))
    .map((row) => `${row.dataset['seq']}:${row.querySelector('.out-line__text')?.textContent ?? ''}`);
}

describe('a test output view opened late', () => {
  it('replays the test from "0", puts its history before the live lines, then unsubscribes', async () => {
    const history = [line('10-0', 'first'), line('20-0', 'second'), line('30-0', 'third'), line('41-0', 'fourth')];
    const { wrapper } = await setup((f) => {
      if (f['test_id'] !== 't-7') return null;
      // live lines reach the page before the history, which overlaps them
      socket!.send(JSON.stringify(line('41-0', 'fourth')));
      socket!.send(JSON.stringify(line('42-0', 'fifth')));
      return { events: history };
    });
    const view = render(<TestOutputStreamer testId="t-7" />, { wrapper });
    const panel = screen.getByTestId('test-output');
    await waitFor(() => expect(panel.dataset['lineCount']).toBe('5'));
    expect(shownLines(panel)).toEqual(['0:first', '1:second', '2:third', '3:fourth', '4:fifth']);
    expect(subscribes()[0]).toMatchObject({ event_types: ['test.*'], test_id: 't-7', since: '0' });
    // its replay done, the history subscription goes: live lines come through the app's others
    await waitFor(() => expect(server!.received.filter((f) => f['type'] === 'unsubscribe')).toHaveLength(1));
    expect(server!.received.find((f) => f['type'] === 'unsubscribe')).toMatchObject({ subscription: `sub-${String(subscribes()[0]!['id'])}` });
    expect(screen.queryByTestId('output-truncated')).toBeNull();

    // closed and opened again on this page: no second replay, the lines are still there
    view.rerender(<></>);
    view.rerender(<TestOutputStreamer testId="t-7" />);
    await new Promise((r) => setTimeout(r, 100));
    expect(subscribes()).toHaveLength(1);
    expect(shownLines(screen.getByTestId('test-output'))).toHaveLength(5);
  });

  it('asks for no history with history={false}, and drops the subscription when the view goes', async () => {
    const { wrapper } = await setup();
    const view = render(
      <>
        <TestOutputStreamer testId="a" history={false} />
        <TestOutputStreamer testId="b" />
      </>,
      { wrapper },
    );
    await waitFor(() => expect(subscribes()).toHaveLength(1));
    expect(subscribes()[0]).toMatchObject({ test_id: 'b', since: '0' });
    view.rerender(<TestOutputStreamer testId="a" history={false} />); // b leaves the view before its replay
    await waitFor(() => expect(server!.received.filter((f) => f['type'] === 'unsubscribe')).toHaveLength(1));
  });

  it('tells the person when older output is no longer kept (a truncated replay)', async () => {
    const { wrapper } = await setup((f) => (f['test_id'] === 'long' ? { events: [line('900-0', 'kept', 'long')], truncated: true } : null));
    render(
      <>
        <TestOutputStreamer testId="long" />
        <TestOutputStreamer testId="other" history={false} />
      </>,
      { wrapper },
    );
    const notice = await screen.findByTestId('output-truncated');
    expect(notice.closest('[data-testid="test-output"]')?.getAttribute('data-test-id')).toBe('long');
    expect(notice.textContent).toMatch(/no longer kept/);
    expect(screen.getAllByTestId('output-truncated')).toHaveLength(1);
  });

  it('shows the notice in every view when catching up lost events to retention', async () => {
    const { wrapper } = await setup();
    render(
      <>
        <TestOutputStreamer testId="x" history={false} />
        <TestOutputStreamer testId="y" history={false} />
      </>,
      { wrapper },
    );
    await waitFor(() => expect(socket).not.toBeNull());
    await act(async () => {
      socket!.send(JSON.stringify(line('1-0', 'x1', 'x')));
      socket!.send(JSON.stringify(line('2-0', 'y1', 'y')));
    });
    await waitFor(() => expect(screen.getAllByTestId('output-line')).toHaveLength(2));
    expect(screen.queryByTestId('output-truncated')).toBeNull();
    await act(async () => {
      socket!.send(JSON.stringify({ type: 'connection.info', state: 'live', truncated: true }));
    });
    await waitFor(() => expect(screen.getAllByTestId('output-truncated')).toHaveLength(2));
  });
});

describe('RealTimeStatus while catching up', () => {
  it('stays data-state="connected" and says "catching up (N behind)" until live', async () => {
    const { wrapper } = await setup();
    render(<RealTimeStatus />, { wrapper });
    const status = screen.getByTestId('connection-status');
    await waitFor(() => expect(status.dataset['state']).toBe('connected'));
    expect(status.dataset['sync']).toBe('live');
    expect(screen.queryByTestId('connection-sync')).toBeNull();

    await act(async () => {
      socket!.send(JSON.stringify({ type: 'connection.info', state: 'catching_up', behind: 12345 }));
    });
    await waitFor(() => expect(status.dataset['sync']).toBe('catching_up'));
    expect(status.dataset['state']).toBe('connected');
    expect(screen.getByTestId('connection-sync').textContent).toBe('catching up (12,345 behind)');

    await act(async () => {
      socket!.send(JSON.stringify({ type: 'connection.info', state: 'live' }));
    });
    await waitFor(() => expect(status.dataset['sync']).toBe('live'));
    expect(screen.queryByTestId('connection-sync')).toBeNull();
  });
});

describe('useWebSocketSubscription', () => {
  it('sends since as given, after events arrived, and latest when asked', async () => {
    const { wrapper, client } = await setup();
    renderHook(() => useWebSocketSubscription(['*'], () => undefined), { wrapper });
    await waitFor(() => expect(subscribes()).toHaveLength(1));
    await act(async () => {
      socket!.send(JSON.stringify(envelope('77-0')));
    });
    await waitFor(() => expect(client.lastEventId).toBe('77-0'));
    renderHook(() => useWebSocketSubscription(['test.*'], () => undefined, { testId: 't-1', since: '0' }), { wrapper });
    renderHook(() => useWebSocketSubscription(['test.progress'], () => undefined, { latest: true }), { wrapper });
    await waitFor(() => expect(subscribes()).toHaveLength(3));
    expect(subscribes()[1]).toMatchObject({ test_id: 't-1', since: '0' });
    expect(subscribes()[1]).not.toHaveProperty('latest');
    expect(subscribes()[2]).toMatchObject({ since: '77-0', latest: true });
  });
});
