import { useEffect } from 'react';
import { useWebSocketContext } from './context.js';

/** What a test's history replays: its own events (wildcards cover allowed types only). */
export const HISTORY_EVENT_TYPES = ['test.*'] as const;

/**
 * Replay one test's events from the start of the log (`since: "0"`, bounded by
 * the server's replay limit), so a view opened while the test runs shows its
 * lines from line 1. The subscription lasts until its replay has completed
 * (live events keep coming through the app's other subscriptions) or the view
 * goes; a test whose history came once is not replayed again on this page.
 * The lines land in the provider's output store like any other event.
 */
export function useTestHistory(testId: string, enabled = true): void {
  const { client, output } = useWebSocketContext();

  useEffect(() => {
    if (!enabled || output.hasHistory(testId)) return;
    let done = false;
    const sub = client.subscribe(HISTORY_EVENT_TYPES, () => undefined, {
      testId,
      since: '0',
      onReplayed: () => {
        output.markHistory(testId);
        done = true;
        sub.unsubscribe();
      },
    });
    return () => {
      if (!done) sub.unsubscribe();
    };
  }, [client, output, testId, enabled]);
}
