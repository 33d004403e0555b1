/**
 * Output lines per test, fed by every event the connection processes, so a
 * panel that mounts late still shows the lines that came before it. Lines are
 * kept in `id` order: a test's history, replayed after some of its live lines
 * arrived, slots in before them, and an id already held is not added twice.
 */

import { compareOffsets, type EventEnvelope } from '@secstream/client';

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
  /** Older output of this test is no longer kept by the server (a truncated replay). */
  truncated: boolean;
  /** Its history was replayed once on this page (see `useTestHistory`). */
  history: boolean;
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
    const t = this.entry(testId);
    const at = insertionPoint(t.lines, event.id);
    if (at < 0) return; // already held
    if (at === 0 && t.dropped > 0) return; // older than the lines cut from the front
    const progress = event.data['progress'];
    t.lines.splice(at, 0, {
      seq: t.dropped + at,
      id: event.id,
      text: output,
      timestamp: event.timestamp,
      progress: typeof progress === 'number' ? progress : null,
    });
    for (let i = at + 1; i < t.lines.length; i++) t.lines[i]!.seq = t.dropped + i;
    if (t.lines.length > this.maxLines) {
      const cut = Math.ceil(this.maxLines / 10);
      t.lines.splice(0, cut);
      t.dropped += cut;
    }
    this.changed(testId, t);
  }

  /** Older output is gone on the server: of one test, or (`null`) of every test held. */
  markTruncated(testId: string | null): void {
    const ids = testId === null ? [...this.tests.keys()] : [testId];
    for (const id of ids) {
      const t = this.entry(id);
      if (t.truncated) continue;
      t.truncated = true;
      this.changed(id, t);
    }
  }

  markHistory(testId: string): void {
    this.entry(testId).history = true;
  }

  hasHistory(testId: string): boolean {
    return this.tests.get(testId)?.history ?? false;
  }

  truncated(testId: string): boolean {
    return this.tests.get(testId)?.truncated ?? false;
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

  private entry(testId: string): TestOutput {
    let t = this.tests.get(testId);
    if (!t) {
      t = { lines: [], dropped: 0, version: 0, truncated: false, history: false };
      this.tests.set(testId, t);
      this.evict();
    }
    return t;
  }

  private changed(testId: string, t: TestOutput): void {
    t.version++;
    const set = this.listeners.get(testId);
    if (set) for (const fn of set) fn();
  }

  private evict(): void {
    // Map keeps insertion order: the oldest tests without a viewer go first
    for (const key of this.tests.keys()) {
      if (this.tests.size <= this.maxTests) return;
      if (!this.listeners.has(key)) this.tests.delete(key);
    }
  }
}

/** Where `id` goes in `lines` (sorted by id), or -1 when it is there already. */
function insertionPoint(lines: readonly OutputLine[], id: string): number {
  const last = lines[lines.length - 1];
  if (!last) return 0;
  const tail = compareOffsets(id, last.id);
  if (tail > 0) return lines.length; // the usual case: a live line
  if (tail === 0) return -1;
  let lo = 0;
  let hi = lines.length - 1;
  while (lo < hi) {
    const mid = (lo + hi) >> 1;
    if (compareOffsets(lines[mid]!.id, id) < 0) lo = mid + 1;
    else hi = mid;
  }
  return lines[lo]!.id === id ? -1 : lo;
}

const EMPTY: readonly OutputLine[] = [];
