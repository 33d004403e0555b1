import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { launchContext, REPO, Stack, waitFor } from './harness';

const stack = new Stack();
let ctx: { context: BrowserContext; close: () => Promise<void> } | null = null;

beforeAll(async () => {
  await stack.start();
});

afterAll(async () => {
  await stack.stop();
});

afterEach(async (test) => {
  if (test.task.result?.state === 'fail') console.error(stack.log.slice(-60).join('\n'));
  await ctx?.close();
  ctx = null;
});

async function signIn(page: Page, role = 'admin', sub = `e2e-${role}`): Promise<void> {
  await page.goto(stack.baseUrl + '/', { timeout: 15_000 });
  const form = page.locator('form[data-testid="demo-login"]');
  await form.waitFor({ timeout: 10_000 });
  await form.locator('input[name="sub"]').fill(sub);
  await form.locator('select[name="role"]').selectOption(role);
  await form.locator('button[type="submit"]').click();
}

function status(page: Page) {
  return page.locator('[data-testid="connection-status"]');
}

async function expectState(page: Page, state: string, timeoutMs = 10_000): Promise<void> {
  await status(page).and(page.locator(`[data-state="${state}"]`)).waitFor({ timeout: timeoutMs });
}

/** Every line of a test-output panel, read by scrolling its virtualised list. */
async function allLines(page: Page, testId: string): Promise<{ seq: number; text: string }[]> {
  return page.evaluate(async (id) => {
    const panel = document.querySelector(`[data-testid="test-output"][data-test-id="${id}"]`);
    const list = panel?.querySelector<HTMLElement>('.vlist');
    if (!panel || !list) return [];
    const out = new Map<number, string>();
    const frame = () => new Promise((r) => requestAnimationFrame(() => requestAnimationFrame(r)));
    for (let top = 0; ; top += list.clientHeight / 2) {
      list.scrollTop = top;
      list.dispatchEvent(new Event('scroll'));
      await frame();
      for (const row of panel.querySelectorAll<HTMLElement>('[data-testid="output-line"]')) {
        out.set(Number(row.dataset['seq']), row.querySelector('.out-line__text')?.textContent ?? '');
      }
      if (top >= list.scrollHeight) break;
    }
    return [...out.entries()].sort((a, b) => a[0] - b[0]).map(([seq, text]) => ({ seq, text }));
  }, testId);
}

describe('secstream dashboard against a real `secstream serve --demo`', () => {
  it('signs in, starts a simulated test and shows its lines in order', async () => {
    ctx = await launchContext();
    const page = await ctx.context.newPage();
    await signIn(page, 'admin');
    await expectState(page, 'connected');

    // some context for the screenshot: a status report, a maintenance notice, a second test
    const admin = await stack.token('e2e-check', ['admin']);
    await stack.publish(admin, {
      event_type: 'system.status',
      data: { status: 'operational', workers: 6, queue: 2, region: 'eu-west-1', message: 'Scanner fleet healthy' },
    });
    await stack.publish(admin, {
      event_type: 'system.maintenance',
      data: { title: 'Scheduled maintenance', message: 'Scanner workers restart Sunday 02:00-02:30 UTC; tests queue meanwhile.' },
    });
    await page.locator('[data-testid="simulate-test"]').click();
    await page.waitForTimeout(1200);

    const started = page.waitForResponse((r) => r.url().endsWith('/api/v1/dev/simulate'), { timeout: 10_000 });
    await page.locator('[data-testid="simulate-test"]').click();
    const res = await started;
    expect(res.status()).toBe(202);
    const testId = ((await res.json()) as { test_id: string }).test_id;
    const panel = page.locator(`[data-testid="test-output"][data-test-id="${testId}"]`);
    await panel.waitFor({ timeout: 10_000 });

    // a screenshot of the dashboard while the test runs
    await waitFor('a screenful of lines', async () => Number(await panel.getAttribute('data-line-count')) >= 10 || (await panel.getAttribute('data-status')) !== 'running', 15_000);
    mkdirSync(join(REPO, 'docs'), { recursive: true });
    await page.screenshot({ path: join(REPO, 'docs', 'screenshot.png') });

    await waitFor('the test to finish', async () => (await panel.getAttribute('data-status')) !== 'running', 30_000);
    await page.waitForTimeout(500);

    const polled = (await (
      await fetch(`${stack.baseUrl}/api/v1/events?since=0&types=test.progress&test_id=${testId}`, {
        headers: { authorization: `Bearer ${admin}` },
      })
    ).json()) as { events: { data: { output?: string } }[] };
    const expected = polled.events.map((e) => e.data.output).filter((o): o is string => typeof o === 'string');
    expect(expected.length).toBeGreaterThan(5);
    expect(Number(await panel.getAttribute('data-line-count'))).toBe(expected.length);
    const lines = await allLines(page, testId);
    expect(lines.map((l) => l.seq)).toEqual(expected.map((_, i) => i));
    expect(lines.map((l) => l.text)).toEqual(expected);
  });

  it('keeps a critical alert toast until dismissed; a normal one goes by itself', async () => {
    ctx = await launchContext();
    const page = await ctx.context.newPage();
    await signIn(page, 'analyst');
    await expectState(page, 'connected');
    const admin = await stack.token('e2e-admin', ['admin']);
    const tag = Math.random().toString(36).slice(2, 8);
    await stack.publish(admin, {
      event_type: 'system.alert',
      data: { title: `Critical ${tag}`, message: 'Telnet exposed on 10.0.0.5' },
      priority: 'critical',
    });
    await stack.publish(admin, { event_type: 'system.alert', data: { title: `Routine ${tag}` } });
    const critical = page.locator('[data-testid="toast"][data-event-type="system.alert"]', { hasText: `Critical ${tag}` });
    const routine = page.locator('[data-testid="toast"][data-event-type="system.alert"]', { hasText: `Routine ${tag}` });
    await critical.waitFor({ timeout: 10_000 });
    await expect(critical.textContent()).resolves.toContain('Telnet exposed on 10.0.0.5');
    await routine.waitFor({ timeout: 10_000 });
    await routine.waitFor({ state: 'detached', timeout: 12_000 });
    expect(await critical.count()).toBe(1);
    await critical.locator('button[aria-label="Dismiss"]').click();
    await critical.waitFor({ state: 'detached', timeout: 5_000 });
  });

  it('reconnects within 5 s of a restart and shows every event published meanwhile exactly once', async () => {
    ctx = await launchContext();
    const page = await ctx.context.newPage();
    await signIn(page, 'viewer');
    await expectState(page, 'connected');
    const testId = `restart-${Math.random().toString(36).slice(2, 8)}`;

    expect(await stack.stopService()).toBe(0);
    await expectState(page, 'reconnecting', 8_000);
    const outputs = Array.from({ length: 8 }, (_, i) => `offline line ${i + 1}`);
    outputs.forEach((output, i) =>
      stack.publishCli('test.progress', { test_id: testId, output, progress: (i + 1) * 10 }),
    );

    await stack.startService();
    const ready = Date.now();
    await expectState(page, 'connected', 10_000);
    const took = Date.now() - ready;
    expect(took).toBeLessThanOrEqual(5_500);

    const panel = page.locator(`[data-testid="test-output"][data-test-id="${testId}"]`);
    await panel.waitFor({ timeout: 10_000 });
    await waitFor('8 lines', async () => Number(await panel.getAttribute('data-line-count')) === 8, 10_000);
    await page.waitForTimeout(1_000); // a late duplicate would show up now
    expect(Number(await panel.getAttribute('data-line-count'))).toBe(8);
    expect((await allLines(page, testId)).map((l) => l.text)).toEqual(outputs);
  });

  it('falls back to polling when WebSockets are blocked and still updates', async () => {
    ctx = await launchContext();
    let blocked = true;
    await ctx.context.routeWebSocket(/\/ws/, (ws) => {
      if (blocked) ws.close();
      else ws.connectToServer();
    });
    const page = await ctx.context.newPage();
    await signIn(page, 'admin', 'e2e-poller');
    await expectState(page, 'polling', 25_000);
    const admin = await stack.token('e2e-admin', ['admin']);
    const testId = `poll-${Math.random().toString(36).slice(2, 8)}`;
    for (let i = 1; i <= 3; i++) {
      await stack.publish(admin, { event_type: 'test.progress', data: { test_id: testId, output: `polled ${i}`, progress: i * 30 } });
    }
    const panel = page.locator(`[data-testid="test-output"][data-test-id="${testId}"]`);
    await panel.waitFor({ timeout: 15_000 });
    await waitFor('3 polled lines', async () => Number(await panel.getAttribute('data-line-count')) === 3, 15_000);
    expect((await allLines(page, testId)).map((l) => l.text)).toEqual(['polled 1', 'polled 2', 'polled 3']);
    expect(await status(page).getAttribute('data-state')).toBe('polling');

    // unblock: the background WebSocket retry switches back without a gap or duplicate
    blocked = false;
    await stack.publish(admin, { event_type: 'test.progress', data: { test_id: testId, output: 'polled 4', progress: 100 } });
    await expectState(page, 'connected', 20_000);
    await stack.publish(admin, { event_type: 'test.progress', data: { test_id: testId, output: 'live 5', progress: 100 } });
    await waitFor('5 lines', async () => Number(await panel.getAttribute('data-line-count')) === 5, 10_000);
    await page.waitForTimeout(800);
    expect((await allLines(page, testId)).map((l) => l.text)).toEqual(['polled 1', 'polled 2', 'polled 3', 'polled 4', 'live 5']);
  });

  it("shows an event's traceparent in its details, and gives admins connections, close and the audit trail", async () => {
    ctx = await launchContext();
    const page = await ctx.context.newPage();
    const sub = `e2e-admin-${Math.random().toString(36).slice(2, 6)}`;
    await signIn(page, 'admin', sub);
    await expectState(page, 'connected');

    const admin = await stack.token('e2e-tracer', ['admin']);
    const traceId = '4bf92f3577b34da6a3ce929d0e0e4736';
    const res = await fetch(`${stack.baseUrl}/api/v1/events`, {
      method: 'POST',
      headers: {
        authorization: `Bearer ${admin}`,
        'content-type': 'application/json',
        traceparent: `00-${traceId}-00f067aa0ba902b7-01`,
      },
      body: JSON.stringify({ event_type: 'system.alert', data: { title: `Traced ${sub}` } }),
    });
    expect(res.status).toBe(202);
    const row = page.locator('[data-testid="recent-findings"] li', { hasText: `Traced ${sub}` });
    await row.waitFor({ timeout: 10_000 });
    await row.locator('[data-testid="event-details"] summary').click();
    const traceparent = await row.locator('[data-testid="traceparent"]').textContent();
    expect(traceparent).toMatch(new RegExp(`^00-${traceId}-[0-9a-f]{16}-0[13]$`));

    const panel = page.locator('[data-testid="admin-console"]');
    await panel.waitFor({ timeout: 10_000 });
    const mine = panel.locator('[data-testid="admin-connection"]', { hasText: sub });
    await waitFor('our connection listed', async () => {
      await panel.locator('button', { hasText: 'Refresh' }).click();
      await page.waitForTimeout(300);
      return (await mine.count()) > 0;
    });
    expect(await mine.first().getAttribute('data-state')).toBe('live');

    await panel.locator('[data-testid="audit-sub"]').fill(sub);
    await panel.locator('[data-testid="audit-action"]').selectOption('ws.connect');
    await panel.locator('button[type="submit"]').click();
    await panel.locator('[data-testid="audit-record"][data-action="ws.connect"][data-outcome="allowed"]').first().waitFor({ timeout: 10_000 });
    await panel.screenshot({ path: join(REPO, 'docs', 'admin.png') });

    // Close our own connection: the server closes it with 4003 and the client comes back.
    const before = await mine.first().getAttribute('data-connection-id');
    await mine.first().locator('[data-testid="admin-close"]').click();
    await expectState(page, 'reconnecting', 10_000);
    await expectState(page, 'connected', 15_000);
    await panel.locator('[data-testid="audit-action"]').selectOption('admin.close');
    await panel.locator('[data-testid="audit-sub"]').fill(sub);
    await panel.locator('button[type="submit"]').click();
    await panel.locator('[data-testid="audit-record"][data-action="admin.close"][data-outcome="allowed"]').first().waitFor({ timeout: 10_000 });
    await waitFor('the new connection listed', async () => {
      await panel.locator('button', { hasText: 'Refresh' }).click();
      const ids = await panel.locator('[data-testid="admin-connection"]', { hasText: sub }).evaluateAll((rows) => rows.map((r) => r.getAttribute('data-connection-id')));
      return ids.length > 0 && !ids.includes(before);
    });
  });
});
