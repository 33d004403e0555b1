/** Late joiners: a second, fresh browser opened mid-test sees the test's output from line 1. */

import type { BrowserContext, Page } from 'playwright-core';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { launchContext, Stack, waitFor } from './harness';

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
  for (const ctx of contexts.splice(0)) await ctx.close();
});

async function signIn(page: Page, role: string, sub: string): Promise<void> {
  await page.goto(stack.baseUrl + '/', { timeout: 15_000 });
  const form = page.locator('form[data-testid="demo-login"]');
  await form.waitFor({ timeout: 10_000 });
  await form.locator('input[name="sub"]').fill(sub);
  await form.locator('select[name="role"]').selectOption(role);
  await form.locator('button[type="submit"]').click();
  await page.locator('[data-testid="connection-status"][data-state="connected"]').waitFor({ timeout: 10_000 });
}

/** The rows a panel's virtualised list holds in the DOM now (scrolled to the top first). */
async function topLines(page: Page, testId: string): Promise<{ seq: number; text: string }[]> {
  return page.evaluate((id) => {
    const panel = document.querySelector(`[data-testid="test-output"][data-test-id="${id}"]`);
    if (!panel) return [];
    return [...panel.querySelectorAll<HTMLElement>('[data-testid="output-line"]')]
      .map((row) => ({ seq: Number(row.dataset['seq']), text: row.querySelector('.out-line__text')?.textContent ?? '' }))
      .sort((a, b) => a.seq - b.seq);
  }, testId);
}

/** Every line of a panel, read by scrolling its virtualised list. */
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

async function outputsOf(testId: string): Promise<string[]> {
  const admin = await stack.token('e2e-check', ['admin']);
  const res = await fetch(`${stack.baseUrl}/api/v1/events?since=0&types=test.progress&test_id=${testId}`, {
    headers: { authorization: `Bearer ${admin}` },
  });
  const body = (await res.json()) as { events: { data: { output?: unknown } }[] };
  return body.events.map((e) => e.data.output).filter((o): o is string => typeof o === 'string');
}

describe('a dashboard opened while a test runs', () => {
  it('shows the running test from line 1, every line once, in a fresh browser', async () => {
    const first = await launchContext();
    contexts.push(first);
    // the second browser starts now (a cold start is slow) but opens the dashboard only later
    const second = await launchContext();
    contexts.push(second);

    const a = await first.context.newPage();
    await signIn(a, 'admin', 'e2e-first');
    const started = a.waitForResponse((r) => r.url().endsWith('/api/v1/dev/simulate'), { timeout: 10_000 });
    await a.locator('[data-testid="simulate-test"]').click();
    const res = await started;
    expect(res.status()).toBe(202);
    const testId = ((await res.json()) as { test_id: string }).test_id;
    const panelA = a.locator(`[data-testid="test-output"][data-test-id="${testId}"]`);
    await waitFor('three lines in the first browser', async () => Number(await panelA.getAttribute('data-line-count')) >= 3, 15_000);

    const publishedBefore = await outputsOf(testId);
    expect(publishedBefore.length).toBeGreaterThanOrEqual(3);
    const b = await second.context.newPage();
    await signIn(b, 'admin', 'e2e-late');

    const panelB = b.locator(`[data-testid="test-output"][data-test-id="${testId}"]`);
    await panelB.waitFor({ timeout: 15_000 });
    // line 1, published before this browser opened the page, is shown (a live line may show
    // first: the panel mounts on the test's next event, and its history slots in before it)
    const firstLine = await waitFor(
      'line 1 in the second browser',
      async () => (await topLines(b, testId)).find((l) => l.seq === 0 && l.text === publishedBefore[0]),
      15_000,
    );
    expect(firstLine.text).toBe(publishedBefore[0]);
    // and the panel shows it while the test still ran or just after: every earlier line too
    const early = await topLines(b, testId);
    expect(early.slice(0, publishedBefore.length).map((l) => l.text)).toEqual(publishedBefore);

    await waitFor('the test to finish', async () => (await panelB.getAttribute('data-status')) !== 'running', 30_000);
    await b.waitForTimeout(800); // a late duplicate would show up now
    const expected = await outputsOf(testId);
    expect(Number(await panelB.getAttribute('data-line-count'))).toBe(expected.length);
    expect((await allLines(b, testId)).map((l) => l.text)).toEqual(expected);
    expect(await b.locator('[data-testid="output-truncated"]').count()).toBe(0);
    expect(await b.locator('[data-testid="connection-status"]').getAttribute('data-state')).toBe('connected');
  });
});
