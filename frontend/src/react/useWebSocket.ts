import { useCallback, useSyncExternalStore } from 'react';
import type { ClientStatus, EventClient } from '../client/client';
import { useWebSocketContext } from './context';

export interface UseWebSocket {
  client: EventClient;
  status: ClientStatus;
  retry: () => void;
  disconnect: () => void;
  connect: () => void;
}

/** The shared connection and its live status. */
export function useWebSocket(): UseWebSocket {
  const { client } = useWebSocketContext();
  const subscribe = useCallback((fn: () => void) => client.on('state', fn), [client]);
  const status = useSyncExternalStore(subscribe, () => client.getStatus(), () => client.getStatus());
  return {
    client,
    status,
    retry: useCallback(() => client.retryNow(), [client]),
    disconnect: useCallback(() => client.disconnect(), [client]),
    connect: useCallback(() => client.connect(), [client]),
  };
}
