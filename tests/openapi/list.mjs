// list.mjs - the operations of OpenAPI documents, a line each (docs/api.md):
//   node tests/openapi/list.mjs build/release/services/openapi/*.json
//   node tests/openapi/list.mjs http://localhost:8081/openapi.json
// Each line: method, path, the documented statuses, the summary; the operator
// routes are marked (operator).
import { readFileSync } from 'node:fs';

const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

async function load(where) {
  if (/^https?:\/\//.test(where)) {
    const res = await fetch(where);
    if (!res.ok) throw new Error(`${where}: HTTP ${res.status}`);
    return res.json();
  }
  return JSON.parse(readFileSync(where, 'utf8'));
}

if (process.argv.length < 3) {
  console.error('usage: node tests/openapi/list.mjs <document file or URL>...');
  process.exit(2);
}
for (const where of process.argv.slice(2)) {
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
