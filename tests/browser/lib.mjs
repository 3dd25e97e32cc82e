// What the console's browser tests share: the stack's addresses (from the
// environment scripts/test.sh exports from the test stack's stack.env), Debian's
// chromium driven by puppeteer-core (never a downloaded browser), a watch on each
// page's console errors, page errors and dialogs, API helpers, polling and
// screenshots.
//
// The page is query-api's (QUERY_CONSOLE_DIR, as docs/console.md says). For
// development only, CONSOLE_HARNESS=proxy serves frontend/ from a small server of
// this harness that passes /api/* to the stack's services instead.

import { spawn, spawnSync } from 'node:child_process';
import { createServer, request as httpRequest } from 'node:http';
import { mkdirSync, readFileSync, existsSync } from 'node:fs';
import { dirname, join, resolve, extname } from 'node:path';
import { fileURLToPath } from 'node:url';
import { randomUUID } from 'node:crypto';
import puppeteer from 'puppeteer-core';
import { env, sleep, waitFor } from '../support/stack.mjs';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '../..');

export { env };

export const QUERY = () => env('QUERY_API_URL');
export const ORDERS = () => env('ORDER_SERVICE_URL');
export const INVENTORY = () => env('INVENTORY_SERVICE_URL');

// ---- polling (tests/support/stack.mjs, shared with the OpenAPI test) ----

export { sleep, waitFor };

// ---- the API ----

export async function api(base, path, { method = 'GET', body, headers = {} } = {}) {
  const init = { method, headers: { Accept: 'application/json', ...headers } };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(base + path, init);
  const text = await res.text();
  let json = null;
  try {
    json = text ? JSON.parse(text) : null;
  } catch {
    json = null;
  }
  return { status: res.status, json, text, headers: res.headers };
}

export async function placeOrder(customerId, items = [{ itemId: 'sku-1', quantity: 1, unitPrice: '1.50' }]) {
  const r = await api(ORDERS(), '/api/orders', {
    method: 'POST', body: { customerId, items }, headers: { 'Idempotency-Key': randomUUID() },
  });
  if (r.status !== 201) throw new Error(`POST /api/orders: ${r.status} ${r.text}`);
  return r.json;
}

export const END_STATES = ['DELIVERED', 'INVENTORY_REJECTED', 'PAYMENT_FAILED', 'CANCELLED'];

export async function orderView(orderId) {
  const r = await api(QUERY(), `/api/orders/${orderId}`);
  return r.status === 200 ? r.json : null;
}

export async function waitEnd(orderId, timeoutMs = 120000) {
  return waitFor(`order ${orderId} to reach an end state in query-api`, async () => {
    const v = await orderView(orderId);
    return v && END_STATES.includes(v.status) ? v : null;
  }, timeoutMs);
}

export function unique(prefix) {
  return `${prefix}-${randomUUID().slice(0, 8)}`;
}

// ---- the stack ----

// scripts/stack.sh with the caller's environment (STACK_DIR, BUILD_DIR, ports).
export function stack(...args) {
  const r = spawnSync(join(ROOT, 'scripts/stack.sh'), args, { cwd: ROOT, stdio: 'inherit', env: process.env });
  if (r.status !== 0) throw new Error(`scripts/stack.sh ${args.join(' ')}: exit ${r.status}`);
}

// ---- where the page is ----

const TYPES = { '.html': 'text/html; charset=utf-8', '.css': 'text/css', '.js': 'text/javascript', '.json': 'application/json', '.svg': 'image/svg+xml' };

// CONSOLE_HARNESS=proxy: frontend/ and a /console-config.json of its own naming
// itself for both services; POST /api/orders, cancels and /api/inventory go to
// order- and inventory-service, every other /api/* to query-api (streamed, so SSE
// passes through).
function proxyServer() {
  const q = new URL(QUERY());
  const o = new URL(ORDERS());
  const inv = new URL(INVENTORY());
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://x');
    const self = `http://127.0.0.1:${server.address().port}`;
    if (url.pathname === '/console-config.json') {
      res.writeHead(200, { 'Content-Type': 'application/json' });
      res.end(JSON.stringify({ orderServiceUrl: self, inventoryServiceUrl: self }));
      return;
    }
    if (url.pathname.startsWith('/api/')) {
      let to = q;
      if (url.pathname.startsWith('/api/inventory')) to = inv;
      else if (req.method === 'POST' && /^\/api\/orders(\/[^/]+\/cancel)?$/.test(url.pathname)) to = o;
      const up = httpRequest({ host: to.hostname, port: to.port, path: req.url, method: req.method, headers: { ...req.headers, host: to.host } }, (ur) => {
        res.writeHead(ur.statusCode, ur.headers);
        ur.pipe(res);
        // An upstream that went away mid-answer (query-api stopped under a
        // stream) ends the browser's connection too, so that EventSource resumes.
        ur.on('close', () => { if (!res.writableEnded) res.destroy(); });
      });
      up.on('error', () => { if (!res.headersSent) res.writeHead(502); res.end(); });
      req.pipe(up);
      res.on('close', () => up.destroy());
      return;
    }
    const file = join(ROOT, 'frontend', url.pathname === '/' ? 'index.html' : url.pathname);
    if (!file.startsWith(join(ROOT, 'frontend')) || !existsSync(file) || !TYPES[extname(file)]) {
      res.writeHead(404, { 'Content-Type': 'application/json' });
      res.end('{"status":404}');
      return;
    }
    res.writeHead(200, { 'Content-Type': TYPES[extname(file)] });
    res.end(readFileSync(file));
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

// The console's origin and a function that stops whatever was started for it.
export async function consoleOrigin() {
  if (process.env.CONSOLE_HARNESS === 'proxy') {
    const server = await proxyServer();
    return { origin: `http://127.0.0.1:${server.address().port}`, close: () => new Promise((ok) => server.close(ok)), proxy: true };
  }
  const origin = process.env.CONSOLE_URL || QUERY();
  return { origin: origin.replace(/\/+$/, ''), close: async () => {}, proxy: false };
}

// ---- the browser ----

export async function launch() {
  return puppeteer.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    headless: true,
    // root has no user namespaces for chromium's sandbox in this container setup
    args: ['--no-sandbox', '--disable-dev-shm-usage', '--window-size=1280,900'],
    defaultViewport: { width: 1280, height: 900 },
  });
}

// A new page that records what went wrong on it: console errors, uncaught
// errors and dialogs (a dialog is dismissed, so that an alert() cannot hang it).
export async function watchedPage(browser) {
  const page = await browser.newPage();
  const seen = { errors: [], dialogs: [] };
  page.on('console', (m) => {
    if (m.type() === 'error') seen.errors.push(`console: ${m.text()} ${m.location() && m.location().url ? `(${m.location().url})` : ''}`);
  });
  page.on('pageerror', (e) => seen.errors.push(`pageerror: ${e.message}`));
  page.on('dialog', async (d) => {
    seen.dialogs.push(`${d.type()}: ${d.message()}`);
    await d.dismiss().catch(() => {});
  });
  return { page, seen };
}

export function shotsDir() {
  const dir = process.env.BROWSER_SHOTS_DIR
    || join(ROOT, process.env.BUILD_DIR || 'build/asan', 'browser-shots');
  mkdirSync(dir, { recursive: true });
  return dir;
}

export async function screenshot(page, name) {
  await page.screenshot({ path: join(shotsDir(), `${name}.png`), fullPage: true });
}

// The text of the element matching selector, or null.
export async function textOf(page, selector) {
  return page.$eval(selector, (el) => el.textContent).catch(() => null);
}

// Everything of one test file: the page's origin and a browser, closed at the end.
export async function setup() {
  const where = await consoleOrigin();
  const browser = await launch();
  return {
    origin: where.origin,
    proxy: where.proxy,
    browser,
    url: (hash) => `${where.origin}/${hash}`,
    async close() {
      await browser.close();
      await where.close();
    },
  };
}

export { spawn };
