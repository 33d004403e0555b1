/**
 * The contract's WebSocket close codes and what the client does about each,
 * split into reconnect and terminal codes as centrifuge/disconnect.go does.
 */

export const WS_1000_NORMAL_CLOSURE = 1000;
export const WS_1001_GOING_AWAY = 1001;
export const WS_1006_ABNORMAL_CLOSURE = 1006;
export const WS_1008_POLICY_VIOLATION = 1008;
export const WS_1011_INTERNAL_ERROR = 1011;
export const WS_1012_SERVICE_RESTART = 1012;
export const WS_4001_TOKEN_EXPIRED = 4001;
export const WS_4002_HEARTBEAT_TIMEOUT = 4002;
export const WS_4003_CLOSED_BY_ADMIN = 4003;
export const WS_4008_RATE_LIMITED = 4008;
export const WS_4009_SLOW_CONSUMER = 4009;

export type ErrorKind = 'network' | 'auth' | 'server';

/** An error a person can read: what happened and what to do next. */
export interface ClientError {
  kind: ErrorKind;
  /** Close code, HTTP status or protocol error code, when there is one. */
  code: number | string | null;
  message: string;
  action: string;
}

export interface CloseCodeInfo {
  name: string;
  reconnect: boolean;
  /** Fetch a fresh token before reconnecting. */
  refreshToken: boolean;
  /** Wait at least this long before the next attempt (rate limiting). */
  minDelayMs: number;
  error: ClientError;
}

function info(
  name: string,
  kind: ErrorKind,
  code: number,
  message: string,
  action: string,
  extra: Partial<Pick<CloseCodeInfo, 'refreshToken' | 'minDelayMs' | 'reconnect'>> = {},
): CloseCodeInfo {
  return {
    name,
    reconnect: extra.reconnect ?? true,
    refreshToken: extra.refreshToken ?? false,
    minDelayMs: extra.minDelayMs ?? 0,
    error: { kind, code, message, action },
  };
}

export const CLOSE_CODES: Readonly<Record<number, CloseCodeInfo>> = {
  [WS_1001_GOING_AWAY]: info(
    'going_away',
    'server',
    WS_1001_GOING_AWAY,
    'The server is restarting or shutting down.',
    'Reconnecting automatically; nothing is lost, updates resume where they stopped.',
  ),
  [WS_1006_ABNORMAL_CLOSURE]: info(
    'abnormal_closure',
    'network',
    WS_1006_ABNORMAL_CLOSURE,
    'The connection to the server was lost.',
    'Reconnecting automatically. Check your network if this persists.',
  ),
  [WS_1011_INTERNAL_ERROR]: info(
    'internal_error',
    'server',
    WS_1011_INTERNAL_ERROR,
    'The server hit an internal error.',
    'Reconnecting automatically. Contact your administrator if this keeps happening.',
  ),
  [WS_1012_SERVICE_RESTART]: info(
    'service_restart',
    'server',
    WS_1012_SERVICE_RESTART,
    'The server is restarting.',
    'Reconnecting automatically.',
  ),
  [WS_4001_TOKEN_EXPIRED]: info(
    'token_expired',
    'auth',
    WS_4001_TOKEN_EXPIRED,
    'Your session token expired.',
    'Getting a new token and reconnecting.',
    { refreshToken: true },
  ),
  [WS_4002_HEARTBEAT_TIMEOUT]: info(
    'heartbeat_timeout',
    'network',
    WS_4002_HEARTBEAT_TIMEOUT,
    'The server stopped hearing from this browser (heartbeat timeout).',
    'Reconnecting automatically. A slow or sleeping network can cause this.',
  ),
  [WS_4003_CLOSED_BY_ADMIN]: info(
    'closed_by_admin',
    'server',
    WS_4003_CLOSED_BY_ADMIN,
    'An administrator closed this connection.',
    'Reconnecting shortly; ask your administrator if it keeps happening.',
    { minDelayMs: 2_000 },
  ),
  [WS_4008_RATE_LIMITED]: info(
    'rate_limited',
    'server',
    WS_4008_RATE_LIMITED,
    'This browser sent too many messages and was rate limited.',
    'Reconnecting after a longer pause.',
    { minDelayMs: 10_000 },
  ),
  [WS_4009_SLOW_CONSUMER]: info(
    'slow_consumer',
    'network',
    WS_4009_SLOW_CONSUMER,
    'Updates arrived faster than this browser could take them.',
    'Reconnecting and resuming from the last update received.',
  ),
};

/** What to do about a close the client did not ask for. Unknown codes reconnect. */
export function describeClose(code: number, reason = ''): CloseCodeInfo {
  const known = CLOSE_CODES[code];
  if (known) return known;
  return info(
    'unknown',
    code >= 4000 ? 'server' : 'network',
    code,
    `The connection closed unexpectedly (code ${code}${reason ? `: ${reason}` : ''}).`,
    'Reconnecting automatically.',
  );
}

/** Handshake refused with an HTTP status (seen by probing `GET /api/v1/events`). */
export function describeHttpStatus(status: number): ClientError {
  if (status === 401) {
    return {
      kind: 'auth',
      code: 401,
      message: 'The server did not accept your sign-in (token missing, invalid or expired).',
      action: 'Sign in again.',
    };
  }
  if (status === 403) {
    return {
      kind: 'auth',
      code: 403,
      message: 'Your account is not allowed to receive live updates.',
      action: 'Ask an administrator for a role that may view events (admin, analyst or viewer).',
    };
  }
  if (status === 429) {
    return {
      kind: 'server',
      code: 429,
      message: 'The server is rate limiting this browser.',
      action: 'Retrying after a pause.',
    };
  }
  if (status === 503) {
    return {
      kind: 'server',
      code: 503,
      message: 'The server is busy or cannot reach its event store.',
      action: 'Retrying automatically.',
    };
  }
  return {
    kind: 'server',
    code: status,
    message: `The server answered with HTTP ${status}.`,
    action: 'Retrying automatically. Contact your administrator if this persists.',
  };
}

export const NETWORK_UNREACHABLE: ClientError = {
  kind: 'network',
  code: null,
  message: 'Cannot reach the server.',
  action: 'Retrying automatically. Check your network or VPN connection.',
};

export const WEBSOCKET_BLOCKED: ClientError = {
  kind: 'network',
  code: null,
  message: 'WebSocket connections are failing (a proxy or firewall may block them).',
  action: 'Using HTTP polling meanwhile; live updates may arrive a little later.',
};

/** An `error` frame of the server, as the client reports it. */
export function describeErrorFrame(code: string, message: string): ClientError {
  return {
    kind: code === 'invalid_token' || code === 'forbidden' ? 'auth' : 'server',
    code,
    message,
    action:
      code === 'invalid_token'
        ? 'The new token was refused; you may need to sign in again.'
        : 'No action needed unless this keeps happening.',
  };
}

/** The application's token provider failed; `renewing`: for an in-place refresh. */
export function tokenFailure(err: unknown, renewing: boolean): ClientError {
  const why = err instanceof Error ? err.message : String(err);
  return renewing
    ? {
        kind: 'auth',
        code: null,
        message: `Could not renew the sign-in token (${why}).`,
        action: 'The connection will reconnect with a new token when the old one expires.',
      }
    : { kind: 'auth', code: null, message: `Could not get a sign-in token (${why}).`, action: 'Sign in again.' };
}

/** The client stopped retrying; the last error's kind and code are kept. */
export function gaveUp(last: ClientError | null): ClientError {
  return {
    kind: last?.kind ?? 'network',
    code: last?.code ?? null,
    message: 'Gave up reconnecting after too many attempts.',
    action: 'Press Retry when the server is reachable again.',
  };
}

/** Why a handshake failed, from the HTTP API's answer to the same token (not 401/403). */
export function describeProbe(status: number | null): ClientError {
  if (status === null) return NETWORK_UNREACHABLE;
  return status >= 200 && status < 300 ? WEBSOCKET_BLOCKED : describeHttpStatus(status);
}
