// The dead-letter page: a wrong token is refused; with the right one a poison
// message is listed, shown with its headers and body, and replayed.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { setup, watchedPage, waitFor, api, QUERY, env, screenshot, textOf } from './lib.mjs';

let t;
before(async () => { t = await setup(); });
after(async () => { await t.close(); });

const TOPIC = 'dlq.delivery-events';

// A poison message (not JSON) on raw.delivery-events, with a header of its own,
// as tests/integration/test_dlq_admin.c makes one: every group reading the topic
// dead-letters it.
function producePoison(key) {
  const r = spawnSync('kcat', ['-P', '-b', env('KAFKA_BOOTSTRAP_SERVERS'), '-t', 'raw.delivery-events',
    '-k', key, '-H', 'traceparent=00-browser-dlq-01'], { input: `{"eventType": not json, key ${key}`, encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`kcat: ${r.status} ${r.stderr}`);
}

const auth = () => ({ Authorization: `Bearer ${env('OPERATOR_TOKEN')}` });

async function useToken(page, value) {
  await page.$eval('input[type="password"]', (el) => { el.value = ''; });
  await page.type('input[type="password"]', value);
  await page.click('form.token button[type="submit"]');
}

test('the dead-letter page refuses a wrong token, lists a poison message with its headers, and replays it', async () => {
  const key = randomUUID();
  producePoison(key);
  const record = await waitFor('query-api to keep the poison message', async () => {
    const r = await api(QUERY(), `/api/admin/dead-letters/${TOPIC}?key=${key}`, { headers: auth() });
    return r.status === 200 && r.json.items.length > 0 ? r.json.items[0] : null;
  }, 90000);

  const { page } = await watchedPage(t.browser);
  await page.goto(t.url(`#/dead-letters?topic=${TOPIC}`), { waitUntil: 'domcontentloaded' });
  await page.waitForSelector('input[type="password"]');
  await useToken(page, 'not-the-token-0123456789');
  await waitFor('the refusal', async () => /refused \(401\)/.test((await textOf(page, '#dl-problem')) || ''));
  assert.equal(await page.$$eval('table.topics', (x) => x.length), 0, 'topics shown without the token');
  // The token is in sessionStorage, never in the URL.
  assert.ok(!page.url().includes('not-the-token'));

  await useToken(page, env('OPERATOR_TOKEN'));
  await waitFor('the poison message in the list', () => page.$(`table.dead-letters tr[data-id="${record.id}"]`));
  assert.equal(await page.$eval('#dl-problem', (el) => el.hidden), true);
  assert.ok(!page.url().includes(env('OPERATOR_TOKEN')), 'the token is in the URL');
  const row = await page.$eval(`table.dead-letters tr[data-id="${record.id}"]`, (tr) => tr.textContent);
  assert.ok(row.includes(key));
  await page.click(`table.dead-letters tr[data-id="${record.id}"] a`);
  await waitFor('the message', () => page.$('#dl-body'));
  assert.equal(await textOf(page, '#dl-body'), `{"eventType": not json, key ${key}`);
  const headers = Object.fromEntries(await page.$$eval('table.headers tbody tr', (tr) => tr.map((x) => [x.cells[0].textContent, x.cells[1].textContent])));
  assert.equal(headers.traceparent, '00-browser-dlq-01');
  assert.equal(headers['x-original-topic'], 'raw.delivery-events');
  assert.ok(headers['x-error'], 'no x-error header shown');
  await screenshot(page, 'dead-letters');

  await page.click('#replay-one');
  await waitFor('the replay to be said', async () => /replayed to/.test((await textOf(page, '#dl-done')) || ''));
  const after = await api(QUERY(), `/api/admin/dead-letters/${TOPIC}/${record.id}`, { headers: auth() });
  assert.equal(after.json.replayCount, 1);
  await waitFor('the page to show the replay', async () => {
    const row2 = await page.$eval(`table.dead-letters tr[data-id="${record.id}"]`, (tr) => tr.lastChild.textContent).catch(() => null);
    return row2 === '1';
  });
  await page.close();
});
