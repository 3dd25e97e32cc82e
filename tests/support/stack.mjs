// stack.mjs - what the Node tests (tests/browser, tests/openapi) share: the test
// stack's settings, and waiting.

// A setting of the test stack (scripts/test.sh exports its stack.env).
export function env(name) {
  const v = process.env[name];
  if (!v) throw new Error(`${name} is not set: source the test stack's stack.env (scripts/test.sh does)`);
  return v;
}

export const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

// Polls fn until it returns a truthy value (returned) or the time is up (throws
// with what was last seen). No test depends on timing but through this.
export async function waitFor(what, fn, timeoutMs = 60000, everyMs = 250) {
  const end = Date.now() + timeoutMs;
  let last;
  for (;;) {
    try {
      last = await fn();
      if (last) return last;
    } catch (e) {
      last = e;
    }
    if (Date.now() > end) {
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}; last: ${last instanceof Error ? last.message : JSON.stringify(last)}`);
    }
    await sleep(everyMs);
  }
}
