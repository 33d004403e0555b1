import { describe, expect, it } from 'vitest';
import type { EventEnvelope } from '@secstream/client';
import { envelope } from '../../../../test/testServer.js';
import { INITIAL_LIVE_STATE, reduceEvents, summaryOf } from '../liveState.js';
import { maintenanceEvent, notificationEvent, toIso } from './AdminPanel.js';
import { mayStop } from './StopTestButton.js';
import { formatDuration } from './TestRunSummary.js';

const ev = (id: string, type: string, data: Record<string, unknown>, userId: string | null = null) =>
  ({ ...envelope(id, type), data, user_id: userId }) as EventEnvelope;

describe('test lifecycle in the live state', () => {
  it('keeps metadata, the summary and who stopped a run', () => {
    const s = reduceEvents(INITIAL_LIVE_STATE, [
      ev('1-0', 'test.started', { test_id: 'a', metadata: { target: '10.0.0.5', started_by: 'ana' } }, 'ana'),
      ev('2-0', 'test.progress', { test_id: 'a', progress: 40, output: 'scan', summary: { findings: { high: 9 } } }, 'ana'),
      ev('3-0', 'test.cancelled', {
        test_id: 'a',
        cancelled_by: 'boss',
        reason: 'wrong host',
        summary: { findings: { critical: 1, high: 2, bogus: 3, low: 'x' }, duration_seconds: 4.25, lines: 7, target: '10.0.0.5' },
      }, 'ana'),
    ]);
    const t = s.tests['a']!;
    expect(t).toMatchObject({ status: 'cancelled', cancelledBy: 'boss', cancelReason: 'wrong host', userId: 'ana' });
    expect(t.metadata).toEqual({ target: '10.0.0.5', started_by: 'ana' });
    expect(t.summary).toEqual({ findings: { critical: 1, high: 2 }, durationSeconds: 4.25, lines: 7, extra: { target: '10.0.0.5' } });
  });

  it('reads data.error as {type, message}, and the older text', () => {
    const s = reduceEvents(INITIAL_LIVE_STATE, [
      ev('1-0', 'test.error', { test_id: 'a', error: { type: 'TimeoutError', message: 'target silent' } }),
      ev('2-0', 'test.error', { test_id: 'b', error: 'it broke' }),
      ev('3-0', 'test.error', { test_id: 'c', error: { nope: 1 } }),
    ]);
    expect(s.tests['a']?.error).toBe('TimeoutError: target silent');
    expect(s.tests['b']?.error).toBe('it broke');
    expect(s.tests['c']?.error).toBe('The test failed.');
  });

  it('ignores a summary that does not read', () => {
    expect(summaryOf('x')).toBeNull();
    expect(summaryOf([1])).toBeNull();
    expect(summaryOf({})).toEqual({ findings: {}, durationSeconds: null, lines: null, extra: {} });
  });
});

describe('who may stop a test', () => {
  const running = reduceEvents(INITIAL_LIVE_STATE, [ev('1-0', 'test.started', { test_id: 'a' }, 'ana')]).tests['a']!;
  it('is an admin or the run user, and only while it runs', () => {
    expect(mayStop({ sub: 'boss', roles: ['admin'] }, running)).toBe(true);
    expect(mayStop({ sub: 'ana', roles: ['viewer'] }, running)).toBe(true);
    expect(mayStop({ sub: 'bob', roles: ['analyst'] }, running)).toBe(false);
    expect(mayStop({ sub: 'boss', roles: ['admin'] }, { ...running, status: 'completed' })).toBe(false);
  });
});

describe('admin forms', () => {
  it('build a maintenance window, or say what is missing', () => {
    expect(maintenanceEvent({ title: '', message: '', startsAt: '2026-12-06T02:00', endsAt: '2026-12-06T03:00' })).toMatch(/title/);
    expect(maintenanceEvent({ title: 'M', message: '', startsAt: '', endsAt: '2026-12-06T03:00' })).toMatch(/start/);
    expect(maintenanceEvent({ title: 'M', message: '', startsAt: '2026-12-06T03:00', endsAt: '2026-12-06T02:00' })).toMatch(/end after/);
    const ok = maintenanceEvent({ title: ' M ', message: 'restart', startsAt: '2026-12-06T02:00', endsAt: '2026-12-06T03:00' });
    expect(ok).toMatchObject({ event_type: 'system.maintenance', data: { title: 'M', message: 'restart' } });
    const data = (ok as { data: Record<string, string> }).data;
    expect(Date.parse(data['ends_at']!) - Date.parse(data['starts_at']!)).toBe(3_600_000);
    expect(toIso('garbage')).toBeNull();
  });

  it('address a notification to one user', () => {
    expect(notificationEvent({ user: ' ', title: 't', message: '' })).toMatch(/user/);
    expect(notificationEvent({ user: 'ana', title: 'Hello', message: '' })).toEqual({
      event_type: 'user.notification',
      audience: { users: ['ana'] },
      data: { title: 'Hello' },
    });
  });

  it('format durations', () => {
    expect(formatDuration(4.25)).toBe('4.3 s');
    expect(formatDuration(75)).toBe('1 min 15 s');
    expect(formatDuration(7300)).toBe('2 h 1 min');
  });
});
