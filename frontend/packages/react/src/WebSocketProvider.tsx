import { useEffect, useState, type ReactNode } from 'react';
import { EventClient, type EventClientOptions } from '@secstream/client';
import { WebSocketContext, type WebSocketContextValue } from './context.js';
import { OutputStore } from './outputStore.js';

export interface WebSocketProviderProps {
  /** A ready client (tests, or an app that builds its own); else one is made from `options`. */
  client?: EventClient;
  options?: EventClientOptions;
  /** Connect on mount (default true). */
  autoConnect?: boolean;
  children: ReactNode;
}

/** One shared connection for the whole app. */
export function WebSocketProvider({ client, options, autoConnect = true, children }: WebSocketProviderProps) {
  const [value] = useState<WebSocketContextValue>(() => {
    const c = client ?? (options ? new EventClient(options) : null);
    if (!c) throw new Error('WebSocketProvider needs `client` or `options`');
    return { client: c, output: new OutputStore() };
  });

  useEffect(() => {
    const { client: c, output } = value;
    const offEvent = c.on('event', (event) => output.add(event));
    // a truncated replay of one test marks that test; any other loss marks every test held
    const offTruncated = c.on('truncated', ({ testId }) => output.markTruncated(testId));
    if (autoConnect) c.connect();
    const online = () => c.retryNow();
    globalThis.addEventListener?.('online', online);
    return () => {
      offEvent();
      offTruncated();
      globalThis.removeEventListener?.('online', online);
      if (autoConnect) c.disconnect();
    };
  }, [value, autoConnect]);

  return <WebSocketContext.Provider value={value}>{children}</WebSocketContext.Provider>;
}
