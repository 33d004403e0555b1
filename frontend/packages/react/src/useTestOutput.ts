import { useCallback, useEffect, useRef, useState } from 'react';
import { useWebSocketContext } from './context.js';
import { createFrameBatcher } from './frameBatcher.js';
import type { OutputLine } from './outputStore.js';

/**
 * The output lines of one test, re-rendering at most once per frame (and per
 * `throttleMs`) however fast lines arrive. The array is the store's own: read, never mutate.
 * `truncated`: the server no longer keeps the test's older output.
 */
export function useTestOutput(
  testId: string,
  throttleMs = 50,
): { lines: readonly OutputLine[]; version: number; truncated: boolean } {
  const { output } = useWebSocketContext();
  const [version, setVersion] = useState(() => output.version(testId));
  const testRef = useRef(testId);
  testRef.current = testId;

  const bump = useCallback(() => setVersion(output.version(testRef.current)), [output]);

  useEffect(() => {
    const batcher = createFrameBatcher<null>(bump, throttleMs);
    const off = output.subscribe(testId, () => batcher.push(null));
    bump();
    return () => {
      off();
      batcher.cancel();
    };
  }, [output, testId, throttleMs, bump]);

  return { lines: output.lines(testId), version, truncated: output.truncated(testId) };
}
