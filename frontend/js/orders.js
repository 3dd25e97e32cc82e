// The list (#/orders?status=&customerId=): query-api's GET /api/orders with its
// filters; the cursors of the pages seen are kept, so "Previous" goes back to
// exactly the page shown before (cursors are opaque and only go forward).

import { request } from './api.js';
import { fill, h, instant, money, uid } from './dom.js';
import { STATES } from './states.js';

export async function mount(main, ctx) {
  const { signal, params } = ctx;
  const status = params.get('status') || '';
  const customerId = params.get('customerId') || '';
  const limit = /^[0-9]{1,3}$/.test(params.get('limit') || '') ? params.get('limit') : '20';

  const statusId = uid('f-status');
  const customerFieldId = uid('f-customer');
  const statusSel = h('select', { id: statusId, name: 'status' },
    h('option', { value: '' }, 'any'),
    STATES.map((s) => h('option', { value: s }, s)));
  statusSel.value = STATES.includes(status) ? status : '';
  const customer = h('input', { id: customerFieldId, name: 'customerId', type: 'text', maxlength: 64, autocomplete: 'off' });
  customer.value = customerId;
  const form = h('form', { class: 'filters', role: 'search', 'aria-label': 'Filter the orders' },
    h('div', { class: 'row' },
      h('label', { for: statusId }, 'Status', statusSel),
      h('label', { for: customerFieldId }, 'Customer id', customer),
      h('button', { type: 'submit' }, 'Filter')));
  form.addEventListener('submit', (e) => {
    e.preventDefault();
    const q = new URLSearchParams();
    if (statusSel.value) q.set('status', statusSel.value);
    if (customer.value) q.set('customerId', customer.value);
    if (params.get('limit')) q.set('limit', limit);
    const s = q.toString();
    ctx.navigate(s ? `#/orders?${s}` : '#/orders');
  });

  const problem = h('p', { class: 'notice error', role: 'alert', hidden: true });
  const rows = h('tbody');
  const prev = h('button', { type: 'button', disabled: true }, 'Previous');
  const next = h('button', { type: 'button', disabled: true }, 'Next');
  const where = h('span', { 'aria-live': 'polite' });
  fill(main,
    h('h1', null, 'Orders'),
    form,
    problem,
    h('table', { class: 'orders' },
      h('thead', null, h('tr', null,
        ['order', 'customer', 'status', 'amount', 'created', 'updated'].map((c) => h('th', { scope: 'col' }, c)))),
      rows),
    h('div', { class: 'pager' }, prev, next, where));

  // cursors[i] is the cursor that fetched page i (null for the first).
  const cursors = [null];
  let page = 0;
  let nextCursor = null;

  async function load() {
    const q = new URLSearchParams({ limit });
    if (statusSel.value) q.set('status', statusSel.value);
    if (customerId) q.set('customerId', customerId);
    if (cursors[page]) q.set('cursor', cursors[page]);
    const r = await request(`/api/orders?${q}`, { signal });
    if (signal.aborted) return;
    problem.hidden = r.ok;
    problem.textContent = r.ok ? '' : `Could not load the orders: ${r.message}`;
    const items = r.ok && r.body && Array.isArray(r.body.items) ? r.body.items : [];
    nextCursor = r.ok && r.body && typeof r.body.nextCursor === 'string' ? r.body.nextCursor : null;
    fill(rows, items.length ? items.map((o) => h('tr', { 'data-order-id': o.orderId },
      h('td', { class: 'mono' }, h('a', { href: `#/orders/${encodeURIComponent(o.orderId)}` }, o.orderId)),
      h('td', null, o.customerId ?? '—'),
      h('td', { class: 'status' }, o.status ?? '—'),
      h('td', { class: 'num' }, money(o.totalAmount, o.currency)),
      h('td', null, instant(o.createdAt)),
      h('td', null, instant(o.updatedAt))))
      : h('tr', null, h('td', { colspan: 6 }, r.ok ? 'No orders.' : '—')));
    prev.disabled = page === 0;
    next.disabled = !nextCursor;
    where.textContent = `page ${page + 1}`;
  }

  next.addEventListener('click', () => {
    if (!nextCursor) return;
    cursors.length = page + 1;
    cursors.push(nextCursor);
    page += 1;
    load();
  });
  prev.addEventListener('click', () => {
    if (page === 0) return;
    page -= 1;
    load();
  });
  await load();
}
