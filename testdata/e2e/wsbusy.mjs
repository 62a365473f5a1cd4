// Drives the npm ws client (which, like a browser, fails an upgrade whose
// answer lacks the subprotocol it asked for) against a gateway that
// refuses it for load:
//   node wsbusy.mjs ws://127.0.0.1:8080/stomp
// It sends its STOMP CONNECT as the socket opens, as stompjs does. Prints
// "OK code=1013 reason=..." and exits 0 when the close is 1013 with a
// retry hint; prints "FAIL reason" and exits 1 otherwise (an HTTP answer,
// which a browser would show as 1006, or getting in).
import WebSocket from 'ws';

const [url] = process.argv.slice(2);
if (!url) {
  console.error('usage: node wsbusy.mjs WS_URL');
  process.exit(2);
}
const fail = (msg) => {
  console.log('FAIL ' + msg);
  process.exit(1);
};
setTimeout(() => fail('timed out after 30s'), 30000).unref();

const ws = new WebSocket(url, ['v12.stomp', 'v11.stomp']);
ws.on('open', () => ws.send('CONNECT\naccept-version:1.2\nhost:/\n\n\0'));
ws.on('message', (m) => fail(`not refused: ${String(m).split('\n')[0]}`));
ws.on('error', (e) => fail(e.message));
ws.on('close', (code, reason) => {
  reason = String(reason);
  if (code !== 1013 || !/; retry in [0-9.]+s$/.test(reason)) fail(`closed with ${code} ${reason}`);
  console.log(`OK code=${code} reason=${reason}`);
  process.exit(0);
});
