// Every page: no console error and no uncaught error while it loads and works;
// every form field has a label; Tab reaches every field and button, each with a
// visible focus ring. A screenshot of each page is saved (lib.mjs shotsDir).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, placeOrder, waitEnd, env, screenshot, sleep } from './lib.mjs';

let t;
let orderId;
before(async () => {
  t = await setup();
  orderId = (await placeOrder('browser-pages')).orderId;
  await waitEnd(orderId);
});
after(async () => { await t.close(); });

// What each page must show once it has loaded (so that the test waits for it).
const PAGES = () => [
  { name: 'board', hash: '#/', ready: '.newest li' },
  { name: 'orders', hash: '#/orders', ready: 'table.orders tbody tr[data-order-id]' },
  { name: 'order', hash: `#/orders/${orderId}`, ready: 'table.items tbody tr' },
  { name: 'new', hash: '#/new', ready: 'input[name="quantity"]' },
  { name: 'dead-letters', hash: '#/dead-letters', ready: 'table.topics', token: true },
  { name: 'stock', hash: '#/stock', ready: 'table.stock tbody tr[data-item-id]' },
];

async function open(page, p) {
  await page.goto(t.url(p.hash), { waitUntil: 'domcontentloaded' });
  if (p.token) {
    await page.waitForSelector('input[type="password"]');
    await page.type('input[type="password"]', env('OPERATOR_TOKEN'));
    await page.click('form.token button[type="submit"]');
  }
  await page.waitForSelector(p.ready, { timeout: 30000 });
}

test('no console errors on any page', async () => {
  for (const p of PAGES()) {
    const { page, seen } = await watchedPage(t.browser);
    await open(page, p);
    await sleep(1500); // streams connect, the ETA ticks, the chart redraws
    await screenshot(page, `page-${p.name}`);
    assert.deepEqual(seen.errors, [], `errors on ${p.hash}`);
    assert.deepEqual(seen.dialogs, [], `dialogs on ${p.hash}`);
    await page.close();
  }
});

test('every form field has a label and is reachable by keyboard with a visible focus', async () => {
  for (const p of PAGES()) {
    const { page } = await watchedPage(t.browser);
    await open(page, p);
    const unlabelled = await page.$$eval('input, select, textarea', (els) => els
      .filter((el) => el.type !== 'hidden')
      .filter((el) => !(el.labels && el.labels.length && [...el.labels].some((l) => l.textContent.trim())) && !el.getAttribute('aria-label'))
      .map((el) => el.outerHTML));
    assert.deepEqual(unlabelled, [], `fields without a label on ${p.hash}`);

    // Tab from the top of the document through everything, twice around at most.
    const wanted = await page.$$eval('main input, main select, main textarea, main button:not([disabled]), main a[href], nav a[href]',
      (els) => els.map((el, i) => { el.dataset.kbd = String(i); return String(i); }));
    await page.evaluate(() => { document.activeElement && document.activeElement.blur(); window.scrollTo(0, 0); });
    await page.focus('body').catch(() => {});
    const reached = new Set();
    const noRing = [];
    for (let i = 0; i < wanted.length * 2 + 10 && reached.size < wanted.length; i += 1) {
      await page.keyboard.press('Tab');
      const f = await page.evaluate(() => {
        const el = document.activeElement;
        if (!el || el === document.body) return null;
        const s = getComputedStyle(el);
        return { kbd: el.dataset.kbd || null, ring: s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0, tag: el.outerHTML.slice(0, 80) };
      });
      if (f && f.kbd !== null) reached.add(f.kbd);
      if (f && !f.ring) noRing.push(f.tag);
    }
    const missed = wanted.filter((k) => !reached.has(k));
    const missedHtml = await page.$$eval('[data-kbd]', (els, m) => els.filter((el) => m.includes(el.dataset.kbd)).map((el) => el.outerHTML.slice(0, 80)), missed);
    assert.deepEqual(missedHtml, [], `not reached by Tab on ${p.hash}`);
    assert.deepEqual(noRing, [], `focus not visible on ${p.hash}`);
    await page.close();
  }
});
