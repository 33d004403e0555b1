import { useEffect, useState } from 'react';
import type { TestSummary } from '../liveState.js';
import { errorMessage, postJson, type GetToken } from './api.js';

export interface Viewer {
  sub: string;
  roles: string[];
}

/**
 * Whether `viewer` may stop `test`: an administrator, or the user the run belongs to (its
 * default audience). The server decides in the end; a 403 is shown like any error.
 */
export function mayStop(viewer: Viewer, test: TestSummary): boolean {
  if (test.status !== 'running') return false;
  if (viewer.roles.includes('admin')) return true;
  return test.userId === viewer.sub || test.metadata?.['started_by'] === viewer.sub;
}

const MAX_REASON = 500;
/** After this long without the run ending, the request may not have reached a live worker. */
const ANSWER_WITHIN_MS = 10_000;

/** "Stop" on a running test, with a confirmation and an optional reason. */
export function StopTestButton({ test, viewer, getToken }: { test: TestSummary; viewer: Viewer; getToken: GetToken }) {
  const [stage, setStage] = useState<'idle' | 'confirm' | 'sending' | 'sent'>('idle');
  const [reason, setReason] = useState('');
  const [error, setError] = useState<string | null>(null);
  useEffect(() => {
    if (stage !== 'sent') return;
    const timer = setTimeout(() => {
      setError('The test has not stopped yet: its worker may be gone. Try again, or wait.');
      setStage('confirm');
    }, ANSWER_WITHIN_MS);
    return () => clearTimeout(timer);
  }, [stage]);
  if (!mayStop(viewer, test)) return null;

  async function stop() {
    setStage('sending');
    setError(null);
    try {
      const trimmed = reason.trim();
      await postJson(getToken, `/api/v1/tests/${encodeURIComponent(test.testId)}/cancel`, trimmed ? { reason: trimmed } : {});
      setStage('sent');
    } catch (err) {
      setError(errorMessage(err));
      setStage('confirm');
    }
  }

  if (stage === 'idle') {
    return (
      <button type="button" className="btn btn--small btn--danger" data-testid="stop-test" onClick={() => setStage('confirm')}>
        ■ Stop
      </button>
    );
  }
  if (stage === 'sent') {
    return (
      <span className="stop__pending" data-testid="stop-requested">
        Stopping…
      </span>
    );
  }
  return (
    <form
      className="stop__confirm"
      data-testid="stop-confirm"
      onSubmit={(e) => {
        e.preventDefault();
        void stop();
      }}
    >
      <span className="stop__question">Stop {test.module ?? 'this test'}?</span>
      <input
        className="stop__reason"
        name="reason"
        placeholder="reason (optional)"
        maxLength={MAX_REASON}
        value={reason}
        onChange={(e) => setReason(e.target.value)}
        aria-label="Why stop it"
      />
      <button type="submit" className="btn btn--small btn--danger" data-testid="confirm-stop" disabled={stage === 'sending'}>
        {stage === 'sending' ? 'Stopping…' : 'Stop test'}
      </button>
      <button type="button" className="btn btn--small btn--ghost" onClick={() => setStage('idle')} disabled={stage === 'sending'}>
        Keep running
      </button>
      {error && (
        <span className="stop__error" role="alert">
          {error}
        </span>
      )}
    </form>
  );
}
