// Drives the worker's HTML dashboard in headless Chromium (Debian's /usr/bin/chromium through
// playwright-core) the way an operator would, and prints one JSON object with what it saw.
// Usage: node dashboard.mjs '<json: {url, token, expectCompleted, expectFailed, screenshots,
//                                    timeoutMs, chromium?}>'
//   url          the admin server's base, e.g. "http://127.0.0.1:PORT"
//   screenshots  an absolute directory for full-page PNGs, or null for none
//   timeoutMs    how long each wait (a navigation, a poll of the counts, thumbnails) may take
//   chromium     the browser binary (default /usr/bin/chromium)
//
// The HTML contract it relies on:
//   GET  /dashboard without a session              -> 401
//   GET  /dashboard/login: form#login with input[name=token] and button[type=submit]; a good
//        token answers 303 to /dashboard with an HttpOnly, SameSite=Strict session cookie
//   /dashboard: counts in [data-queue="render"][data-state="<state>"] (an integer each) for
//        waiting, active, delayed, completed, failed
//   /dashboard/renders: figure.render[data-design], each with img.thumb.base and img.thumb.result
//   POST /dashboard/failed/retry-code without a csrf field -> 403, even with the session cookie
//   /dashboard/failed: tr[data-job="<BullMQ job id>"], each with form.retry holding a hidden
//        input[name=csrf] and a button[type=submit]
// On a failure it prints what it collected so far with `error` and the page's text (on stdout,
// and a copy on stderr so a runner that shows stderr shows it), and exits 1.
import { mkdir, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium } from 'playwright-core';

const spec = JSON.parse(process.argv[2]);
const base = spec.url.replace(/\/+$/, '');
const timeoutMs = spec.timeoutMs ?? 60000;
const STATES = ['waiting', 'active', 'delayed', 'completed', 'failed'];
const POLL_MS = 500;
// As root in a container: no sandbox; and nothing may reach out to the network by itself.
const FLAGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

const report = {};
let page = null;

/** The counts of the overview page as numbers (null where an element is missing or not an integer). */
async function readCounts() {
  return page.evaluate((states) => {
    const counts = {};
    for (const state of states) {
      const text = document.querySelector(`[data-queue="render"][data-state="${state}"]`)?.textContent?.trim();
      counts[state] = text !== undefined && /^\d+$/.test(text) ? Number(text) : null;
    }
    return counts;
  }, STATES);
}

/** Loads the overview and reloads it every POLL_MS until `done(counts)` or the timeout. */
async function pollOverview(what, done) {
  const deadline = Date.now() + timeoutMs;
  await page.goto(`${base}/dashboard`);
  for (;;) {
    const counts = await readCounts();
    report.lastCounts = counts;
    if (done(counts)) {
      return counts;
    }
    if (Date.now() >= deadline) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last counts ${JSON.stringify(counts)}`);
    }
    await new Promise((resolve) => setTimeout(resolve, POLL_MS));
    await page.reload();
  }
}

/** Clicks `locator` and waits until the page's main frame has navigated and loaded. */
async function clickAndWaitForNavigation(locator) {
  const navigated = page.waitForEvent('framenavigated', {
    predicate: (frame) => frame === page.mainFrame(),
    timeout: timeoutMs,
  });
  await locator.click();
  await navigated;
  await page.waitForLoadState('load');
}

async function screenshot(name) {
  if (spec.screenshots) {
    const path = join(spec.screenshots, name);
    await page.screenshot({ path, fullPage: true });
    (report.screenshots ??= []).push(path);
  }
}

async function run(context) {
  // 1. No session, no dashboard.
  const anonymous = await fetch(`${base}/dashboard`, { redirect: 'manual', signal: AbortSignal.timeout(timeoutMs) });
  report.unauthenticatedStatus = anonymous.status;
  await anonymous.arrayBuffer();

  // 2. Log in through the form.
  page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(timeoutMs);
  page.setDefaultNavigationTimeout(timeoutMs);
  await page.goto(`${base}/dashboard/login`);
  const before = new Map((await context.cookies(`${base}/dashboard`)).map((c) => [c.name, c.value]));
  await page.fill('form#login input[name=token]', spec.token);
  await clickAndWaitForNavigation(page.locator('form#login button[type=submit]'));
  report.loggedIn = new URL(page.url()).pathname === '/dashboard';
  // Those the browser would send to /dashboard (a cookie may be scoped to that path).
  const cookies = await context.cookies(`${base}/dashboard`);
  report.cookies = cookies.map(({ name, httpOnly, sameSite, secure, path }) => ({ name, httpOnly, sameSite, secure, path }));
  // The session cookie is the one the login set (or changed).
  const session = cookies.find((c) => before.get(c.name) !== c.value) ?? cookies[0];
  report.cookie = session ? { httpOnly: session.httpOnly, sameSite: session.sameSite } : null;
  if (!report.loggedIn) {
    throw new Error(`the login did not land on /dashboard but on ${page.url()}`);
  }

  // 3. The overview's counts.
  report.overview = await pollOverview(
    `completed == ${spec.expectCompleted} and failed == ${spec.expectFailed}`,
    (c) => c.completed === spec.expectCompleted && c.failed === spec.expectFailed,
  );
  await screenshot('dashboard-overview.png');

  // 4. The renders page: every thumbnail loads.
  await page.goto(`${base}/dashboard/renders`);
  report.renders = await page.locator('figure.render[data-design]').count();
  // Lazily loaded images load once near the viewport: bring each into view.
  for (const image of await page.locator('img.thumb').all()) {
    await image.scrollIntoViewIfNeeded();
  }
  await page.waitForFunction(() => [...document.querySelectorAll('img.thumb')].every((img) => img.complete), null, {
    timeout: timeoutMs,
    polling: 100,
  });
  report.thumbnails = await page.evaluate(() =>
    [...document.querySelectorAll('figure.render[data-design] img.thumb')].map((img) => ({
      design: img.closest('figure.render').dataset.design,
      kind: img.classList.contains('base') ? 'base' : img.classList.contains('result') ? 'result' : img.className,
      naturalWidth: img.naturalWidth,
      naturalHeight: img.naturalHeight,
    })),
  );
  await screenshot('dashboard-renders.png');

  // 5. A forged POST: the session cookie but no CSRF token.
  const forged = await page.request.post(`${base}/dashboard/failed/retry-code`, {
    form: { code: 'anything' },
    maxRedirects: 0,
    timeout: timeoutMs,
  });
  report.forgedPostStatus = forged.status();

  // 6. Retry the first failed job from its row.
  await page.goto(`${base}/dashboard/failed`);
  report.failedJobs = await page.locator('tr[data-job]').evaluateAll((rows) => rows.map((row) => row.dataset.job));
  if (report.failedJobs.length === 0) {
    throw new Error('the failed page lists no tr[data-job] row');
  }
  const row = page.locator('tr[data-job]').first();
  report.retryFormHasCsrf = (await row.locator('form.retry input[type=hidden][name=csrf]').count()) === 1;
  await clickAndWaitForNavigation(row.locator('form.retry button[type=submit]'));
  report.retried = report.failedJobs[0];
  report.afterRetryPath = new URL(page.url()).pathname;
  const after = await pollOverview(
    `completed == ${spec.expectCompleted + 1} and failed == ${spec.expectFailed - 1} after the retry`,
    (c) => c.completed === spec.expectCompleted + 1 && c.failed === spec.expectFailed - 1,
  );
  report.afterRetry = { completed: after.completed, failed: after.failed };
}

if (spec.screenshots) {
  await mkdir(spec.screenshots, { recursive: true });
}
const profile = await mkdtemp(join(tmpdir(), 'design-render-chromium-'));
let context = null;
let exitCode = 0;
try {
  context = await chromium.launchPersistentContext(profile, {
    executablePath: spec.chromium ?? '/usr/bin/chromium',
    headless: true,
    args: FLAGS,
    timeout: timeoutMs,
  });
  await run(context);
  delete report.lastCounts;
  console.log(JSON.stringify(report));
} catch (error) {
  exitCode = 1;
  report.error = String(error?.stack ?? error);
  report.url = page?.url() ?? null;
  report.pageText = page ? ((await page.innerText('body', { timeout: 5000 }).catch(() => null)) ?? '').slice(0, 2000) : null;
  const text = JSON.stringify(report);
  console.log(text);
  console.error(text);
} finally {
  await context?.close().catch(() => {});
  await rm(profile, { recursive: true, force: true });
}
process.exit(exitCode);
