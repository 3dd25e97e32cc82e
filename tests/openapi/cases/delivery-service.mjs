// delivery-service's own routes (services/delivery-service/openapi.json), one real
// request each. The delivery read is of an order placed for this run: an item of its
// own (made through inventory-service with the operator token, plenty in stock, so
// the catalog does not matter) and a customer of its own, paid and then delivered
// by the stack as any order is.
//
// Documented but not requested here, as no real request produces them for sure:
// the WAITING shape (every driver full), the CANCELLED shapes (a cancel that must
// win a race with the assignment or the simulated clock), 401 (only with
// HTTP_READS_NEED_AUTH=on; the reads send the reader token, which is ignored while
// reads are open), 500 and 503 (a database failure). The delivery case accepts
// whichever shape the order is in when read.
import { check, operator, placeOrder, reader } from './helpers.mjs';

export const service = 'delivery-service';


export default [
  {
    name: 'an item in stock and an order for it',
    before: async (ctx) => {
      ctx.itemId = `oa-delivery-${ctx.uuid()}`;
      const put = await ctx.api(ctx.url.inventory, `/api/inventory/${ctx.itemId}`, {
        method: 'PUT',
        body: { available: 1000, name: 'OpenAPI conformance delivery item' },
        headers: operator(ctx),
      });
      check(put.status === 201, `PUT /api/inventory/${ctx.itemId}: ${put.status} ${put.text}`);
      ctx.orderId = await placeOrder(ctx, {
        customerId: `oa-delivery-${ctx.uuid()}`,
        items: [{ itemId: ctx.itemId, quantity: 1, unitPrice: '1.00' }],
      });
    },
  },
  {
    name: 'the order reaches delivery-service',
    before: async (ctx) => {
      await ctx.waitFor(`a delivery for order ${ctx.orderId}`, async () => {
        const res = await ctx.api(ctx.url.delivery, `/api/deliveries/${ctx.orderId}`, {
          headers: reader(ctx),
        });
        return res.status === 200;
      }, 120000);
    },
  },

  // ---- GET /api/deliveries/{orderId} ----
  {
    name: 'reads the order\'s delivery',
    method: 'GET',
    path: (ctx) => `/api/deliveries/${ctx.orderId}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => check(res.json.orderId.toLowerCase() === ctx.orderId.toLowerCase(),
                              `another order: ${res.text}`),
  },
  {
    name: 'an order without a delivery is 404',
    method: 'GET',
    path: (ctx) => `/api/deliveries/${ctx.uuid()}`,
    headers: reader,
    expect: 404,
    then: (ctx, res) => check(res.json.field === 'orderId', `field: ${res.text}`),
  },
  {
    name: 'an orderId that is not a UUID is 400',
    method: 'GET',
    path: '/api/deliveries/not-a-uuid',
    headers: reader,
    expect: 400,
    then: (ctx, res) => check(res.json.field === 'orderId', `field: ${res.text}`),
  },

  // ---- GET /api/drivers ----
  {
    name: 'lists the drivers',
    method: 'GET',
    path: '/api/drivers',
    headers: reader,
    expect: 200,
    then: (ctx, res) => check(Array.isArray(res.json.drivers) && res.json.drivers.length > 0,
                              `no drivers: ${res.text}`),
  },
];
