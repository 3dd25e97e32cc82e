// The board follows orders placed through the API while it is open: its counts
// per state become the API's, its newest orders list them, and the chart counts
// them, with no reload.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, api, QUERY, placeOrder, waitEnd, screenshot, unique } from './lib.mjs';
import { STATES } from '../../frontend/js/states.js';

let t;
before(async () => { t = await setup(); });
after(async () => { await t.close(); });

// Both as {name: text}, names in one order so that they compare as JSON.
const sorted = (o) => Object.fromEntries(Object.entries(o).sort(([a], [b]) => a.localeCompare(b)));

async function pageCounts(page) {
  return sorted(await page.$$eval('[data-count]', (tds) => Object.fromEntries(tds.map((td) => [td.dataset.count, td.textContent]))));
}

function apiCounts(stats) {
  const c = { total: String(stats.total), withoutStatus: String(stats.withoutStatus) };
  for (const s of STATES) c[s] = String(stats.byStatus[s] ?? 0);
  return sorted(c);
}

test('the board\'s counts follow orders placed through the API while it is open', async () => {
  const { page } = await watchedPage(t.browser);
  await page.goto(t.url('#/'), { waitUntil: 'domcontentloaded' });
  const before = await waitFor('the board\'s first counts', async () => {
    const c = await pageCounts(page);
    return /^[0-9]+$/.test(c.total || '') ? c : null;
  });
  await waitFor('the board\'s stream', async () => (await page.$eval('#live', (el) => el.textContent)) === 'live');
  await page.evaluate(() => { window.__notReloaded = true; });
  const customer = unique('browser-board');
  const placed = [];
  for (let i = 0; i < 3; i += 1) placed.push((await placeOrder(customer)).orderId);
  for (const id of placed) await waitEnd(id);
  const stats = await waitFor('the board to show the API\'s counts', async () => {
    const r = await api(QUERY(), '/api/stats');
    const want = apiCounts(r.json);
    const got = await pageCounts(page);
    return JSON.stringify(want) === JSON.stringify(got) ? want : null;
  }, 60000);
  assert.ok(Number(stats.total) >= Number(before.total) + 3, `total ${before.total} -> ${stats.total}`);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the board was reloaded');
  const newest = await page.$$eval('.newest li', (li) => li.map((x) => x.dataset.orderId));
  for (const id of placed) assert.ok(newest.includes(id), `${id} is not among the newest orders`);
  const link = await page.$eval(`.newest li[data-order-id="${placed[0]}"] a`, (a) => a.getAttribute('href'));
  assert.equal(link, `#/orders/${placed[0]}`);
  const bars = await page.$$eval('svg.chart rect.bar', (r) => r.filter((x) => Number(x.getAttribute('height')) > 0).length);
  assert.ok(bars >= 1, 'the chart shows no order placed');
  await screenshot(page, 'board');
  await page.close();
});
