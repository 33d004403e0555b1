import { describe, expect, it } from 'vitest';
import type { EventEnvelope } from '@secstream/client';
import { envelope } from '../../../test/testServer.js';
import { INITIAL_LIVE_STATE, reduceEvents } from './liveState.js';
import { OutputStore } from './outputStore.js';

const line = (id: string, text: string, testId = 't') =>
  envelope(id, 'test.progress', { test_id: testId, output: text }) as EventEnvelope;
const ev = (id: string, type: string, data: Record<string, unknown>) => envelope(id, type, data) as EventEnvelope;
const texts = (store: OutputStore, testId = 't') => store.lines(testId).map((l) => `${l.seq}:${l.text}`);

describe('OutputStore with history arriving late', () => {
  it('keeps lines in id order, numbers them by position, and holds each id once', () => {
    const store = new OutputStore();
    for (const e of [line('41-0', 'd'), line('42-0', 'e'), line('10-0', 'a'), line('30-0', 'c'), line('20-0', 'b')]) {
      store.add(e);
    }
    store.add(line('30-0', 'c again'));
    store.add(line('42-0', 'e again'));
    expect(texts(store)).toEqual(['0:a', '1:b', '2:c', '3:d', '4:e']);
  });

  it('drops a line older than the ones cut from the front', () => {
    const store = new OutputStore(10);
    for (let i = 1; i <= 11; i++) store.add(line(`${100 + i}-0`, `l${i}`));
    expect(store.lines('t')).toHaveLength(10);
    expect(store.lines('t')[0]).toMatchObject({ seq: 1, text: 'l2' });
    store.add(line('50-0', 'too old'));
    expect(store.lines('t')[0]).toMatchObject({ seq: 1, text: 'l2' });
    store.add(line('105-5', 'between')); // 11 lines again: the oldest is cut
    expect(texts(store).slice(0, 5)).toEqual(['2:l3', '3:l4', '4:l5', '5:between', '6:l6']);
    expect(store.lines('t').map((l) => l.seq)).toEqual([2, 3, 4, 5, 6, 7, 8, 9, 10, 11]);
  });

  it('marks one test, or every test held, as truncated and tells its viewers', () => {
    const store = new OutputStore();
    store.add(line('1-0', 'x', 'a'));
    store.add(line('2-0', 'y', 'b'));
    let calls = 0;
    store.subscribe('a', () => calls++);
    store.markTruncated('a');
    store.markTruncated('a');
    expect([store.truncated('a'), store.truncated('b'), calls]).toEqual([true, false, 1]);
    store.markTruncated(null);
    expect(store.truncated('b')).toBe(true);
    expect(store.hasHistory('a')).toBe(false);
    store.markHistory('a');
    expect(store.hasHistory('a')).toBe(true);
  });
});

describe('reduceEvents with history arriving late', () => {
  it('counts older lines and findings but keeps the state the newest event set', () => {
    let s = reduceEvents(INITIAL_LIVE_STATE, [
      ev('50-0', 'test.progress', { test_id: 'a', progress: 90, output: 'late line', module: 'web_scanner' }),
      ev('51-0', 'test.completed', { test_id: 'a' }),
      ev('60-0', 'test.started', { test_id: 'b' }),
    ]);
    s = reduceEvents(s, [
      ev('10-0', 'test.started', { test_id: 'a', module: 'web_scanner' }),
      ev('20-0', 'test.progress', { test_id: 'a', progress: 10, output: 'first line' }),
      ev('30-0', 'test.progress', { test_id: 'a', progress: 20, output: 'found', finding: { title: 'XSS', severity: 'high' } }),
    ]);
    expect(s.tests['a']).toMatchObject({ status: 'completed', progress: 100, lines: 3, lastOutput: 'late line', findings: 1 });
    expect(s.findings.map((f) => f.title)).toEqual(['XSS']);
    // history does not make an old test the most recent one
    expect(s.order).toEqual(['b', 'a']);
  });
});
