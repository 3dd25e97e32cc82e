// Talking to the services: JSON in and out, errors as the contract's error body
// ({status, error, field, message}), and the console's configuration.

// Every answer as {status, ok, body, field, message}; a network failure is status 0.
export async function request(url, { method = 'GET', headers = {}, body, signal } = {}) {
  const init = {
    method,
    headers: { Accept: 'application/json', ...headers },
    cache: 'no-store',
    credentials: 'omit',
    signal,
  };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  let res;
  try {
    res = await fetch(url, init);
  } catch (e) {
    const aborted = e && e.name === 'AbortError';
    return { status: 0, ok: false, aborted, body: null, field: null,
      message: aborted ? 'aborted' : `the service could not be reached (${url})` };
  }
  let data = null;
  try {
    const text = await res.text();
    data = text ? JSON.parse(text) : null;
  } catch {
    data = null;
  }
  const isError = !res.ok && data && typeof data === 'object';
  return {
    status: res.status,
    ok: res.ok,
    body: data,
    headers: res.headers,
    field: isError && typeof data.field === 'string' ? data.field : null,
    message: res.ok ? '' : describe(res.status, isError ? data : null),
  };
}

function describe(status, err) {
  const text = err && typeof err.message === 'string' ? err.message : '';
  const phrase = err && typeof err.error === 'string' ? err.error : 'error';
  return text ? `${status} ${phrase}: ${text}` : `${status} ${phrase}`;
}

// A URL below a service's origin; origin null means "not configured".
export function at(origin, path) {
  return origin ? origin.replace(/\/+$/, '') + path : null;
}

let configAnswer = null;

// query-api's /console-config.json, fetched once: {orderServiceUrl, inventoryServiceUrl},
// each an origin or null.
export function consoleConfig() {
  if (!configAnswer) {
    configAnswer = request('/console-config.json').then((r) => {
      const c = r.ok && r.body && typeof r.body === 'object' ? r.body : {};
      const origin = (v) => (typeof v === 'string' && /^https?:\/\/[^/]+$/.test(v) ? v : null);
      return {
        loaded: r.ok,
        message: r.ok ? '' : r.message,
        orderServiceUrl: origin(c.orderServiceUrl),
        inventoryServiceUrl: origin(c.inventoryServiceUrl),
      };
    });
  }
  return configAnswer;
}
