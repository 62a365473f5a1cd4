// The reconnect patterns of docs/clients.md, run against a gateway that is
// stopped and started again under them:
//   node reconnect.mjs ws://127.0.0.1:PORT NONCE
// @stomp/stompjs (/stomp), mqtt.js (/mqtt) and @cloudamqp/amqp-client's
// AMQPSession (/amqp) each subscribe and get a message of their own; then
// "READY" is printed and the caller restarts the gateway. Each client must
// reconnect by itself, have its subscription back (stompjs: resubscribing in
// onConnect; mqtt.js: its persistent session; AMQPSession: consumer recovery
// on a named queue) and get a message published after the reconnect.
// Prints "OK ..." and exits 0, or "FAIL reason" and exits 1.
import WebSocket from 'ws';
import { Client, ReconnectionTimeMode } from '@stomp/stompjs';
import mqtt from 'mqtt';
import { AMQPSession } from '@cloudamqp/amqp-client';

globalThis.WebSocket ??= WebSocket; // Node 20 has no global WebSocket

const [base, nonce] = process.argv.slice(2);
const fail = (msg) => {
  console.log('FAIL ' + msg);
  process.exit(1);
};
setTimeout(() => fail('timed out after 90s: ' + JSON.stringify(state)), 90000).unref();

// Per client: connects seen, and the phase whose message arrived.
const state = { stomp: { connects: 0, got: 0 }, mqtt: { connects: 0, got: 0 }, amqp: { connects: 0, got: 0 } };
let readyPrinted = false;
function progress() {
  const all = Object.values(state);
  // The first AMQP publish must be confirmed too: the restart would fail it.
  if (!readyPrinted && all.every((s) => s.got >= 1) && state.amqp.confirmed) {
    readyPrinted = true;
    console.log('READY');
  }
  if (all.every((s) => s.got >= 2)) {
    const c = Object.entries(state).map(([k, s]) => `${k}=${s.connects}`).join(' ');
    console.log(`OK every client reconnected and resubscribed; connects: ${c}`);
    process.exit(0);
  }
}
// Phase 1 before the restart, phase 2 after a reconnect.
const phase = (s) => (s.connects >= 2 ? 2 : 1);

// @stomp/stompjs: subscriptions do not survive a reconnect; onConnect makes them.
const topic = `/topic/reconnect.${nonce}`;
const stomp = new Client({
  webSocketFactory: () => new WebSocket(base + '/stomp', ['v12.stomp']),
  reconnectDelay: 200,
  reconnectTimeMode: ReconnectionTimeMode.EXPONENTIAL,
  maxReconnectDelay: 2000,
  heartbeatIncoming: 10000,
  heartbeatOutgoing: 10000,
  debug: () => {},
  onConnect: () => {
    const s = state.stomp;
    s.connects++;
    const want = `stomp-${phase(s)}`;
    stomp.subscribe(topic, (m) => {
      if (m.body === want && s.got < phase(s)) {
        s.got = phase(s);
        progress();
      }
    }, { receipt: 'sub' + s.connects });
    stomp.watchForReceipt('sub' + s.connects, () => stomp.publish({ destination: topic, body: want }));
  },
  // A restart ends sessions with ERROR "server shutting down", then close 1001.
  onStompError: (f) => { if (!/shutting down/.test(f.headers.message)) fail('stompjs ERROR: ' + f.headers.message); },
});
stomp.activate();

// mqtt.js: a persistent session (clean: false, a stable client id) keeps the
// subscription on the broker; resubscribe covers a broker that lost it.
const mq = mqtt.connect(base + '/mqtt', {
  protocolVersion: 5,
  clientId: `reconnect-${nonce}`,
  clean: false,
  properties: { sessionExpiryInterval: 60 },
  reconnectPeriod: 200,
  connectTimeout: 10000,
});
const mqTopic = `reconnect/${nonce}`;
mq.on('connect', (connack) => {
  const s = state.mqtt;
  s.connects++;
  const publish = () => mq.publish(mqTopic, `mqtt-${phase(s)}`, { qos: 1 });
  if (connack.sessionPresent) publish();
  else mq.subscribe(mqTopic, { qos: 1 }, (err) => (err ? fail('mqtt subscribe: ' + err.message) : publish()));
});
mq.on('message', (_, payload) => {
  const s = state.mqtt;
  if (payload.toString() === `mqtt-${phase(s)}` && s.got < phase(s)) {
    s.got = phase(s);
    progress();
  }
});
// Refused connections while the gateway is down come here too; mqtt.js
// goes on reconnecting. A refusal at CONNACK would stop it.
mq.on('error', (err) => { if (typeof err.code === 'number') fail('mqtt CONNACK: ' + err.message); });

// AMQPSession: consumers come back by themselves on a named queue, which
// keeps its messages and bindings while the client is away.
const amqp = state.amqp;
const session = await AMQPSession.connect(base + '/amqp', {
  reconnectInterval: 200,
  maxReconnectInterval: 2000,
  backoffMultiplier: 2,
  maxRetries: 0,
  // On the first connect and after each reconnect, once consumers are back.
  onconnect: () => {
    amqp.connects++;
    if (amqp.connects > 1) q.publish(`amqp-${phase(amqp)}`).catch((e) => fail('amqp publish after reconnect: ' + e.message));
  },
});
const q = await session.queue(`wsbridge-reconnect-${nonce}`, { arguments: { 'x-expires': 60000 } });
await q.subscribe({ prefetch: 10 }, (msg) => {
  if (msg.bodyString() === `amqp-${phase(amqp)}` && amqp.got < phase(amqp)) {
    amqp.got = phase(amqp);
    progress();
  }
});
await q.publish('amqp-1');
amqp.confirmed = true;
progress();
