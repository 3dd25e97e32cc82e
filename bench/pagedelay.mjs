// pagedelay - the web console measured as a person sees it: the time from an
// event's feed row to its line in an order's timeline on the page.
//
//   node bench/pagedelay.mjs ITEM N PAGES
//
// With QUERY_API_URL, ORDER_SERVICE_URL and the PG* variables of a running stack
// in the environment (scripts/bench.sh passes them). PAGES workers, each with a
// tab of Debian's chromium at a time (puppeteer-core, from the browser tests'
// install: tests/browser/lib.mjs), place orders of ITEM one after the other
// through order-service, open the order's page (#/orders/{id}) in a new tab and
// keep it until the page shows an end state; N orders in all. A script added to every page notes when each timeline line
// (li[data-event-id], added by the page's stream) enters the document, and when
// the page's EventSource opened. Afterwards each line's event is looked up in
// stream_feed (psql, query-api's database) for its created_at: the feed insert's
// clock_timestamp(), a little before its commit, on this machine's clock. Only
// events whose row was created after the page's stream was open count (the
// others came with the stream's backlog, not live). Prints p50, p90, p99 and max,
// and `page_delay_*=` lines for the benchmark's result file.

import { spawnSync } from 'node:child_process';
import { END_STATES, launch, placeOrder, sleep, waitFor } from '../tests/browser/lib.mjs';

const [item, nArg, pagesArg] = process.argv.slice(2);
const N = Number(nArg);
const PAGES = Number(pagesArg);
if (!item || !(N > 0) || !(PAGES > 0)) {
  console.error('usage: node bench/pagedelay.mjs ITEM N PAGES');
  process.exit(2);
}
const QUERY = process.env.QUERY_API_URL.replace(/\/+$/, '');

// In every page, before its scripts: the time each timeline line appears and the
// time each EventSource opens (ms since the epoch).
function instrument() {
  window.__lines = {};
  window.__opened = [];
  const Native = window.EventSource;
  window.EventSource = class extends Native {
    constructor(...args) {
      super(...args);
      this.addEventListener('open', () => window.__opened.push(Date.now()));
    }
  };
  new MutationObserver((records) => {
    const at = Date.now();
    for (const r of records) {
      for (const node of r.addedNodes) {
        if (node.nodeType === 1 && node.matches('li[data-event-id]') && !(node.dataset.eventId in window.__lines))
          window.__lines[node.dataset.eventId] = at;
      }
    }
  }).observe(document, { childList: true, subtree: true });
}

const samples = []; // { eventId, shownAt, openedAt }

// One tab per order, closed after it: a tab's connections (its stream among them)
// end with it, and the browser's six connections per host stay free for the next.
async function onePage(browser, count, w) {
  for (let i = 0; i < count; i++) {
    const order = await placeOrder(`bench-page-${w}`, [{ itemId: item, quantity: 1, unitPrice: '2.50' }]);
    const page = await browser.newPage();
    await page.evaluateOnNewDocument(instrument);
    await page.goto(`${QUERY}/#/orders/${order.orderId}`, { waitUntil: 'domcontentloaded' });
    await waitFor(`order ${order.orderId} in an end state on its page`, async () => {
      const s = await page.$eval('#order-status', (el) => el.textContent).catch(() => null);
      return END_STATES.includes(s);
    }, 120000, 50);
    await sleep(1000); // the events after the end state (a last ETA)
    const { lines, opened } = await page.evaluate(() => ({ lines: window.__lines, opened: window.__opened }));
    await page.close();
    const openedAt = opened.length ? Math.min(...opened) : Infinity;
    for (const [eventId, shownAt] of Object.entries(lines))
      samples.push({ eventId, shownAt, openedAt });
  }
}

function createdAt(eventIds) {
  const ids = eventIds.filter((id) => /^[0-9a-f-]{36}$/.test(id));
  const sql = `SELECT event_id, (extract(epoch FROM created_at) * 1000)::float8 FROM stream_feed`
    + ` WHERE event_id IN (${ids.map((id) => `'${id}'`).join(',')})`;
  const r = spawnSync('psql', ['-X', '-At', '-F', ' ', '-d', 'delivery_query', '-c', sql], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`psql: ${r.stderr}`);
  const out = new Map();
  for (const line of r.stdout.split('\n')) {
    const [id, ms] = line.split(' ');
    if (id && ms) out.set(id, Number(ms));
  }
  return out;
}

const pct = (sorted, p) => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))];

const browser = await launch();
try {
  const per = Array.from({ length: PAGES }, (_, w) => Math.floor(N / PAGES) + (w < N % PAGES ? 1 : 0));
  await Promise.all(per.map((count, w) => onePage(browser, count, w)));
} finally {
  await browser.close();
}
const created = createdAt(samples.map((s) => s.eventId));
const delays = samples
  .filter((s) => created.has(s.eventId) && created.get(s.eventId) > s.openedAt)
  .map((s) => s.shownAt - created.get(s.eventId))
  .sort((a, b) => a - b);
console.log(`pages ${PAGES}, orders ${N}: ${samples.length} timeline lines, ${delays.length} of them live`);
if (!delays.length) process.exit(1);
const f = (x) => x.toFixed(1);
console.log(`delay feed row -> page: p50 ${f(pct(delays, 0.5))} ms, p90 ${f(pct(delays, 0.9))} ms,`
  + ` p99 ${f(pct(delays, 0.99))} ms, max ${f(delays[delays.length - 1])} ms`);
console.log(`page_delay_samples=${delays.length}`);
console.log(`page_delay_p50_ms=${f(pct(delays, 0.5))}`);
console.log(`page_delay_p99_ms=${f(pct(delays, 0.99))}`);
