// Sends one oversize message through a real client, logged in, and reports
// what that client received: the protocol's own error and the WebSocket
// close code.
//   node refusals.mjs BASE_WS_URL stomp|mqtt|amqp one|fragments|client
// The client (stompjs, mqtt.js with MQTT 5, AMQPWebSocketClient) logs in,
// then SIZE bytes (env, default 2 MiB) are published:
//   one        the whole protocol message in one WebSocket message: what
//              stompjs and AMQPWebSocketClient send; for MQTT the PUBLISH
//              is built here, since mqtt.js writes its fixed header as a
//              message of its own
//   fragments  the same bytes as 64 KiB fragments with the npm ws client's
//              send(chunk, {fin: false}) ... send(last, {fin: true})
//   client     as the client library sends it (mqtt.js: a small message
//              with the PUBLISH header announcing the size, then the rest)
// Prints one JSON line
//   {"proto":..,"mode":..,"port":N,"error":"what the client reported","close":1009,"reason":".."}
// where port is the client's local port (the gateway logs it as remote=).
// once the socket has closed and exits 0, or prints "FAIL reason" and
// exits 1.
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import mqtt from 'mqtt';
import { AMQPWebSocketClient } from '@cloudamqp/amqp-client';

globalThis.WebSocket = WebSocket; // Node 20 has no global WebSocket
const [base, proto, mode] = process.argv.slice(2);
const size = Number(process.env.SIZE || 2 << 20);
const fail = (m) => { console.log('FAIL ' + m); process.exit(1); };
setTimeout(() => fail('timed out after 30s'), 30000).unref();
const big = new Uint8Array(size).fill(0x61);
const fragment = 64 << 10;

let error = '';
let port = 0;
const closed = (ws) => {
  port = ws._socket.localPort;
  return new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
};

// fragmentSends makes every message the client writes on ws go out as
// fragments of at most 64 KiB.
function fragmentSends(ws) {
  if (mode !== 'fragments') return;
  const send = ws.send.bind(ws);
  ws.send = (data, opts, cb) => {
    if (typeof opts === 'function') [cb, opts] = [opts, {}];
    const b = typeof data === 'string' ? Buffer.from(data) : Buffer.from(data.buffer ?? data, data.byteOffset ?? 0, data.byteLength);
    const binary = typeof data !== 'string';
    for (let off = 0; off < b.length || off === 0; off += fragment) {
      const fin = off + fragment >= b.length;
      send(b.subarray(off, off + fragment), { binary, fin }, fin ? cb : undefined);
      if (fin) break;
    }
  };
}

async function stomp() {
  let ws;
  const c = new Client({
    webSocketFactory: () => (ws = new WebSocket(base + '/stomp', ['v12.stomp'])),
    connectHeaders: { login: 'placeholder', passcode: 'placeholder' },
    reconnectDelay: 0,
    heartbeatIncoming: 0,
    heartbeatOutgoing: 0,
    debug: () => {},
  });
  c.onStompError = (f) => { error ||= `ERROR message:${f.headers.message}`; };
  const connected = new Promise((resolve) => { c.onConnect = resolve; });
  c.activate();
  await connected;
  const done = closed(ws);
  fragmentSends(ws);
  c.publish({ destination: '/queue/wsbridge-refusals', binaryBody: big });
  return done;
}

async function mqttjs() {
  let ws;
  const c = mqtt.connect(base + '/mqtt', {
    protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 10000,
    createWebsocket: (url, protocols) => (ws = new WebSocket(url, protocols)),
  });
  c.on('disconnect', (p) => { error ||= `DISCONNECT 0x${p.reasonCode.toString(16)} ${p.properties?.reasonString ?? ''}`.trim(); });
  c.on('error', () => {}); // the close is what is asserted
  await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
  const done = closed(ws);
  if (mode === 'client') {
    c.publish('wsbridge/refusals', Buffer.from(big), { qos: 0 });
    return done;
  }
  // PUBLISH QoS 0 (MQTT 5): topic, no properties, payload.
  const topic = Buffer.from('wsbridge/refusals');
  const rest = 2 + topic.length + 1 + big.length;
  const len = [];
  for (let n = rest; ; ) {
    const b = n % 128;
    n = Math.floor(n / 128);
    len.push(n > 0 ? b | 0x80 : b);
    if (n === 0) break;
  }
  const packet = Buffer.concat([Buffer.from([0x30, ...len, topic.length >> 8, topic.length & 0xff]), topic, Buffer.from([0]), big]);
  fragmentSends(ws);
  ws.send(packet);
  return done;
}

async function amqp() {
  const client = new AMQPWebSocketClient(base + '/amqp', '/', 'placeholder', 'placeholder');
  client.onerror = (e) => { if (e.message.startsWith('connection closed:')) error ||= e.message; };
  const conn = await client.connect();
  const ch = await conn.channel();
  const ws = client.socket;
  const done = closed(ws);
  fragmentSends(ws);
  ch.basicPublish('', 'wsbridge-refusals', big).catch(() => {});
  return done;
}

try {
  const run = { stomp, mqtt: mqttjs, amqp }[proto];
  if (!run || !['one', 'fragments', 'client'].includes(mode)) fail('usage: node refusals.mjs BASE_WS_URL stomp|mqtt|amqp one|fragments|client');
  const { code, reason } = await run();
  // The protocol's error arrives before the close; give its handler the
  // turn of the event loop it may still need.
  await new Promise((r) => setImmediate(r));
  console.log(JSON.stringify({ proto, mode, port, error, close: code, reason }));
  process.exit(0);
} catch (e) {
  fail(e?.message || String(e));
}
