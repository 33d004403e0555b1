import { describe, expect, it } from 'vitest';
import { backoffDelay, DEFAULT_BACKOFF } from './backoff.js';

describe('backoffDelay', () => {
  const opts = { initialDelayMs: 100, maxDelayMs: 5000 };

  it('is zero at the bottom of the jitter range', () => {
    for (let a = 0; a < 20; a++) expect(backoffDelay(a, opts, () => 0)).toBe(0);
  });

  it('doubles the ceiling per attempt up to the cap', () => {
    const top = () => 0.999999;
    expect(backoffDelay(0, opts, top)).toBe(99);
    expect(backoffDelay(1, opts, top)).toBe(199);
    expect(backoffDelay(3, opts, top)).toBe(799);
    expect(backoffDelay(6, opts, top)).toBe(4999);
    expect(backoffDelay(50, opts, top)).toBe(4999);
  });

  it('stays within [0, min(cap, initial * 2^attempt)) for random draws', () => {
    for (let a = 0; a < 40; a++) {
      for (let i = 0; i < 50; i++) {
        const d = backoffDelay(a);
        expect(d).toBeGreaterThanOrEqual(0);
        expect(d).toBeLessThan(Math.min(DEFAULT_BACKOFF.maxDelayMs, DEFAULT_BACKOFF.initialDelayMs * 2 ** a));
      }
    }
  });

  it('defaults to a 5 s cap', () => {
    expect(DEFAULT_BACKOFF.maxDelayMs).toBe(5000);
  });
});
