// inventory-service's own routes (services/inventory-service/openapi.json), one real
// request each, in order: the cases share one item made for this run (its id carries
// ctx.uuid()), so none depends on the catalog or on another run. Nothing else moves
// that item, so its versions are known: 1 when created, 2 after the versioned PUT,
// 3 after the delta, 4 after sales stop (the bodies name them; each `then` checks).
//
// Not produced here: 500 and 503 (a database failure; 503 also for a missing
// OPERATOR_TOKEN, which the test stack sets), and 401 on the reads (only with
// HTTP_READS_NEED_AUTH=on; the reads send the reader token, which is ignored
// while reads are open).
import { check, names, operator, reader } from './helpers.mjs';

export const service = 'inventory-service';

const item = (ctx) => `/api/inventory/${ctx.itemId}`;


export default [
  {
    name: 'ids for this run',
    before: async (ctx) => {
      ctx.itemId = `oa-${ctx.uuid()}`;
      ctx.unknownId = `oa-unknown-${ctx.uuid()}`;
    },
  },

  // ---- GET /api/inventory ----
  {
    name: 'lists every item',
    method: 'GET',
    path: '/api/inventory',
    headers: reader,
    expect: 200,
    then: (ctx, res) => check(Array.isArray(res.json), 'the list is not an array'),
  },

  // ---- PUT /api/inventory/{itemId}: create, then the compare-and-set ----
  {
    name: 'PUT creates an unknown item',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 10, name: 'OpenAPI conformance item' },
    expect: 201,
    then: (ctx, res) => {
      check(res.json.itemId === ctx.itemId, 'another itemId');
      check(res.json.version === 1 && res.json.available === 10 && res.json.held === 0 &&
            res.json.sold === 0 && res.json.sellable === true, `unexpected item ${res.text}`);
      ctx.version = res.json.version;
    },
  },
  {
    name: 'PUT without expectedVersion that changes nothing is 200, item unchanged',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 10, name: 'OpenAPI conformance item' },
    expect: 200,
    then: (ctx, res) => check(res.json.version === ctx.version, `version moved: ${res.text}`),
  },
  {
    name: 'PUT changing an existing item without expectedVersion is 428 with current',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 11 },
    expect: 428,
    then: (ctx, res) => {
      names('expectedVersion')(ctx, res);
      check(res.json.current && res.json.current.version === ctx.version, 'current is not the item');
    },
  },
  {
    name: 'PUT with a stale expectedVersion is 409 with current',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 11, expectedVersion: 6 },
    expect: 409,
    then: (ctx, res) => {
      names('expectedVersion')(ctx, res);
      check(res.json.current && res.json.current.available === 10, 'current is not the item');
    },
  },
  {
    name: 'PUT with expectedVersion 0 on an existing item is 409',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 11, expectedVersion: 0 },
    expect: 409,
    then: names('expectedVersion'),
  },
  {
    name: 'PUT with a version of an item that does not exist is 409 with current null',
    method: 'PUT',
    path: (ctx) => `/api/inventory/${ctx.unknownId}`,
    headers: operator,
    body: { available: 1, expectedVersion: 3 },
    expect: 409,
    then: (ctx, res) => {
      names('expectedVersion')(ctx, res);
      check(res.json.current === null, 'current is not null');
    },
  },
  {
    name: 'PUT with the item\'s version updates it',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 12, expectedVersion: 1 },
    expect: 200,
    then: (ctx, res) => {
      check(res.json.available === 12 && res.json.version === ctx.version + 1, `not updated: ${res.text}`);
      check(res.json.name === 'OpenAPI conformance item', 'the name changed');
      ctx.version = res.json.version;
    },
  },
  {
    name: 'PUT without a token is 401',
    method: 'PUT',
    path: item,
    body: { available: 13 },
    expect: 401,
  },
  {
    name: 'PUT with the reader token is 403',
    method: 'PUT',
    path: item,
    headers: reader,
    body: { available: 13 },
    expect: 403,
  },
  {
    name: 'PUT with available out of range is 400',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: -1 },
    expect: 400,
    then: names('available'),
  },
  {
    name: 'PUT without available is 400',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { name: 'no count' },
    expect: 400,
    then: names('available'),
  },
  {
    name: 'PUT with a sellable that is not a boolean is 400',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 12, expectedVersion: 2, sellable: 'no' },
    expect: 400,
    then: names('sellable'),
  },
  {
    name: 'PUT with a name over 128 bytes is 400',
    method: 'PUT',
    path: item,
    headers: operator,
    body: { available: 12, expectedVersion: 2, name: 'n'.repeat(129) },
    expect: 400,
    then: names('name'),
  },
  {
    name: 'PUT with a body that is not an object is 400',
    method: 'PUT',
    path: item,
    headers: operator,
    body: [],
    expect: 400,
    then: names('body'),
  },
  {
    name: 'PUT on a malformed itemId is 400',
    method: 'PUT',
    path: '/api/inventory/bad%20id!',
    headers: operator,
    body: { available: 1 },
    expect: 400,
    then: names('itemId'),
  },
  {
    name: 'PUT with another Content-Type is 415',
    method: 'PUT',
    path: item,
    headers: (ctx) => ({ ...operator(ctx), 'Content-Type': 'text/plain' }),
    body: '{"available": 13}',
    expect: 415,
  },
  {
    name: 'PUT with malformed JSON is 400',
    method: 'PUT',
    path: item,
    headers: (ctx) => ({ ...operator(ctx), 'Content-Type': 'application/json' }),
    body: '{"available": ',
    expect: 400,
    then: names('body'),
  },

  // ---- GET /api/inventory/{itemId} ----
  {
    name: 'reads the item',
    method: 'GET',
    path: item,
    headers: reader,
    expect: 200,
    then: (ctx, res) => check(res.json.itemId === ctx.itemId && res.json.version === ctx.version,
                              `unexpected item ${res.text}`),
  },
  {
    name: 'an unknown item is 404',
    method: 'GET',
    path: (ctx) => `/api/inventory/${ctx.unknownId}`,
    headers: reader,
    expect: 404,
    then: names('itemId'),
  },
  {
    name: 'a malformed itemId is 400',
    method: 'GET',
    path: '/api/inventory/bad%20id!',
    headers: reader,
    expect: 400,
    then: names('itemId'),
  },
  {
    name: 'an itemId of 65 characters is 400',
    method: 'GET',
    path: `/api/inventory/${'a'.repeat(65)}`,
    headers: reader,
    expect: 400,
    then: names('itemId'),
  },

  // ---- PATCH /api/inventory/{itemId} ----
  {
    name: 'PATCH adds a delta',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: { delta: 5 },
    expect: 200,
    then: (ctx, res) => {
      check(res.json.available === 17 && res.json.version === ctx.version + 1, `not applied: ${res.text}`);
      ctx.version = res.json.version;
    },
  },
  {
    name: 'PATCH with the item\'s version stops sales',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: { sellable: false, expectedVersion: 3 },
    expect: 200,
    then: (ctx, res) => {
      check(res.json.sellable === false && res.json.available === 17, `not applied: ${res.text}`);
      ctx.version = res.json.version;
    },
  },
  {
    name: 'PATCH of an unknown item is 404',
    method: 'PATCH',
    path: (ctx) => `/api/inventory/${ctx.unknownId}`,
    headers: operator,
    body: { delta: 1 },
    expect: 404,
    then: names('itemId'),
  },
  {
    name: 'PATCH making available negative is 409 naming delta',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: { delta: -1000000 },
    expect: 409,
    then: (ctx, res) => {
      names('delta')(ctx, res);
      check(res.json.current && res.json.current.available === 17, 'current is not the item');
    },
  },
  {
    name: 'PATCH with a stale expectedVersion is 409',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: { delta: 1, expectedVersion: 99 },
    expect: 409,
    then: (ctx, res) => {
      names('expectedVersion')(ctx, res);
      check(res.json.current && res.json.current.version === ctx.version, 'current is not the item');
    },
  },
  {
    name: 'PATCH with available is 400',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: { available: 5 },
    expect: 400,
    then: names('available'),
  },
  {
    name: 'PATCH with none of delta, sellable and name is 400',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: {},
    expect: 400,
    then: names('delta'),
  },
  {
    name: 'PATCH with expectedVersion 0 is 400',
    method: 'PATCH',
    path: item,
    headers: operator,
    body: { delta: 1, expectedVersion: 0 },
    expect: 400,
    then: names('expectedVersion'),
  },
  {
    name: 'PATCH without a token is 401',
    method: 'PATCH',
    path: item,
    body: { delta: 1 },
    expect: 401,
  },
  {
    name: 'PATCH with the reader token is 403',
    method: 'PATCH',
    path: item,
    headers: reader,
    body: { delta: 1 },
    expect: 403,
  },
  {
    name: 'PATCH with another Content-Type is 415',
    method: 'PATCH',
    path: item,
    headers: (ctx) => ({ ...operator(ctx), 'Content-Type': 'text/plain' }),
    body: '{"delta": 1}',
    expect: 415,
  },
  {
    name: 'the refused changes changed nothing',
    before: async (ctx) => {
      const res = await ctx.api(ctx.url.inventory, item(ctx), { headers: reader(ctx) });
      check(res.status === 200 && res.json.available === 17 && res.json.version === ctx.version,
            `the item moved: ${res.status} ${res.text}`);
    },
  },
];
