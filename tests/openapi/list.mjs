// list.mjs - read OpenAPI documents in a terminal (docs/api.md):
//   node tests/openapi/list.mjs build/release/services/openapi/*.json
//   node tests/openapi/list.mjs http://localhost:8081/openapi.json
//   node tests/openapi/list.mjs http://localhost:8081/openapi.json POST /api/orders
// Without an operation: every operation, a line each (method, path, the documented
// statuses, the summary; operator routes marked). With one (a method and a path
// as the document writes it): its description, parameters, request body and each
// answer, with every schema written out in full (references followed).
import { readFileSync } from 'node:fs';
import { METHODS, at } from './document.mjs';


async function load(where) {
  if (/^https?:\/\//.test(where)) {
    const res = await fetch(where);
    if (!res.ok) throw new Error(`${where}: HTTP ${res.status}`);
    return res.json();
  }
  return JSON.parse(readFileSync(where, 'utf8'));
}

// node with every $ref followed (a reference already being followed is left as
// it is, so that a recursive schema ends).
function inline(doc, node, seen = new Set()) {
  if (Array.isArray(node)) return node.map((n) => inline(doc, n, seen));
  if (!node || typeof node !== 'object') return node;
  if (typeof node.$ref === 'string' && node.$ref.startsWith('#/') && !seen.has(node.$ref)) {
    return inline(doc, at(doc, node.$ref), new Set([...seen, node.$ref]));
  }
  return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, inline(doc, v, seen)]));
}

function show(doc, method, path) {
  const op = doc.paths?.[path]?.[method.toLowerCase()];
  if (!op) {
    console.error(`${method.toUpperCase()} ${path} is not in the document`);
    process.exit(1);
  }
  const full = inline(doc, op);
  const json = (v) => JSON.stringify(v, null, 2).replace(/\n/g, '\n    ');
  console.log(`${method.toUpperCase()} ${path}: ${full.summary ?? ''}\n\n${full.description ?? ''}\n`);
  if (full.security) console.log(`security: ${json(full.security)}\n`);
  for (const p of full.parameters ?? []) {
    console.log(`parameter ${p.name} (${p.in}${p.required ? ', required' : ''}): ${p.description ?? ''}\n    ${json(p.schema)}`);
  }
  if (full.requestBody) {
    for (const [type, media] of Object.entries(full.requestBody.content ?? {})) {
      console.log(`\nrequest body (${type}${full.requestBody.required ? ', required' : ''}):\n    ${json(media.schema)}`);
    }
  }
  for (const [status, resp] of Object.entries(full.responses ?? {})) {
    console.log(`\n${status}: ${resp.description ?? ''}`);
    for (const [name, h] of Object.entries(resp.headers ?? {})) console.log(`  header ${name}: ${json(h.schema)}`);
    for (const [type, media] of Object.entries(resp.content ?? {})) console.log(`  ${type}:\n    ${json(media.schema)}`);
  }
}

const args = process.argv.slice(2);
if (args.length < 1) {
  console.error('usage: node tests/openapi/list.mjs <document file or URL>... | <document> <METHOD> <path>');
  process.exit(2);
}
if (args.length === 3 && /^[A-Za-z]+$/.test(args[1]) && args[2].startsWith('/')) {
  show(await load(args[0]), args[1], args[2]);
  process.exit(0);
}
for (const where of args) {
  const doc = await load(where);
  console.log(`${doc.info?.title ?? where} (${where})`);
  for (const [path, item] of Object.entries(doc.paths ?? {})) {
    for (const method of METHODS) {
      const op = item[method];
      if (!op) continue;
      const statuses = Object.keys(op.responses ?? {}).join(' ');
      const operator = (op.security ?? []).some((s) => 'operatorToken' in s && Object.keys(s).length === 1) &&
        !(op.security ?? []).some((s) => Object.keys(s).length === 0 || 'readerToken' in s);
      console.log(`  ${method.toUpperCase().padEnd(6)} ${path.padEnd(52)} ${statuses.padEnd(36)} ${op.summary ?? ''}${operator ? ' (operator)' : ''}`);
    }
  }
}
