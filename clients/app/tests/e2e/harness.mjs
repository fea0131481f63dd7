// The browser tests' harness: a real borough server and real app processes (the binaries cargo
// built), Debian's Chromium driven by playwright-core, axe-core on every page, screenshots.
//
// Every test reuses these instead of copying set-up. Everything waits for readiness with generous,
// bounded timeouts: CI runs on two cores, with other builds competing.

import { spawn, execFile } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { createSocket } from 'node:dgram';
import { mkdtempSync, mkdirSync, readFileSync, existsSync, rmSync, readdirSync, lstatSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, dirname, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { createRequire } from 'node:module';

const here = dirname(fileURLToPath(import.meta.url));
export const appDir = resolve(here, '..', '..');
export const repoDir = resolve(appDir, '..', '..');
const targetDir = process.env.CARGO_TARGET_DIR || join(repoDir, 'target');
export const serverBin = process.env.POLYPHONY_SERVER_BIN || join(targetDir, 'debug', 'polyphony-server');
export const appBin = process.env.POLYPHONY_APP_BIN || join(targetDir, 'debug', 'polyphony-app');
export const screenshotDir = join(appDir, 'tests', 'screenshots');
const require = createRequire(import.meta.url);
export const axeSource = readFileSync(require.resolve('axe-core/axe.min.js'), 'utf8');

export const CHROMIUM = process.env.CHROMIUM_PATH || '/usr/bin/chromium';
export const CHROMIUM_ARGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

export function sleep(ms) { return new Promise((r) => setTimeout(r, ms)); }

/** Poll `fn` until it returns a truthy value; fail with `what` after `timeout` ms. */
export async function waitFor(what, fn, { timeout = 60000, interval = 500 } = {}) {
  const end = Date.now() + timeout;
  let last;
  while (Date.now() < end) {
    try {
      const v = await fn();
      if (v) return v;
    } catch (e) { last = e; }
    await sleep(interval);
  }
  throw new Error(`timed out after ${timeout} ms waiting for ${what}${last ? `: ${last.message}` : ''}`);
}

export function tempDir(name) {
  const base = join(appDir, 'tests', 'e2e', '.work');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, `${name}-`));
}

/** A free UDP port on loopback (the server listens on QUIC). */
export function freeUdpPort() {
  return new Promise((res, rej) => {
    const s = createSocket('udp4');
    s.on('error', rej);
    s.bind(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => res(port));
    });
  });
}

function run(bin, args, opts = {}) {
  return new Promise((res, rej) => {
    execFile(bin, args, { timeout: 60000, ...opts }, (err, stdout, stderr) => {
      if (err) rej(new Error(`${bin} ${args.join(' ')} failed: ${err.message}\n${stderr}`));
      else res(stdout.trim());
    });
  });
}

/** A child process whose output we keep, to wait for lines and to show when something fails. */
class Child {
  constructor(name, bin, args, env) {
    this.name = name;
    this.out = '';
    this.proc = spawn(bin, args, { env: { ...process.env, ...env }, stdio: ['ignore', 'pipe', 'pipe'] });
    const keep = (d) => { this.out += d.toString(); if (this.out.length > 200000) this.out = this.out.slice(-100000); };
    this.proc.stdout.on('data', keep);
    this.proc.stderr.on('data', keep);
    this.exited = new Promise((r) => this.proc.on('exit', (code, signal) => r({ code, signal })));
  }

  async waitForOutput(re, timeout = 60000) {
    return waitFor(`${this.name} to print ${re}`, () => {
      if (this.proc.exitCode !== null) throw new Error(`${this.name} exited early:\n${this.out}`);
      return this.out.match(re);
    }, { timeout, interval: 200 });
  }

  /** Stop with SIGTERM (a clean shutdown), by this process's own id. */
  async stop() {
    if (this.proc.exitCode !== null || this.proc.signalCode !== null) return;
    this.proc.kill('SIGTERM');
    const done = await Promise.race([this.exited, sleep(20000).then(() => null)]);
    if (!done) { this.proc.kill('SIGKILL'); await this.exited; }
  }
}

/** A borough server with its own data directory, on a fixed port so it can be restarted. */
export class BoroughServer {
  constructor() {
    this.data = join(tempDir('server'), 'data');
    this.port = 0;
    this.child = null;
  }

  async start() {
    if (!this.port) this.port = await freeUdpPort();
    this.child = new Child('polyphony-server', serverBin, ['--data', this.data, 'serve', '--listen', this.addr()], { RUST_LOG: 'info' });
    await this.child.waitForOutput(/serving administration/, 90000);
  }

  addr() { return `127.0.0.1:${this.port}`; }

  async admin(...args) { return run(serverBin, ['--data', this.data, ...args]); }

  async stop() { if (this.child) await this.child.stop(); }
}

/** One practitioner's app on their own device (a profile home of its own). */
export class DeviceApp {
  constructor(name) {
    this.name = name;
    this.home = tempDir(`app-${name}`);
    this.child = null;
    this.url = null;
  }

  async start() {
    const urlFile = join(this.home, 'launch-url');
    this.child = new Child(`polyphony-app (${this.name})`, appBin, [
      '--home', join(this.home, 'profile'), '--no-open', '--url-file', urlFile,
      '--retry-max-seconds', '2', '--device-name', `${this.name}'s laptop`, '--time-zone', 'Europe/London',
    ], { POLYPHONY_PASSPHRASE: `passphrase of ${this.name}`, RUST_LOG: 'polyphony_app=debug' });
    // The app's origin is its own per-launch host name (see clients/app/src/auth.rs).
    const m = await this.child.waitForOutput(/(http:\/\/[a-z0-9.-]+:\d+)\/launch\?secret=[0-9a-f]+/, 90000);
    this.url = m[0];
    this.base = m[1];
    return this;
  }

  async stop() { if (this.child) await this.child.stop(); }

  /** Stop it as a crash, a flat battery or the task manager would: SIGKILL, by its own id. */
  async kill() {
    const { proc } = this.child;
    if (proc.exitCode !== null || proc.signalCode !== null) return;
    proc.kill('SIGKILL');
    await this.child.exited;
  }
}

/**
 * A request to an app from outside any browser (node itself): to the app's port on loopback,
 * naming the app's host, as a browser resolves `*.localhost` (node's resolver does not). It says
 * `Sec-Fetch-Site: none`, as a user's own visit does, unless `headers` says otherwise.
 */
export function appRequest(app, path, { method = 'GET', headers = {}, body } = {}) {
  const u = new URL(path, app.base);
  return new Promise((res, rej) => {
    const req = httpRequest({
      host: '127.0.0.1', port: u.port, path: u.pathname + u.search, method,
      headers: { host: u.host, 'sec-fetch-site': 'none', ...headers },
    }, (r) => {
      let text = '';
      r.setEncoding('utf8');
      r.on('data', (c) => { text += c; });
      r.on('end', () => res({ status: r.statusCode, headers: r.headers, text, json: () => JSON.parse(text) }));
    });
    req.on('error', rej);
    req.setTimeout(30000, () => req.destroy(new Error(`${method} ${u} timed out`)));
    if (body) req.write(body);
    req.end();
  });
}

/** Launch Debian's Chromium through playwright-core (Playwright makes a fresh profile each time). */
export async function launchChromium() {
  const { chromium } = await import('playwright-core');
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run clients/app/setup.sh`);
  return chromium.launch({ executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 120000 });
}

/**
 * Chromium with its profile in `dir` (kept after it closes), as one context: for tests that look
 * at what the browser wrote to disk.
 */
export async function launchChromiumWithProfile(dir) {
  const { chromium } = await import('playwright-core');
  if (!existsSync(CHROMIUM)) throw new Error(`no Chromium at ${CHROMIUM}: run clients/app/setup.sh`);
  return chromium.launchPersistentContext(dir, {
    executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, timeout: 120000,
    viewport: { width: 1200, height: 900 },
  });
}

/**
 * Open a browser context for one app, let it in with the launch link, and watch every request so
 * the test can prove the page asked nothing of any other host.
 */
export async function openApp(browser, app) {
  const context = await browser.newContext({ viewport: { width: 1200, height: 900 } });
  return openAppIn(context, app);
}

/** As [`openApp`], in a context the caller made. */
export async function openAppIn(context, app) {
  const page = await context.newPage();
  page.setDefaultTimeout(45000);
  page.setDefaultNavigationTimeout(60000);
  const foreign = [];
  const consoleErrors = [];
  page.on('request', (r) => {
    const u = r.url();
    if (!u.startsWith(app.base) && !u.startsWith('data:') && !u.startsWith('about:')) foreign.push(u);
  });
  page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(m.text()); });
  await page.goto(app.url);
  return { context, page, foreign, consoleErrors };
}

/**
 * Click a form's button and wait for the page it leads to. The page script sends forms itself
 * (so a form the app does not answer stays kept on its page), so a click no longer navigates at
 * once and Playwright does not wait for it: wait for the new page's load instead of for text that
 * the page before may already show (a second "Position recorded").
 */
export async function clickAndLoad(page, button) {
  const loaded = page.waitForEvent('load', { timeout: 60000 });
  await button.click();
  await loaded;
}

/** Run axe-core on the page; return the serious and critical violations. */
export async function axeCheck(page, label) {
  // Evaluated through the DevTools protocol rather than added as a <script>: the app's
  // Content-Security-Policy (rightly) refuses inline scripts, and it stays on during the test.
  await page.evaluate(axeSource);
  const results = await page.evaluate(() => window.axe.run(document, {
    runOnly: { type: 'tag', values: ['wcag2a', 'wcag2aa', 'wcag21a', 'wcag21aa', 'wcag22aa', 'best-practice'] },
  }));
  const bad = results.violations.filter((v) => v.impact === 'serious' || v.impact === 'critical');
  return bad.map((v) => `${label}: ${v.id} (${v.impact}): ${v.help} at ${v.nodes.slice(0, 3).map((n) => n.target.join(' ')).join(', ')}`);
}

export async function screenshot(page, name, opts = {}) {
  mkdirSync(screenshotDir, { recursive: true });
  await page.screenshot({ path: join(screenshotDir, `${name}.png`), fullPage: true, ...opts });
}

export function cleanWork() {
  rmSync(join(appDir, 'tests', 'e2e', '.work'), { recursive: true, force: true });
}

/**
 * Every file under `dir` that holds any of `words`, as UTF-8 or as UTF-16 (browsers keep page
 * state in UTF-16): `[{ file, word }]`. To prove record text was not written outside the
 * encrypted store.
 */
export function filesContaining(dir, words) {
  const found = [];
  const needles = words.flatMap((word) => [Buffer.from(word, 'utf8'), Buffer.from(word, 'utf16le')]
    .map((bytes) => ({ word, bytes })));
  const walk = (d) => {
    for (const name of readdirSync(d)) {
      const path = join(d, name);
      const st = lstatSync(path);
      if (st.isDirectory()) walk(path);
      else if (st.isFile()) {
        const data = readFileSync(path);
        for (const { word, bytes } of needles) {
          if (data.indexOf(bytes) >= 0) found.push({ file: path, word });
        }
      }
    }
  };
  if (existsSync(dir)) walk(dir);
  return found;
}
