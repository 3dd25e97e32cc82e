// The stock (#/stock): inventory-service's GET /api/inventory, and setting an item's
// available units (PUT /api/inventory/{itemId}, an operator route: the operator token
// of operator-token.js is sent, and 401/403/503 are said plainly).

import { at, request } from './api.js';
import { field, fill, h } from './dom.js';
import { explainRefusal, operatorHeaders, operatorTokenForm } from './operator-token.js';

export async function mount(main, ctx) {
  const { signal, config } = ctx;
  fill(main, h('h1', null, 'Stock'));
  if (!config.inventoryServiceUrl) {
    main.append(h('p', { class: 'notice' }, 'The stock page is not configured: query-api has no QUERY_CONSOLE_INVENTORY_URL.'));
    return;
  }
  const problem = h('p', { class: 'notice error', role: 'alert', hidden: true });
  const rows = h('tbody');
  const again = h('button', { type: 'button' }, 'Refresh');
  const said = h('p', { role: 'status', 'aria-live': 'polite', id: 'stock-done' });
  const itemInput = h('input', { name: 'itemId', required: true, maxlength: '64', spellcheck: 'false' });
  const availableInput = h('input', { name: 'available', type: 'number', min: '0', max: '1000000000', required: true });
  const setForm = h('form', { class: 'set-stock', 'aria-label': 'Set stock' },
    h('h2', null, 'Set an item\'s available units'),
    h('div', { class: 'row' },
      field('item', itemInput).label, field('available', availableInput).label,
      h('button', { type: 'submit', class: 'primary' }, 'Set')));
  let versions = new Map(); // itemId -> version, from the last list
  main.append(operatorTokenForm({ onSaved: () => { said.textContent = 'The operator token is kept for this tab.'; },
    onForgotten: () => { said.textContent = 'The token is forgotten.'; } }), said, problem,
    h('table', { class: 'stock' },
      h('thead', null, h('tr', null, ['item', 'name', 'available', 'held', 'sold', 'sellable']
        .map((c) => h('th', { scope: 'col' }, c)))),
      rows),
    again, setForm);

  setForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const itemId = itemInput.value.trim();
    const body = { available: Number(availableInput.value), expectedVersion: versions.get(itemId) ?? 0 };
    const r = await request(at(config.inventoryServiceUrl, `/api/inventory/${encodeURIComponent(itemId)}`),
      { method: 'PUT', body, signal, headers: operatorHeaders() });
    if (signal.aborted) return;
    said.textContent = r.ok ? `${itemId}: ${body.available} available.` : '';
    problem.hidden = r.ok;
    problem.textContent = r.ok ? '' : (explainRefusal(r) || `Could not set the stock: ${r.message}`);
    if (r.ok) await load();
  });

  async function load() {
    const r = await request(at(config.inventoryServiceUrl, '/api/inventory'), { signal });
    if (signal.aborted) return;
    problem.hidden = r.ok;
    problem.textContent = r.ok ? '' : `Could not load the stock: ${r.message}`;
    const items = r.ok && Array.isArray(r.body) ? r.body : [];
    versions = new Map(items.map((i) => [i.itemId, i.version]));
    fill(rows, items.map((i) => h('tr', { 'data-item-id': i.itemId },
      h('td', { class: 'mono' }, i.itemId ?? '—'),
      h('td', null, i.name ?? '—'),
      h('td', { class: 'num', 'data-count': 'available' }, i.available ?? '—'),
      h('td', { class: 'num', 'data-count': 'held' }, i.held ?? '—'),
      h('td', { class: 'num', 'data-count': 'sold' }, i.sold ?? '—'),
      h('td', null, i.sellable === false ? 'no' : 'yes'))));
  }
  again.addEventListener('click', load);
  await load();
}
