// Drives the npm eventsource (the WHATWG EventSource, as browsers have it)
// against a gateway whose limits refuse some of the streams:
//   node eventsource.mjs http://127.0.0.1:8080 N
// Opens N EventSources on /sse/crowd at once. One refused for load gets a
// busy stream, and must come back by itself after its retry hint; one that
// gives up (readyState CLOSED, as after a 429 or 503) fails the run. A
// stream is in once a message published to the topic reaches it. Prints
// "OK streams=N busy=K" and exits 0 once all are in; prints "FAIL reason"
// and exits 1 otherwise.
import { EventSource } from 'eventsource';

const [base, count] = process.argv.slice(2);
const n = Number(count);
if (!base || !(n > 0)) {
  console.error('usage: node eventsource.mjs HTTP_BASE_URL N');
  process.exit(2);
}
let finished = false;
const sources = [];
const end = (line, code) => {
  if (finished) return;
  finished = true;
  for (const es of sources) es.close();
  console.log(line);
  process.exit(code);
};
const fail = (msg) => end('FAIL ' + msg, 1);
setTimeout(() => fail('timed out after 30s'), 30000).unref();

let busy = 0;
const inside = new Set();
for (let i = 0; i < n; i++) {
  const es = new EventSource(`${base}/sse/crowd`);
  es.addEventListener('busy', (e) => {
    busy++;
    const d = JSON.parse(e.data);
    if (!(d.retry_ms >= 1000 && d.retry_ms <= 10000) || !d.reason) fail(`busy event ${e.data}`);
  });
  es.onmessage = () => {
    inside.add(i);
    if (inside.size === n) end(`OK streams=${n} busy=${busy}`, 0);
  };
  es.onerror = () => {
    if (es.readyState === EventSource.CLOSED) fail(`stream ${i} gave up`);
  };
  sources.push(es);
}
// Publishes are not held to the handshake rate: keep publishing until
// every stream has had a message.
while (!finished) {
  const r = await fetch(`${base}/publish/crowd`, { method: 'POST', body: 'ping' });
  if (r.status !== 202) fail(`publish answered ${r.status}`);
  await new Promise((ok) => setTimeout(ok, 250));
}
