// An order's stream resumes after query-api restarts: the page's timeline ends
// with exactly the order's events, none missed and none twice. delivery-service
// is held back so that the order is known to move on while query-api is away.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, api, QUERY, env, placeOrder, stack, textOf, unique } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
// Whatever happened, the stack is whole again for the tests after this one.
after(async () => {
  for (const part of ['delivery-service', 'query-api']) {
    try {
      stack('start', part);
    } catch (e) {
      console.error(e.message);
    }
  }
  await t.close();
});

const timeline = (page) => page.$$eval('#timeline li', (li) => li.map((x) => x.dataset.eventId));

test('a stream resumes after query-api restarts with no event missed or repeated', async () => {
  stack('stop', 'delivery-service');
  const { orderId } = await placeOrder(unique('browser-resume'));
  const { page } = await watchedPage(t.browser);
  await page.goto(t.url(`#/orders/${orderId}`), { waitUntil: 'domcontentloaded' });
  await waitFor('the paid order on its page', async () => (await textOf(page, '#order-status')) === 'PAYMENT_AUTHORIZED', 90000);
  await page.evaluate(() => { window.__notReloaded = true; });
  const early = await timeline(page);

  // A restart with nothing happening meanwhile, then one while the order moves on.
  // (scripts/stack.sh has no `restart`: a restart is its stop and start.)
  stack('stop', 'query-api');
  stack('start', 'query-api');
  stack('stop', 'query-api');
  stack('start', 'delivery-service');
  await waitFor('delivery-service to deliver the order', async () => {
    const r = await api(env('DELIVERY_SERVICE_URL'), `/api/deliveries/${orderId}`);
    return r.status === 200 && r.json.status === 'DELIVERED';
  }, 120000);
  stack('start', 'query-api');

  await waitFor('the delivered order on its page', async () => (await textOf(page, '#order-status')) === 'DELIVERED', 120000);
  const events = await waitFor('every event of the order on the page', async () => {
    const r = await api(QUERY(), `/api/orders/${orderId}/events`);
    const want = r.json.events.map((e) => e.eventId);
    const got = await timeline(page);
    return got.length >= want.length && want.includes('') === false ? { want, got } : null;
  }, 60000);
  assert.equal(await page.evaluate(() => window.__notReloaded), true, 'the page was reloaded');
  assert.equal(new Set(events.got).size, events.got.length, `an event shown twice: ${events.got}`);
  assert.deepEqual([...events.got].sort(), [...events.want].sort());
  assert.ok(events.got.length > early.length, 'no event came after the restart');
  await page.close();
});
