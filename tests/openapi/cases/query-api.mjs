// query-api's conformance cases (services/query-api/openapi.json; format: README.md).
//
// Two orders of one new customer are created through order-service (sku-1 is in
// inventory-service's default catalog, which the test stack keeps), then waited for in
// the read model; the cases read them, page through the customer's list with a cursor,
// open both streams, and walk the dead-letter administration with each token: a poison
// message of the test's own (not JSON, its own key and a header) is put on
// raw.eta-events with kcat, which only query-api reads, so that its dead letter in
// dlq.eta-events can be listed, shown and replayed. The replay-all case replays every
// pending dead letter of dlq.eta-events, other tests' too: each is a message some
// consumer refused, and comes back as a new dead letter (docs/contracts.md, dead-letter
// administration). Reads carry the reader token, so the cases pass whether or not the
// stack sets HTTP_READS_NEED_AUTH.
import { spawnSync } from 'node:child_process';
import { check, names, operator, placeOrder, reader } from './helpers.mjs';

export const service = 'query-api';

const ADMIN = '/api/admin/dead-letters';
const TOPIC = 'dlq.eta-events';
const MISSING_ID = '9007199254740991'; // 2^53 - 1: a valid id no stack reaches
const STATES = ['CREATED', 'INVENTORY_RESERVED', 'PAYMENT_AUTHORIZED', 'DELIVERY_WAITING',
  'DELIVERY_ASSIGNED', 'PICKED_UP', 'DELIVERED', 'INVENTORY_REJECTED', 'PAYMENT_FAILED',
  'CANCELLED'];

const q = encodeURIComponent;


// The test's poison message on raw.eta-events: not JSON, keyed key, one header.
function producePoison(key) {
  const brokers = process.env.KAFKA_BOOTSTRAP_SERVERS;
  check(brokers, 'KAFKA_BOOTSTRAP_SERVERS is not set: source the test stack\'s stack.env');
  const r = spawnSync('kcat', ['-P', '-b', brokers, '-t', 'raw.eta-events', '-k', key,
    '-H', 'x-openapi=conformance'], { input: 'not json: openapi conformance\n', encoding: 'utf8' });
  check(r.status === 0, `kcat: ${r.status} ${r.stderr}`);
}

const isEventStream = (ctx, res) => {
  const type = res.headers.get('content-type') || '';
  check(type.startsWith('text/event-stream'), `expected text/event-stream, got ${type}`);
};

export default [
  // ---- setup ----
  {
    name: 'two orders of a new customer',
    before: async (ctx) => {
      ctx.customerId = 'openapi-' + ctx.uuid();
      ctx.orderIds = [];
      for (let i = 0; i < 2; i++) {
        ctx.orderIds.push(await placeOrder(ctx, {
          customerId: ctx.customerId,
          items: [{ itemId: 'sku-1', quantity: 1, unitPrice: '1.00' }],
        }));
      }
      ctx.orderId = ctx.orderIds[0];
      ctx.unknownOrderId = ctx.uuid();
    },
  },
  {
    name: 'both orders in the read model',
    before: async (ctx) => {
      await ctx.waitFor('both orders, with their customer, in query-api', async () => {
        for (const id of ctx.orderIds) {
          const res = await ctx.api(ctx.url.query, `/api/orders/${id}`, {
            method: 'GET',
            headers: reader(ctx),
          });
          if (res.status !== 200 || !res.json || res.json.customerId !== ctx.customerId)
            return false;
        }
        return true;
      }, 60000);
    },
  },

  // ---- GET /api/orders/{orderId} ----
  {
    name: 'an order view',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.orderId.toLowerCase() === ctx.orderId.toLowerCase(), 'another orderId');
      check(res.json.customerId === ctx.customerId, 'another customerId');
      check(res.json.totalAmount === '1.00', `totalAmount ${res.json.totalAmount}`);
    },
  },
  {
    name: 'an order view, id in upper case',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId.toUpperCase()}`,
    headers: reader,
    expect: 200,
  },
  {
    name: 'an order view, id not a UUID',
    method: 'GET',
    path: '/api/orders/not-a-uuid',
    headers: reader,
    expect: 400,
    then: names('orderId'),
  },
  {
    name: 'an order view, unknown order',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.unknownOrderId}`,
    headers: reader,
    expect: 404,
    then: names('orderId'),
  },

  // ---- GET /api/orders ----
  {
    name: 'the list, no arguments',
    method: 'GET',
    path: '/api/orders',
    headers: reader,
    expect: 200,
    then: (ctx, res) => check(res.json.items.length >= 2, 'fewer than the two orders'),
  },
  {
    name: 'the list, one customer, first page of one',
    method: 'GET',
    path: (ctx) => `/api/orders?customerId=${q(ctx.customerId)}&limit=1`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.items.length === 1, `${res.json.items.length} items`);
      check(typeof res.json.nextCursor === 'string', 'no nextCursor with a second order to come');
      ctx.cursor = res.json.nextCursor;
      ctx.firstListed = res.json.items[0].orderId;
    },
  },
  {
    name: 'the list, one customer, next page by cursor',
    method: 'GET',
    path: (ctx) => `/api/orders?customerId=${q(ctx.customerId)}&limit=1&cursor=${q(ctx.cursor)}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.items.length === 1, `${res.json.items.length} items`);
      check(res.json.items[0].orderId !== ctx.firstListed, 'the first page again');
      check(ctx.orderIds.includes(res.json.items[0].orderId), 'another customer\'s order');
    },
  },
  {
    name: 'the list by status',
    method: 'GET',
    path: '/api/orders?status=DELIVERED&limit=5',
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.items.length <= 5, 'more than limit');
      check(res.json.items.every((o) => o.status === 'DELIVERED'), 'another status listed');
    },
  },
  {
    name: 'the list, every filter, nothing matches',
    method: 'GET',
    path: (ctx) => `/api/orders?limit=200&status=CANCELLED&customerId=${q(ctx.customerId)}`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.items.length === 0, 'a new order listed as CANCELLED');
      check(res.json.nextCursor === null, 'a cursor after an empty page');
    },
  },
  { name: 'the list, limit 0', method: 'GET', path: '/api/orders?limit=0', headers: reader, expect: 400, then: names('limit') },
  { name: 'the list, limit 201', method: 'GET', path: '/api/orders?limit=201', headers: reader, expect: 400, then: names('limit') },
  { name: 'the list, limit not a number', method: 'GET', path: '/api/orders?limit=ten', headers: reader, expect: 400, then: names('limit') },
  { name: 'the list, a cursor not handed out', method: 'GET', path: '/api/orders?cursor=not-a-cursor', headers: reader, expect: 400, then: names('cursor') },
  { name: 'the list, a cursor with padding', method: 'GET', path: '/api/orders?cursor=YWJj%3D', headers: reader, expect: 400, then: names('cursor') },
  { name: 'the list, not a state', method: 'GET', path: '/api/orders?status=PAID', headers: reader, expect: 400, then: names('status') },
  { name: 'the list, a state in lower case', method: 'GET', path: '/api/orders?status=created', headers: reader, expect: 400, then: names('status') },
  { name: 'the list, empty customerId', method: 'GET', path: '/api/orders?customerId=', headers: reader, expect: 400, then: names('customerId') },
  { name: 'the list, customerId of 65 bytes', method: 'GET', path: `/api/orders?customerId=${'c'.repeat(65)}`, headers: reader, expect: 400, then: names('customerId') },

  // ---- GET /api/orders/{orderId}/events ----
  {
    name: 'an order timeline',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId}/events`,
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.orderId === ctx.orderId, 'another orderId');
      check(res.json.events.length >= 1, 'no events');
      check(res.json.events.some((e) => e.eventType === 'order.created'), 'no order.created');
    },
  },
  {
    name: 'an order timeline, id not a UUID',
    method: 'GET',
    path: '/api/orders/12345/events',
    headers: reader,
    expect: 400,
    then: names('orderId'),
  },
  {
    name: 'an order timeline, unknown order',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.unknownOrderId}/events`,
    headers: reader,
    expect: 404,
    then: names('orderId'),
  },

  // ---- GET /api/stats ----
  {
    name: 'the counts',
    method: 'GET',
    path: '/api/stats',
    headers: reader,
    expect: 200,
    then: (ctx, res) => {
      const sum = STATES.reduce((n, s) => n + res.json.byStatus[s], res.json.withoutStatus);
      check(sum === res.json.total, `total ${res.json.total} is not the sum ${sum}`);
      check(res.json.total >= 2, 'fewer than the two orders');
    },
  },

  // ---- GET /api/stream ----
  { name: 'the board stream', method: 'GET', path: '/api/stream', headers: reader, expect: 200, stream: true, then: isEventStream },
  { name: 'the board stream, resumed by query (frames replayed)', method: 'GET', path: '/api/stream?lastEventId=0', headers: reader, expect: 200, stream: true, frames: 1, then: isEventStream },
  {
    name: 'the board stream, resumed by header',
    method: 'GET',
    path: '/api/stream',
    headers: (ctx) => ({ ...reader(ctx), 'Last-Event-ID': '1' }),
    expect: 200,
    stream: true,
    then: isEventStream,
  },
  {
    name: 'the board stream, Last-Event-ID not a number',
    method: 'GET',
    path: '/api/stream',
    headers: (ctx) => ({ ...reader(ctx), 'Last-Event-ID': 'abc' }),
    expect: 400,
    then: names('Last-Event-ID'),
  },
  { name: 'the board stream, lastEventId negative', method: 'GET', path: '/api/stream?lastEventId=-1', headers: reader, expect: 400, then: names('lastEventId') },
  { name: 'the board stream, lastEventId over 64 bits', method: 'GET', path: '/api/stream?lastEventId=9223372036854775808', headers: reader, expect: 400, then: names('lastEventId') },

  // ---- GET /api/orders/{orderId}/stream ----
  { name: 'an order stream', method: 'GET', path: (ctx) => `/api/orders/${ctx.orderId}/stream`, headers: reader, expect: 200, stream: true, then: isEventStream },
  { name: 'an unknown order stream (streamed anyway)', method: 'GET', path: (ctx) => `/api/orders/${ctx.unknownOrderId}/stream`, headers: reader, expect: 200, stream: true, then: isEventStream },
  {
    name: 'an order stream, resumed by header (its events replayed)',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId}/stream`,
    headers: (ctx) => ({ ...reader(ctx), 'Last-Event-ID': '0' }),
    expect: 200,
    stream: true,
    frames: 1,
    then: isEventStream,
  },
  { name: 'an order stream, id not a UUID', method: 'GET', path: '/api/orders/not-a-uuid/stream', headers: reader, expect: 400, then: names('orderId') },
  {
    name: 'an order stream, Last-Event-ID with a sign',
    method: 'GET',
    path: (ctx) => `/api/orders/${ctx.orderId}/stream`,
    headers: (ctx) => ({ ...reader(ctx), 'Last-Event-ID': '+5' }),
    expect: 400,
    then: names('Last-Event-ID'),
  },
  { name: 'an order stream, lastEventId not a number', method: 'GET', path: (ctx) => `/api/orders/${ctx.orderId}/stream?lastEventId=x`, headers: reader, expect: 400, then: names('lastEventId') },

  // ---- GET /api/admin/dead-letters ----
  {
    name: 'the dead-letter counts',
    method: 'GET',
    path: ADMIN,
    headers: operator,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.topics.length === 5, `${res.json.topics.length} topics`);
      const sum = res.json.topics.reduce((n, t) => n + t.total, 0);
      check(sum === res.json.total, 'total is not the sum of the topics');
    },
  },
  { name: 'the dead-letter counts, no token', method: 'GET', path: ADMIN, expect: 401, then: names(null) },
  {
    name: 'the dead-letter counts, a wrong token',
    method: 'GET',
    path: ADMIN,
    headers: { Authorization: `Bearer ${'w'.repeat(32)}` },
    expect: 401,
    then: (ctx, res) => {
      names(null)(ctx, res);
      const challenge = res.headers.get('www-authenticate') || '';
      check(challenge.includes('invalid_token'), `WWW-Authenticate: ${challenge}`);
    },
  },
  {
    name: 'the dead-letter counts, the reader token',
    method: 'GET',
    path: ADMIN,
    headers: reader,
    expect: 403,
    then: (ctx, res) => {
      names(null)(ctx, res);
      const challenge = res.headers.get('www-authenticate') || '';
      check(challenge.includes('insufficient_scope'), `WWW-Authenticate: ${challenge}`);
    },
  },

  // ---- GET /api/admin/dead-letters/{topic} ----
  {
    name: 'a dlq topic, every record',
    method: 'GET',
    path: `${ADMIN}/${TOPIC}`,
    headers: operator,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.topic === TOPIC && res.json.status === 'all', 'other arguments echoed');
      check(res.json.limit === 50 && res.json.offset === 0, 'not the default page');
    },
  },
  {
    name: 'a dlq topic, pending, one page',
    method: 'GET',
    path: `${ADMIN}/dlq.payment-events?status=pending&limit=10&offset=0`,
    headers: operator,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.status === 'pending' && res.json.limit === 10, 'other arguments echoed');
      check(res.json.items.every((d) => d.replayCount === 0), 'a replayed record listed as pending');
    },
  },
  {
    name: 'a dlq topic, replayed, by key',
    method: 'GET',
    path: (ctx) => `${ADMIN}/dlq.order-events?status=replayed&key=${q(ctx.orderId)}&offset=5`,
    headers: operator,
    expect: 200,
  },
  { name: 'a dlq topic, bad status', method: 'GET', path: `${ADMIN}/${TOPIC}?status=new`, headers: operator, expect: 400, then: names('status') },
  { name: 'a dlq topic, limit 0', method: 'GET', path: `${ADMIN}/${TOPIC}?limit=0`, headers: operator, expect: 400, then: names('limit') },
  { name: 'a dlq topic, limit 201', method: 'GET', path: `${ADMIN}/${TOPIC}?limit=201`, headers: operator, expect: 400, then: names('limit') },
  { name: 'a dlq topic, negative offset', method: 'GET', path: `${ADMIN}/${TOPIC}?offset=-1`, headers: operator, expect: 400, then: names('offset') },
  { name: 'a dlq topic, offset over 10^9', method: 'GET', path: `${ADMIN}/${TOPIC}?offset=1000000001`, headers: operator, expect: 400, then: names('offset') },
  { name: 'a dlq topic, empty key', method: 'GET', path: `${ADMIN}/${TOPIC}?key=`, headers: operator, expect: 400, then: names('key') },
  { name: 'a dlq topic, key over 256 bytes', method: 'GET', path: `${ADMIN}/${TOPIC}?key=${'k'.repeat(257)}`, headers: operator, expect: 400, then: names('key') },
  { name: 'an unknown dlq topic', method: 'GET', path: `${ADMIN}/dlq.nothing`, headers: operator, expect: 404, then: names('topic') },
  { name: 'a raw topic is no dlq topic', method: 'GET', path: `${ADMIN}/raw.order-events`, headers: operator, expect: 404, then: names('topic') },
  { name: 'a dlq topic, no token', method: 'GET', path: `${ADMIN}/${TOPIC}`, expect: 401, then: names(null) },
  { name: 'a dlq topic, the reader token', method: 'GET', path: `${ADMIN}/${TOPIC}`, headers: reader, expect: 403, then: names(null) },

  // ---- GET /api/admin/dead-letters/{topic}/{id} ----
  {
    name: 'a poison message of the test\'s own, dead-lettered',
    before: async (ctx) => {
      ctx.poisonKey = 'openapi-' + ctx.uuid();
      producePoison(ctx.poisonKey);
      ctx.deadLetter = await ctx.waitFor('the poison message in dlq.eta-events', async () => {
        const res = await ctx.api(ctx.url.query, `${ADMIN}/${TOPIC}?key=${q(ctx.poisonKey)}`,
          { headers: operator(ctx) });
        return res.status === 200 && res.json.items.length ? res.json.items[0] : null;
      });
    },
  },
  {
    name: 'a dlq topic, by the poison message\'s key',
    method: 'GET',
    path: (ctx) => `${ADMIN}/${TOPIC}?status=pending&key=${q(ctx.poisonKey)}`,
    headers: operator,
    expect: 200,
    then: (ctx, res) => check(res.json.items.length === 1 && res.json.items[0].id === ctx.deadLetter.id,
      `expected the one poison message, got ${res.text}`),
  },
  {
    name: 'a dead letter, whole',
    method: 'GET',
    path: (ctx) => `${ADMIN}/${TOPIC}/${ctx.deadLetter.id}`,
    headers: operator,
    expect: 200,
    then: (ctx, res) => check(res.json.key === ctx.poisonKey &&
      res.json.headers.some((h) => h.name === 'x-openapi'), `not the poison message: ${res.text}`),
  },
  { name: 'a dead letter, id 0', method: 'GET', path: `${ADMIN}/${TOPIC}/0`, headers: operator, expect: 400, then: names('id') },
  { name: 'a dead letter, id with a leading zero', method: 'GET', path: `${ADMIN}/${TOPIC}/07`, headers: operator, expect: 400, then: names('id') },
  { name: 'a dead letter, id not a number', method: 'GET', path: `${ADMIN}/${TOPIC}/abc`, headers: operator, expect: 400, then: names('id') },
  { name: 'a dead letter, id over 2^53', method: 'GET', path: `${ADMIN}/${TOPIC}/9007199254740993`, headers: operator, expect: 400, then: names('id') },
  { name: 'GET on replay is a dead letter with id "replay"', method: 'GET', path: `${ADMIN}/${TOPIC}/replay`, headers: operator, expect: 400, then: names('id') },
  { name: 'a dead letter that is not there', method: 'GET', path: `${ADMIN}/${TOPIC}/${MISSING_ID}`, headers: operator, expect: 404, then: names('id') },
  { name: 'a dead letter of an unknown topic', method: 'GET', path: `${ADMIN}/dlq.nothing/1`, headers: operator, expect: 404, then: names('topic') },
  { name: 'a dead letter, no token', method: 'GET', path: `${ADMIN}/${TOPIC}/1`, expect: 401, then: names(null) },
  { name: 'a dead letter, the reader token', method: 'GET', path: `${ADMIN}/${TOPIC}/1`, headers: reader, expect: 403, then: names(null) },

  // ---- POST /api/admin/dead-letters/{topic}/replay ----
  {
    name: 'replay every pending dead letter of dlq.eta-events',
    method: 'POST',
    path: `${ADMIN}/${TOPIC}/replay`,
    headers: operator,
    expect: 200,
    then: (ctx, res) => {
      check(res.json.topic === TOPIC, 'another topic');
      check(Array.isArray(res.json.skipped), 'no skipped list');
      check(res.json.replayed >= 1, `the poison message was pending, yet replayed is ${res.json.replayed}`);
    },
  },
  { name: 'replay all of an unknown topic', method: 'POST', path: `${ADMIN}/dlq.nothing/replay`, headers: operator, expect: 404, then: names('topic') },
  { name: 'replay all, no token', method: 'POST', path: `${ADMIN}/${TOPIC}/replay`, expect: 401, then: names(null) },
  { name: 'replay all, the reader token', method: 'POST', path: `${ADMIN}/${TOPIC}/replay`, headers: reader, expect: 403, then: names(null) },

  // ---- POST /api/admin/dead-letters/{topic}/{id}/replay ----
  {
    name: 'replay the poison message (it comes back as a new dead letter)',
    method: 'POST',
    path: (ctx) => `${ADMIN}/${TOPIC}/${ctx.deadLetter.id}/replay`,
    headers: operator,
    expect: 200,
    then: (ctx, res) => check(res.json.replayedTo === 'raw.eta-events' && res.json.replayCount >= 1,
      `not replayed: ${res.text}`),
  },
  { name: 'replay a dead letter that is not there', method: 'POST', path: `${ADMIN}/${TOPIC}/${MISSING_ID}/replay`, headers: operator, expect: 404, then: names('id') },
  { name: 'replay a dead letter, id not a number', method: 'POST', path: `${ADMIN}/${TOPIC}/abc/replay`, headers: operator, expect: 400, then: names('id') },
  { name: 'replay a dead letter of an unknown topic', method: 'POST', path: `${ADMIN}/dlq.nothing/abc/replay`, headers: operator, expect: 404, then: names('topic') },
  { name: 'replay a dead letter, no token', method: 'POST', path: `${ADMIN}/${TOPIC}/1/replay`, expect: 401, then: names(null) },
  { name: 'replay a dead letter, the reader token', method: 'POST', path: `${ADMIN}/${TOPIC}/1/replay`, headers: reader, expect: 403, then: names(null) },

  // ---- GET /console-config.json ----
  {
    name: 'the console configuration',
    method: 'GET',
    path: '/console-config.json',
    expect: 200,
    then: (ctx, res) => {
      check('orderServiceUrl' in res.json && 'inventoryServiceUrl' in res.json, 'a field missing');
    },
  },
];
