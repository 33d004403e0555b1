import type { ReactNode } from 'react';
import type { LiveState, TestSummary } from '../liveState.js';
import { TestRunMetadata, TestRunSummary } from './TestRunSummary.js';

function since(ts: string): string {
  const s = Math.max(0, Math.round((Date.now() - Date.parse(ts)) / 1000));
  if (!Number.isFinite(s)) return '';
  if (s < 60) return `${s}s ago`;
  if (s < 3600) return `${Math.floor(s / 60)}m ago`;
  return `${Math.floor(s / 3600)}h ago`;
}

/** Tests with their progress, running ones first. */
export function ActiveTests({ live, actions }: { live: LiveState; actions?: (t: TestSummary) => ReactNode }) {
  const tests = live.order.map((id) => live.tests[id]).filter((t) => t !== undefined);
  const running = tests.filter((t) => t.status === 'running');
  const shown = [...running, ...tests.filter((t) => t.status !== 'running')].slice(0, 12);
  return (
    <section className="panel widget" data-testid="active-tests">
      <header className="widget__head">
        <h2>Tests</h2>
        <span className="widget__count">{running.length} running</span>
      </header>
      {shown.length === 0 ? (
        <p className="widget__empty">No tests yet. Start one to see it here.</p>
      ) : (
        <ul className="tests">
          {shown.map((t) => (
            <li key={t.testId} className="tests__row" data-testid="active-test" data-test-id={t.testId} data-status={t.status}>
              <div className="tests__top">
                <span className={`badge badge--${t.status}`}>{t.status}</span>
                <span className="tests__name">{t.module ?? 'test'}</span>
                <code className="tests__id">{t.testId}</code>
                <span className="tests__pct">{Math.round(t.progress)}%</span>
              </div>
              <div className="progress progress--thin">
                <div className={`progress__bar progress__bar--${t.status}`} style={{ width: `${t.progress}%` }} />
              </div>
              <div className="tests__foot">
                <span>{t.lastOutput ?? t.error ?? '…'}</span>
                <span>
                  {t.findings ? `${t.findings} findings · ` : ''}
                  {since(t.updatedAt)}
                </span>
              </div>
              <TestRunMetadata test={t} />
              <TestRunSummary test={t} />
              {actions && <div className="tests__actions">{actions(t)}</div>}
            </li>
          ))}
        </ul>
      )}
    </section>
  );
}
