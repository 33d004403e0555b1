export { WebSocketProvider, type WebSocketProviderProps } from './WebSocketProvider.js';
export { useWebSocket, readyStateOf, ReadyState, type UseWebSocket, type UseWebSocketOptions } from './useWebSocket.js';
export { useWebSocketSubscription, type SubscriptionOptions } from './useWebSocketSubscription.js';
export { useRealTimeUpdates, LIVE_EVENT_TYPES } from './useRealTimeUpdates.js';
export { useTestOutput } from './useTestOutput.js';
export { useTestHistory, HISTORY_EVENT_TYPES } from './useTestHistory.js';
export type { LiveState, TestSummary, Finding, Alert } from './liveState.js';

// -- components (styles: import '@secstream/react/styles.css') --------------
export * from './components/ActiveTests.js';
export * from './components/AdminConsole.js';
export * from './components/AdminPanel.js';
export * from './components/EventDetails.js';
export * from './components/MaintenanceBanner.js';
export * from './components/NotificationToast.js';
export * from './components/RealTimeStatus.js';
export * from './components/RecentFindings.js';
export * from './components/StopTestButton.js';
export * from './components/SystemStatusPanel.js';
export * from './components/TestOutputStreamer.js';
export * from './components/TestRunSummary.js';
export * from './components/VirtualList.js';
export * from './components/api.js';
