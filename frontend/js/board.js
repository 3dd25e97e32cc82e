// The board (#/): orders per state, orders per second, the newest orders; live
// from GET /api/stream. Each event only marks the counts stale: they are fetched
// again at most once a second, so a burst of events costs one request.

import { request } from './api.js';
import { fill, h, instant } from './dom.js';
import { STATES } from './states.js';
import { openStream } from './stream.js';
import { RateWindow, drawRate, rateSvg } from './chart.js';

const NEWEST = 10;
const REFRESH_MS = 1000;

export async function mount(main, ctx) {
  const { signal } = ctx;
  const problem = h('p', { class: 'notice error', role: 'alert', hidden: true });
  const counts = h('tbody');
  const total = h('td', { class: 'num', 'data-count': 'total' }, '…');
  const without = h('td', { class: 'num', 'data-count': 'withoutStatus' }, '…');
  const cells = new Map();
  for (const s of STATES) {
    const td = h('td', { class: 'num', 'data-count': s }, '…');
    cells.set(s, td);
    counts.append(h('tr', null, h('th', { scope: 'row', class: 'status' }, s), td));
  }
  counts.append(h('tr', null, h('th', { scope: 'row' }, 'without a state yet'), without));
  counts.append(h('tr', null, h('th', { scope: 'row' }, 'total'), total));
  const chart = rateSvg('Orders placed per second over the last 5 minutes');
  const rate = new RateWindow(300);
  const newest = h('ol', { class: 'newest', 'aria-live': 'polite' });

  fill(main,
    h('h1', null, 'Board'),
    problem,
    h('div', { class: 'grid' },
      h('section', { 'aria-labelledby': 'board-counts' },
        h('h2', { id: 'board-counts' }, 'Orders per state'),
        h('table', { class: 'counts' },
          h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'state'), h('th', { scope: 'col', class: 'num' }, 'orders'))),
          counts)),
      h('section', { 'aria-labelledby': 'board-rate' },
        h('h2', { id: 'board-rate' }, 'Orders per second, last 5 minutes'),
        chart,
        h('h2', { id: 'board-newest' }, 'Newest orders'),
        newest)));
  drawRate(chart, rate);

  async function refresh() {
    const [stats, list] = await Promise.all([
      request('/api/stats', { signal }),
      request(`/api/orders?limit=${NEWEST}`, { signal }),
    ]);
    if (signal.aborted) return;
    const failed = [stats, list].find((r) => !r.ok);
    problem.hidden = !failed;
    problem.textContent = failed ? `Could not load the board: ${failed.message}` : '';
    if (stats.ok && stats.body) {
      const by = stats.body.byStatus || {};
      for (const [s, td] of cells) td.textContent = String(by[s] ?? 0);
      without.textContent = String(stats.body.withoutStatus ?? 0);
      total.textContent = String(stats.body.total ?? 0);
    }
    if (list.ok && list.body && Array.isArray(list.body.items)) {
      fill(newest, list.body.items.map((o) => h('li', { 'data-order-id': o.orderId },
        h('a', { href: `#/orders/${encodeURIComponent(o.orderId)}` }, o.orderId),
        ' ', h('span', { class: 'status' }, o.status ?? '—'),
        ' · ', o.customerId ?? '—', ' · ', instant(o.createdAt))));
    }
  }

  // At most one refresh in flight and one pending after it.
  let timer = null;
  let running = false;
  let again = false;
  function stale() {
    if (timer || signal.aborted) return;
    timer = setTimeout(async () => {
      timer = null;
      if (running) { again = true; return; }
      running = true;
      await refresh();
      running = false;
      if (again) { again = false; stale(); }
    }, REFRESH_MS);
  }

  const tick = setInterval(() => { rate.advance(); drawRate(chart, rate); }, 1000);
  signal.addEventListener('abort', () => { clearInterval(tick); clearTimeout(timer); });

  openStream('/api/stream', {
    signal,
    onEvent: (e) => {
      if (e.eventType === 'order.created') rate.add();
      stale();
    },
    onReset: () => stale(),
    onState: (s) => ctx.setLive(s === 'live' ? 'live' : `stream ${s}`),
  });
  await refresh();
}
