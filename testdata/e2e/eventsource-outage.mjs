// Follows one SSE stream with the npm eventsource (the WHATWG EventSource,
// as browsers have it) through a broker outage:
//   node eventsource-outage.mjs URL WANT
// Prints a line for each thing that happens, for the test to wait on:
//   open                          a 200 event-stream answered
//   message DATA                  an event
//   unavailable RETRY_MS REASON   the gateway cannot reach the broker now:
//                                 a stream refused, or ended, that the
//                                 client must come back from by itself
//   reset DATA                    a resume the gateway could not make whole
// then "OK opens=N unavailable=K resets=R" and exits 0 on the message WANT.
// One that gives up (readyState CLOSED, as after a 503) prints "FAIL gave
// up" and exits 1, as does a 60 s timeout.
import { EventSource } from 'eventsource';

const [url, want] = process.argv.slice(2);
if (!url || want === undefined) {
  console.error('usage: node eventsource-outage.mjs URL WANT');
  process.exit(2);
}
const es = new EventSource(url);
const end = (line, code) => {
  es.close();
  console.log(line);
  process.exit(code);
};
setTimeout(() => end('FAIL timed out after 60s', 1), 60000).unref();
let opens = 0, unavailable = 0, resets = 0;
es.onopen = () => {
  opens++;
  console.log('open');
};
es.addEventListener('unavailable', (e) => {
  unavailable++;
  const d = JSON.parse(e.data);
  console.log(`unavailable ${d.retry_ms} ${d.reason}`);
});
es.addEventListener('reset', (e) => {
  resets++;
  console.log(`reset ${e.data}`);
});
es.onmessage = (e) => {
  console.log(`message ${e.data}`);
  if (e.data === want) end(`OK opens=${opens} unavailable=${unavailable} resets=${resets}`, 0);
};
es.onerror = () => {
  if (es.readyState === EventSource.CLOSED) end('FAIL gave up', 1);
};
