import type { LiveState } from '../liveState.js';
import { useWebSocket } from '../useWebSocket.js';

function text(v: unknown): string {
  if (v === null || v === undefined) return '—';
  if (typeof v === 'object') return JSON.stringify(v);
  return String(v);
}

/** Latest `system.status`, plus this browser's connection facts. */
export function SystemStatusPanel({ live }: { live: LiveState }) {
  const { status } = useWebSocket();
  const data = live.systemStatus?.data ?? null;
  const overall = data ? text(data['status'] ?? data['state'] ?? 'reported') : 'no report yet';
  const healthy = /^(ok|healthy|operational|up|green)$/i.test(overall);
  const entries = data ? Object.entries(data).filter(([k]) => !['status', 'state', 'message'].includes(k)) : [];
  return (
    <section className="panel widget" data-testid="system-status">
      <header className="widget__head">
        <h2>System status</h2>
        <span className={`pill ${healthy ? 'pill--ok' : data ? 'pill--warn' : ''}`}>{overall}</span>
      </header>
      {typeof data?.['message'] === 'string' && <p className="widget__note">{data['message']}</p>}
      <dl className="kv">
        {entries.slice(0, 8).map(([k, v]) => (
          <div key={k} className="kv__row">
            <dt>{k.replace(/_/g, ' ')}</dt>
            <dd>{text(v)}</dd>
          </div>
        ))}
        <div className="kv__row">
          <dt>transport</dt>
          <dd>{status.transport ?? '—'}</dd>
        </div>
        <div className="kv__row">
          <dt>events this session</dt>
          <dd>{live.eventCount}</dd>
        </div>
        <div className="kv__row">
          <dt>last event id</dt>
          <dd>
            <code>{status.lastEventId ?? '—'}</code>
          </dd>
        </div>
      </dl>
    </section>
  );
}
