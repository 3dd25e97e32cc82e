// The stock page sets an item's stock as the operator: without the operator token
// the PUT is refused (401, said on the page) and nothing is created; the reader token
// is forbidden (403); with the operator token the item is created, then updated
// (the version read is sent), and the table shows it.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { setup, watchedPage, waitFor, api, INVENTORY, env, screenshot, textOf, unique } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
after(async () => { await t.close(); });

async function useToken(page, value) {
  await page.$eval('input[type="password"]', (el) => { el.value = ''; });
  await page.type('input[type="password"]', value);
  await page.click('form.token button[type="submit"]');
}

async function setStock(page, itemId, available) {
  await page.$eval('form.set-stock input[name="itemId"]', (el) => { el.value = ''; });
  await page.type('form.set-stock input[name="itemId"]', itemId);
  await page.$eval('form.set-stock input[name="available"]', (el) => { el.value = ''; });
  await page.type('form.set-stock input[name="available"]', String(available));
  await page.click('form.set-stock button[type="submit"]');
}

test('the stock page sets stock with the operator token only', async () => {
  const item = unique('stock-ui').slice(0, 60);
  const { page, seen } = await watchedPage(t.browser);
  await page.goto(t.url('#/stock'), { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('form.set-stock');

  await setStock(page, item, 5);
  await waitFor('the refusal', async () => /refused \(401\)/.test((await textOf(page, '[role="alert"]')) || ''));
  assert.equal((await api(INVENTORY(), `/api/inventory/${item}`)).status, 404, 'created without the token');

  await useToken(page, env('READER_TOKEN'));
  await setStock(page, item, 5);
  await waitFor('the 403', async () => /Forbidden \(403\)/.test((await textOf(page, '[role="alert"]')) || ''));
  assert.equal((await api(INVENTORY(), `/api/inventory/${item}`)).status, 404, 'created with the reader token');

  await useToken(page, env('OPERATOR_TOKEN'));
  await setStock(page, item, 5);
  await waitFor('the item in the table', () => page.$(`table.stock tr[data-item-id="${item}"]`));
  assert.equal((await api(INVENTORY(), `/api/inventory/${item}`)).json.available, 5);
  await setStock(page, item, 9); // an update: the page sends the version it read
  await waitFor('the new count', async () => (await api(INVENTORY(), `/api/inventory/${item}`)).json.available === 9);
  assert.ok(!page.url().includes(env('OPERATOR_TOKEN')), 'the token is in the URL');
  await screenshot(page, 'stock-set');
  assert.deepEqual(seen.errors.filter((e) => !/401|403/.test(e)), [], 'console errors');
  await page.close();
});
