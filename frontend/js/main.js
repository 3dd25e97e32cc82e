// The console's entry point: routes by the URL's hash (docs/console.md), mounts
// one page at a time in <main> and ends everything the previous page had open
// (fetches, streams, timers) through its AbortSignal.

import { consoleConfig } from './api.js';
import { fill, h } from './dom.js';
import * as board from './board.js';
import * as orders from './orders.js';
import * as order from './order.js';
import * as newOrder from './new-order.js';
import * as deadLetters from './dead-letters.js';
import * as stock from './stock.js';

const ROUTES = [
  { re: /^\/$/, page: board, nav: 'board' },
  { re: /^\/orders$/, page: orders, nav: 'orders' },
  { re: /^\/orders\/([^/]+)$/, page: order, nav: 'orders' },
  { re: /^\/new$/, page: newOrder, nav: 'new' },
  { re: /^\/dead-letters$/, page: deadLetters, nav: 'dead-letters' },
  { re: /^\/stock$/, page: stock, nav: 'stock' },
];

const main = document.getElementById('main');
const live = document.getElementById('live');
let current = null;

// '#/orders?status=X' -> {path: '/orders', params: URLSearchParams}
export function parseHash(hash) {
  const raw = hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  const path = q < 0 ? raw : raw.slice(0, q);
  return { path: path || '/', params: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

function setLive(text) {
  live.textContent = text || '';
}

async function route() {
  if (current) current.abort();
  const controller = new AbortController();
  current = controller;
  setLive('');
  const { path, params } = parseHash(location.hash);
  const found = ROUTES.map((r) => ({ r, m: path.match(r.re) })).find((x) => x.m);
  for (const a of document.querySelectorAll('nav a[data-route]')) {
    if (found && a.dataset.route === found.r.nav) a.setAttribute('aria-current', 'page');
    else a.removeAttribute('aria-current');
  }
  if (!found) {
    fill(main, h('h1', null, 'Not found'), h('p', null, 'No such page. ', h('a', { href: '#/' }, 'Back to the board')));
    return;
  }
  const config = await consoleConfig();
  if (controller.signal.aborted) return;
  fill(main);
  const ctx = {
    signal: controller.signal,
    params,
    match: found.m,
    config,
    setLive,
    navigate: (hash) => { location.hash = hash; },
  };
  try {
    await found.r.page.mount(main, ctx);
  } catch (e) {
    if (controller.signal.aborted) return;
    fill(main, h('h1', null, 'Something went wrong'), h('p', { class: 'notice error' }, String(e && e.message)));
  }
}

document.getElementById('skip-link').addEventListener('click', (e) => {
  e.preventDefault();
  main.focus();
});
window.addEventListener('hashchange', () => {
  route().then(() => main.focus({ preventScroll: true }));
});
route();
