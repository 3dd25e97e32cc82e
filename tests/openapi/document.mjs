// document.mjs - reading an OpenAPI document: what conformance.mjs and list.mjs
// share (no npm package needed).

// The methods a path item can hold, as OpenAPI writes them.
export const METHODS = ['get', 'put', 'post', 'delete', 'options', 'head', 'patch', 'trace'];

// JSON pointer escaping of one token.
export const esc = (t) => String(t).replace(/~/g, '~0').replace(/\//g, '~1');

// The node a local JSON pointer ("#/a/b~1c") names in doc, or undefined.
export function at(doc, pointer) {
  let node = doc;
  for (const raw of pointer.replace(/^#\//, '').split('/')) {
    node = node?.[raw.replace(/~1/g, '/').replace(/~0/g, '~')];
  }
  return node;
}

// obj (found at pointer) with its $ref followed, as [object, its pointer].
export function follow(doc, obj, pointer) {
  while (obj && typeof obj.$ref === 'string') {
    pointer = obj.$ref;
    obj = at(doc, pointer);
  }
  return [obj, pointer];
}
