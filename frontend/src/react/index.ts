export { WebSocketProvider, type WebSocketProviderProps } from './WebSocketProvider';
export { useWebSocket, readyStateOf, ReadyState, type UseWebSocket, type UseWebSocketOptions } from './useWebSocket';
export { useWebSocketSubscription, type SubscriptionOptions } from './useWebSocketSubscription';
export { useRealTimeUpdates, LIVE_EVENT_TYPES } from './useRealTimeUpdates';
export { useTestOutput } from './useTestOutput';
export { useTestHistory, HISTORY_EVENT_TYPES } from './useTestHistory';
export type { LiveState, TestSummary, Finding, Alert } from './liveState';
