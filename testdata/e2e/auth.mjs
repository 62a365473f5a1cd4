// The browser clients against testdata/jwt.yaml, each with tokens minted by
// `wsbridge token`, allowed and refused on the real brokers:
//   node auth.mjs BASE_WS_URL READER_TOKEN WRITER_TOKEN
// stompjs: the token as passcode; a writer's SEND reaches a reader's
// SUBSCRIBE, a reader's SEND gets ERROR "access refused".
// mqtt.js (MQTT 5): the token as password; a SUBSCRIBE with one allowed and
// one refused filter gets [granted, 0x87]; a reader's QoS 1 PUBLISH gets
// 0x87; a writer's reaches the reader.
// amqp-client: the token as the PLAIN password; a writer's publish reaches
// a reader's queue bound to demo.<run>; a reader's publish closes its
// channel with 403.
// Prints "OK ..." and exits 0, or "FAIL reason" and exits 1.
import { Client } from '@stomp/stompjs';
import WebSocket from 'ws';
import mqtt from 'mqtt';
import { AMQPWebSocketClient } from '@cloudamqp/amqp-client';

globalThis.WebSocket = WebSocket;
const [base, reader, writer] = process.argv.slice(2);
const fail = (m) => { console.log('FAIL ' + m); process.exit(1); };
setTimeout(() => fail('timed out after 45s'), 45000).unref();
const run = `${Date.now()}`;
const timeout = (p, what) => Promise.race([p, new Promise((_, rej) => setTimeout(() => rej(new Error(what + ' timed out')), 10000))]);

function stompClient(token) {
  return new Promise((resolve, reject) => {
    const c = new Client({
      webSocketFactory: () => new WebSocket(base + '/stomp', ['v12.stomp']),
      connectHeaders: { login: 'ignored', passcode: token },
      reconnectDelay: 0,
    });
    c.onConnect = () => resolve(c);
    c.onStompError = (f) => reject(new Error(f.headers.message + ': ' + f.body));
    c.activate();
  });
}

async function stomp() {
  const dest = `/topic/demo.stomp${run}`;
  const r = await stompClient(reader);
  const subscribed = new Promise((resolve) => r.watchForReceipt('sub-1', resolve));
  const got = new Promise((resolve) => r.subscribe(dest, (m) => resolve(m.body), { receipt: 'sub-1' }));
  await timeout(subscribed, 'stomp SUBSCRIBE receipt');
  const w = await stompClient(writer);
  w.publish({ destination: dest, body: 'from writer' });
  if ((await timeout(got, 'stomp delivery')) !== 'from writer') fail('stomp: wrong body');
  const refused = new Promise((resolve) => { r.onStompError = (f) => resolve(f.headers.message); });
  r.publish({ destination: dest, body: 'sneaky' });
  const msg = await timeout(refused, 'stomp refusal');
  if (msg !== 'access refused') fail('stomp: reader SEND answered ' + msg);
  await w.deactivate();
  return 'stomp: writer->reader delivered, reader SEND refused';
}

function mqttClient(token) {
  return new Promise((resolve, reject) => {
    const c = mqtt.connect(base + '/mqtt', { protocolVersion: 5, username: 'ignored', password: token, reconnectPeriod: 0 });
    c.once('connect', () => resolve(c));
    c.once('error', reject);
  });
}

async function mqttjs() {
  const topic = `demo/mqtt${run}`;
  const r = await mqttClient(reader);
  // mqtt.js rejects a SUBACK holding any failure; the packet rides on the error.
  const codes = await r.subscribeAsync([topic, 'secret/#'], { qos: 1 }).then(
    (granted) => granted.map((g) => g.qos), (e) => e.packet?.granted ?? fail('mqtt: ' + e.message));
  if (codes[0] !== 1 || codes[1] !== 135) fail('mqtt: SUBACK codes ' + JSON.stringify(codes));
  const got = new Promise((resolve) => r.on('message', (t, m) => resolve(m.toString())));
  let refusedCode;
  try {
    await r.publishAsync(topic, 'sneaky', { qos: 1 });
  } catch (e) {
    refusedCode = e.code;
  }
  if (refusedCode !== 135) fail('mqtt: reader QoS 1 publish gave ' + refusedCode);
  const w = await mqttClient(writer);
  await w.publishAsync(topic, 'from writer', { qos: 1 });
  if ((await timeout(got, 'mqtt delivery')) !== 'from writer') fail('mqtt: wrong message first');
  await r.endAsync();
  await w.endAsync();
  return 'mqtt: SUBACK [1,0x87], reader PUBLISH 0x87, writer->reader delivered';
}

async function amqp() {
  const key = `demo.amqp${run}`;
  const rc = await new AMQPWebSocketClient(base + '/amqp', '/', 'ignored', reader).connect();
  const rch = await rc.channel();
  const q = await rch.queueDeclare('', { exclusive: true, autoDelete: true });
  await rch.queueBind(q.name, 'amq.topic', key);
  const got = new Promise((resolve) => rch.basicConsume(q.name, { noAck: true }, (m) => resolve(m.bodyToString())));
  const wc = await new AMQPWebSocketClient(base + '/amqp', '/', 'ignored', writer).connect();
  const wch = await wc.channel();
  await wch.confirmSelect();
  await wch.basicPublish('amq.topic', key, 'from writer');
  if ((await timeout(got, 'amqp delivery')) !== 'from writer') fail('amqp: wrong body');
  const bad = await rc.channel();
  let refusal = '';
  try {
    await bad.confirmSelect();
    await timeout(bad.basicPublish('amq.topic', key, 'sneaky'), 'amqp refusal');
  } catch (e) {
    refusal = e?.message || String(e);
  }
  if (!refusal.includes('ACCESS_REFUSED')) fail('amqp: reader publish gave ' + refusal);
  await wc.close();
  await rc.close();
  return 'amqp: writer->reader delivered, reader publish channel-closed 403';
}

try {
  const results = [await stomp(), await mqttjs(), await amqp()];
  console.log('OK ' + results.join('; '));
  process.exit(0);
} catch (e) {
  fail(e?.message || String(e));
}
