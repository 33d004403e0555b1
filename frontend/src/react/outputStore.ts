/**
 * Output lines per test, fed by every event the connection processes, so a
 * panel that mounts late still shows the lines that came before it.
 */

import type { EventEnvelope } from '../client/protocol';

export interface OutputLine {
  /** 0-based position of this line in the test's whole output. */
  seq: number;
  id: string;
  text: string;
  timestamp: string;
  progress: number | null;
}

interface TestOutput {
  lines: OutputLine[];
  /** Lines dropped from the front when over `maxLines`. */
  dropped: number;
  version: number;
}

export class OutputStore {
  private readonly tests = new Map<string, TestOutput>();
  private readonly listeners = new Map<string, Set<() => void>>();

  constructor(
    private readonly maxLines = 200_000,
    private readonly maxTests = 100,
  ) {}

  /** Take one event; only `test.progress` with a string `data.output` adds a line. */
  add(event: EventEnvelope): void {
    if (event.event_type !== 'test.progress') return;
    const testId = event.data['test_id'];
    const output = event.data['output'];
    if (typeof testId !== 'string' || typeof output !== 'string') return;
    let t = this.tests.get(testId);
    if (!t) {
      t = { lines: [], dropped: 0, version: 0 };
      this.tests.set(testId, t);
      this.evict();
    }
    const progress = event.data['progress'];
    t.lines.push({
      seq: t.dropped + t.lines.length,
      id: event.id,
      text: output,
      timestamp: event.timestamp,
      progress: typeof progress === 'number' ? progress : null,
    });
    if (t.lines.length > this.maxLines) {
      const cut = Math.ceil(this.maxLines / 10);
      t.lines.splice(0, cut);
      t.dropped += cut;
    }
    t.version++;
    const set = this.listeners.get(testId);
    if (set) for (const fn of set) fn();
  }

  lines(testId: string): readonly OutputLine[] {
    return this.tests.get(testId)?.lines ?? EMPTY;
  }

  version(testId: string): number {
    return this.tests.get(testId)?.version ?? 0;
  }

  subscribe(testId: string, fn: () => void): () => void {
    let set = this.listeners.get(testId);
    if (!set) {
      set = new Set();
      this.listeners.set(testId, set);
    }
    set.add(fn);
    return () => {
      set.delete(fn);
      if (!set.size) this.listeners.delete(testId);
    };
  }

  private evict(): void {
    // Map keeps insertion order: the oldest tests without a viewer go first
    for (const key of this.tests.keys()) {
      if (this.tests.size <= this.maxTests) return;
      if (!this.listeners.has(key)) this.tests.delete(key);
    }
  }
}

const EMPTY: readonly OutputLine[] = [];
