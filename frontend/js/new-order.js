// Place an order (#/new): a form posted to order-service's POST /api/orders under
// an Idempotency-Key. The key belongs to the request: sending the same form again
// (a double click, a retry after a lost answer) sends the same key, so it makes
// one order; changing the form makes a new key. A 400 names the field at fault,
// whose message is shown next to that field (aria-describedby).

import { at, request } from './api.js';
import { fill, h, uid } from './dom.js';

const QUANTITY = /^-?[0-9]+$/;

// The request body from the form's values, as order-service takes it.
export function orderBody(customerId, currency, lines) {
  return {
    customerId,
    currency,
    items: lines.map((l) => ({
      itemId: l.itemId,
      // A whole number goes as a number; anything else as typed, for order-service to name.
      quantity: QUANTITY.test(l.quantity.trim()) ? Number(l.quantity.trim()) : l.quantity,
      unitPrice: l.unitPrice.trim(),
    })),
  };
}

function newKey() {
  return crypto.randomUUID();
}

export async function mount(main, ctx) {
  const { signal, config } = ctx;
  fill(main, h('h1', null, 'Place an order'));
  if (!config.orderServiceUrl) {
    main.append(h('p', { class: 'notice' }, 'Placing orders is not configured: query-api has no QUERY_CONSOLE_ORDER_URL.'));
    return;
  }

  const formError = h('p', { class: 'notice error', role: 'alert', hidden: true, id: uid('form-error') });
  const rowsBox = h('div', { class: 'lines' });
  const rows = [];

  // An input with its label and its own error slot.
  function input(text, name, attrs = {}) {
    const id = uid(`f-${name}`);
    const errId = `${id}-error`;
    const control = h('input', { id, name, type: 'text', autocomplete: 'off', ...attrs });
    const err = h('span', { class: 'field-error', id: errId, hidden: true });
    const label = h('label', { for: id }, h('span', null, text), control, err);
    return { control, err, label, errId };
  }

  const customer = input('Customer id', 'customerId', { required: true, maxlength: 64 });
  const currency = input('Currency', 'currency', { maxlength: 3, size: 4 });
  currency.control.value = 'USD';
  const itemsErr = h('p', { class: 'field-error', id: uid('items-error'), hidden: true });

  function addRow(itemId = '', quantity = '1', unitPrice = '') {
    const n = rows.length + 1;
    const row = {
      itemId: input(`Item id (line ${n})`, 'itemId', { maxlength: 64 }),
      quantity: input(`Quantity (line ${n})`, 'quantity', { inputmode: 'numeric', size: 6 }),
      unitPrice: input(`Unit price (line ${n})`, 'unitPrice', { inputmode: 'decimal', size: 10 }),
    };
    row.itemId.control.value = itemId;
    row.quantity.control.value = quantity;
    row.unitPrice.control.value = unitPrice;
    row.remove = h('button', { type: 'button', 'aria-label': `Remove line ${n}` }, 'Remove');
    row.el = h('div', { class: 'row line' }, row.itemId.label, row.quantity.label, row.unitPrice.label, row.remove);
    row.remove.addEventListener('click', () => {
      if (rows.length === 1) return;
      rows.splice(rows.indexOf(row), 1);
      row.el.remove();
      rows[0].itemId.control.focus();
    });
    rows.push(row);
    rowsBox.append(row.el);
    return row;
  }
  addRow('sku-1', '1', '9.99');

  const add = h('button', { type: 'button' }, 'Add a line');
  add.addEventListener('click', () => addRow().itemId.control.focus());
  const submit = h('button', { type: 'submit', class: 'primary' }, 'Place the order');
  const form = h('form', { novalidate: true, 'aria-describedby': formError.id },
    h('div', { class: 'row' }, customer.label, currency.label),
    h('fieldset', { 'aria-describedby': itemsErr.id }, h('legend', null, 'Items'), itemsErr, rowsBox, add),
    h('div', { class: 'row' }, submit));
  fill(main, h('h1', null, 'Place an order'), formError, form);

  function clearErrors() {
    formError.hidden = true;
    itemsErr.hidden = true;
    const all = [customer, currency, ...rows.flatMap((r) => [r.itemId, r.quantity, r.unitPrice])];
    for (const f of all) {
      f.err.hidden = true;
      f.err.textContent = '';
      f.control.removeAttribute('aria-invalid');
      f.control.removeAttribute('aria-describedby');
    }
  }

  // The input a field name of the API (customerId, items[0].quantity) points at.
  function fieldFor(name) {
    if (name === 'customerId') return customer;
    if (name === 'currency') return currency;
    const m = /^items\[([0-9]+)\]\.(itemId|quantity|unitPrice)$/.exec(name || '');
    if (m && rows[Number(m[1])]) return rows[Number(m[1])][m[2]];
    return null;
  }

  function showError(r) {
    const f = fieldFor(r.field);
    const text = r.body && typeof r.body.message === 'string' ? r.body.message : r.message;
    if (f) {
      f.err.textContent = text;
      f.err.hidden = false;
      f.control.setAttribute('aria-invalid', 'true');
      f.control.setAttribute('aria-describedby', f.errId);
      f.control.focus();
    } else if (r.field === 'items' || /^items\[/.test(r.field || '')) {
      itemsErr.textContent = text;
      itemsErr.hidden = false;
    } else {
      formError.textContent = `The order was not placed: ${r.message}`;
      formError.hidden = false;
    }
  }

  let pending = null; // {body: string, key}: the last request sent, kept until it made an order
  let sending = false;
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    if (sending) return;
    clearErrors();
    const body = orderBody(customer.control.value, currency.control.value,
      rows.map((r) => ({ itemId: r.itemId.control.value, quantity: r.quantity.control.value, unitPrice: r.unitPrice.control.value })));
    const text = JSON.stringify(body);
    if (!pending || pending.body !== text) pending = { body: text, key: newKey() };
    sending = true;
    submit.setAttribute('aria-disabled', 'true');
    const r = await request(at(config.orderServiceUrl, '/api/orders'), {
      method: 'POST', body, headers: { 'Idempotency-Key': pending.key }, signal,
    });
    sending = false;
    submit.removeAttribute('aria-disabled');
    if (signal.aborted) return;
    if ((r.status === 201 || r.status === 200) && r.body && typeof r.body.orderId === 'string') {
      pending = null;
      ctx.navigate(`#/orders/${encodeURIComponent(r.body.orderId)}`);
      return;
    }
    showError(r);
  });
}
