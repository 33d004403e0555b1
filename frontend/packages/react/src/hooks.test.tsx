// @vitest-environment jsdom
import { act, cleanup, render, renderHook, screen, waitFor } from '@testing-library/react';
import type { ReactNode } from 'react';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket, type WebSocket as WsSocket } from 'ws';
import { EventClient, type WebSocketConstructor } from '@secstream/client';
import type { EventEnvelope } from '@secstream/client';
import { envelope, startTestServer, welcome, type TestServer } from '../../../test/testServer.js';
import { RealTimeStatus } from './components/RealTimeStatus.js';
import { TestOutputStreamer } from './components/TestOutputStreamer.js';
import { useRealTimeUpdates } from './useRealTimeUpdates.js';
import { ReadyState, useWebSocket } from './useWebSocket.js';
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

async function setup() {
  server = await startTestServer({
    onConnection: (ws) => {
      socket = ws;
      welcome(ws);
    },
  });
  const client = new EventClient({
    url: server.wsUrl,
    WebSocket: WebSocket as unknown as WebSocketConstructor,
    getToken: () => 'tok',
    clientId: 'hooks',
    storage: null,
  });
  const wrapper = ({ children }: { children: ReactNode }) => (
    <WebSocketProvider client={client}>{children}</WebSocketProvider>
  );
  return { client, wrapper };
}

function send(obj: unknown) {
  socket!.send(JSON.stringify(obj));
}

describe('React bindings over a real ws server', () => {
  it('useWebSocket follows the connection state', async () => {
    const { wrapper } = await setup();
    const { result } = renderHook(() => useWebSocket(), { wrapper });
    await waitFor(() => expect(result.current.status.state).toBe('connected'));
    expect(result.current.status.transport).toBe('websocket');
  });

  it('useWebSocket gives react-use-websocket\'s readyState, lastJsonMessage and sendJsonMessage', async () => {
    const { client, wrapper } = await setup();
    const { result } = renderHook(() => useWebSocket(), { wrapper });
    expect([ReadyState.CONNECTING, ReadyState.CLOSED]).toContain(result.current.readyState);
    await waitFor(() => expect(result.current.readyState).toBe(ReadyState.OPEN));
    expect(result.current.isConnected).toBe(true);
    expect(result.current.lastJsonMessage).toMatchObject({ type: 'welcome' });
    client.subscribe(['*'], () => undefined);
    send(envelope('41-0', 'test.progress', { test_id: 't-9', progress: 50 }));
    await waitFor(() => expect(result.current.lastJsonMessage).toMatchObject({ type: 'event', id: '41-0' }));
    expect(JSON.parse(result.current.lastMessage!.data)).toMatchObject({ id: '41-0' });
    send({ type: 'ping', ts: 1 }); // filtered out by default
    await waitFor(() => expect(server!.received.some((f) => f['type'] === 'pong')).toBe(true));
    expect(result.current.lastJsonMessage).toMatchObject({ id: '41-0' });
    expect(result.current.sendJsonMessage({ type: 'ping', id: 'mine' })).toBe(true);
    expect(result.current.sendMessage('{"type":"ack","offset":"41-0"}')).toBe(true);
    await waitFor(() => expect(server!.received.some((f) => f['id'] === 'mine')).toBe(true));
    await waitFor(() => expect(server!.received.some((f) => f['type'] === 'ack' && f['offset'] === '41-0')).toBe(true));
    expect(() => result.current.sendMessage('{"type":"subscribe","event_types":["*"]}')).toThrow(TypeError);
    act(() => client.disconnect());
    await waitFor(() => expect(result.current.readyState).toBe(ReadyState.CLOSED));
    expect(result.current.isConnected).toBe(false);
    expect(result.current.sendJsonMessage({ type: 'ping' })).toBe(false);
  });

  it('only components that read lastMessage re-render for each frame', async () => {
    const { client, wrapper } = await setup();
    let statusRenders = 0;
    let messageRenders = 0;
    renderHook(
      () => {
        statusRenders++;
        return useWebSocket().isConnected;
      },
      { wrapper },
    );
    const reader = renderHook(
      () => {
        messageRenders++;
        return useWebSocket().lastJsonMessage;
      },
      { wrapper },
    );
    await waitFor(() => expect(reader.result.current).toMatchObject({ type: 'welcome' }));
    client.subscribe(['*'], () => undefined);
    await waitFor(() => expect(server!.received.some((f) => f['type'] === 'subscribe')).toBe(true));
    const [before, readerBefore] = [statusRenders, messageRenders];
    for (let i = 1; i <= 20; i++) send(envelope(`${100 + i}-0`));
    await waitFor(() => expect(reader.result.current).toMatchObject({ id: '120-0' }));
    expect(messageRenders - readerBefore).toBeGreaterThanOrEqual(1);
    expect(statusRenders - before).toBe(0);
  });

  it('useWebSocketSubscription batches a burst into few calls and uses the latest callback', async () => {
    const { wrapper } = await setup();
    const first: EventEnvelope[][] = [];
    const second: EventEnvelope[][] = [];
    const { rerender } = renderHook(
      ({ cb }: { cb: (e: EventEnvelope[]) => void }) => useWebSocketSubscription(['test.*'], cb, { testId: 't-1' }),
      { wrapper, initialProps: { cb: (e: EventEnvelope[]) => void first.push(e) } },
    );
    await waitFor(() => expect(server!.received.filter((f) => f['type'] === 'subscribe')).toHaveLength(1));
    rerender({ cb: (e) => void second.push(e) });
    send({ type: 'batch', events: Array.from({ length: 500 }, (_, i) => envelope(`${i + 1}-0`)) });
    send(envelope('9000-0', 'test.progress', { test_id: 'other' }));
    await waitFor(() => expect(second.flat()).toHaveLength(500));
    expect(first).toHaveLength(0);
    expect(second.length).toBeLessThanOrEqual(3);
    // a new callback did not resubscribe
    expect(server!.received.filter((f) => f['type'] === 'subscribe')).toHaveLength(1);
  });

  it('useRealTimeUpdates reduces live events into tests, findings and status', async () => {
    const { wrapper } = await setup();
    const { result } = renderHook(() => useRealTimeUpdates(), { wrapper });
    await waitFor(() => expect(server!.received.some((f) => f['type'] === 'subscribe')).toBe(true));
    expect(server!.received.find((f) => f['type'] === 'subscribe')).toMatchObject({ event_types: ['*'] });
    send(envelope('1-0', 'test.started', { test_id: 'x', module: 'web_scanner' }));
    send(envelope('2-0', 'test.progress', { test_id: 'x', progress: 50, output: 'GET /' }));
    send(envelope('3-0', 'system.status', { status: 'ok' }));
    await waitFor(() => expect(result.current.tests['x']?.progress).toBe(50));
    expect(result.current.order).toEqual(['x']);
    expect(result.current.systemStatus?.data['status']).toBe('ok');
  });

  it('RealTimeStatus exposes data-state and TestOutputStreamer adds one line per output', async () => {
    const { wrapper } = await setup();
    render(
      <>
        <RealTimeStatus />
        <TestOutputStreamer testId="t-9" />
      </>,
      { wrapper },
    );
    await waitFor(() => expect(screen.getByTestId('connection-status').dataset['state']).toBe('connected'));
    await act(async () => {
      send({ type: 'batch', events: Array.from({ length: 3 }, (_, i) => envelope(`${i + 1}-0`, 'test.progress', { test_id: 't-9', output: `line ${i}` })) });
      send(envelope('4-0', 'test.progress', { test_id: 't-9', progress: 10 })); // no output: no line
    });
    const panel = screen.getByTestId('test-output');
    expect(panel.dataset['testId']).toBe('t-9');
    await waitFor(() => expect(panel.dataset['lineCount']).toBe('3'));
  });

  it('keeps the DOM bounded at 100,000 lines (virtualised list)', async () => {
    const { wrapper } = await setup();
    render(<TestOutputStreamer testId="big" />, { wrapper });
    await waitFor(() => expect(server!.handshakes).toHaveLength(1));
    await waitFor(() => expect(socket).not.toBeNull());
    await act(async () => {
      for (let chunk = 0; chunk < 10; chunk++) {
        const events = Array.from({ length: 10_000 }, (_, i) => {
          const n = chunk * 10_000 + i + 1;
          return envelope(`${n}-0`, 'test.progress', { test_id: 'big', output: `line ${n}` });
        });
        send({ type: 'batch', events });
      }
    });
    const panel = screen.getByTestId('test-output');
    await waitFor(() => expect(panel.dataset['lineCount']).toBe('100000'), { timeout: 10_000 });
    const rows = panel.querySelectorAll('[data-testid="output-line"]');
    expect(rows.length).toBeGreaterThan(0);
    expect(rows.length).toBeLessThan(100);
    // following the tail: the newest line is among those rendered
    expect([...rows].some((r) => r.textContent?.includes('line 100000'))).toBe(true);
  }, 30_000);
});

