/** The reduced live state of tests, findings, alerts and system status (pure, no React). */

import { compareOffsets, type EventEnvelope, type Priority } from '@secstream/client';

export type TestStatus = 'running' | 'completed' | 'error' | 'cancelled';

export interface TestSummary {
  testId: string;
  module: string | null;
  status: TestStatus;
  progress: number;
  lines: number;
  lastOutput: string | null;
  error: string | null;
  findings: number;
  startedAt: string;
  updatedAt: string;
  userId: string | null;
  /** The newest event applied: an older one (a history replay) only adds lines and findings. */
  lastEventId: string;
  /** `data.metadata` of `test.started` (target, profile, started_by...). */
  metadata: Record<string, unknown> | null;
  /** `data.summary` of the event that ended the run. */
  summary: RunSummary | null;
  cancelledBy: string | null;
  cancelReason: string | null;
}

export interface RunSummary {
  findings: Partial<Record<Severity, number>>;
  durationSeconds: number | null;
  lines: number | null;
  extra: Record<string, unknown>;
}

export type Severity = 'info' | 'low' | 'medium' | 'high' | 'critical';

export interface Finding {
  id: string;
  testId: string | null;
  severity: Severity;
  title: string;
  detail: string | null;
  timestamp: string;
  /** The event's W3C traceparent, to look the event up in the tracing backend. */
  traceparent: string | null;
}

export interface Alert {
  id: string;
  title: string;
  message: string | null;
  priority: Priority;
  timestamp: string;
  traceparent: string | null;
}

export interface LiveState {
  tests: Record<string, TestSummary>;
  /** Test ids, most recently active first. */
  order: string[];
  findings: Finding[];
  alerts: Alert[];
  systemStatus: { data: Record<string, unknown>; timestamp: string } | null;
  maintenance: { data: Record<string, unknown>; timestamp: string } | null;
  eventCount: number;
}

export const INITIAL_LIVE_STATE: LiveState = {
  tests: {},
  order: [],
  findings: [],
  alerts: [],
  systemStatus: null,
  maintenance: null,
  eventCount: 0,
};

export interface LiveLimits {
  maxTests: number;
  maxFindings: number;
  maxAlerts: number;
}

export const DEFAULT_LIMITS: LiveLimits = { maxTests: 50, maxFindings: 100, maxAlerts: 50 };

const str = (v: unknown): string | null => (typeof v === 'string' && v ? v : null);

/** Apply a batch of events; returns `state` itself when nothing changed. */
export function reduceEvents(state: LiveState, events: EventEnvelope[], limits = DEFAULT_LIMITS): LiveState {
  if (!events.length) return state;
  let tests = state.tests;
  let order = state.order;
  let findings = state.findings;
  let alerts = state.alerts;
  let { systemStatus, maintenance } = state;
  const touched: string[] = [];

  for (const e of events) {
    const data = (e.data ?? {}) as Record<string, unknown>;
    const testId = str(data['test_id']);
    if (e.event_type.startsWith('test.') && testId) {
      if (tests === state.tests) tests = { ...tests };
      const prev = tests[testId];
      const t: TestSummary = prev
        ? { ...prev }
        : {
            testId,
            module: null,
            status: 'running',
            progress: 0,
            lines: 0,
            lastOutput: null,
            error: null,
            findings: 0,
            startedAt: e.timestamp,
            updatedAt: e.timestamp,
            userId: e.user_id,
            lastEventId: e.id,
            metadata: null,
            summary: null,
            cancelledBy: null,
            cancelReason: null,
          };
      t.module = t.module ?? str(data['module']);
      if (prev && compareOffsets(e.id, prev.lastEventId) <= 0) {
        // history arriving after newer events: count it, keep the current state
        if (e.event_type === 'test.progress' && typeof data['output'] === 'string') t.lines++;
        if (e.event_type === 'test.started') {
          t.startedAt = e.timestamp;
          t.metadata = t.metadata ?? (isObject(data['metadata']) ? data['metadata'] : null);
        }
        const older = findingsOf(e, testId);
        t.findings += older.length;
        if (older.length) findings = [...findings, ...older.reverse()].slice(0, limits.maxFindings);
        tests[testId] = t;
        continue;
      }
      t.lastEventId = e.id;
      t.module = str(data['module']) ?? t.module;
      t.updatedAt = e.timestamp;
      const progress = data['progress'];
      if (typeof progress === 'number' && Number.isFinite(progress)) t.progress = Math.max(0, Math.min(100, progress));
      switch (e.event_type) {
        case 'test.started':
          t.status = 'running';
          t.startedAt = e.timestamp;
          t.metadata = isObject(data['metadata']) ? data['metadata'] : t.metadata;
          t.userId = e.user_id ?? t.userId;
          break;
        case 'test.progress': {
          const output = data['output'];
          if (typeof output === 'string') {
            t.lines++;
            t.lastOutput = output;
          }
          break;
        }
        case 'test.completed':
          t.status = 'completed';
          t.progress = 100;
          break;
        case 'test.error':
          t.status = 'error';
          t.error = errorText(data['error']) ?? str(data['message']) ?? 'The test failed.';
          break;
        case 'test.cancelled':
          t.status = 'cancelled';
          t.cancelledBy = str(data['cancelled_by']);
          t.cancelReason = str(data['reason']);
          break;
      }
      if (e.event_type !== 'test.started' && e.event_type !== 'test.progress') t.summary = summaryOf(data['summary']) ?? t.summary;
      const found = findingsOf(e, testId);
      if (found.length) {
        t.findings += found.length;
        findings = [...found.reverse(), ...findings].slice(0, limits.maxFindings);
      }
      tests[testId] = t;
      touched.push(testId);
      continue;
    }
    switch (e.event_type) {
      case 'system.alert': {
        const alertTest = str(data['test_id']);
        if (alertTest) {
          // an alert raised by a test is one of its findings
          const finding: Finding = {
            id: e.id,
            testId: alertTest,
            severity: severityOf(data['severity'], e.priority === 'critical' ? 'critical' : 'high'),
            title: str(data['title']) ?? 'Finding',
            detail: str(data['message']),
            timestamp: e.timestamp,
            traceparent: e.traceparent ?? null,
          };
          findings = [finding, ...findings].slice(0, limits.maxFindings);
          const t = tests[alertTest];
          if (t) {
            if (tests === state.tests) tests = { ...tests };
            tests[alertTest] = { ...t, findings: t.findings + 1 };
          }
          break;
        }
        alerts = [
          {
            id: e.id,
            title: str(data['title']) ?? 'System alert',
            message: str(data['message']),
            priority: e.priority,
            timestamp: e.timestamp,
            traceparent: e.traceparent ?? null,
          },
          ...alerts,
        ].slice(0, limits.maxAlerts);
        break;
      }
      case 'system.status':
        systemStatus = { data, timestamp: e.timestamp };
        break;
      case 'system.maintenance':
        maintenance = { data, timestamp: e.timestamp };
        break;
    }
  }

  if (touched.length) {
    const fresh = [...new Set(touched.reverse())];
    const rest = order.filter((id) => !fresh.includes(id));
    order = [...fresh, ...rest];
    if (order.length > limits.maxTests) {
      const dropped = order.slice(limits.maxTests);
      order = order.slice(0, limits.maxTests);
      tests = { ...tests };
      for (const id of dropped) delete tests[id];
    }
  }
  return {
    tests,
    order,
    findings,
    alerts,
    systemStatus,
    maintenance,
    eventCount: state.eventCount + events.length,
  };
}

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

/** `data.error`: `{type, message}` (contract v2), or the text older publishers sent. */
function errorText(v: unknown): string | null {
  if (isObject(v)) {
    const type = str(v['type']);
    const message = str(v['message']);
    return type && message ? `${type}: ${message}` : (message ?? type);
  }
  return str(v);
}

const num = (v: unknown): number | null => (typeof v === 'number' && Number.isFinite(v) ? v : null);

/** `data.summary` of a finished run, or null when there is none that reads. */
export function summaryOf(v: unknown): RunSummary | null {
  if (!isObject(v)) return null;
  const findings: Partial<Record<Severity, number>> = {};
  if (isObject(v['findings'])) {
    for (const [k, n] of Object.entries(v['findings'])) {
      const count = num(n);
      if ((SEVERITIES as readonly string[]).includes(k) && count !== null) findings[k as Severity] = count;
    }
  }
  const extra: Record<string, unknown> = {};
  for (const [k, x] of Object.entries(v)) if (!['findings', 'duration_seconds', 'lines'].includes(k)) extra[k] = x;
  return { findings, durationSeconds: num(v['duration_seconds']), lines: num(v['lines']), extra };
}

const SEVERITIES: readonly Severity[] = ['info', 'low', 'medium', 'high', 'critical'];

function severityOf(v: unknown, fallback: Severity): Severity {
  const s = typeof v === 'string' ? v.toLowerCase() : '';
  return (SEVERITIES as readonly string[]).includes(s) ? (s as Severity) : fallback;
}

/** Findings carried by a test event: `data.finding` (object or text), `data.findings`, or `data.severity`. */
export function findingsOf(e: EventEnvelope, testId: string | null): Finding[] {
  const data = (e.data ?? {}) as Record<string, unknown>;
  const raw: unknown[] = [];
  if (Array.isArray(data['findings'])) raw.push(...(data['findings'] as unknown[]));
  if (data['finding'] !== undefined && data['finding'] !== null) raw.push(data['finding']);
  if (!raw.length && typeof data['severity'] === 'string' && (str(data['title']) ?? str(data['vulnerability']))) {
    raw.push({ title: data['title'] ?? data['vulnerability'], severity: data['severity'], detail: data['output'] });
  }
  return raw.map((f, i) => {
    const obj = typeof f === 'object' && f !== null ? (f as Record<string, unknown>) : { title: String(f) };
    return {
      id: `${e.id}#${i}`,
      testId,
      severity: severityOf(obj['severity'] ?? data['severity'], 'medium'),
      title: str(obj['title']) ?? str(obj['name']) ?? str(obj['type']) ?? 'Finding',
      detail: str(obj['detail']) ?? str(obj['description']) ?? str(obj['target']) ?? str(obj['host']),
      timestamp: e.timestamp,
      traceparent: e.traceparent ?? null,
    };
  });
}
