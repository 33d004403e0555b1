/** `EventClientOptions` with every default filled in, and the durable client id. */

import { DEFAULT_BACKOFF, type BackoffOptions } from './backoff.js';
import { durableClientId, type KeyValueStore } from './clientId.js';
import { CLIENT_ID_PATTERN } from './protocol.js';
import { httpBaseOf } from './socket.js';
import { ConnectionState, LIVE, type ClientStatus, type EventClientOptions, type WebSocketConstructor } from './types.js';

export type ResolvedOptions = Required<
  Omit<EventClientOptions, 'clientId' | 'storage' | 'backoff' | 'httpUrl' | 'WebSocket' | 'getToken'>
> & { backoff: BackoffOptions; httpUrl: string; WebSocket: WebSocketConstructor | null };

export function resolveOptions(options: EventClientOptions): ResolvedOptions {
  const ctor =
    options.WebSocket === undefined
      ? ((globalThis as { WebSocket?: WebSocketConstructor }).WebSocket ?? null)
      : options.WebSocket;
  return {
    url: options.url,
    httpUrl: options.httpUrl ?? httpBaseOf(options.url),
    WebSocket: ctor,
    fetch: options.fetch ?? ((...args: Parameters<typeof fetch>) => globalThis.fetch(...args)),
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
}

/** The given id (checked), none (`null`), or one kept in `storage` (localStorage by default). */
export function clientIdOf(options: EventClientOptions): string | null {
  const { clientId, storage } = options;
  if (clientId === null) return null;
  if (clientId !== undefined) {
    if (!CLIENT_ID_PATTERN.test(clientId)) throw new RangeError('clientId must match [A-Za-z0-9_-]{1,64}');
    return clientId;
  }
  const store =
    storage === undefined ? ((globalThis as { localStorage?: KeyValueStore }).localStorage ?? null) : storage;
  return durableClientId(store);
}

export const INITIAL_STATUS: ClientStatus = {
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
