/** Opening and dropping the WebSocket, and the HTTP base of a `/ws` URL. */

import { SUBPROTOCOL } from './protocol.js';
import type { WebSocketConstructor, WebSocketLike } from './types.js';

export const OPEN = 1;

/**
 * A socket to `url` with the token as a `bearer.<token>` subprotocol (or as
 * `?token=` when asked, or when the browser will not put it in a subprotocol).
 */
export function openSocket(
  ctor: WebSocketConstructor,
  url: string,
  token: string,
  clientId: string | null,
  transport: 'subprotocol' | 'query',
): WebSocketLike {
  const params = new URLSearchParams();
  if (clientId) params.set('client_id', clientId);
  const join = url.includes('?') ? '&' : '?';
  if (transport === 'subprotocol') {
    const full = params.size ? `${url}${join}${params.toString()}` : url;
    try {
      return new ctor(full, [SUBPROTOCOL, `bearer.${token}`]);
    } catch (err) {
      if (!(err instanceof Error) || err.name !== 'SyntaxError') throw err;
      // a token the browser will not put in a subprotocol: use the query
    }
  }
  params.set('token', token);
  return new ctor(`${url}${join}${params.toString()}`, [SUBPROTOCOL]);
}

/** Close a socket and silence its callbacks: nothing of it reaches the client afterwards. */
export function dropSocket(socket: WebSocketLike | null, code: number, reason: string): void {
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

export function httpBaseOf(wsUrl: string): string {
  const u = new URL(wsUrl);
  u.protocol = u.protocol === 'wss:' ? 'https:' : 'http:';
  u.pathname = u.pathname.replace(/\/ws\/?$/, '') || '/';
  u.search = '';
  return u.toString().replace(/\/$/, '');
}

export function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
