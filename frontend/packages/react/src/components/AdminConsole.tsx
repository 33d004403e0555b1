import { useCallback, useEffect, useState } from 'react';

/** One connection as `GET /api/v1/connections` lists it (every node's). */
export interface ConnectionInfo {
  id: string;
  node: string;
  user: string;
  roles: string[];
  client_id: string | null;
  subscriptions: { id: string; event_types: string[]; test_id: string | null }[];
  connected_since: string;
  address: string | null;
  state: 'live' | 'catching_up';
  queue_bytes: number;
  sent: number;
  received: number;
  behind?: number;
}

/** One audit record (contract section 8). */
export interface AuditRecord {
  id: string;
  time: string;
  action: string;
  outcome: 'allowed' | 'denied';
  sub: string | null;
  address: string | null;
  node: string;
  reason: string | null;
  [about: string]: unknown;
}

export const AUDIT_ACTIONS = [
  'ws.connect', 'ws.close', 'token.refresh', 'token.expired', 'subscribe.forbidden', 'publish',
  'poll.forbidden', 'admin.connections', 'admin.close', 'admin.audit', 'dev.token',
] as const;

const ABOUT_SKIP = new Set(['id', 'time', 'action', 'outcome', 'sub', 'address', 'node', 'reason']);

function about(record: AuditRecord): string {
  return Object.entries(record)
    .filter(([k, v]) => !ABOUT_SKIP.has(k) && v !== null && v !== undefined)
    .map(([k, v]) => `${k}=${Array.isArray(v) ? v.join(',') : String(v)}`)
    .join(' ');
}

function kib(bytes: number): string {
  return bytes < 1024 ? `${bytes} B` : `${(bytes / 1024).toFixed(1)} KiB`;
}

/**
 * The administrator's view: every node's connections (state and lag, a close button)
 * and the audit trail with filters. Shown to the `admin` role only.
 */
export function AdminConsole({
  getToken,
  baseUrl = '',
  refreshMs = 30_000,
}: {
  getToken: (reason: string) => Promise<string>;
  baseUrl?: string;
  refreshMs?: number;
}) {
  const [connections, setConnections] = useState<ConnectionInfo[] | null>(null);
  const [records, setRecords] = useState<AuditRecord[] | null>(null);
  const [action, setAction] = useState('');
  const [sub, setSub] = useState('');
  const [error, setError] = useState<string | null>(null);

  const call = useCallback(
    async (path: string, init: RequestInit = {}): Promise<Response> => {
      const token = await getToken('admin');
      const res = await fetch(`${baseUrl}${path}`, {
        ...init,
        headers: { ...(init.headers ?? {}), Authorization: `Bearer ${token}` },
      });
      if (!res.ok && res.status !== 404) throw new Error(`${path}: HTTP ${res.status}`);
      return res;
    },
    [getToken, baseUrl],
  );

  const loadConnections = useCallback(async () => {
    try {
      const body = (await (await call('/api/v1/connections')).json()) as {
        connections: ConnectionInfo[];
      };
      setConnections(body.connections);
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, [call]);

  const loadAudit = useCallback(async () => {
    const params = new URLSearchParams({ limit: '1000' });
    if (action) params.set('action', action);
    if (sub.trim()) params.set('sub', sub.trim());
    try {
      const body = (await (await call(`/api/v1/audit?${params}`)).json()) as {
        records: AuditRecord[];
      };
      setRecords(body.records.slice(-200).reverse());
      setError(null);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
  }, [call, action, sub]);

  useEffect(() => {
    void loadConnections();
    const timer = setInterval(() => void loadConnections(), refreshMs);
    return () => clearInterval(timer);
  }, [loadConnections, refreshMs]);

  useEffect(() => {
    void loadAudit();
  }, [loadAudit]);

  async function close(id: string) {
    try {
      const res = await call(`/api/v1/connections/${encodeURIComponent(id)}`, { method: 'DELETE' });
      if (res.status === 404) setError(`connection ${id} is gone already`);
    } catch (err) {
      setError(err instanceof Error ? err.message : String(err));
    }
    await loadConnections();
    await loadAudit();
  }

  return (
    <section className="panel admin" data-testid="admin-console">
      <header className="widget__head">
        <h2>Administration</h2>
        <button type="button" className="btn btn--small" onClick={() => void loadConnections()}>
          Refresh
        </button>
      </header>
      {error && (
        <p className="banner banner--error" role="alert">
          {error}
        </p>
      )}
      <h3>
        Connections <span className="widget__count">{connections?.length ?? '…'}</span>
      </h3>
      <table className="admin__table" data-testid="admin-connections">
        <thead>
          <tr>
            <th>user</th>
            <th>node</th>
            <th>state</th>
            <th>lag</th>
            <th>subscriptions</th>
            <th>since</th>
            <th>address</th>
            <th>sent / recv</th>
            <th />
          </tr>
        </thead>
        <tbody>
          {(connections ?? []).map((c) => (
            <tr key={c.id} data-testid="admin-connection" data-connection-id={c.id} data-state={c.state}>
              <td title={c.roles.join(', ')}>{c.user}</td>
              <td>{c.node}</td>
              <td>{c.state === 'live' ? 'live' : 'catching up'}</td>
              <td>
                {kib(c.queue_bytes)}
                {c.behind !== undefined ? ` · ${c.behind} behind` : ''}
              </td>
              <td>{c.subscriptions.map((s) => s.event_types.join(' ') + (s.test_id ? ` @${s.test_id}` : '')).join('; ')}</td>
              <td>{new Date(c.connected_since).toLocaleTimeString()}</td>
              <td>{c.address ?? '-'}</td>
              <td>
                {c.sent} / {c.received}
              </td>
              <td>
                <button
                  type="button"
                  className="btn btn--small"
                  data-testid="admin-close"
                  onClick={() => void close(c.id)}
                >
                  Close
                </button>
              </td>
            </tr>
          ))}
        </tbody>
      </table>
      <h3>Audit trail</h3>
      <form
        className="admin__filters"
        onSubmit={(e) => {
          e.preventDefault();
          void loadAudit();
        }}
      >
        <label>
          action{' '}
          <select name="action" value={action} onChange={(e) => setAction(e.target.value)} data-testid="audit-action">
            <option value="">all</option>
            {AUDIT_ACTIONS.map((a) => (
              <option key={a} value={a}>
                {a}
              </option>
            ))}
          </select>
        </label>
        <label>
          user{' '}
          <input name="sub" value={sub} onChange={(e) => setSub(e.target.value)} data-testid="audit-sub" />
        </label>
        <button type="submit" className="btn btn--small">
          Apply
        </button>
      </form>
      <table className="admin__table" data-testid="audit-records">
        <thead>
          <tr>
            <th>time</th>
            <th>action</th>
            <th>outcome</th>
            <th>user</th>
            <th>address</th>
            <th>reason</th>
            <th>about</th>
          </tr>
        </thead>
        <tbody>
          {(records ?? []).map((r) => (
            <tr key={r.id} data-testid="audit-record" data-action={r.action} data-outcome={r.outcome}>
              <td>{new Date(r.time).toLocaleTimeString()}</td>
              <td>{r.action}</td>
              <td className={`admin__outcome admin__outcome--${r.outcome}`}>{r.outcome}</td>
              <td>{r.sub ?? '-'}</td>
              <td>{r.address ?? '-'}</td>
              <td>{r.reason ?? ''}</td>
              <td>{about(r)}</td>
            </tr>
          ))}
        </tbody>
      </table>
    </section>
  );
}
