// Placing an order through the form: it reaches its end state on its own page,
// live, without a reload; a bad quantity shows order-service's message next to
// the quantity field.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, textOf, orderView, screenshot, END_STATES, unique } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
after(async () => { await t.close(); });

async function fillForm(page, customer, quantity) {
  await page.goto(t.url('#/new'), { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('input[name="customerId"]');
  await page.type('input[name="customerId"]', customer);
  const q = await page.$('input[name="quantity"]');
  await q.click({ clickCount: 3 });
  await q.type(quantity);
}

test('an order placed through the form reaches its end state on its page without a reload', async () => {
  const { page } = await watchedPage(t.browser);
  const customer = unique('browser-form');
  await fillForm(page, customer, '2');
  // A double click: the Idempotency-Key makes one order of it.
  await page.click('button[type="submit"]', { clickCount: 2 });
  await waitFor('the new order\'s page', () => /^#\/orders\/[0-9a-f-]{36}$/.test(new URL(page.url()).hash));
  const orderId = new URL(page.url()).hash.split('/')[2];
  // Marks the document: a reload would lose it.
  await page.evaluate(() => { window.__notReloaded = true; });
  const shown = await waitFor('an end state on the page', async () => {
    const s = await textOf(page, '#order-status');
    return END_STATES.includes(s) ? s : null;
  }, 120000);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was reloaded');
  const view = await orderView(orderId);
  assert.equal(shown, view.status);
  assert.equal(await textOf(page, '#order-customer'), customer);
  // The timeline shows the order's events, the first being its creation.
  const events = await page.$$eval('#timeline li', (li) => li.map((x) => x.textContent));
  assert.ok(events.length >= 2, `timeline: ${events}`);
  assert.match(events[0], /order\.created/);
  // The items came along: sku-1 × 2.
  const items = await page.$$eval('table.items tbody tr', (tr) => tr.map((x) => x.textContent));
  assert.deepEqual(items.length, 1);
  assert.match(items[0], /sku-1\s*2/);
  // One order for the double click.
  const list = await fetch(`${process.env.QUERY_API_URL}/api/orders?customerId=${customer}`).then((r) => r.json());
  assert.equal(list.items.length, 1, 'a double click made more than one order');
  await screenshot(page, 'order');
  await page.close();
});

test('a bad quantity shows the API\'s message next to the quantity field', async () => {
  const { page } = await watchedPage(t.browser);
  await fillForm(page, unique('browser-bad'), '0');
  await page.click('button[type="submit"]');
  const q = 'input[name="quantity"]';
  await waitFor('the quantity field marked invalid', () => page.$eval(q, (el) => el.getAttribute('aria-invalid') === 'true'));
  const message = await page.$eval(q, (el) => {
    const id = el.getAttribute('aria-describedby');
    const err = id && document.getElementById(id);
    // next to the field: inside the field's own label
    return err && el.closest('label').contains(err) && !err.hidden ? err.textContent : null;
  });
  assert.equal(message, 'items[0].quantity must be between 1 and 100000');
  assert.match(new URL(page.url()).hash, /^#\/new/);
  await screenshot(page, 'new-order-bad-quantity');
  await page.close();
});
