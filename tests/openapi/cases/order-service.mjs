// order-service's conformance cases (services/order-service/openapi.json): real
// requests against the test stack, every operation and every status that a real
// request can produce: 201, 200 (replay), 400, 415 and 422 on POST /api/orders;
// 200, 400 and 404 on GET /api/orders/{orderId}; 202, 200, 400, 404, 409 and 415
// on POST /api/orders/{orderId}/cancel. Not produced here: 500 and 503 (a broken
// or unreachable database) and 401 (only with HTTP_READS_NEED_AUTH=on; the reads
// send the reader token, which is ignored when reads are open).
//
// The cancel answers are made deterministic by the order's state, never by
// timing: a cancel right after the create finds no verdict yet and is 202; once
// the saga has granted a cancel (CANCELLED; saga.mjs tries new orders when one
// loses its race with the pick-up), a second cancel is 200; an order that
// order-service itself shows DELIVERED or PAYMENT_FAILED is 409.
//
// The test stack (scripts/test.sh) runs the delivery clock 600x, so a delivery
// completes in seconds, and declines customers named decline-*. The orders are
// for sku-11, which the default INVENTORY_CATALOG seeds with 100000 units and no
// other test uses. Customer ids and keys are new on every run.
import assert from 'node:assert/strict';
import { randomUUID } from 'node:crypto';
import { placeOrder, reader } from './helpers.mjs';
import { cancelWon, cancelledOrder } from './saga.mjs';

export const service = 'order-service';

const RUN = randomUUID();
const ITEM = 'sku-11';
const WAIT_MS = 120000;

const CUSTOMER = `openapi-${RUN}`;
// The keyed order: 2 x 9.99 + 1 x 0.50 = 20.48 USD (currency left to its default).
const FIRST = {
  customerId: CUSTOMER,
  items: [
    { itemId: ITEM, quantity: 2, unitPrice: '9.99' },
    { itemId: ITEM, quantity: 1, unitPrice: 0.5 },
  ],
};
// The same request after validation: currency given as its default, amounts
// written otherwise ("9.99" as a number, 0.5 as "0.50").
const FIRST_AGAIN = {
  customerId: CUSTOMER,
  currency: 'USD',
  items: [
    { itemId: ITEM, quantity: 2, unitPrice: 9.99 },
    { itemId: ITEM, quantity: 1, unitPrice: '0.50' },
  ],
};
// Another request: one more unit on the first line.
const FIRST_CHANGED = {
  customerId: CUSTOMER,
  items: [
    { itemId: ITEM, quantity: 3, unitPrice: '9.99' },
    { itemId: ITEM, quantity: 1, unitPrice: 0.5 },
  ],
};

const line = (extra = {}) => ({ itemId: ITEM, quantity: 1, unitPrice: '1.00', ...extra });
const valid = (extra = {}) => ({ customerId: `openapi-bad-${RUN}`, items: [line()], ...extra });
const withLine = (l) => ({ customerId: `openapi-bad-${RUN}`, items: [l] });
const withoutKey = (obj, key) => {
  const copy = { ...obj };
  delete copy[key];
  return copy;
};

// The reads carry the reader token (helpers.mjs): needed when HTTP_READS_NEED_AUTH=on,
// ignored otherwise.
const createOrder = (ctx, customerId) =>
  placeOrder(ctx, { customerId, items: [{ itemId: ITEM, quantity: 1, unitPrice: '2.50' }] });

// The order as order-service shows it, or null (not there yet, or a failed read).
async function readOrder(ctx, orderId) {
  try {
    const res = await ctx.api(ctx.url.order, `/api/orders/${orderId}`, { method: 'GET', headers: reader(ctx) });
    return res.status === 200 ? res.json : null;
  } catch {
    return null;
  }
}

function waitStatus(ctx, orderId, status) {
  return ctx.waitFor(`order ${orderId} ${status} at order-service`, async () => {
    const o = await readOrder(ctx, orderId);
    return o && o.status === status ? o : null;
  }, WAIT_MS);
}

// A 400 case: the body (or headers) given, the field named in the answer.
const bad = (name, field, extra) => ({
  name,
  method: 'POST',
  path: '/api/orders',
  expect: 400,
  ...extra,
  then: (ctx, res) => assert.equal(res.json.field, field, res.text),
});

const badCancel = (name, field, extra) => ({
  name,
  method: 'POST',
  path: (ctx) => `/api/orders/${ctx.orderId}/cancel`,
  expect: 400,
  ...extra,
  then: (ctx, res) => assert.equal(res.json.field, field, res.text),
});

export default [
  {
    name: 'orders whose saga takes a while: one to be delivered, one to be declined',
    before: async (ctx) => {
      ctx.key = ctx.uuid();
      ctx.toDeliver = await createOrder(ctx, `openapi-deliver-${RUN}`);
      ctx.declined = await createOrder(ctx, `decline-openapi-${RUN}`);
    },
  },

  // ---- POST /api/orders ----
  {
    name: 'creates an order under an Idempotency-Key (currency defaults to USD)',
    method: 'POST',
    path: '/api/orders',
    headers: (ctx) => ({ 'Idempotency-Key': ctx.key }),
    body: FIRST,
    expect: 201,
    then: (ctx, res) => {
      assert.equal(res.json.status, 'CREATED');
      assert.equal(res.json.customerId, CUSTOMER);
      assert.equal(res.json.totalAmount, '20.48');
      assert.equal(res.json.currency, 'USD');
      assert.equal(res.headers.get('Idempotent-Replayed'), null);
      ctx.orderId = res.json.orderId;
      ctx.correlationId = res.json.correlationId;
    },
  },
  {
    name: 'the same request under the same key is a replay of that order',
    method: 'POST',
    path: '/api/orders',
    headers: (ctx) => ({ 'Idempotency-Key': ctx.key }),
    body: FIRST,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.headers.get('Idempotent-Replayed'), 'true');
      assert.equal(res.json.orderId, ctx.orderId);
      assert.equal(res.json.correlationId, ctx.correlationId);
      assert.equal(res.json.totalAmount, '20.48');
    },
  },
  {
    name: 'the same request written otherwise (currency given, amounts as number/string) is a replay too',
    method: 'POST',
    path: '/api/orders',
    headers: (ctx) => ({ 'Idempotency-Key': ctx.key }),
    body: FIRST_AGAIN,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.headers.get('Idempotent-Replayed'), 'true');
      assert.equal(res.json.orderId, ctx.orderId);
    },
  },
  {
    name: 'another request under the same key is 422',
    method: 'POST',
    path: '/api/orders',
    headers: (ctx) => ({ 'Idempotency-Key': ctx.key }),
    body: FIRST_CHANGED,
    expect: 422,
    then: (ctx, res) => assert.equal(res.json.field, 'Idempotency-Key', res.text),
  },
  {
    name: 'creates an order without a key, in EUR, prices as JSON numbers',
    method: 'POST',
    path: '/api/orders',
    body: { customerId: `openapi-eur-${RUN}`, currency: 'EUR', items: [{ itemId: ITEM, quantity: 3, unitPrice: 1.25 }] },
    expect: 201,
    then: (ctx, res) => {
      assert.equal(res.json.totalAmount, '3.75');
      assert.equal(res.json.currency, 'EUR');
      assert.notEqual(res.json.orderId, ctx.orderId);
    },
  },
  bad('an Idempotency-Key with a space', 'Idempotency-Key', {
    headers: { 'Idempotency-Key': 'has space' },
    body: valid(),
  }),
  bad('an Idempotency-Key of 256 bytes', 'Idempotency-Key', {
    headers: { 'Idempotency-Key': 'k'.repeat(256) },
    body: valid(),
  }),
  bad('a body that is not an object', 'body', { body: [valid()] }),
  bad('customerId missing', 'customerId', { body: withoutKey(valid(), 'customerId') }),
  bad('customerId not a string', 'customerId', { body: valid({ customerId: 42 }) }),
  bad('customerId empty', 'customerId', { body: valid({ customerId: '' }) }),
  bad('customerId of 65 bytes', 'customerId', { body: valid({ customerId: 'c'.repeat(65) }) }),
  bad('currency null', 'currency', { body: valid({ currency: null }) }),
  bad('currency in lower case', 'currency', { body: valid({ currency: 'usd' }) }),
  bad('items missing', 'items', { body: withoutKey(valid(), 'items') }),
  bad('items not a list', 'items', { body: valid({ items: { itemId: ITEM } }) }),
  bad('items empty', 'items', { body: valid({ items: [] }) }),
  bad('101 lines', 'items', { body: valid({ items: Array.from({ length: 101 }, () => line()) }) }),
  bad('a line that is not an object', 'items[0]', { body: valid({ items: [ITEM] }) }),
  bad('the second line without itemId', 'items[1].itemId', { body: valid({ items: [line(), withoutKey(line(), 'itemId')] }) }),
  bad('itemId of 65 bytes', 'items[0].itemId', { body: withLine(line({ itemId: 'i'.repeat(65) })) }),
  bad('quantity 0', 'items[0].quantity', { body: withLine(line({ quantity: 0 })) }),
  bad('quantity above 100000', 'items[0].quantity', { body: withLine(line({ quantity: 100001 })) }),
  bad('quantity not an integer', 'items[0].quantity', { body: withLine(line({ quantity: 1.5 })) }),
  bad('unitPrice missing', 'items[0].unitPrice', { body: withLine(withoutKey(line(), 'unitPrice')) }),
  bad('unitPrice negative', 'items[0].unitPrice', { body: withLine(line({ unitPrice: '-1.00' })) }),
  bad('unitPrice with three decimals', 'items[0].unitPrice', { body: withLine(line({ unitPrice: '1.999' })) }),
  bad('unitPrice not an amount', 'items[0].unitPrice', { body: withLine(line({ unitPrice: true })) }),
  bad('a total beyond 9999999999999.99', 'items', {
    body: withLine(line({ quantity: 100000, unitPrice: '9999999999.99' })),
  }),
  bad('a body that is not JSON', 'body', {
    headers: { 'Content-Type': 'application/json' },
    body: '{"customerId": "c-1", "items": [',
  }),
  {
    name: 'a body that is not application/json is 415',
    method: 'POST',
    path: '/api/orders',
    headers: { 'Content-Type': 'text/plain' },
    body: JSON.stringify(valid()),
    expect: 415,
  },

  // ---- GET /api/orders/{orderId} ----
  {
    name: 'reads the order',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.orderId, ctx.orderId);
      assert.equal(res.json.correlationId, ctx.correlationId);
      assert.equal(res.json.totalAmount, '20.48');
      assert.deepEqual(res.json.items, [
        { itemId: ITEM, quantity: 2, unitPrice: '9.99' },
        { itemId: ITEM, quantity: 1, unitPrice: '0.50' },
      ]);
      assert.equal(res.json.cancellation, null);
    },
  },
  {
    name: 'an orderId that is not a UUID is 400',
    method: 'GET',
    path: '/api/orders/not-a-uuid',
    headers: reader,
    expect: 400,
    then: (ctx, res) => assert.equal(res.json.field, 'orderId', res.text),
  },
  {
    name: 'an unknown order is 404',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.uuid()}`,
    headers: reader,
    expect: 404,
    then: (ctx, res) => assert.equal(res.json.field, 'orderId', res.text),
  },

  // ---- POST /api/orders/{orderId}/cancel ----
  {
    name: 'an order to cancel',
    before: async (ctx) => {
      ctx.toCancel = await createOrder(ctx, `openapi-cancel-${RUN}`);
    },
  },
  {
    name: 'a cancel right after the create is asked: 202',
    method: 'POST',
    path: (ctx) => `/api/orders/${ctx.toCancel}/cancel`,
    body: { reason: 'openapi conformance' },
    expect: 202,
    then: (ctx, res) => {
      assert.equal(res.json.orderId, ctx.toCancel);
      assert.equal(res.json.cancellation.status, 'REQUESTED');
      assert.equal(res.json.cancellation.reason, 'openapi conformance');
    },
  },
  {
    name: 'the saga decides the cancel (another order when it lost its race with the pick-up)',
    before: async (ctx) => {
      const won = await cancelWon(ctx, ctx.toCancel, 'openapi conformance', WAIT_MS, true);
      ctx.cancelled = won
        ? ctx.toCancel
        : await cancelledOrder(ctx, { customerId: `openapi-cancel-${RUN}`, items: [line()] },
            'openapi conformance', { timeoutMs: WAIT_MS });
    },
  },
  {
    name: 'a cancel of a cancelled order is 200 (a null reason is none)',
    method: 'POST',
    path: (ctx) => `/api/orders/${ctx.cancelled}/cancel`,
    body: { reason: null },
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.status, 'CANCELLED');
      assert.equal(res.json.cancellation.status, 'CANCELLED');
      assert.equal(res.json.cancellation.reason, 'openapi conformance');
    },
  },
  {
    name: 'reads the cancelled order',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.cancelled}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.status, 'CANCELLED');
      assert.equal(res.json.cancellation.refusedBecause, null);
      assert.ok(res.json.cancellation.decidedAt);
    },
  },
  {
    name: 'the order to deliver is DELIVERED',
    before: async (ctx) => {
      await waitStatus(ctx, ctx.toDeliver, 'DELIVERED');
    },
  },
  {
    name: 'a cancel without a body of a delivered order is 409',
    method: 'POST',
    path: (ctx) => `/api/orders/${ctx.toDeliver}/cancel`,
    expect: 409,
    then: (ctx, res) => {
      assert.equal(res.json.orderStatus, 'DELIVERED');
      assert.equal(res.json.field, undefined);
    },
  },
  {
    name: 'reads the delivered order',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.toDeliver}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      assert.equal(res.json.status, 'DELIVERED');
      assert.equal(res.json.cancellation, null);
    },
  },
  {
    name: 'the declined order is PAYMENT_FAILED',
    before: async (ctx) => {
      await waitStatus(ctx, ctx.declined, 'PAYMENT_FAILED');
    },
  },
  {
    name: 'a cancel of an order whose payment failed is 409',
    method: 'POST',
    path: (ctx) => `/api/orders/${ctx.declined}/cancel`,
    body: { reason: 'too late' },
    expect: 409,
    then: (ctx, res) => assert.equal(res.json.orderStatus, 'PAYMENT_FAILED'),
  },
  {
    name: 'a cancel of an orderId that is not a UUID is 400',
    method: 'POST',
    path: '/api/orders/12345/cancel',
    expect: 400,
    then: (ctx, res) => assert.equal(res.json.field, 'orderId', res.text),
  },
  {
    name: 'a cancel of an unknown order is 404',
    method: 'POST',
    path: (ctx) => `/api/orders/${ctx.uuid()}/cancel`,
    body: { reason: 'nobody ordered it' },
    expect: 404,
    then: (ctx, res) => assert.equal(res.json.field, 'orderId', res.text),
  },
  badCancel('a cancel with an empty reason', 'reason', { body: { reason: '' } }),
  badCancel('a cancel with a reason of 201 bytes', 'reason', { body: { reason: 'r'.repeat(201) } }),
  badCancel('a cancel with a reason that is not a string', 'reason', { body: { reason: 42 } }),
  badCancel('a cancel whose body is not an object', 'body', { body: ['why'] }),
  badCancel('a cancel whose body is not JSON', 'body', {
    headers: { 'Content-Type': 'application/json' },
    body: '{"reason": ',
  }),
  {
    name: 'a cancel whose body is not application/json is 415',
    method: 'POST',
    path: (ctx) => `/api/orders/${ctx.orderId}/cancel`,
    headers: { 'Content-Type': 'text/plain' },
    body: 'changed my mind',
    expect: 415,
  },
  {
    name: 'the rejected cancels changed nothing',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => assert.equal(res.json.cancellation, null),
  },
];
