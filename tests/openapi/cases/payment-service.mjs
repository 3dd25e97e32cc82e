// payment-service's conformance cases (services/payment-service/openapi.json):
// real requests against the test stack. GET /api/payments/{orderId} is asked for
// three payments, one of each shape: authorized (refund null), declined (with its
// reason, refund null) and authorized then refunded; then 400 and 404. Not
// produced here: 500 and 503 (a broken or unreachable database) and 401 (only
// with HTTP_READS_NEED_AUTH=on; the reads send the reader token, which is ignored
// when reads are open).
//
// The orders are made through order-service (ctx.api) for sku-11 (seeded with
// 100000 units by the default INVENTORY_CATALOG, used by no other test). The
// test stack (scripts/test.sh) declines customers named decline-*. A cancel asked
// right after the create travels behind the order's own events (docs/contracts.md,
// "Cancellation"): the charge is made first, then the cancel is granted and the
// payment refunded (saga.mjs: a new order when a cancel loses its race with the
// pick-up).
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { placeOrder, reader } from './helpers.mjs';
import { cancelledOrder } from './saga.mjs';

export const service = 'payment-service';

const RUN = randomUUID();
const ITEM = 'sku-11';
const WAIT_MS = 120000;

// The reads carry the reader token (helpers.mjs): needed when HTTP_READS_NEED_AUTH=on,
// ignored otherwise. An order of 2 x 3.40 = 6.80 USD for customerId; its id.
const createOrder = (ctx, customerId) =>
  placeOrder(ctx, { customerId, items: [{ itemId: ITEM, quantity: 2, unitPrice: '3.40' }] });

// Polls payment-service until the order's payment satisfies ok; returns it.
function waitPayment(ctx, orderId, what, ok) {
  return ctx.waitFor(`${what} of order ${orderId}`, async () => {
    try {
      const res = await ctx.api(ctx.url.payment, `/api/payments/${orderId}`, { method: 'GET', headers: reader(ctx) });
      return res.status === 200 && ok(res.json) ? res.json : null;
    } catch {
      return null;
    }
  }, WAIT_MS);
}

export default [
  {
    name: 'three orders: one paid, one declined, one cancelled at once (to be refunded)',
    before: async (ctx) => {
      ctx.paid = await createOrder(ctx, `openapi-pay-${RUN}`);
      ctx.declined = await createOrder(ctx, `decline-openapi-${RUN}`);
      ctx.refunded = await cancelledOrder(ctx, {
        customerId: `openapi-refund-${RUN}`,
        items: [{ itemId: ITEM, quantity: 2, unitPrice: '3.40' }],
      }, 'openapi conformance: refund', { timeoutMs: WAIT_MS });
    },
  },
  {
    name: 'the paid order has its payment',
    before: async (ctx) => {
      await waitPayment(ctx, ctx.paid, 'the payment', () => true);
    },
  },
  {
    name: 'an authorized payment',
    method: 'GET',
    path: (ctx) => `/api/payments/${ctx.paid}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.orderId, ctx.paid);
      assert.equal(res.json.status, 'AUTHORIZED');
      assert.equal(res.json.customerId, `openapi-pay-${RUN}`);
      assert.equal(res.json.amount, '6.80');
      assert.equal(res.json.currency, 'USD');
      assert.equal('reason' in res.json, false);
      assert.equal(res.json.refund, null);
    },
  },
  {
    name: 'the declined order has its payment',
    before: async (ctx) => {
      await waitPayment(ctx, ctx.declined, 'the payment', () => true);
    },
  },
  {
    name: 'a declined payment, with its reason',
    method: 'GET',
    path: (ctx) => `/api/payments/${ctx.declined}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.status, 'DECLINED');
      assert.equal(res.json.reason, 'DECLINED_CUSTOMER');
      assert.equal(res.json.amount, '6.80');
      assert.equal(res.json.refund, null);
    },
  },
  {
    name: 'the cancelled order is refunded',
    before: async (ctx) => {
      await waitPayment(ctx, ctx.refunded, 'the refund', (p) => p.refund !== null && p.refund !== undefined);
    },
  },
  {
    name: 'a refunded payment',
    method: 'GET',
    path: (ctx) => `/api/payments/${ctx.refunded}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.status, 'AUTHORIZED');
      assert.equal(res.json.refund.reason, 'ORDER_CANCELLED');
      assert.equal(res.json.refund.amount, res.json.amount);
      assert.equal(res.json.refund.currency, res.json.currency);
    },
  },
  {
    name: 'an orderId that is not a UUID is 400',
    method: 'GET',
    path: '/api/payments/not-a-uuid',
    headers: reader,
    expect: 400,
    then: (ctx, res) => assert.equal(res.json.field, 'orderId', res.text),
  },
  {
    name: 'an order without a payment is 404',
    method: 'GET',
    path: (ctx) => `/api/payments/${ctx.uuid()}`,
    headers: reader,
    expect: 404,
    then: (ctx, res) => assert.equal(res.json.field, 'orderId', res.text),
  },
];
