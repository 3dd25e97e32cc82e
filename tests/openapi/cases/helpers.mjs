// helpers.mjs - what the cases of several services share: the tokens' headers,
// a check that fails the case, the field an error answer names, and placing an
// order through order-service (a setup request, not a checked case).
export const reader = (ctx) => ({ Authorization: `Bearer ${ctx.reader}` });
export const operator = (ctx) => ({ Authorization: `Bearer ${ctx.operator}` });

export function check(cond, what) {
  if (!cond) throw new Error(what);
}

// A check of an error answer naming `field` (or naming none, field === null).
export const names = (field) => (ctx, res) => {
  check(res.json && typeof res.json === 'object', `expected a JSON error body, got ${res.text}`);
  if (field === null) check(!('field' in res.json), `expected no field, got ${res.json.field}`);
  else check(res.json.field === field, `expected field ${field}, got ${res.text}`);
};

// POST /api/orders with body; the new order's id (anything but 201 fails).
export async function placeOrder(ctx, body) {
  const res = await ctx.api(ctx.url.order, '/api/orders', { method: 'POST', body });
  check(res.status === 201, `POST /api/orders for ${body.customerId}: ${res.status} ${res.text}`);
  return res.json.orderId;
}
