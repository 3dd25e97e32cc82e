// One Server-Sent Events stream of query-api (docs/console.md "Live updates").
// EventSource resumes by itself with Last-Event-ID after a dropped connection;
// when the server answered something that ends it (a 503 while query-api has
// too many streams, a 404 while it restarts behind a proxy), it is opened again
// here with ?lastEventId= the last seq seen, so nothing is missed either way.

const REOPEN_MS = 3000;

export function openStream(url, { signal, onEvent, onReset, onState }) {
  let lastSeq = null;
  let source = null;
  let timer = null;

  const state = (s) => onState && onState(s);

  function open() {
    if (signal.aborted) return;
    const sep = url.includes('?') ? '&' : '?';
    source = new EventSource(lastSeq === null ? url : `${url}${sep}lastEventId=${lastSeq}`);
    source.addEventListener('open', () => state('live'));
    source.addEventListener('order', (e) => {
      let data;
      try {
        data = JSON.parse(e.data);
      } catch {
        return;
      }
      if (!data || typeof data !== 'object') return;
      if (Number.isSafeInteger(data.seq)) lastSeq = data.seq;
      onEvent(data);
    });
    source.addEventListener('reset', (e) => {
      let data = null;
      try {
        data = JSON.parse(e.data);
      } catch {
        data = null;
      }
      if (data && Number.isSafeInteger(data.seq)) lastSeq = data.seq;
      if (onReset) onReset(data);
    });
    source.addEventListener('error', () => {
      if (source.readyState === EventSource.CLOSED) {
        state('closed');
        timer = setTimeout(open, REOPEN_MS);
      } else {
        state('reconnecting');
      }
    });
  }

  signal.addEventListener('abort', () => {
    clearTimeout(timer);
    if (source) source.close();
  });
  open();
}
