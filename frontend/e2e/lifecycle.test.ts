import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { launchContext, Stack } from './harness';

const stack = new Stack();
const contexts: { context: BrowserContext; close: () => Promise<void> }[] = [];

beforeAll(async () => {
  await stack.start();
});

afterAll(async () => {
  await stack.stop();
});

afterEach(async (test) => {
  if (test.task.result?.state === 'fail') console.error(stack.log.slice(-60).join('\n'));
  for (const c of contexts.splice(0)) await c.close();
});

async function signedIn(role: string, sub: string): Promise<Page> {
  const ctx = await launchContext();
  contexts.push(ctx);
  const page = await ctx.context.newPage();
  await page.goto(stack.baseUrl + '/', { timeout: 15_000 });
  const form = page.locator('form[data-testid="demo-login"]');
  await form.waitFor({ timeout: 10_000 });
  await form.locator('input[name="sub"]').fill(sub);
  await form.locator('select[name="role"]').selectOption(role);
  await form.locator('button[type="submit"]').click();
  await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor({ timeout: 10_000 });
  return page;
}

async function simulate(page: Page): Promise<string> {
  const started = page.waitForResponse((r) => r.url().endsWith('/api/v1/dev/simulate'), { timeout: 10_000 });
  await page.locator('[data-testid="simulate-test"]').click();
  const res = await started;
  expect(res.status()).toBe(202);
  return ((await res.json()) as { test_id: string }).test_id;
}

const row = (page: Page, testId: string) => page.locator(`[data-testid="active-test"][data-test-id="${testId}"]`);

describe('test lifecycle in the dashboard', () => {
  it('starts a simulated test, stops it with a confirmation and shows who stopped it', async () => {
    const tag = Math.random().toString(36).slice(2, 7);
    const ana = await signedIn('viewer', `ana-${tag}`);
    const testId = await simulate(ana);
    const mine = row(ana, testId);
    await mine.and(ana.locator('[data-status="running"]')).waitFor({ timeout: 10_000 });
    // test.started's metadata: the target and who started it
    expect(await mine.locator('[data-testid="test-metadata"]').textContent()).toContain(`started by ana-${tag}`);
    expect(await mine.locator('.run-meta__target').textContent()).toMatch(/192\.168\.|staging\.example\.test/);

    // another viewer does not see the run at all (its audience is its starter and admins);
    // an admin sees it, with a Stop button
    const admin = await signedIn('admin', `boss-${tag}`);
    await row(admin, testId).locator('[data-testid="stop-test"]').waitFor({ timeout: 10_000 });

    await mine.locator('[data-testid="stop-test"]').click();
    const confirm = mine.locator('[data-testid="stop-confirm"]');
    await confirm.waitFor({ timeout: 5_000 });
    await confirm.locator('input[name="reason"]').fill('wrong target');
    const cancelled = ana.waitForResponse((r) => r.url().includes(`/api/v1/tests/${testId}/cancel`), { timeout: 10_000 });
    await mine.locator('[data-testid="confirm-stop"]').click();
    expect((await cancelled).status()).toBe(202);

    await mine.and(ana.locator(':not([data-status="running"])')).waitFor({ timeout: 5_000 });
    expect(await mine.getAttribute('data-status')).toBe('cancelled');
    const by = mine.locator('[data-testid="cancelled-by"]');
    await by.waitFor({ timeout: 5_000 });
    expect(await by.textContent()).toBe(`stopped by ana-${tag}: wrong target`);
    const summary = mine.locator('[data-testid="test-summary"]');
    expect(await summary.locator('.run-summary__duration').textContent()).toMatch(/\d s$/);
    expect(await mine.locator('[data-testid="stop-test"]').count()).toBe(0);

    // the admin's view shows the same ending
    await row(admin, testId).and(admin.locator('[data-status="cancelled"]')).waitFor({ timeout: 5_000 });
    expect(await row(admin, testId).locator('[data-testid="cancelled-by"]').textContent()).toContain(`ana-${tag}`);

    // stopping it again is refused: it ended
    const token = await stack.token(`ana-${tag}`, ['viewer']);
    const again = await fetch(`${stack.baseUrl}/api/v1/tests/${testId}/cancel`, {
      method: 'POST',
      headers: { authorization: `Bearer ${token}` },
    });
    expect(again.status).toBe(409);
  });

  it('shows the summary of a finished test', async () => {
    const page = await signedIn('admin', `sum-${Math.random().toString(36).slice(2, 7)}`);
    const testId = await simulate(page);
    const summary = row(page, testId).locator('[data-testid="test-summary"]');
    await summary.waitFor({ timeout: 40_000 });
    const status = await row(page, testId).getAttribute('data-status');
    expect(['completed', 'error']).toContain(status);
    const total = Number(await summary.locator('.run-summary__findings').getAttribute('data-total'));
    expect(total).toBe(await summary.locator('.run-summary__count').evaluateAll((els) => els.reduce((n, e) => n + parseInt(e.textContent ?? '0', 10), 0)));
    expect(await summary.locator('.run-summary__duration').textContent()).toMatch(/s$/);
    expect(await summary.locator('.run-summary__lines').textContent()).toMatch(/^\d+ lines$/);
  });

  it('lets an admin announce maintenance and notify one user', async () => {
    const tag = Math.random().toString(36).slice(2, 7);
    const user = await signedIn('viewer', `ana-${tag}`);
    const admin = await signedIn('admin', `boss-${tag}`);
    expect(await user.locator('[data-testid="admin-panel"]').count()).toBe(0);

    const maintenance = admin.locator('[data-testid="maintenance-form"]');
    await maintenance.locator('input[name="title"]').fill(`Upgrade ${tag}`);
    await maintenance.locator('input[name="message"]').fill('Scanners pause');
    await maintenance.locator('input[name="starts_at"]').fill('2026-12-06T02:00');
    await maintenance.locator('input[name="ends_at"]').fill('2026-12-06T02:30');
    await maintenance.locator('button[type="submit"]').click();
    await maintenance.locator('[data-testid="admin-result"]', { hasText: 'Maintenance announced' }).waitFor({ timeout: 10_000 });
    const banner = user.locator('[data-testid="maintenance-banner"]', { hasText: `Upgrade ${tag}` });
    await banner.waitFor({ timeout: 10_000 });
    expect(await banner.locator('.banner__window').textContent()).toContain('→');

    const notify = admin.locator('[data-testid="notify-form"]');
    await notify.locator('input[name="user"]').fill(`ana-${tag}`);
    await notify.locator('input[name="title"]').fill(`Hello ${tag}`);
    await notify.locator('input[name="message"]').fill('Your scan is queued');
    await notify.locator('button[type="submit"]').click();
    await notify.locator('[data-testid="admin-result"]', { hasText: `Sent to ana-${tag}` }).waitFor({ timeout: 10_000 });
    const toast = user.locator('[data-testid="toast"][data-event-type="user.notification"]', { hasText: `Hello ${tag}` });
    await toast.waitFor({ timeout: 10_000 });
    expect(await toast.textContent()).toContain('Your scan is queued');
    // the admin is not the addressee: no toast there
    expect(await admin.locator('[data-testid="toast"][data-event-type="user.notification"]', { hasText: `Hello ${tag}` }).count()).toBe(0);
  });
});
