import { memo, useCallback, useRef, useState } from 'react';
import type { TestSummary } from '../liveState.js';
import { useTestHistory } from '../useTestHistory.js';
import { useTestOutput } from '../useTestOutput.js';
import { VirtualList } from './VirtualList.js';

export interface TestOutputStreamerProps {
  testId: string;
  summary?: TestSummary;
  height?: number;
  rowHeight?: number;
  throttleMs?: number;
  /** Replay the test's output from its start when the view opens (default true). */
  history?: boolean;
}

const LEVEL = /^\[!\]|\b(critical|vulnerab|exploit)/i;
const WARN = /\b(warn|medium|open port|exposed)\b/i;

function lineClass(text: string): string {
  if (LEVEL.test(text)) return 'out-line out-line--bad';
  if (WARN.test(text)) return 'out-line out-line--warn';
  return 'out-line';
}

/**
 * Live output of one test: a virtualised list that follows the tail and
 * pauses when the person scrolls up, with a progress bar.
 */
export const TestOutputStreamer = memo(function TestOutputStreamer({
  testId,
  summary,
  height = 220,
  rowHeight = 18,
  throttleMs = 50,
  history = true,
}: TestOutputStreamerProps) {
  useTestHistory(testId, history);
  const { lines, truncated } = useTestOutput(testId, throttleMs);
  const [follow, setFollow] = useState(true);
  const pausedAt = useRef(0);
  const count = lines.length;
  const first = lines[0]?.seq ?? 0;
  const lastProgress = lines[count - 1]?.progress ?? null;
  const progress = summary?.progress ?? lastProgress ?? 0;
  const status = summary?.status ?? 'running';

  const onFollowChange = useCallback(
    (next: boolean) => {
      setFollow((prev) => {
        if (prev && !next) pausedAt.current = first + count;
        return next;
      });
    },
    [first, count],
  );

  const renderRow = useCallback(
    (i: number) => {
      const line = lines[i];
      if (!line) return null;
      return (
        <div className={lineClass(line.text)} data-testid="output-line" data-seq={line.seq} data-event-id={line.id}>
          <span className="out-line__no">{line.seq + 1}</span>
          <span className="out-line__text">{line.text}</span>
        </div>
      );
    },
    [lines],
  );

  const unseen = follow ? 0 : Math.max(0, first + count - pausedAt.current);

  return (
    <section
      className={`panel out-panel out-panel--${status}`}
      data-testid="test-output"
      data-test-id={testId}
      data-line-count={first + count}
      data-status={status}
    >
      <header className="out-panel__head">
        <span className={`badge badge--${status}`}>{status}</span>
        <span className="out-panel__title" title={testId}>
          {summary?.module ?? 'test'} <code>{testId}</code>
        </span>
        <span className="out-panel__meta">{first + count} lines</span>
        <span className="out-panel__meta">{Math.round(progress)}%</span>
      </header>
      <div
        className="progress"
        role="progressbar"
        aria-valuemin={0}
        aria-valuemax={100}
        aria-valuenow={Math.round(progress)}
        aria-label={`Progress of ${testId}`}
      >
        <div className={`progress__bar progress__bar--${status}`} style={{ width: `${progress}%` }} />
      </div>
      {truncated && (
        <div className="out-panel__truncated" data-testid="output-truncated" role="note">
          Older output of this test is no longer kept; the lines below start later.
        </div>
      )}
      <div className="out-panel__body">
        {count === 0 ? (
          <div className="out-panel__empty" style={{ height }}>
            Waiting for output…
          </div>
        ) : (
          <VirtualList
            count={count}
            rowHeight={rowHeight}
            height={height}
            renderRow={renderRow}
            follow={follow}
            onFollowChange={onFollowChange}
            className="out-panel__list"
          />
        )}
        {!follow && (
          <button type="button" className="btn btn--small out-panel__resume" onClick={() => setFollow(true)}>
            Paused{unseen ? ` · ${unseen} new` : ''} · follow tail ↓
          </button>
        )}
      </div>
      {summary?.error && <div className="out-panel__error">{summary.error}</div>}
    </section>
  );
});
