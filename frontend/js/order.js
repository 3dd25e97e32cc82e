// One order (#/orders/{orderId}): query-api's view, its items (from the
// order.created event of its timeline), the ETA counting down, and the timeline
// live from GET /api/orders/{id}/stream, which first sends every retained event
// of the order; each event makes the page fetch the view again.

import { at, request } from './api.js';
import { fill, h, instant, money } from './dom.js';
import { cancellable, isEnd } from './states.js';
import { openStream } from './stream.js';

const UUID = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

// "in 3 min 05 s", "due 12 s ago": the time left until an instant.
export function countdown(targetIso, now = Date.now()) {
  const t = Date.parse(targetIso);
  if (Number.isNaN(t)) return '—';
  let s = Math.round((t - now) / 1000);
  const past = s < 0;
  s = Math.abs(s);
  const hours = Math.floor(s / 3600);
  const min = Math.floor((s % 3600) / 60);
  const sec = String(s % 60).padStart(2, '0');
  const text = hours ? `${hours} h ${min} min ${sec} s` : min ? `${min} min ${sec} s` : `${s % 60} s`;
  return past ? `due ${text} ago` : `in ${text}`;
}

export async function mount(main, ctx) {
  const { signal, config } = ctx;
  let orderId;
  try {
    orderId = decodeURIComponent(ctx.match[1]);
  } catch {
    orderId = '';
  }
  if (!UUID.test(orderId)) {
    fill(main, h('h1', null, 'Order'), h('p', { class: 'notice error', role: 'alert' }, 'That is not an order id.'));
    return;
  }
  const path = `/api/orders/${orderId}`;

  const problem = h('p', { class: 'notice error', role: 'alert', hidden: true });
  const status = h('dd', { class: 'status', id: 'order-status' }, '…');
  const customer = h('dd', { id: 'order-customer' }, '…');
  const amount = h('dd', { id: 'order-amount' }, '…');
  const driver = h('dd', { id: 'order-driver' }, '—');
  const eta = h('dd', { id: 'order-eta' }, '—');
  const updated = h('dd', null, '—');
  const extra = h('dd', { id: 'order-note' }, '—');
  const items = h('tbody');
  const timeline = h('ol', { class: 'timeline', id: 'timeline', 'aria-live': 'polite' });
  const cancelBox = h('div', { class: 'cancel' });
  const cancelMsg = h('p', { role: 'status', 'aria-live': 'polite', id: 'cancel-message' });
  fill(main,
    h('h1', null, 'Order ', h('span', { class: 'mono' }, orderId)),
    problem,
    h('dl', { class: 'facts' },
      h('dt', null, 'Status'), status,
      h('dt', null, 'Customer'), customer,
      h('dt', null, 'Amount'), amount,
      h('dt', null, 'Driver'), driver,
      h('dt', null, 'Delivery'), eta,
      h('dt', null, 'Updated'), updated,
      h('dt', null, 'Note'), extra),
    cancelBox, cancelMsg,
    h('h2', null, 'Items'),
    h('table', { class: 'items' },
      h('thead', null, h('tr', null, ['item', 'quantity', 'unit price'].map((c) => h('th', { scope: 'col' }, c)))),
      items),
    h('h2', { id: 'timeline-title' }, 'Timeline'),
    timeline);

  let view = null;
  let itemsShown = false;

  function renderEta() {
    if (!view) return;
    if (view.deliveredAt) eta.textContent = `delivered ${instant(view.deliveredAt)}`;
    else if (isEnd(view.status)) eta.textContent = '—';
    else if (view.estimatedDeliveryAt) {
      eta.textContent = `${countdown(view.estimatedDeliveryAt)} (${instant(view.estimatedDeliveryAt)})`;
    } else eta.textContent = 'no estimate yet';
  }

  function renderCancel() {
    const can = view && cancellable(view.status) && config.orderServiceUrl;
    if (!can) {
      cancelBox.replaceChildren();
      return;
    }
    if (cancelBox.firstChild) return;
    const button = h('button', { type: 'button', id: 'cancel-order' }, 'Cancel this order');
    button.addEventListener('click', async () => {
      button.disabled = true;
      const r = await request(at(config.orderServiceUrl, `${path}/cancel`), { method: 'POST', body: {}, signal });
      if (signal.aborted) return;
      if (r.status === 202) cancelMsg.textContent = 'Cancel requested; the order\'s stages decide it.';
      else if (r.status === 200) cancelMsg.textContent = 'The order is cancelled.';
      else {
        const now = r.body && typeof r.body.orderStatus === 'string' ? ` (the order is ${r.body.orderStatus})` : '';
        cancelMsg.textContent = `The cancel was refused: ${r.message}${now}`;
        button.disabled = false;
      }
    });
    cancelBox.append(button);
  }

  async function loadView() {
    const r = await request(path, { signal });
    if (signal.aborted) return;
    if (r.status === 404) {
      problem.hidden = false;
      problem.textContent = 'query-api does not know this order yet; it shows up here when its first event arrives.';
      return;
    }
    problem.hidden = r.ok;
    problem.textContent = r.ok ? '' : `Could not load the order: ${r.message}`;
    if (!r.ok || !r.body) return;
    view = r.body;
    status.textContent = view.status ?? '—';
    customer.textContent = view.customerId ?? '—';
    amount.textContent = money(view.totalAmount, view.currency);
    driver.textContent = view.driverName || view.driverId
      ? `${view.driverName ?? ''} ${view.driverId ? `(${view.driverId})` : ''}`.trim() : '—';
    updated.textContent = instant(view.updatedAt);
    const notes = [];
    if (view.failureReason) notes.push(`failure: ${view.failureReason}`);
    if (view.cancelledAt) notes.push(`cancelled ${instant(view.cancelledAt)}`);
    if (view.refundedAmount) notes.push(`refunded ${money(view.refundedAmount, view.currency)}`);
    extra.textContent = notes.length ? notes.join('; ') : '—';
    renderEta();
    renderCancel();
    if (!itemsShown) await loadItems();
  }

  // The lines as sent are in the order.created event's payload.
  async function loadItems() {
    const r = await request(`${path}/events`, { signal });
    if (signal.aborted || !r.ok || !r.body || !Array.isArray(r.body.events)) return;
    const created = r.body.events.find((e) => e.eventType === 'order.created');
    const lines = created && created.payload && Array.isArray(created.payload.items) ? created.payload.items : null;
    if (!lines) return;
    itemsShown = true;
    fill(items, lines.map((l) => h('tr', null,
      h('td', null, l.itemId ?? '—'),
      h('td', { class: 'num' }, l.quantity ?? '—'),
      h('td', { class: 'num' }, money(l.unitPrice, view && view.currency)))));
  }

  function addEvent(e) {
    timeline.append(h('li', { 'data-event-id': e.eventId, 'data-seq': e.seq },
      h('span', { class: 'mono' }, e.eventType ?? '?'),
      ' at ', instant(e.occurredAt),
      e.status ? [' → ', h('span', { class: 'status' }, e.status)] : null));
  }

  // After a reset the stream goes on from its newest row: the timeline is read
  // whole again so that it still shows everything.
  async function reloadTimeline() {
    const r = await request(`${path}/events`, { signal });
    if (signal.aborted || !r.ok || !r.body || !Array.isArray(r.body.events)) return;
    fill(timeline);
    for (const e of r.body.events) addEvent({ ...e, seq: '', status: null });
  }

  const tick = setInterval(renderEta, 1000);
  signal.addEventListener('abort', () => clearInterval(tick));

  // One fetch of the view at a time, and at most one more queued behind it: a
  // burst of events (the whole timeline at first) costs two requests, not one each.
  let loading = Promise.resolve();
  let queued = false;
  const reload = () => {
    if (queued) return;
    queued = true;
    loading = loading.then(() => { queued = false; return loadView(); });
  };
  openStream(`${path}/stream`, {
    signal,
    onEvent: (e) => { addEvent(e); reload(); },
    onReset: () => { reloadTimeline(); reload(); },
    onState: (s) => ctx.setLive(s === 'live' ? 'live' : `stream ${s}`),
  });
  reload();
  await loading;
}
