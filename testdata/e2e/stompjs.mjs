// Drives @stomp/stompjs, the browser STOMP client, through wsbridge:
//   node stompjs.mjs ws://127.0.0.1:8080/stomp /queue/some-name
// It connects with a bogus login (the gateway must replace it), publishes a
// text body with a receipt, a binary body and a transactional message,
// consumes them with client-individual acks, and disconnects. Prints "OK ..."
// and exits 0 on success; prints "FAIL reason" and exits 1 otherwise.
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';

const [url, queue] = process.argv.slice(2);
if (!url || !queue) {
  console.error('usage: node stompjs.mjs WS_URL DESTINATION');
  process.exit(2);
}
let finished = false;
const fail = (msg) => {
  if (finished) return;
  finished = true;
  console.log('FAIL ' + msg);
  process.exit(1);
};
setTimeout(() => fail('timed out after 30s'), 30000).unref();

const binary = Uint8Array.from([0, 1, 2, 255, 254, 0, 10, 0]);
const client = new Client({
  webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
  connectHeaders: { login: 'intruder', passcode: 'not-the-password' },
  reconnectDelay: 0,
  heartbeatIncoming: 1000,
  heartbeatOutgoing: 1000,
  debug: () => {},
});
client.onStompError = (f) => fail('ERROR frame: ' + f.headers.message);
client.onWebSocketClose = (e) => {
  if (!finished) fail('WebSocket closed early with code ' + e.code);
};
client.onConnect = (connected) => {
  const got = [];
  client.subscribe(queue, (m) => {
    got.push(m);
    m.ack();
    maybeCheck();
  }, { ack: 'client-individual' });

  // 'a:b\\y' exercises \c and \\ escapes. (stompjs 7.5.0 itself decodes a
  // value with a backslash before a 'c' wrongly, so the test avoids that.)
  let receipted = false;
  // The RECEIPT and the MESSAGEs may come in either order.
  const maybeCheck = () => { if (receipted && got.length === 3) check(connected, got); };
  client.watchForReceipt('text-1', () => { receipted = true; maybeCheck(); });
  client.publish({ destination: queue, body: 'hello from stompjs', headers: { receipt: 'text-1', 'x-note': 'a:b\\y' } });
  client.publish({ destination: queue, binaryBody: binary, headers: { 'content-type': 'application/octet-stream' } });
  const tx = client.begin();
  client.publish({ destination: queue, body: 'in a transaction', headers: { transaction: tx.id } });
  tx.commit();

  function check(frame, msgs) {
    const [text, bin, txm] = msgs;
    if (text.body !== 'hello from stompjs') return fail('text body ' + JSON.stringify(text.body));
    if (text.headers['x-note'] !== 'a:b\\y') return fail('escaped header came back as ' + JSON.stringify(text.headers['x-note']));
    const b = new Uint8Array(bin.binaryBody);
    if (b.length !== binary.length || b.some((v, i) => v !== binary[i])) return fail('binary body ' + Array.from(b));
    if (txm.body !== 'in a transaction') return fail('transactional body ' + JSON.stringify(txm.body));
    finished = true;
    console.log(`OK version=${frame.headers.version} heart-beat=${frame.headers['heart-beat']} messages=${msgs.length}`);
    client.deactivate().then(() => process.exit(0));
  }
};
client.activate();
