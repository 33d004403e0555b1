import { afterEach, describe, expect, it, vi } from 'vitest';
import { createFrameBatcher } from './frameBatcher.js';

afterEach(() => vi.useRealTimers());

describe('createFrameBatcher', () => {
  it('delivers everything pushed within one frame in a single call, in order', async () => {
    vi.useFakeTimers();
    const calls: number[][] = [];
    const b = createFrameBatcher<number>((items) => calls.push(items));
    for (let i = 0; i < 1000; i++) b.push(i);
    expect(calls).toHaveLength(0);
    await vi.advanceTimersByTimeAsync(20);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toHaveLength(1000);
    expect(calls[0]![999]).toBe(999);
  });

  it('keeps deliveries at least throttleMs apart under a steady stream', async () => {
    vi.useFakeTimers();
    const at: number[] = [];
    const b = createFrameBatcher<number>(() => at.push(Date.now()), 100);
    for (let t = 0; t < 1000; t += 5) {
      b.push(t);
      await vi.advanceTimersByTimeAsync(5);
    }
    await vi.advanceTimersByTimeAsync(200);
    expect(at.length).toBeGreaterThan(5);
    expect(at.length).toBeLessThanOrEqual(11);
    for (let i = 1; i < at.length; i++) expect(at[i]! - at[i - 1]!).toBeGreaterThanOrEqual(100);
  });

  it('cancel drops what is queued', async () => {
    vi.useFakeTimers();
    const deliver = vi.fn();
    const b = createFrameBatcher<number>(deliver);
    b.push(1);
    b.cancel();
    await vi.advanceTimersByTimeAsync(50);
    expect(deliver).not.toHaveBeenCalled();
  });
});
