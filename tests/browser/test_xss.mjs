// An order whose customer id is markup shows that text, and nothing of it runs.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, placeOrder, waitEnd, sleep, screenshot, textOf } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
after(async () => { await t.close(); });

const EVIL = '<img src=x onerror=alert(1)>';

test('a customer id that is markup is shown as text and opens no dialog', async () => {
  const { orderId } = await placeOrder(EVIL);
  await waitEnd(orderId);
  const { page, seen } = await watchedPage(t.browser);
  for (const hash of [`#/orders/${orderId}`, `#/orders?customerId=${encodeURIComponent(EVIL)}`, '#/']) {
    await page.goto(t.url(hash), { waitUntil: 'domcontentloaded' });
    await waitFor(`${hash} to show the customer id`, () => page.evaluate((s) => document.querySelector('main').textContent.includes(s), EVIL));
    assert.equal(await page.$$eval('main img', (i) => i.length), 0, `${hash}: an <img> was made`);
  }
  await page.goto(t.url(`#/orders/${orderId}`), { waitUntil: 'domcontentloaded' });
  await waitFor('the customer field', async () => (await textOf(page, '#order-customer')) === EVIL);
  // An image that fails to load fires onerror at once; give it time anyway.
  await sleep(1500);
  assert.deepEqual(seen.dialogs, []);
  await screenshot(page, 'xss-order');
  await page.close();
});
