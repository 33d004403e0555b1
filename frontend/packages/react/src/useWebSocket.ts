import { useCallback, useRef, useSyncExternalStore } from 'react';
import type { ClientStatus, EventClient, FrameMessage, SendableFrame } from '@secstream/client';
import { ConnectionState } from '@secstream/client';
import type { ServerFrame } from '@secstream/client';
import { useWebSocketContext } from './context.js';

/** `WebSocket.readyState` values, as react-use-websocket names them. */
export enum ReadyState {
  UNINSTANTIATED = -1,
  CONNECTING = 0,
  OPEN = 1,
  CLOSING = 2,
  CLOSED = 3,
}

/** `connected`: OPEN; trying or polling: CONNECTING; stopped or refused: CLOSED. */
export function readyStateOf(state: ConnectionState): ReadyState {
  switch (state) {
    case ConnectionState.Connected:
      return ReadyState.OPEN;
    case ConnectionState.Connecting:
    case ConnectionState.Reconnecting:
    case ConnectionState.Polling:
      return ReadyState.CONNECTING;
    default:
      return ReadyState.CLOSED;
  }
}

export interface UseWebSocketOptions {
  /** Which frames update `lastMessage` (default: all but `ping` and `pong`). */
  filter?: (frame: ServerFrame) => boolean;
}

export interface UseWebSocket {
  client: EventClient;
  status: ClientStatus;
  retry: () => void;
  disconnect: () => void;
  connect: () => void;
  /** react-use-websocket's names for the same connection. */
  readyState: ReadyState;
  isConnected: boolean;
  /**
   * The last server frame (`data` is its text, like a `MessageEvent`), and parsed. A
   * component re-renders per frame only when it reads one of these two.
   */
  readonly lastMessage: FrameMessage | null;
  readonly lastJsonMessage: ServerFrame | null;
  /** `ping`, `ack` or `refresh` (others throw TypeError); false when not connected. */
  sendJsonMessage: (message: SendableFrame) => boolean;
  /** The same, from JSON text. */
  sendMessage: (text: string) => boolean;
}

const QUIET = new Set(['ping', 'pong']);
const notQuiet = (frame: ServerFrame) => !QUIET.has(frame.type);

/** The shared connection, its live status, and react-use-websocket's familiar fields. */
export function useWebSocket(options: UseWebSocketOptions = {}): UseWebSocket {
  const { client } = useWebSocketContext();
  const subscribe = useCallback((fn: () => void) => client.on('state', fn), [client]);
  const status = useSyncExternalStore(subscribe, () => client.getStatus(), () => client.getStatus());

  // Frames re-render only the components that read lastMessage/lastJsonMessage.
  const reads = useRef(false);
  const filter = useRef(options.filter ?? notQuiet);
  filter.current = options.filter ?? notQuiet;
  const shown = useRef<FrameMessage | null>(null);
  const subscribeFrames = useCallback(
    (fn: () => void) =>
      client.on('frame', (message) => {
        if (!filter.current(message.json)) return;
        shown.current = message;
        if (reads.current) fn();
      }),
    [client],
  );
  const lastMessage = useSyncExternalStore(subscribeFrames, () => shown.current, () => null);

  const sendJsonMessage = useCallback((message: SendableFrame) => client.sendFrame(message), [client]);
  const sendMessage = useCallback(
    (text: string) => client.sendFrame(JSON.parse(text) as SendableFrame),
    [client],
  );
  return {
    client,
    status,
    retry: useCallback(() => client.retryNow(), [client]),
    disconnect: useCallback(() => client.disconnect(), [client]),
    connect: useCallback(() => client.connect(), [client]),
    readyState: readyStateOf(status.state),
    isConnected: status.state === ConnectionState.Connected,
    get lastMessage() {
      reads.current = true;
      return lastMessage;
    },
    get lastJsonMessage() {
      reads.current = true;
      return lastMessage?.json ?? null;
    },
    sendJsonMessage,
    sendMessage,
  };
}
