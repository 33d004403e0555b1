/** A real HTTP + `ws` server for unit tests, scripted per test (not shipped). */

import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';

export interface Handshake {
  url: URL;
  protocols: string[];
  token: string | null;
}

export interface TestServerOptions {
  /** Return an HTTP status to refuse the upgrade, or null to accept. */
  refuse?: (hs: Handshake) => number | null;
  onConnection?: (ws: WebSocket, hs: Handshake, server: TestServer) => void;
  http?: (req: IncomingMessage, res: ServerResponse, url: URL) => void;
}

export interface TestServer {
  port: number;
  wsUrl: string;
  httpUrl: string;
  handshakes: Handshake[];
  sockets: WebSocket[];
  /** Frames clients sent, parsed, in order. */
  received: Record<string, unknown>[];
  options: TestServerOptions;
  close(): Promise<void>;
}

export async function startTestServer(options: TestServerOptions = {}): Promise<TestServer> {
  const http: Server = createServer((req, res) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (server.options.http) server.options.http(req, res, url);
    else {
      res.writeHead(404).end();
    }
  });
  const wss = new WebSocketServer({ noServer: true, handleProtocols: (set) => (set.has('secstream.v1') ? 'secstream.v1' : false) });
  const server: TestServer = {
    port: 0,
    wsUrl: '',
    httpUrl: '',
    handshakes: [],
    sockets: [],
    received: [],
    options,
    close: async () => {
      for (const ws of server.sockets) ws.terminate();
      wss.close();
      http.closeAllConnections();
      await new Promise<void>((resolve) => http.close(() => resolve()));
    },
  };
  http.on('upgrade', (req, socket, head) => {
    const url = new URL(req.url ?? '/', 'http://localhost');
    const protocols = (req.headers['sec-websocket-protocol'] ?? '')
      .split(',')
      .map((p) => p.trim())
      .filter(Boolean);
    const bearer = protocols.find((p) => p.startsWith('bearer.'));
    const hs: Handshake = {
      url,
      protocols,
      token: bearer ? bearer.slice('bearer.'.length) : url.searchParams.get('token'),
    };
    server.handshakes.push(hs);
    const refused = server.options.refuse?.(hs) ?? null;
    if (refused !== null) {
      socket.end(`HTTP/1.1 ${refused} Refused\r\nContent-Length: 0\r\nConnection: close\r\n\r\n`);
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => {
      server.sockets.push(ws);
      ws.on('message', (data) => {
        server.received.push(JSON.parse(String(data)) as Record<string, unknown>);
      });
      server.options.onConnection?.(ws, hs, server);
    });
  });
  await new Promise<void>((resolve) => http.listen(0, '127.0.0.1', () => resolve()));
  server.port = (http.address() as AddressInfo).port;
  server.wsUrl = `ws://127.0.0.1:${server.port}/ws`;
  server.httpUrl = `http://127.0.0.1:${server.port}`;
  return server;
}

export function welcome(ws: WebSocket, extra: Record<string, unknown> = {}): void {
  ws.send(
    JSON.stringify({
      type: 'welcome',
      connection_id: `c${Math.random().toString(36).slice(2, 8)}`,
      user_id: 'u-1',
      roles: ['admin'],
      heartbeat_interval: 20,
      resume_from: null,
      server_time: new Date().toISOString(),
      ...extra,
    }),
  );
}

export function envelope(id: string, eventType = 'test.progress', data: Record<string, unknown> = {}) {
  return {
    type: 'event' as const,
    id,
    event_type: eventType,
    timestamp: new Date().toISOString(),
    priority: 'normal',
    data: { test_id: 't-1', ...data },
    user_id: null,
    correlation_id: null,
  };
}

/** Poll `check` until it returns truthy or the time runs out. */
export async function until<T>(check: () => T, timeoutMs = 5000, what = 'condition'): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}
