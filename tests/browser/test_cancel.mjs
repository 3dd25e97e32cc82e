// The Cancel button of an order's page: shown while the order may still be
// cancelled, it posts the cancel to order-service, and the page follows the
// cancellation to CANCELLED live (no reload) with the refund in its note; an
// order in an end state has no button. delivery-service is held back so that the
// order waits, paid and cancellable, until the button has been pressed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, waitEnd, orderView, placeOrder, stack, textOf, screenshot, unique } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
// Whatever happened, delivery-service runs again for the tests after this one.
after(async () => {
  try {
    stack('start', 'delivery-service');
  } catch (e) {
    console.error(e.message);
  }
  await t.close();
});

test('the Cancel button cancels a paid order, and the page follows it to CANCELLED with the refund', async () => {
  stack('stop', 'delivery-service');
  const { orderId, totalAmount } = await placeOrder(unique('browser-cancel'));
  const { page, seen } = await watchedPage(t.browser);
  await page.goto(t.url(`#/orders/${orderId}`), { waitUntil: 'domcontentloaded' });
  await waitFor('the paid order on its page', async () => (await textOf(page, '#order-status')) === 'PAYMENT_AUTHORIZED', 90000);
  await page.evaluate(() => { window.__notReloaded = true; });
  await page.waitForSelector('#cancel-order');
  await page.click('#cancel-order');
  await waitFor('the page saying the cancel was requested', async () => /Cancel requested/.test(await textOf(page, '#cancel-message') ?? ''), 30000);

  // delivery-service, the cancel's arbiter for a paid order, decides it.
  stack('start', 'delivery-service');
  await waitFor('CANCELLED on the page', async () => (await textOf(page, '#order-status')) === 'CANCELLED', 120000);
  // CANCELLED comes with delivery.cancelled; the refund after it, once
  // payment-service has read that verdict, called its gateway and published
  // payment.refunded: the view has it only some milliseconds later.
  const view = await waitFor('the refund in the read model', async () => {
    const v = await orderView(orderId);
    return v && v.refundedAmount != null ? v : null;
  }, 60000);
  assert.equal(view.status, 'CANCELLED');
  assert.equal(view.refundedAmount, totalAmount, 'the refund is the charge');
  await waitFor('the refund in the page\'s note', async () => /refunded/.test(await textOf(page, '#order-note') ?? ''), 60000);
  assert.equal(await page.$('#cancel-order'), null, 'a cancelled order still has a Cancel button');
  const types = await page.$$eval('#timeline li', (li) => li.map((x) => x.textContent));
  for (const want of ['order.cancel_requested', 'payment.refunded'])
    assert.ok(types.some((x) => x.includes(want)), `${want} missing from the timeline: ${types}`);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was reloaded');
  assert.deepEqual(seen.errors, []);
  await screenshot(page, 'order-cancelled');
  await page.close();
});

test('an order in an end state has no Cancel button', async () => {
  const { orderId } = await placeOrder(unique('browser-nocancel'));
  const end = await waitEnd(orderId);
  const { page, seen } = await watchedPage(t.browser);
  await page.goto(t.url(`#/orders/${orderId}`), { waitUntil: 'domcontentloaded' });
  await waitFor('the order\'s end state on its page', async () => (await textOf(page, '#order-status')) === end.status, 60000);
  assert.equal(await page.$('#cancel-order'), null, `a ${end.status} order has a Cancel button`);
  assert.equal(await orderView(orderId).then((v) => v.status), end.status);
  assert.deepEqual(seen.errors, []);
  await page.close();
});
