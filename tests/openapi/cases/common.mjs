// libdeta's routes (lib/openapi/common.json), which every service has: requested
// on each service before its own cases (conformance.mjs).
export default [
  { name: 'the OpenAPI document', method: 'GET', path: '/openapi.json', expect: 200 },
  { name: 'health', method: 'GET', path: '/actuator/health', expect: 200 },
  { name: 'health, short path', method: 'GET', path: '/health', expect: 200 },
  { name: 'readiness', method: 'GET', path: '/actuator/health/readiness', expect: 200 },
  { name: 'liveness', method: 'GET', path: '/actuator/health/liveness', expect: 200 },
  { name: 'metrics', method: 'GET', path: '/actuator/prometheus', expect: 200 },
  { name: 'metrics, short path', method: 'GET', path: '/metrics', expect: 200 },
  // The server's own refusal, before any handler (HTTP_HEADER_LIMIT, 8192 bytes).
  {
    name: 'headers over HTTP_HEADER_LIMIT',
    method: 'GET',
    path: '/openapi.json',
    headers: { 'X-Padding': 'a'.repeat(9000) },
    expect: 431,
  },
];
