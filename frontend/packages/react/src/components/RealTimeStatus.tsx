import { useEffect, useState } from 'react';
import { useWebSocket } from '../useWebSocket.js';

const LABELS: Record<string, string> = {
  connecting: 'Connecting',
  connected: 'Live',
  reconnecting: 'Reconnecting',
  disconnected: 'Disconnected',
  error: 'Action needed',
  polling: 'Live (polling)',
};

function useNow(active: boolean, everyMs = 250): number {
  const [now, setNow] = useState(() => Date.now());
  useEffect(() => {
    if (!active) return;
    const t = setInterval(() => setNow(Date.now()), everyMs);
    return () => clearInterval(t);
  }, [active, everyMs]);
  return now;
}

/** Connection indicator: state, reconnect countdown, what went wrong, and a retry button. */
export function RealTimeStatus({ compact = false }: { compact?: boolean }) {
  const { status, retry } = useWebSocket();
  const now = useNow(status.nextRetryAt !== null);
  const seconds = status.nextRetryAt !== null ? Math.max(0, Math.ceil((status.nextRetryAt - now) / 1000)) : null;
  const canRetry = status.state !== 'connected' && status.state !== 'connecting';
  const showError = status.error && status.state !== 'connected';

  return (
    <div
      className={`rt-status rt-status--${status.state}`}
      data-testid="connection-status"
      data-state={status.state}
      data-sync={status.sync.state}
      role="status"
      aria-live="polite"
    >
      <span className="rt-status__dot" aria-hidden="true" />
      <span className="rt-status__label">{LABELS[status.state] ?? status.state}</span>
      {status.sync.state === 'catching_up' && (
        <span className="rt-status__sync" data-testid="connection-sync">
          catching up{status.sync.behind !== null ? ` (${status.sync.behind.toLocaleString('en')} behind)` : ''}
        </span>
      )}
      {seconds !== null && status.state !== 'connected' && (
        <span className="rt-status__countdown" data-testid="reconnect-countdown">
          {status.state === 'polling' ? 'WebSocket retry' : 'retry'} in {seconds}s
        </span>
      )}
      {canRetry && (
        <button type="button" className="btn btn--small" onClick={retry} data-testid="retry-connection">
          Retry now
        </button>
      )}
      {!compact && showError && status.error && (
        <span className={`rt-status__error rt-status__error--${status.error.kind}`} title={status.error.action}>
          {status.error.message} <em>{status.error.action}</em>
        </span>
      )}
    </div>
  );
}
