// saga.mjs - what more than one service's cases need from the saga itself.
import { placeOrder } from './helpers.mjs';
//
// An order whose cancel won. The test stack runs the delivery clock 600x, so a
// pick-up comes about a second after the assignment, and a cancel asked right
// after the create, which travels behind the order's own events, can lose that
// race (the order is then PICKED_UP and the cancel REFUSED). So: an order for
// body, cancelled at once with reason, and its verdict awaited in order-service;
// refused, a new order, up to `attempts` times. Resolves to the id of the order
// whose cancel was granted (order-service shows it CANCELLED).
export async function cancelledOrder(ctx, body, reason, { attempts = 5, timeoutMs = 120000 } = {}) {
  const refused = [];
  for (let i = 0; i < attempts; i++) {
    const id = await placeOrder(ctx, body);
    if (await cancelWon(ctx, id, reason, timeoutMs)) return id;
    refused.push(id);
  }
  throw new Error(`no cancel of ${attempts} orders won its race with the pick-up: ${refused.join(', ')}`);
}

// Asks the cancel of order id (unless asked already: asked), and waits for the
// verdict: true when the cancel was granted.
export async function cancelWon(ctx, id, reason, timeoutMs = 120000, asked = false) {
  if (!asked) {
    const res = await ctx.api(ctx.url.order, `/api/orders/${id}/cancel`, { method: 'POST', body: { reason } });
    if (res.status !== 202 && res.status !== 200) throw new Error(`the cancel of ${id}: ${res.status} ${res.text}`);
  }
  const verdict = await ctx.waitFor(`the verdict on the cancel of ${id}`, async () => {
    const got = await ctx.api(ctx.url.order, `/api/orders/${id}`);
    const v = got.status === 200 ? got.json.cancellation?.status : null;
    return v === 'CANCELLED' || v === 'REFUSED' ? v : null;
  }, timeoutMs);
  return verdict === 'CANCELLED';
}
