import type { Severity, TestSummary } from '../liveState.js';

const ORDER: readonly Severity[] = ['critical', 'high', 'medium', 'low', 'info'];

export function formatDuration(seconds: number): string {
  if (seconds < 60) return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
  const m = Math.floor(seconds / 60);
  const s = Math.round(seconds % 60);
  if (m < 60) return `${m} min ${s} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

const text = (v: unknown): string | null => (typeof v === 'string' && v ? v : typeof v === 'number' ? String(v) : null);

/** `test.started`'s metadata that people look for first: the target, the profile, who started it. */
export function TestRunMetadata({ test }: { test: TestSummary }) {
  const m = test.metadata;
  if (!m) return null;
  const target = text(m['target']);
  const profile = text(m['profile']);
  const by = text(m['started_by']);
  if (!target && !profile && !by) return null;
  return (
    <div className="run-meta" data-testid="test-metadata">
      {target && (
        <span className="run-meta__target" title="target">
          ⌖ {target}
        </span>
      )}
      {profile && <span className="run-meta__profile">{profile}</span>}
      {by && <span className="run-meta__by">started by {by}</span>}
    </div>
  );
}

/** What a finished run reported: findings by severity, duration, lines; who stopped it. */
export function TestRunSummary({ test }: { test: TestSummary }) {
  const s = test.summary;
  if (test.status === 'running' || (!s && test.status !== 'cancelled')) return null;
  const counts = ORDER.map((sev) => [sev, s?.findings[sev] ?? 0] as const);
  const total = counts.reduce((n, [, c]) => n + c, 0);
  return (
    <div className="run-summary" data-testid="test-summary" data-test-id={test.testId}>
      {s && (
        <>
          <span className="run-summary__findings" data-total={total}>
            {total === 0 ? (
              <span className="run-summary__none">no findings</span>
            ) : (
              counts
                .filter(([, c]) => c > 0)
                .map(([sev, c]) => (
                  <span key={sev} className={`sev sev--${sev} run-summary__count`} data-severity={sev} title={`${c} ${sev}`}>
                    {c} {sev}
                  </span>
                ))
            )}
          </span>
          {s.durationSeconds !== null && <span className="run-summary__duration">{formatDuration(s.durationSeconds)}</span>}
          {s.lines !== null && <span className="run-summary__lines">{s.lines} lines</span>}
        </>
      )}
      {test.status === 'cancelled' && test.cancelledBy && (
        <span className="run-summary__cancelled" data-testid="cancelled-by">
          stopped by <strong>{test.cancelledBy}</strong>
          {test.cancelReason ? `: ${test.cancelReason}` : ''}
        </span>
      )}
    </div>
  );
}
