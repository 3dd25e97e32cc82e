// The dead letters (#/dead-letters?topic=&id=): query-api's administration, behind
// the operator token (operator-token.js: a password field, sessionStorage only, sent
// as Authorization: Bearer, never in a URL or a log). 401 (refused), 403 (the reader
// token) and 503 (OPERATOR_TOKEN not set, or the broker away) are said as such.

import { request } from './api.js';
import { fill, h, instant } from './dom.js';
import { explainRefusal, operatorHeaders, operatorToken, operatorTokenForm } from './operator-token.js';

const LIST_MAX = 200; // the API's largest page

function explain(r) {
  const refusal = explainRefusal(r);
  if (refusal) return refusal;
  if (r.status === 503) return `Not available (503): ${r.message}. A replay is 503 while the broker is away.`;
  return r.message;
}

export async function mount(main, ctx) {
  const { signal, params } = ctx;
  const topic = params.get('topic') || '';
  const id = params.get('id') || '';

  const admin = (method, path) => request(path, { method, signal, headers: operatorHeaders() });

  const tokenForm = operatorTokenForm({
    onSaved: () => load(),
    onForgotten: () => {
      overview.replaceChildren();
      listBox.replaceChildren();
      recordBox.replaceChildren();
      done.textContent = 'The token is forgotten.';
    },
  });
  const problem = h('p', { class: 'notice error', role: 'alert', hidden: true, id: 'dl-problem' });
  const done = h('p', { role: 'status', 'aria-live': 'polite', id: 'dl-done' });
  const overview = h('section', { 'aria-labelledby': 'dl-topics' });
  const listBox = h('section', { 'aria-labelledby': 'dl-list' });
  const recordBox = h('section', { 'aria-labelledby': 'dl-record' });
  fill(main, h('h1', null, 'Dead letters'), tokenForm, problem, done, overview, listBox, recordBox);

  function fail(r) {
    problem.textContent = explain(r);
    problem.hidden = false;
  }

  const link = (q) => `#/dead-letters?${new URLSearchParams(q)}`;

  async function replay(path, what) {
    const r = await admin('POST', path);
    if (signal.aborted) return;
    if (!r.ok) {
      fail(r);
      return;
    }
    if (r.body && typeof r.body.replayed === 'number') {
      const skipped = Array.isArray(r.body.skipped) ? r.body.skipped.length : 0;
      done.textContent = `${what}: ${r.body.replayed} replayed, ${skipped} skipped.`;
    } else {
      done.textContent = `${what}: replayed to ${r.body && r.body.replayedTo ? r.body.replayedTo : 'its topic'}.`;
    }
    load();
  }

  async function loadOverview() {
    const r = await admin('GET', '/api/admin/dead-letters');
    if (signal.aborted) return false;
    if (!r.ok || !r.body || !Array.isArray(r.body.topics)) {
      fail(r);
      return false;
    }
    fill(overview, h('h2', { id: 'dl-topics' }, 'Topics'),
      h('table', { class: 'topics' },
        h('thead', null, h('tr', null, ['topic', 'from', 'total', 'pending', 'replayed', ''].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, r.body.topics.map((t) => {
          const all = h('button', { type: 'button', disabled: !t.pending }, `Replay all ${t.pending} pending`);
          all.addEventListener('click', () => replay(`/api/admin/dead-letters/${encodeURIComponent(t.topic)}/replay`, `Replay of ${t.topic}`));
          return h('tr', { 'data-topic': t.topic },
            h('td', null, h('a', { href: link({ topic: t.topic }) }, t.topic)),
            h('td', null, t.originalTopic ?? '—'),
            h('td', { class: 'num', 'data-count': 'total' }, t.total ?? 0),
            h('td', { class: 'num', 'data-count': 'pending' }, t.pending ?? 0),
            h('td', { class: 'num', 'data-count': 'replayed' }, t.replayed ?? 0),
            h('td', null, all));
        }))));
    return true;
  }

  async function loadList() {
    if (!topic) {
      listBox.replaceChildren();
      return;
    }
    // The API lists oldest first; the page shows the newest LIST_MAX, newest first,
    // so that a fresh dead letter is on it however many came before.
    const base = `/api/admin/dead-letters/${encodeURIComponent(topic)}?status=all&limit=${LIST_MAX}`;
    let r = await admin('GET', base);
    if (!signal.aborted && r.ok && r.body && r.body.total > LIST_MAX)
      r = await admin('GET', `${base}&offset=${r.body.total - LIST_MAX}`);
    if (signal.aborted) return;
    if (!r.ok || !r.body || !Array.isArray(r.body.items)) {
      fail(r);
      return;
    }
    const items = r.body.items.slice().reverse();
    const total = r.body.total ?? items.length;
    const title = total > items.length
      ? `${topic}: ${total} messages, the newest ${items.length} shown`
      : `${topic}: ${total} messages, newest first`;
    fill(listBox, h('h2', { id: 'dl-list' }, title),
      h('table', { class: 'dead-letters' },
        h('thead', null, h('tr', null, ['id', 'key', 'error', 'group', 'received', 'replays'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', null, items.map((d) => h('tr', { 'data-id': d.id },
          h('td', null, h('a', { href: link({ topic, id: d.id }) }, String(d.id))),
          h('td', { class: 'mono' }, d.key ?? '—'),
          h('td', null, d.error ?? '—'),
          h('td', null, d.consumerGroup ?? '—'),
          h('td', null, instant(d.receivedAt)),
          h('td', { class: 'num' }, d.replayCount ?? 0))))));
  }

  async function loadRecord() {
    if (!topic || !id) {
      recordBox.replaceChildren();
      return;
    }
    const path = `/api/admin/dead-letters/${encodeURIComponent(topic)}/${encodeURIComponent(id)}`;
    const r = await admin('GET', path);
    if (signal.aborted) return;
    if (!r.ok || !r.body) {
      fail(r);
      return;
    }
    const d = r.body;
    const headers = d.headers && typeof d.headers === 'object' ? d.headers : {};
    const headerRows = Array.isArray(headers)
      ? headers.map((x) => [x && (x.name ?? x.key), x && x.value])
      : Object.entries(headers);
    const one = h('button', { type: 'button', id: 'replay-one' }, 'Replay this message');
    one.addEventListener('click', () => replay(`${path}/replay`, `Message ${d.id}`));
    fill(recordBox, h('h2', { id: 'dl-record' }, `Message ${d.id}`),
      h('dl', { class: 'facts' },
        [['key', d.key], ['key encoding', d.keyEncoding], ['from', `${d.originalTopic}/${d.originalPartition}/${d.originalOffset}`],
          ['group', d.consumerGroup], ['error', d.error], ['retries', d.retryCount], ['replayed from', d.replayedFrom],
          ['received', instant(d.receivedAt)], ['replays', d.replayCount], ['last replayed', instant(d.lastReplayedAt)]]
          .map(([k, v]) => [h('dt', null, k), h('dd', null, v ?? '—')])),
      h('h3', null, 'Headers'),
      h('table', { class: 'headers' },
        h('thead', null, h('tr', null, h('th', { scope: 'col' }, 'header'), h('th', { scope: 'col' }, 'value'))),
        h('tbody', null, headerRows.map(([k, v]) => h('tr', null, h('td', { class: 'mono' }, k ?? ''),
          h('td', { class: 'mono' }, typeof v === 'string' ? v : JSON.stringify(v)))))),
      h('h3', null, `Body (${d.valueEncoding ?? 'utf-8'})`),
      h('pre', { id: 'dl-body' }, d.value ?? ''),
      one);
  }

  async function load() {
    problem.hidden = true;
    if (!operatorToken()) {
      problem.textContent = 'Type the operator token to see the dead letters.';
      problem.hidden = false;
      return;
    }
    if (await loadOverview()) {
      await loadList();
      await loadRecord();
    }
  }
  await load();
}
