/* eslint-disable */
/**
 * GENERATED from docs/api/asyncapi.json by frontend/packages/client/scripts/protocolTypes.mjs: do not edit.
 * Regenerate: secstream schema > docs/api/asyncapi.json && npm --prefix frontend run protocol
 */

/**
 * Every frame and event schema of the AsyncAPI document.
 */
export type AnyFrame =
  | Ack
  | Acked
  | Batch
  | ConnectionInfo
  | ConnectionInfoEvent
  | Error
  | Event
  | Ping
  | PingFrame
  | Pong
  | PongReply
  | Refresh
  | Refreshed
  | Replayed
  | RunError
  | RunSummary
  | Subscribe
  | Subscribed
  | SystemAlertData
  | SystemAlertEvent
  | SystemMaintenanceEvent
  | SystemStatusEvent
  | TestCancelledData
  | TestCancelledEvent
  | TestCompletedData
  | TestCompletedEvent
  | TestErrorData
  | TestErrorEvent
  | TestProgressData
  | TestProgressEvent
  | TestStartedData
  | TestStartedEvent
  | TokenExpiring
  | Unsubscribe
  | Unsubscribed
  | UserNotificationEvent
  | Welcome;

export interface Ack {
  type: "ack";
  offset: string;
  id?: string | number | null;
}
export interface Acked {
  type: "acked";
  offset: string;
  ref?: string | number | null;
}
/**
 * Several events in one frame: the server may batch under load; clients handle both.
 */
export interface Batch {
  type: "batch";
  events: Event[];
}
/**
 * The envelope of one event (section 3). Not encoded from this struct at run time:
 * ``entries`` splices ``type`` and ``id`` into the text stored at publish; the schema of
 * the frame is this struct's (``apidoc``, and a test decodes real frames with it).
 */
export interface Event {
  type: "event";
  id: string;
  event_type:
    | "connection.info"
    | "system.alert"
    | "system.maintenance"
    | "system.status"
    | "test.cancelled"
    | "test.completed"
    | "test.error"
    | "test.progress"
    | "test.started"
    | "user.notification";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: {
    [k: string]: unknown | undefined;
  };
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
/**
 * A connection starts (``catching_up``) or ends (``live``) reading the log.
 */
export interface ConnectionInfo {
  type: "connection.info";
  state: "catching_up" | "live";
  behind?: number | null;
  truncated?: boolean;
}
export interface ConnectionInfoEvent {
  type: "event";
  id: string;
  event_type: "connection.info";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: {
    [k: string]: unknown | undefined;
  };
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface Error {
  type: "error";
  code: string;
  message: string;
  ref?: string | number | null;
}
export interface Ping {
  type: "ping";
  id?: string | number | null;
}
export interface PingFrame {
  type: "ping";
  ts: number;
}
export interface Pong {
  type: "pong";
  id?: string | number | null;
}
export interface PongReply {
  type: "pong";
  ref?: string | number | null;
}
export interface Refresh {
  type: "refresh";
  token: string;
  id?: string | number | null;
}
export interface Refreshed {
  type: "refreshed";
  expires_at: number;
  ref?: string | number | null;
}
export interface Replayed {
  type: "replayed";
  subscription: string;
  count: number;
  truncated: boolean;
  ref?: string | number | null;
}
export interface RunError {
  type: string;
  message: string;
}
/**
 * What a ``TestRun`` counted; a module may add keys of its own (hosts, URLs...).
 */
export interface RunSummary {
  findings?: {
    [k: string]: number | undefined;
  };
  duration_seconds?: number;
  lines?: number;
  [k: string]: unknown | undefined;
}
export interface Subscribe {
  type: "subscribe";
  event_types: string[];
  id?: string | number | null;
  test_id?: string | null;
  since?: string | null;
  latest?: boolean;
}
export interface Subscribed {
  type: "subscribed";
  subscription: string;
  event_types: string[];
  ref?: string | number | null;
}
/**
 * A finding of a run (``TestRun.finding``) or a notice of the service itself.
 */
export interface SystemAlertData {
  title?: string | null;
  message?: string | null;
  severity?: ("critical" | "high" | "info" | "low" | "medium") | null;
  test_id?: string | null;
  module?: string | null;
  kind?: string | null;
  source?: string | null;
  [k: string]: unknown | undefined;
}
export interface SystemAlertEvent {
  type: "event";
  id: string;
  event_type: "system.alert";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: SystemAlertData;
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface SystemMaintenanceEvent {
  type: "event";
  id: string;
  event_type: "system.maintenance";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: {
    [k: string]: unknown | undefined;
  };
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface SystemStatusEvent {
  type: "event";
  id: string;
  event_type: "system.status";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: {
    [k: string]: unknown | undefined;
  };
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface TestCancelledData {
  test_id: string;
  module?: string | null;
  status?: string | null;
  progress?: number;
  summary?: RunSummary | null;
  cancelled_by?: string | null;
  reason?: string | null;
  [k: string]: unknown | undefined;
}
export interface TestCancelledEvent {
  type: "event";
  id: string;
  event_type: "test.cancelled";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: TestCancelledData;
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface TestCompletedData {
  test_id: string;
  module?: string | null;
  status?: string | null;
  progress?: number;
  summary?: RunSummary | null;
  [k: string]: unknown | undefined;
}
export interface TestCompletedEvent {
  type: "event";
  id: string;
  event_type: "test.completed";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: TestCompletedData;
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface TestErrorData {
  test_id: string;
  module?: string | null;
  status?: string | null;
  progress?: number;
  summary?: RunSummary | null;
  error?: RunError | null;
  [k: string]: unknown | undefined;
}
export interface TestErrorEvent {
  type: "event";
  id: string;
  event_type: "test.error";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: TestErrorData;
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface TestProgressData {
  test_id: string;
  module?: string | null;
  status?: string | null;
  progress?: number;
  output?: string | null;
  [k: string]: unknown | undefined;
}
export interface TestProgressEvent {
  type: "event";
  id: string;
  event_type: "test.progress";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: TestProgressData;
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface TestStartedData {
  test_id: string;
  module?: string | null;
  status?: string | null;
  progress?: number;
  metadata?: {
    [k: string]: unknown | undefined;
  } | null;
  [k: string]: unknown | undefined;
}
export interface TestStartedEvent {
  type: "event";
  id: string;
  event_type: "test.started";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: TestStartedData;
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface TokenExpiring {
  type: "token.expiring";
  expires_in: number;
}
export interface Unsubscribe {
  type: "unsubscribe";
  subscription: string;
  id?: string | number | null;
}
export interface Unsubscribed {
  type: "unsubscribed";
  subscription: string;
  ref?: string | number | null;
}
export interface UserNotificationEvent {
  type: "event";
  id: string;
  event_type: "user.notification";
  timestamp: string;
  priority: "critical" | "high" | "low" | "normal";
  data: {
    [k: string]: unknown | undefined;
  };
  user_id: string | null;
  correlation_id: string | null;
  traceparent?: string | null;
}
export interface Welcome {
  type: "welcome";
  connection_id: string;
  user_id: string;
  roles: string[];
  heartbeat_interval: number;
  resume_from: string | null;
  server_time: string;
  node: string;
}
