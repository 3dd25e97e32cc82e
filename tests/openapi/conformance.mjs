// conformance.mjs - each service's OpenAPI document held against its real answers.
//
// For every service of services/services.tsv, against the test stack (the
// <SERVICE>_URL variables scripts/test.sh exports from its stack.env):
//   1. GET /openapi.json, and the document validated as OpenAPI 3.1 with
//      @seriousme/openapi-schema-validator (the specification's own JSON Schemas);
//   2. the cases of cases/common.mjs (libdeta's routes, alike on every service),
//      then those of cases/<service>.mjs, in order, each a real request: its
//      answer must have the status the case expects, that status and the answer's
//      Content-Type must be documented for the operation the request matched (by
//      path template and method; never through a "default" response), its JSON
//      body must be valid against the documented schema (JSON Schema 2020-12, ajv
//      with ajv-formats), and the response headers the document describes must
//      be valid when present (and present when required);
//   3. every operation of the document must have been requested at least once.
// The services themselves refuse to start when their routes and their document
// differ (lib/src/openapi.c), so a route can be neither undocumented nor a
// documented path unserved. The figures (operations, documented statuses, those
// seen) are printed at the end. cases/README.md describes a case.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { randomUUID } from 'node:crypto';
import { Validator } from '@seriousme/openapi-schema-validator';
import Ajv2020 from 'ajv/dist/2020.js';
import addFormats from 'ajv-formats';
import { env, waitFor } from '../support/stack.mjs';
import { METHODS, esc, follow } from './document.mjs';

const HERE = dirname(fileURLToPath(import.meta.url));
const ROOT = resolve(HERE, '../..');
const STREAM_READ_MS = 1500;

// The services of services/services.tsv, in its order.
function services() {
  return readFileSync(join(ROOT, 'services/services.tsv'), 'utf8')
    .split('\n')
    .filter((l) => l && !l.startsWith('#'))
    .map((l) => l.split('\t')[0]);
}

const urlVar = (service) => `${service.toUpperCase().replace(/-/g, '_')}_URL`;

// ---- the document ----

// Every operation: {method, path, op, regex, params}.
function operations(doc) {
  const ops = [];
  for (const [path, item] of Object.entries(doc.paths)) {
    const names = [...path.matchAll(/\{([^}]+)\}/g)].map((m) => m[1]);
    const source = path
      .split(/\{[^}]+\}/)
      .map((part) => part.replace(/[.*+?^${}()|[\]\\]/g, '\\$&'))
      .join('([^/]+)');
    for (const method of METHODS) {
      if (item[method]) {
        ops.push({ method, path, op: item[method], regex: new RegExp(`^${source}/?$`), params: names.length });
      }
    }
  }
  return ops;
}

// The operation a request matched: among the templates that match the path and
// have the method, the one with the fewest parameters (literal segments first).
function matchOperation(ops, method, path) {
  const found = ops
    .filter((o) => o.method === method.toLowerCase() && o.regex.test(path))
    .sort((a, b) => a.params - b.params);
  return found[0];
}

// ---- requests ----

async function send(base, c, ctx) {
  const path = typeof c.path === 'function' ? c.path(ctx) : c.path;
  const headers = { ...(typeof c.headers === 'function' ? c.headers(ctx) : c.headers ?? {}) };
  const init = { method: c.method, headers, redirect: 'manual' };
  let body = typeof c.body === 'function' ? c.body(ctx) : c.body;
  const sent = body;
  if (body !== undefined) {
    if (typeof body !== 'string') {
      body = JSON.stringify(body);
      const named = Object.keys(headers).some((h) => h.toLowerCase() === 'content-type');
      if (!named) headers['Content-Type'] = 'application/json';
    }
    init.body = body;
  }
  const controller = new AbortController();
  init.signal = controller.signal;
  const timer = setTimeout(() => controller.abort(), c.stream ? 10000 : 30000);
  try {
    const res = await fetch(base + path, init);
    let text = '';
    if (c.stream) {
      // The head, and what the stream says in its first STREAM_READ_MS (enough
      // for the frames a resume point replays); then the stream is closed.
      const reader = res.body.getReader();
      const decoder = new TextDecoder();
      const end = Date.now() + STREAM_READ_MS;
      for (;;) {
        let timer;
        const wait = new Promise((r) => { timer = setTimeout(() => r({ done: true }), Math.max(0, end - Date.now())); });
        const chunk = await Promise.race([reader.read(), wait]);
        clearTimeout(timer);
        if (chunk.done || !chunk.value) break;
        text += decoder.decode(chunk.value, { stream: true });
      }
      controller.abort();
    } else {
      text = await res.text();
    }
    let json;
    try {
      json = text && !c.stream ? JSON.parse(text) : undefined;
    } catch {
      json = undefined;
    }
    return { path, status: res.status, headers: res.headers, text, json, sent };
  } finally {
    clearTimeout(timer);
  }
}

function makeCtx() {
  const ctx = {
    url: {
      order: env('ORDER_SERVICE_URL'),
      inventory: env('INVENTORY_SERVICE_URL'),
      payment: env('PAYMENT_SERVICE_URL'),
      delivery: env('DELIVERY_SERVICE_URL'),
      query: env('QUERY_API_URL'),
    },
    operator: env('OPERATOR_TOKEN'),
    reader: env('READER_TOKEN'),
    uuid: () => randomUUID(),
    async api(base, path, { method = 'GET', body, headers = {} } = {}) {
      return send(base, { method, path, body, headers }, ctx);
    },
    waitFor: (what, fn, timeoutMs = 60000) => waitFor(what, fn, timeoutMs),
  };
  return ctx;
}

// ---- checks ----

function checker(doc) {
  const ajv = new Ajv2020({ strict: false, allErrors: true, validateFormats: true });
  addFormats(ajv);
  ajv.addSchema(doc, 'openapi');
  const compiled = new Map();
  return (pointer, value) => {
    if (!compiled.has(pointer)) compiled.set(pointer, ajv.compile({ $ref: `openapi${pointer}` }));
    const validate = compiled.get(pointer);
    return validate(value) ? null : ajv.errorsText(validate.errors, { dataVar: 'body' });
  };
}

// What is wrong with res as an answer of operation o (null: nothing).
function conformance(doc, o, res, validate) {
  const base = `#/paths/${esc(o.path)}/${o.method}/responses`;
  const [resp, respPointer] = follow(doc, o.op.responses?.[String(res.status)], `${base}/${res.status}`);
  if (!resp) return `status ${res.status} is not documented for ${o.method.toUpperCase()} ${o.path}`;
  const type = (res.headers.get('content-type') ?? '').split(';')[0].trim();
  if (resp.content) {
    const media = resp.content[type];
    if (!media) return `Content-Type "${type}" is not documented for status ${res.status}`;
    if (type === 'application/json') {
      if (res.json === undefined) return `the body is not JSON: ${res.text.slice(0, 200)}`;
      const why = validate(`${respPointer}/content/${esc(type)}/schema`, res.json);
      if (why) return `the body does not match the document: ${why}; body: ${res.text.slice(0, 400)}`;
    }
    if (type === 'text/event-stream') {
      const why = frames(res, media, `${respPointer}/content/${esc(type)}`, validate);
      if (why) return why;
    }
  } else if (res.text.length) {
    return `status ${res.status} is documented without a body, and the answer has one`;
  }
  for (const [name, h] of Object.entries(resp.headers ?? {})) {
    const [header, hPointer] = follow(doc, h, `${respPointer}/headers/${esc(name)}`);
    const value = res.headers.get(name);
    if (value === null) {
      if (header.required) return `header ${name} is required and missing`;
      continue;
    }
    const why = header.schema ? validate(`${hPointer}/schema`, value) : null;
    if (why) return `header ${name}: ${why.replace(/^body/, name)}`;
  }
  return null;
}

// What is wrong with the frames of an event stream res read (null: nothing): the
// data of each complete frame must be JSON valid against the schema the media
// type names for its event ("x-deta-event-schemas": event name -> schema); an
// event without one is an error; res.frames counts the frames checked.
function frames(res, media, mediaPointer, validate) {
  const known = media['x-deta-event-schemas'] ?? {};
  res.frames = 0;
  const complete = res.text.slice(0, res.text.lastIndexOf('\n\n') + 2);
  for (const block of complete.split('\n\n')) {
    const lines = block.split('\n').filter((l) => l && !l.startsWith(':'));
    const data = lines.filter((l) => l.startsWith('data:')).map((l) => l.slice(5).replace(/^ /, ''));
    if (!data.length) continue;
    const event = lines.find((l) => l.startsWith('event:'))?.slice(6).trim() ?? 'message';
    if (!known[event]) return `an event "${event}" the document has no schema for: ${block}`;
    let value;
    try {
      value = JSON.parse(data.join('\n'));
    } catch {
      return `the data of an "${event}" event is not JSON: ${block}`;
    }
    const why = validate(`${mediaPointer}/x-deta-event-schemas/${esc(event)}`, value);
    if (why) return `an "${event}" event does not match the document: ${why}; ${block}`;
    res.frames++;
  }
  return null;
}

// What is wrong with the request c sent, by the document (null: nothing): each
// query argument must be a documented parameter of the operation; a JSON body
// of a request that succeeded must be valid against the documented request body.
function requestConformance(doc, o, res, validate) {
  const body = res.sent;
  const params = [...(doc.paths[o.path].parameters ?? []), ...(o.op.parameters ?? [])]
    .map((p) => follow(doc, p, '')[0]);
  const query = new URL(res.path, 'http://x').searchParams;
  for (const name of query.keys()) {
    if (!params.some((p) => p.in === 'query' && p.name === name)) return `query argument ${name} is not documented`;
  }
  if (res.status < 300 && body !== undefined && typeof body !== 'string') {
    const pointer = `#/paths/${esc(o.path)}/${o.method}/requestBody`;
    const [rb, rbPointer] = follow(doc, o.op.requestBody, pointer);
    if (!rb?.content?.['application/json']) return 'a JSON body was accepted, and the document has none';
    const why = validate(`${rbPointer}/content/application~1json/schema`, body);
    if (why) return `the accepted request body does not match the document: ${why.replace(/^body/, 'request')}`;
  }
  return null;
}

// Every example of the document against its schema: a media type's examples
// against the media type's schema, a schema's examples against that schema.
// Returns the first that does not match, or null.
function examples(doc, validate) {
  const walk = (node, pointer) => {
    if (!node || typeof node !== 'object') return null;
    if (node.schema && (node.examples || node.example !== undefined) && !Array.isArray(node.examples)) {
      // A media type, parameter or header: its examples against its schema.
      const values = node.example !== undefined ? [node.example]
        : Object.values(node.examples).map((e) => follow(doc, e, '')[0]?.value);
      for (const v of values) {
        const why = validate(`${pointer}/schema`, v);
        if (why) return `the example at ${pointer}: ${why}`;
      }
    }
    if (Array.isArray(node.examples)) {
      // A schema (the one place OpenAPI 3.1 has an array of examples).
      for (const v of node.examples) {
        const why = validate(pointer, v);
        if (why) return `the schema example at ${pointer}: ${why}`;
      }
    }
    for (const [k, v] of Object.entries(node)) {
      if (k === 'examples' || k === 'example') continue;
      const why = walk(v, `${pointer}/${esc(k)}`);
      if (why) return why;
    }
    return null;
  };
  return walk(doc.paths, '#/paths') ?? walk(doc.components, '#/components');
}

// ---- the run ----

const totals = [];

for (const service of services()) {
  test(`${service}: its document and its answers`, { timeout: 300000 }, async () => {
    const base = env(urlVar(service));
    const got = await fetch(`${base}/openapi.json`);
    assert.equal(got.status, 200, `GET ${base}/openapi.json`);
    const doc = await got.json();

    const validator = new Validator();
    const verdict = await validator.validate(doc);
    assert.ok(verdict.valid, `${service}'s document is not valid OpenAPI: ${JSON.stringify(verdict.errors, null, 1)?.slice(0, 2000)}`);
    assert.equal(validator.version, '3.1', `${service}'s document is OpenAPI ${validator.version}, not 3.1`);

    const ops = operations(doc);
    const validate = checker(doc);
    const badExample = examples(doc, validate);
    assert.equal(badExample, null, `${service}: ${badExample}`);
    const load = async (name) => (await import(pathToFileURL(join(HERE, 'cases', `${name}.mjs`)))).default;
    const cases = [...(await load('common')), ...(await load(service))];
    const ctx = makeCtx();
    const covered = new Set();
    const statuses = new Set();
    for (const c of cases) {
      if (c.before) {
        await c.before(ctx);
        continue;
      }
      const res = await send(base, c, ctx);
      const where = `${service}: "${c.name}" (${c.method} ${res.path})`;
      assert.equal(res.status, c.expect, `${where}: status ${res.status}, expected ${c.expect}; body: ${res.text.slice(0, 400)}`);
      const o = matchOperation(ops, c.method, res.path.split('?')[0]);
      assert.ok(o, `${where}: no documented operation matches`);
      const why = conformance(doc, o, res, validate) ??
        requestConformance(doc, o, res, validate);
      assert.equal(why, null, `${where}: ${why}`);
      if (c.frames) assert.ok(res.frames >= c.frames, `${where}: ${res.frames} frames, expected at least ${c.frames}: ${res.text.slice(0, 400)}`);
      covered.add(`${o.method} ${o.path}`);
      statuses.add(`${o.method} ${o.path} ${res.status}`);
      if (c.then) await c.then(ctx, res);
    }
    const missing = ops.map((o) => `${o.method} ${o.path}`).filter((k) => !covered.has(k));
    assert.deepEqual(missing, [], `${service}: documented operations no case requested`);
    const documented = ops.reduce((n, o) => n + Object.keys(o.op.responses ?? {}).length, 0);
    totals.push({ service, operations: ops.length, documented, seen: statuses.size, cases: cases.filter((c) => !c.before).length });
  });
}

test('the figures', () => {
  const sum = (k) => totals.reduce((n, t) => n + t[k], 0);
  for (const t of totals) {
    console.log(`openapi: ${t.service}: ${t.operations} operations, all requested; ${t.seen} of ${t.documented} documented (operation, status) pairs seen, in ${t.cases} requests`);
  }
  console.log(`openapi: all: ${sum('operations')} operations, ${sum('seen')} of ${sum('documented')} documented (operation, status) pairs seen, in ${sum('cases')} requests`);
  assert.equal(totals.length, services().length, 'a service\'s test failed before its figures');
});
