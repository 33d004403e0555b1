import { describe, expect, it } from 'vitest';
import { CLOSE_CODES, describeClose, describeHttpStatus } from './codes.js';

describe('close code table', () => {
  it('reconnects on every contract close code', () => {
    for (const code of [1001, 4001, 4002, 4003, 4008, 4009]) expect(CLOSE_CODES[code]?.reconnect).toBe(true);
  });
  it('gets a new token on 4001 and waits longer on 4008', () => {
    expect(CLOSE_CODES[4001]?.refreshToken).toBe(true);
    expect(CLOSE_CODES[4008]?.minDelayMs).toBeGreaterThan(5000);
  });
  it('sorts errors into network, auth and server', () => {
    expect(describeClose(1006).error.kind).toBe('network');
    expect(describeClose(4001).error.kind).toBe('auth');
    expect(describeClose(1001).error.kind).toBe('server');
    expect(describeClose(4003).error.message).toContain('administrator');
    expect(describeHttpStatus(401).kind).toBe('auth');
    expect(describeHttpStatus(403).kind).toBe('auth');
    expect(describeHttpStatus(503).kind).toBe('server');
  });
  it('describes unknown codes and says what to do', () => {
    const info = describeClose(4999, 'odd');
    expect(info.reconnect).toBe(true);
    expect(info.error.message).toContain('4999');
    expect(info.error.action.length).toBeGreaterThan(0);
  });
});
