import { createContext, useContext } from 'react';
import type { EventClient } from '@secstream/client';
import type { OutputStore } from './outputStore.js';

export interface WebSocketContextValue {
  client: EventClient;
  output: OutputStore;
}

export const WebSocketContext = createContext<WebSocketContextValue | null>(null);

export function useWebSocketContext(): WebSocketContextValue {
  const value = useContext(WebSocketContext);
  if (!value) throw new Error('secstream hooks must be used inside <WebSocketProvider>');
  return value;
}
