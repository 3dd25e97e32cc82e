// The list's filters and its pagination show the same orders as the API.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, api, QUERY, placeOrder, waitEnd, screenshot, unique } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
after(async () => { await t.close(); });

const shownIds = (page) => page.$$eval('table.orders tbody tr[data-order-id]', (tr) => tr.map((x) => x.dataset.orderId));

// Every page of the API's list for these arguments, as lists of orderIds.
async function apiPages(query) {
  const pages = [];
  let cursor = null;
  do {
    const r = await api(QUERY(), `/api/orders?${query}${cursor ? `&cursor=${encodeURIComponent(cursor)}` : ''}`);
    assert.equal(r.status, 200, r.text);
    pages.push(r.json.items.map((o) => o.orderId));
    cursor = r.json.nextCursor;
  } while (cursor);
  return pages;
}

async function shows(page, ids, what) {
  await waitFor(what, async () => JSON.stringify(await shownIds(page)) === JSON.stringify(ids), 30000);
}

test('list filters and pagination show the same orders as the API', async () => {
  const customer = unique('browser-list');
  const ids = [];
  for (let i = 0; i < 5; i += 1) ids.push((await placeOrder(customer)).orderId);
  const ends = [];
  for (const id of ids) ends.push((await waitEnd(id)).status);

  const { page } = await watchedPage(t.browser);
  await page.goto(t.url(`#/orders?customerId=${customer}&limit=2`), { waitUntil: 'domcontentloaded' });
  const pages = await apiPages(`customerId=${customer}&limit=2`);
  assert.equal(pages.length, 3);
  assert.deepEqual(pages.flat().sort(), [...ids].sort());
  await shows(page, pages[0], 'page 1');
  await page.click('.pager button:nth-child(2)');
  await shows(page, pages[1], 'page 2');
  await page.click('.pager button:nth-child(2)');
  await shows(page, pages[2], 'page 3');
  assert.equal(await page.$eval('.pager button:nth-child(2)', (b) => b.disabled), true, 'Next on the last page');
  await page.click('.pager button:nth-child(1)');
  await shows(page, pages[1], 'page 2 again');
  await page.click('.pager button:nth-child(1)');
  await shows(page, pages[0], 'page 1 again');
  assert.equal(await page.$eval('.pager button:nth-child(1)', (b) => b.disabled), true, 'Previous on the first page');

  // The status filter, through the form: the end state most of them reached, then one none did.
  const status = ends.sort((a, b) => ends.filter((x) => x === b).length - ends.filter((x) => x === a).length)[0];
  for (const s of [status, status === 'CANCELLED' ? 'CREATED' : 'CANCELLED']) {
    await page.select('select[name="status"]', s);
    await page.click('form.filters button[type="submit"]');
    await waitFor('the hash to carry the filter', () => new URL(page.url()).hash.includes(`status=${s}`));
    const want = await apiPages(`customerId=${customer}&status=${s}&limit=2`);
    await shows(page, want[0], `the first page of ${s}`);
    if (want[0].length === 0) {
      assert.match(await page.$eval('table.orders tbody', (b) => b.textContent), /No orders/);
    }
  }
  await screenshot(page, 'orders');
  await page.close();
});
