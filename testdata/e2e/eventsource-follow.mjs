// Follows one SSE stream with the npm eventsource (the WHATWG EventSource,
// as browsers have it) until a message with the wanted data arrives:
//   node eventsource-follow.mjs URL WANT
// Prints "busy <retry_ms> <reason>" for each busy event (a refusal for
// load it must come back from by itself), then "OK busy=N" and exits 0 on
// the wanted message. One that gives up (readyState CLOSED, as after a 429
// or 503) prints "FAIL ..." and exits 1, as does a 30 s timeout.
import { EventSource } from 'eventsource';

const [url, want] = process.argv.slice(2);
if (!url || want === undefined) {
  console.error('usage: node eventsource-follow.mjs URL WANT');
  process.exit(2);
}
const es = new EventSource(url);
const end = (line, code) => {
  es.close();
  console.log(line);
  process.exit(code);
};
setTimeout(() => end('FAIL timed out after 30s', 1), 30000).unref();
let busy = 0;
es.addEventListener('busy', (e) => {
  busy++;
  const d = JSON.parse(e.data);
  console.log(`busy ${d.retry_ms} ${d.reason}`);
});
es.onmessage = (e) => {
  if (e.data === want) end(`OK busy=${busy}`, 0);
};
es.onerror = () => {
  if (es.readyState === EventSource.CLOSED) end('FAIL gave up', 1);
};
