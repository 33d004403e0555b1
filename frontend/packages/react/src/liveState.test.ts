import { describe, expect, it } from 'vitest';
import type { EventEnvelope } from '@secstream/client';
import { envelope } from '../../../test/testServer.js';
import { INITIAL_LIVE_STATE, reduceEvents } from './liveState.js';

const ev = (id: string, type: string, data: Record<string, unknown>, priority = 'normal') =>
  ({ ...envelope(id, type), data, priority }) as EventEnvelope;

describe('reduceEvents', () => {
  it("keeps each alert's and finding's traceparent for its details", () => {
    const traced = { ...ev('1-0', 'system.alert', { title: 'Open port 23' }), traceparent: '00-' + 'a'.repeat(32) + '-' + 'b'.repeat(16) + '-01' };
    const finding = { ...ev('2-0', 'system.alert', { title: 'XSS', test_id: 't' }), traceparent: '00-' + 'c'.repeat(32) + '-' + 'd'.repeat(16) + '-01' };
    const s = reduceEvents(INITIAL_LIVE_STATE, [traced, finding, ev('3-0', 'system.alert', { title: 'untraced' })]);
    expect(s.alerts.map((a) => a.traceparent)).toEqual([null, traced.traceparent]);
    expect(s.findings[0]?.traceparent).toBe(finding.traceparent);
  });

  it('tracks a test from start to completion', () => {
    let s = reduceEvents(INITIAL_LIVE_STATE, [
      ev('1-0', 'test.started', { test_id: 'a', module: 'network_recon' }),
      ev('2-0', 'test.progress', { test_id: 'a', progress: 40, output: 'scan' }),
    ]);
    expect(s.tests['a']).toMatchObject({ status: 'running', progress: 40, lines: 1, module: 'network_recon' });
    s = reduceEvents(s, [ev('3-0', 'test.completed', { test_id: 'a' })]);
    expect(s.tests['a']).toMatchObject({ status: 'completed', progress: 100 });
    expect(s.eventCount).toBe(3);
  });

  it('orders tests most recent first and caps them', () => {
    const events = Array.from({ length: 30 }, (_, i) => ev(`${i + 1}-0`, 'test.progress', { test_id: `t${i}` }));
    const s = reduceEvents(INITIAL_LIVE_STATE, events, { maxTests: 20, maxFindings: 10, maxAlerts: 10 });
    expect(s.order).toHaveLength(20);
    expect(s.order[0]).toBe('t29');
    expect(Object.keys(s.tests)).toHaveLength(20);
  });

  it('turns a test alert into a finding and keeps other alerts as alerts', () => {
    const s = reduceEvents(INITIAL_LIVE_STATE, [
      ev('1-0', 'test.started', { test_id: 'a' }),
      ev('2-0', 'system.alert', { test_id: 'a', title: 'Telnet open', severity: 'critical' }, 'critical'),
      ev('3-0', 'system.alert', { title: 'Disk low' }, 'high'),
      ev('4-0', 'system.status', { status: 'ok' }),
      ev('5-0', 'system.maintenance', { message: 'tonight' }),
    ]);
    expect(s.findings).toEqual([expect.objectContaining({ title: 'Telnet open', severity: 'critical', testId: 'a' })]);
    expect(s.tests['a']?.findings).toBe(1);
    expect(s.alerts.map((a) => a.title)).toEqual(['Disk low']);
    expect(s.systemStatus?.data).toEqual({ status: 'ok' });
    expect(s.maintenance?.data['message']).toBe('tonight');
  });

  it('returns the same state for an empty batch', () => {
    expect(reduceEvents(INITIAL_LIVE_STATE, [])).toBe(INITIAL_LIVE_STATE);
  });
});
