// The web UI in headless Chromium against the whole mesh (real processes, the emulator upstream):
// sign in with a dev token, create a conversation, send a message, watch the four agents stream,
// reload mid-run and see the stream resume from the last event (no duplicated text), then check
// the operations page draws its charts. Screenshots go to the test's folder.
import path from 'node:path';
import { chromium, type Browser, type Page, type Request } from 'playwright-core';
import {
  mintToken, startEmulator, startFerret, startMesh, startRedis, testDir,
  type EmulatorProc, type FerretProc, type Mesh, type RedisProc,
} from '../support';

jest.setTimeout(240_000);

const SECRET = 'ui-e2e-secret-that-is-long-enough-for-hs256';
const AGENTS = ['planner', 'critic', 'host', 'reporter'] as const;
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

let dir: string;
let redis: RedisProc, ferret: FerretProc, emulator: EmulatorProc, mesh: Mesh;
let browser: Browser;
let page: Page;
let token: string;
const pageErrors: string[] = [];
const eventRequests: { lastEventId?: string }[] = [];

beforeAll(async () => {
  dir = testDir('ui');
  [redis, ferret, emulator] = await Promise.all([
    startRedis({ logDir: dir }),
    startFerret({ logDir: dir }),
    // Slow enough that a run lasts several seconds; the Critic always asks for a second round,
    // so the run is still going when the page reloads.
    startEmulator({
      logDir: dir,
      env: {
        EMULATOR_TIME_SCALE: '1', EMULATOR_TOKENS_PER_SEC: '30', EMULATOR_TTFT_MS: '200',
        EMULATOR_COMPLETION_TOKENS: '40', EMULATOR_REVISE_RATE: '1',
      },
    }),
  ]);
  mesh = await startMesh({ logDir: dir, redisUrl: redis.url, mongoUri: ferret.uri, llmBaseUrl: `${emulator.url}/v1`, jwtSecret: SECRET });
  token = await mintToken(SECRET, 'ui-user');
  browser = await chromium.launch({ executablePath: '/usr/bin/chromium', args: CHROMIUM_ARGS });
  page = await browser.newPage({ viewport: { width: 1400, height: 950 } });
  page.on('pageerror', (e) => pageErrors.push(e.message));
  page.on('request', (r: Request) => {
    if (r.method() === 'GET' && /\/api\/conversations\/[^/]+\/events$/.test(new URL(r.url()).pathname)) {
      eventRequests.push({ lastEventId: r.headers()['last-event-id'] });
    }
  });
});

afterAll(async () => {
  await browser?.close();
  await mesh?.stop();
  await Promise.all([emulator, ferret, redis].map((p) => p?.stop()));
});

/** Text streamed so far per agent (all rounds joined). */
function agentTexts(p: Page): Promise<Record<string, string>> {
  return p.$$eval('.run:last-of-type .agent', (cols) =>
    Object.fromEntries(cols.map((c) => [(c as HTMLElement).dataset.agent ?? '', Array.from(c.querySelectorAll('.round .text')).map((t) => t.textContent ?? '').join('\n')])),
  );
}

describe('the chat page', () => {
  let conversationId: string;
  let beforeReload: Record<string, string>;

  test('signs in with a pasted dev token', async () => {
    await page.goto(mesh.edge.url!);
    await page.locator('#token-input').fill(token);
    await page.getByRole('button', { name: 'Sign in' }).click();
    await page.locator('#app').waitFor({ state: 'visible' });
    await expect(page.locator('#who').textContent()).resolves.toContain('ui-user');
  });

  test('creates a conversation and sends a message; the agents stream live', async () => {
    // Opening the conversation joins its run, if it has one. That join is held back here, so the
    // message is sent while it is still connecting (as on a busy server): it must still be sent.
    let heldJoins = 0;
    await page.route(/\/api\/conversations\/[^/]+\/events$/, async (route) => {
      if (route.request().method() === 'GET') {
        heldJoins += 1;
        await new Promise((r) => setTimeout(r, 3_000));
      }
      await route.continue().catch(() => undefined); // the page may have given up on it meanwhile
    });
    await page.getByRole('button', { name: 'New', exact: true }).click();
    // The new conversation opens (its id goes in the URL hash); a failure shows under the list.
    await page.waitForFunction(() => location.hash.startsWith('#c=') || !document.getElementById('list-error')!.hidden, undefined, { timeout: 30_000 });
    expect(await page.locator('#list-error').isHidden() ? '' : await page.locator('#list-error').textContent()).toBe('');
    conversationId = decodeURIComponent(/#c=(.+)$/.exec(page.url())![1]!);
    await page.locator('#composer-input:not([disabled])').waitFor();
    await page.locator('#composer-input').fill('Plan a weekend trip to the mountains and check the weather');
    await page.locator('#composer-input').press('Enter');
    // The Planner streams first and the Critic overlaps it: both show tokens while the run goes on.
    await page.waitForFunction(() => {
      const text = (a: string) => document.querySelector(`.run:last-of-type .agent[data-agent="${a}"] .round .text`)?.textContent ?? '';
      return text('planner').length > 20 && text('critic').length > 0;
    }, undefined, { timeout: 60_000 });
    expect(heldJoins).toBeGreaterThan(0);
    await page.unroute(/\/api\/conversations\/[^/]+\/events$/);
    beforeReload = await agentTexts(page);
    expect(await page.locator('.run:last-of-type').getAttribute('data-state')).not.toBe('completed');
    await page.screenshot({ path: path.join(dir, 'ui-streaming.png') });
  });

  test('a reload mid-run resumes the stream from the last event, with no duplicated text', async () => {
    const requestsBefore = eventRequests.length;
    await page.reload();
    // The resumed run completes and shows its final answer.
    await page.locator('.run[data-state="completed"] .final .answer').waitFor({ timeout: 120_000 });
    // It resumed with Last-Event-ID (<runId>:<seq>), not from the start.
    const resumes = eventRequests.slice(requestsBefore);
    expect(resumes.length).toBeGreaterThan(0);
    expect(resumes[0]!.lastEventId).toMatch(/^[0-9a-f-]{36}:[1-9]\d*$/);

    const after = await agentTexts(page);
    for (const agent of AGENTS) expect(after[agent]!.trim().length).toBeGreaterThan(0);
    // What was on screen before the reload is still there, continued, not repeated.
    expect(after['planner']!.startsWith(beforeReload['planner']!)).toBe(true);
    // Every agent's streamed text is exactly its completed content (a duplicated or missing
    // token would have had to be corrected, which the view marks).
    expect(await page.locator('.run [data-corrected="true"]').count()).toBe(0);
    expect(await page.locator('.run:last-of-type .round[data-done="true"]').count()).toBeGreaterThanOrEqual(4);
    // Two rounds at least (the Critic asked for a revision), each with the Critic's verdict.
    const verdicts = await page.locator('.run:last-of-type .agent[data-agent="critic"] .verdict .badge').allTextContents();
    expect(verdicts.length).toBeGreaterThanOrEqual(2);
    expect(verdicts[0]).toBe('REVISE');

    // The final answer is the Reporter's output, shown once, with tokens and cost.
    const answer = (await page.locator('.run:last-of-type .final .answer').textContent()) ?? '';
    expect(answer.length).toBeGreaterThan(0);
    expect(after['reporter']!.trim()).toBe(answer.trim());
    const usage = (await page.locator('.run:last-of-type .final .usage').textContent()) ?? '';
    expect(usage).toMatch(/tokens/);
    expect(usage).toMatch(/cost \$/);

    // The stored messages agree with what the page shows (the UI left out nothing and added nothing).
    const stored = await fetch(`${mesh.edge.url}/api/conversations/${conversationId}`, { headers: { authorization: `Bearer ${token}` } });
    const body = (await stored.json()) as { messages: { role: string; agent: string | null; content: string }[] };
    const planner = body.messages.filter((m) => m.agent === 'planner').map((m) => m.content).join('\n');
    expect(after['planner']).toBe(planner);
    await page.screenshot({ path: path.join(dir, 'ui-completed.png'), fullPage: true });
  });

  test('the composer is free again and the conversation is listed', async () => {
    await page.locator('#send:not([disabled])').waitFor();
    await expect(page.locator('#cancel').isHidden()).resolves.toBe(true);
    await page.locator(`.conversation-list button[data-id="${conversationId}"]`).waitFor();
    expect(pageErrors).toEqual([]);
  });
});

describe('the operations page', () => {
  test('draws live charts from /api/metrics and shows health per dependency', async () => {
    await page.goto(`${mesh.edge.url}/ops.html`);
    await page.locator('#health-list li').first().waitFor({ timeout: 20_000 });
    const deps = await page.locator('#health-list li strong').allTextContents();
    expect(deps.length).toBeGreaterThanOrEqual(3);
    // Two polls at least, so every chart has a line.
    await page.waitForFunction(() => /Updated/.test(document.getElementById('poll-state')?.textContent ?? ''), undefined, { timeout: 20_000 });
    await page.waitForTimeout(4_500);
    for (const id of ['chart-queue', 'chart-quota', 'chart-latency', 'chart-streams']) {
      // The canvas has pixels drawn on it (not blank).
      const inked = await page.$eval(`#${id}`, (c) => {
        const canvas = c as HTMLCanvasElement;
        const data = canvas.getContext('2d')!.getImageData(0, 0, canvas.width, canvas.height).data;
        let n = 0;
        for (let i = 3; i < data.length; i += 4) if (data[i]! > 0) n++;
        return n;
      });
      expect(inked).toBeGreaterThan(500);
    }
    const latencyNow = (await page.locator('#chart-latency-now').textContent()) ?? '';
    expect(latencyNow).toMatch(/p95/);
    expect(await page.locator('#figures tr').count()).toBeGreaterThan(10);
    await page.screenshot({ path: path.join(dir, 'ui-ops.png'), fullPage: true });
    expect(pageErrors).toEqual([]);
  });
});
