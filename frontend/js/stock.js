// The stock (#/stock): inventory-service's GET /api/inventory.

import { at, request } from './api.js';
import { fill, h } from './dom.js';

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
  main.append(problem,
    h('table', { class: 'stock' },
      h('thead', null, h('tr', null, ['item', 'name', 'available', 'held', 'sold', 'sellable']
        .map((c) => h('th', { scope: 'col' }, c)))),
      rows),
    again);

  async function load() {
    const r = await request(at(config.inventoryServiceUrl, '/api/inventory'), { signal });
    if (signal.aborted) return;
    problem.hidden = r.ok;
    problem.textContent = r.ok ? '' : `Could not load the stock: ${r.message}`;
    const items = r.ok && Array.isArray(r.body) ? r.body : [];
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
