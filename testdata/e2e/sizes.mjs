// Round-trips large application messages (1 MiB by default) through the
// real browser clients and compares what arrives byte for byte (SHA-256):
//   node sizes.mjs stomp URL DESTINATION [N] [LOGIN PASSCODE]
//   node sizes.mjs mqtt  URL 4|5 [N]
//   node sizes.mjs amqp  URL [N]                  (AMQPWebSocketClient)
//   node sizes.mjs amqp-tcp HOST PORT USER PASSWORD [N]  (AMQPClient, for comparison)
//   node sizes.mjs sse   BASE_HTTP_URL TOPIC [N]   (POST /publish, follow /sse)
// Each subscribes, then publishes N messages one at a time, each after the
// previous one came back. SIZE (env, bytes) changes the size; BODY=text
// makes STOMP carry text. STOMP, MQTT
// and AMQP carry random bytes; SSE carries UTF-8 text with line breaks and
// multi-byte characters (a body that is not UTF-8 would come base64 as
// event "binary"). Prints "OK mode bytes=.. n=.. sha256=.. ms_per_round_trip=.."
// and exits 0, or "FAIL reason" and exits 1.
import { createHash, randomBytes } from 'node:crypto';
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import mqtt from 'mqtt';
import { AMQPWebSocketClient, AMQPClient } from '@cloudamqp/amqp-client';

globalThis.WebSocket = WebSocket; // Node 20 has no global WebSocket
const [mode, ...args] = process.argv.slice(2);
const size = Number(process.env.SIZE || 1 << 20);
const fail = (m) => { console.log('FAIL ' + m); process.exit(1); };
const deadline = Number(process.env.DEADLINE_MS || 60000);
setTimeout(() => fail(`timed out after ${deadline} ms`), deadline).unref();
const sha = (b) => createHash('sha256').update(b).digest('hex');

// roundTrips publishes n fresh payloads, each once the previous one has
// arrived, and checks every arrival against what was sent.
async function roundTrips(n, payload, send, next) {
  let ms = 0;
  let last = '';
  for (let i = 0; i < n; i++) {
    const p = payload(i);
    const want = sha(p);
    const t0 = performance.now();
    const arrived = next();
    await send(p);
    const got = await arrived;
    ms += performance.now() - t0;
    if (got.length !== p.length) fail(`message ${i}: ${got.length} bytes arrived, ${p.length} sent`);
    last = sha(got);
    if (last !== want) fail(`message ${i}: sha256 ${last} arrived, ${want} sent`);
  }
  return `bytes=${size} n=${n} sha256=${last} ms_per_round_trip=${(ms / n).toFixed(1)}`;
}

// queue turns callbacks into awaited arrivals, in order.
function queue() {
  const items = [];
  const waiters = [];
  return {
    push(v) { const w = waiters.shift(); if (w) w(v); else items.push(v); },
    next() { return items.length ? Promise.resolve(items.shift()) : new Promise((r) => waiters.push(r)); },
  };
}

// text is `size` bytes of UTF-8: words, line breaks (LF only: SSE reads
// CR as a line end and would not give it back) and characters of two,
// three and four bytes.
function text(seed) {
  const words = ['alpha', 'beta', 'gamma', 'δέλτα', '€uro', 'emoji😀', 'x', ''];
  const r = randomBytes(size);
  const parts = [`message ${seed}\n`];
  let len = Buffer.byteLength(parts[0]);
  for (let i = 0; len < size - 16; i++) {
    const w = words[r[i] % words.length] + (r[i] & 0x80 ? '\n' : ' ');
    parts.push(w);
    len += Buffer.byteLength(w);
  }
  parts.push('z'.repeat(size - len));
  const b = Buffer.from(parts.join(''));
  if (b.length !== size) fail(`built ${b.length} bytes of text`);
  return b;
}

async function stomp([url, dest, n = 1, login = 'placeholder', passcode = 'placeholder']) {
  const c = new Client({
    webSocketFactory: () => new WebSocket(url, ['v12.stomp', 'v11.stomp', 'v10.stomp']),
    connectHeaders: { login, passcode },
    reconnectDelay: 0,
    debug: () => {},
  });
  c.onStompError = (f) => fail('ERROR frame: ' + f.headers.message + ' ' + f.body);
  c.onWebSocketClose = (e) => fail('WebSocket closed with ' + e.code + ' ' + e.reason);
  const connected = new Promise((resolve) => { c.onConnect = resolve; });
  c.activate();
  await connected;
  const q = queue();
  const subscribed = new Promise((resolve) => c.watchForReceipt('sub', resolve));
  c.subscribe(dest, (m) => q.push(Buffer.from(m.binaryBody)), { receipt: 'sub' });
  await subscribed;
  // BODY=text sends UTF-8 text: Web-STOMP's default text frames cannot
  // carry other bytes, so a comparison with it sends text to both.
  const body = process.env.BODY === 'text' ? text : () => randomBytes(size);
  const out = await roundTrips(Number(n), body,
    (p) => c.publish({ destination: dest, binaryBody: p, headers: { 'content-type': 'application/octet-stream' } }),
    q.next);
  c.onWebSocketClose = () => {};
  await c.deactivate();
  return out;
}

async function mqttjs([url, v, n = 1]) {
  const c = mqtt.connect(url, { protocolVersion: Number(v), username: 'placeholder', password: 'placeholder',
    reconnectPeriod: 0, connectTimeout: 10000 });
  await new Promise((resolve, reject) => { c.once('connect', resolve); c.once('error', reject); });
  c.on('error', (e) => fail('mqtt: ' + e.message));
  c.on('close', () => fail('mqtt: connection closed'));
  const topic = `wsbridge/sizes/v${v}/${Date.now()}`;
  const q = queue();
  c.on('message', (_t, payload) => q.push(payload));
  await c.subscribeAsync(topic, { qos: 1 });
  const out = await roundTrips(Number(n), () => randomBytes(size), (p) => c.publishAsync(topic, p, { qos: 1 }), q.next);
  c.removeAllListeners('close');
  await c.endAsync();
  return out;
}

async function amqp(conn, n) {
  const ch = await conn.channel();
  const q = await ch.queueDeclare('', { exclusive: true, autoDelete: true });
  const arrivals = queue();
  await ch.basicConsume(q.name, { noAck: true }, (msg) => arrivals.push(Buffer.from(msg.body)));
  await ch.confirmSelect();
  const out = await roundTrips(Number(n), () => randomBytes(size), (p) => ch.basicPublish('', q.name, p), arrivals.next);
  await conn.close();
  return out;
}

async function sse([base, topic, n = 1]) {
  const ctl = new AbortController();
  const res = await fetch(`${base}/sse/${topic}`, { headers: { Accept: 'text/event-stream' }, signal: ctl.signal });
  if (res.status !== 200) fail(`sse: status ${res.status}`);
  const events = queue();
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  // The stream's first bytes (retry:) come once its subscription is live.
  let buf = '';
  const first = await reader.read();
  buf += first.value || '';
  (async () => {
    // EventSource's parsing: lines end at CRLF, LF or CR; data lines join
    // with LF; an empty line dispatches; event "binary" carries base64.
    let data = [];
    let type = 'message';
    for (;;) {
      let m;
      while ((m = /\r\n|\n|\r/.exec(buf)) && !(m[0] === '\r' && m.index === buf.length - 1)) {
        const line = buf.slice(0, m.index);
        buf = buf.slice(m.index + m[0].length);
        if (line === '') {
          if (data.length) {
            const d = data.join('\n');
            events.push(type === 'binary' ? Buffer.from(d, 'base64') : Buffer.from(d));
          }
          data = [];
          type = 'message';
          continue;
        }
        const colon = line.indexOf(':');
        const field = colon < 0 ? line : line.slice(0, colon);
        let value = colon < 0 ? '' : line.slice(colon + 1);
        if (value.startsWith(' ')) value = value.slice(1);
        if (field === 'data') data.push(value);
        else if (field === 'event') type = value;
      }
      const { value, done } = await reader.read();
      if (done) return;
      buf += value;
    }
  })().catch((e) => { if (!ctl.signal.aborted) fail('sse: ' + e.message); });
  const out = await roundTrips(Number(n), text, async (p) => {
    const r = await fetch(`${base}/publish/${topic}`, { method: 'POST', body: p, headers: { 'Content-Type': 'text/plain; charset=utf-8' } });
    if (r.status !== 202) fail(`publish: status ${r.status} ${await r.text()}`);
  }, events.next);
  ctl.abort();
  return out;
}

try {
  let out;
  switch (mode) {
    case 'stomp': out = await stomp(args); break;
    case 'mqtt': out = await mqttjs(args); break;
    case 'amqp':
      out = await amqp(await new AMQPWebSocketClient(args[0], '/', 'placeholder', 'placeholder').connect(), args[1] || 1);
      break;
    case 'amqp-tcp':
      out = await amqp(await new AMQPClient(`amqp://${args[2]}:${args[3]}@${args[0]}:${args[1]}`).connect(), args[4] || 1);
      break;
    case 'sse': out = await sse(args); break;
    default: fail('unknown mode ' + mode);
  }
  console.log(`OK ${mode} ${out}`);
  process.exit(0);
} catch (e) {
  fail(e?.message || String(e));
}
