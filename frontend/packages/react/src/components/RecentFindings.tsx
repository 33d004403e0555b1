import type { LiveState } from '../liveState.js';
import { EventDetails } from './EventDetails.js';

/** Newest findings and alerts, most severe highlighted. */
export function RecentFindings({ live, max = 15 }: { live: LiveState; max?: number }) {
  const items = [
    ...live.findings.map((f) => ({
      id: f.id,
      level: f.severity,
      title: f.title,
      detail: f.detail ?? (f.testId ? `test ${f.testId}` : null),
      timestamp: f.timestamp,
      traceparent: f.traceparent,
      kind: 'finding' as const,
    })),
    ...live.alerts.map((a) => ({
      id: a.id,
      level: a.priority === 'normal' ? 'medium' : a.priority,
      title: a.title,
      detail: a.message,
      timestamp: a.timestamp,
      traceparent: a.traceparent,
      kind: 'alert' as const,
    })),
  ]
    .sort((a, b) => (a.timestamp < b.timestamp ? 1 : -1))
    .slice(0, max);
  return (
    <section className="panel widget" data-testid="recent-findings">
      <header className="widget__head">
        <h2>Findings &amp; alerts</h2>
        <span className="widget__count">{live.findings.length + live.alerts.length}</span>
      </header>
      {items.length === 0 ? (
        <p className="widget__empty">Nothing found yet.</p>
      ) : (
        <ul className="findings">
          {items.map((f) => (
            <li key={f.id} className={`findings__row findings__row--${f.level}`}>
              <span className={`sev sev--${f.level}`}>{f.level}</span>
              <div className="findings__text">
                <div className="findings__title">
                  {f.kind === 'alert' && <span className="findings__tag">alert</span>}
                  {f.title}
                </div>
                {f.detail && <div className="findings__detail">{f.detail}</div>}
                <EventDetails id={f.id} traceparent={f.traceparent} />
              </div>
              <time className="findings__time">{new Date(f.timestamp).toLocaleTimeString()}</time>
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
