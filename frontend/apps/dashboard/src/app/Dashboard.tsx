import { useState } from 'react';
import {
  ActiveTests,
  AdminConsole,
  AdminPanel,
  StopTestButton,
  MaintenanceBanner,
  NotificationToast,
  RealTimeStatus,
  RecentFindings,
  SystemStatusPanel,
  TestOutputStreamer,
  useRealTimeUpdates,
  useWebSocket,
} from '@secstream/react';

/** Who is signed in, whichever sign-in it was. */
export interface Viewer {
  sub: string;
  name?: string | null;
  roles: string[];
  groups: string[];
}

const OUTPUT_PANELS = 24;
/** The most recent tests whose output is replayed from their start when their panel opens. */
const HISTORY_TESTS = 20;

export function Dashboard({
  viewer,
  demo,
  getToken,
  onSignOut,
}: {
  viewer: Viewer;
  /** The demo's extras (the simulate button) on a `--demo` server. */
  demo: boolean;
  getToken: (reason: string) => Promise<string>;
  onSignOut: () => void;
}) {
  const live = useRealTimeUpdates();
  const { status } = useWebSocket();
  const [notice, setNotice] = useState<{ ok: boolean; text: string } | null>(null);
  const [starting, setStarting] = useState(false);

  async function simulate() {
    setStarting(true);
    try {
      const token = await getToken('connect');
      const res = await fetch('/api/v1/dev/simulate', {
        method: 'POST',
        headers: { Authorization: `Bearer ${token}`, 'Content-Type': 'application/json' },
        body: '{}',
      });
      if (!res.ok) throw new Error(`HTTP ${res.status}`);
      const body = (await res.json()) as { test_id: string };
      setNotice({ ok: true, text: `Started simulated test ${body.test_id}` });
    } catch (err) {
      setNotice({ ok: false, text: `Could not start a test (${err instanceof Error ? err.message : String(err)}).` });
    } finally {
      setStarting(false);
    }
  }

  const panels = live.order.slice(0, OUTPUT_PANELS);
  const needsSignIn = status.state === 'error' && status.error?.kind === 'auth';

  return (
    <div className="app">
      <header className="topbar">
        <div className="brand">
          <span className="brand__mark" aria-hidden="true">◆</span> secstream
          <span className="brand__sub">security testing · live</span>
        </div>
        <RealTimeStatus />
        <div className="topbar__actions">
          {demo && (
            <button
              type="button"
              className="btn btn--primary"
              data-testid="simulate-test"
              onClick={() => void simulate()}
              disabled={starting}
            >
              {starting ? 'Starting…' : '▶ Simulate test'}
            </button>
          )}
          <span className="user" data-testid="signed-in-user" data-sub={viewer.sub} title={viewer.groups.join(', ')}>
            <span className="user__name">{viewer.name ?? viewer.sub}</span>
            <span className="user__role" data-testid="signed-in-roles">
              {viewer.roles.length ? viewer.roles.join(', ') : '…'}
            </span>
          </span>
          <button type="button" className="btn btn--ghost" onClick={onSignOut} data-testid="sign-out">
            Sign out
          </button>
        </div>
      </header>
      <MaintenanceBanner live={live} />
      {needsSignIn && (
        <div className="banner banner--error" role="alert">
          <strong>Live updates stopped.</strong> {status.error?.message} {status.error?.action}
          <button type="button" className="btn btn--small" onClick={onSignOut}>
            Sign in again
          </button>
        </div>
      )}
      {notice && (
        <div className={`banner ${notice.ok ? 'banner--info' : 'banner--error'}`} role="status">
          {notice.text}
          <button type="button" className="banner__close" aria-label="Hide" onClick={() => setNotice(null)}>
            ×
          </button>
        </div>
      )}
      <main className="grid">
        <ActiveTests live={live} actions={(t) => <StopTestButton test={t} viewer={viewer} getToken={getToken} />} />
        <RecentFindings live={live} />
        <SystemStatusPanel live={live} />
      </main>
      {viewer.roles.includes('admin') && <AdminPanel getToken={getToken} />}
      <section className="outputs">
        <h2 className="outputs__title">
          Live output <span className="widget__count">{panels.length} tests</span>
        </h2>
        {panels.length === 0 ? (
          <p className="widget__empty panel">Output of every test appears here as it runs.</p>
        ) : (
          <div className="outputs__grid">
            {panels.map((id, i) => (
              <TestOutputStreamer key={id} testId={id} summary={live.tests[id]} history={i < HISTORY_TESTS} />
            ))}
          </div>
        )}
      </section>
      {viewer.roles.includes('admin') && <AdminConsole getToken={getToken} />}
      <NotificationToast />
    </div>
  );
}
