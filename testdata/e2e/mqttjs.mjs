// Drives mqtt.js, the browser MQTT client, through wsbridge:
//   node mqttjs.mjs ws://127.0.0.1:8080/mqtt 4|5
// With placeholder credentials (the gateway replaces them) it subscribes and
// publishes at QoS 0, 1 and 2, checks a retained message and a last will,
// and with MQTT 5 user properties, message expiry and a topic alias.
// Prints "OK ..." and exits 0, or "FAIL reason" and exits 1.
import mqtt from 'mqtt';

const [url, v] = process.argv.slice(2);
const protocolVersion = Number(v);
const base = `wsbridge/mqttjs/v${v}/${Date.now()}`;
const fail = (m) => { console.log('FAIL ' + m); process.exit(1); };
setTimeout(() => fail('timed out after 30s'), 30000).unref();

const open = (id, extra = {}) => new Promise((resolve, reject) => {
  const c = mqtt.connect(url, { protocolVersion, clientId: id, username: 'placeholder', password: 'placeholder',
    reconnectPeriod: 0, connectTimeout: 10000, ...extra });
  c.once('connect', () => resolve(c));
  c.once('error', reject);
});

try {
  const sub = await open(`sub-${v}-${Date.now()}`);
  const got = [];
  const wanted = new Promise((resolve) => {
    sub.on('message', (topic, payload, packet) => {
      got.push({ topic, payload: payload.toString(), packet });
      if (got.length === 5) resolve();
    });
  });
  const granted = await sub.subscribeAsync(`${base}/#`, { qos: 2 });
  if (granted[0].qos !== 2) fail('granted ' + JSON.stringify(granted));

  const pub = await open(`pub-${v}-${Date.now()}`);
  const props = protocolVersion === 5 ? { properties: { userProperties: { k: 'v' }, messageExpiryInterval: 60 } } : {};
  for (const qos of [0, 1, 2]) await pub.publishAsync(`${base}/q${qos}`, `qos ${qos}`, { qos, ...props });
  if (protocolVersion === 5) {
    await pub.publishAsync(`${base}/alias`, 'first', { qos: 1, properties: { topicAlias: 1 } });
    await pub.publishAsync('', 'second via alias', { qos: 1, properties: { topicAlias: 1 } });
  } else {
    await pub.publishAsync(`${base}/alias`, 'first', { qos: 1 });
    await pub.publishAsync(`${base}/alias`, 'second via alias', { qos: 1 });
  }
  await wanted;
  const payloads = got.map((m) => m.payload).sort().join(',');
  if (payloads !== 'first,qos 0,qos 1,qos 2,second via alias') fail('got ' + payloads);
  if (protocolVersion === 5) {
    const q1 = got.find((m) => m.payload === 'qos 1');
    if (q1.packet.properties?.userProperties?.k !== 'v') fail('user property lost: ' + JSON.stringify(q1.packet.properties));
    const expiry = q1.packet.properties?.messageExpiryInterval;
    if (!(expiry > 0 && expiry <= 60)) fail('message expiry lost: ' + JSON.stringify(q1.packet.properties));
  }

  // Retained message for a later subscriber.
  await pub.publishAsync(`${base}/retained`, 'kept', { qos: 1, retain: true });
  const late = await open(`late-${v}-${Date.now()}`);
  const retained = new Promise((resolve) => late.on('message', (t, p, pk) => resolve({ p: p.toString(), retain: pk.retain })));
  await late.subscribeAsync(`${base}/retained`, { qos: 1 });
  const r = await retained;
  if (r.p !== 'kept' || !r.retain) fail('retained ' + JSON.stringify(r));
  await pub.publishAsync(`${base}/retained`, '', { qos: 1, retain: true });

  // Last will: a client that vanishes has its will published.
  const willGot = new Promise((resolve) => sub.on('message', (t, p) => { if (t === `${base}/will`) resolve(p.toString()); }));
  const dying = await open(`dying-${v}-${Date.now()}`, { will: { topic: `${base}/will`, payload: 'gone', qos: 1 } });
  dying.stream.destroy();
  if ((await willGot) !== 'gone') fail('will');

  // Persistent session: a QoS 1 message published while the client is away
  // is delivered when it comes back with clean: false.
  const sessionId = `persist-${v}-${Date.now()}`;
  const sessionOpts = protocolVersion === 5 ? { clean: false, properties: { sessionExpiryInterval: 300 } } : { clean: false };
  const away = await open(sessionId, sessionOpts);
  await away.subscribeAsync(`${base}/offline`, { qos: 1 });
  await away.endAsync();
  await pub.publishAsync(`${base}/offline`, 'while away', { qos: 1 });
  const queued = new Promise((resolve) => {
    const back = mqtt.connect(url, { protocolVersion, clientId: sessionId, reconnectPeriod: 0, ...sessionOpts });
    back.on('message', (t, p) => resolve({ back, p: p.toString() }));
    back.on('error', (e) => fail('persistent reconnect: ' + e.message));
  });
  const { back, p: offline } = await queued;
  if (offline !== 'while away') fail('persistent session delivered ' + offline);
  await back.endAsync();
  // Mosquitto keeps a session after its client leaves (a 3.1.1 one for
  // good): a clean connect under the same id ends it, leaving none behind.
  await (await open(sessionId)).endAsync();

  // Keepalive: PINGREQ/PINGRESP through the gateway keep an idle client up.
  const idle = await open(`idle-${v}-${Date.now()}`, { keepalive: 1 });
  let pongs = 0;
  idle.on('packetreceive', (pk) => { if (pk.cmd === 'pingresp') pongs++; });
  await new Promise((r) => setTimeout(r, 2500));
  if (pongs < 1 || !idle.connected) fail(`keepalive: ${pongs} PINGRESP, connected=${idle.connected}`);
  await idle.endAsync();

  console.log(`OK v${v}: qos 0/1/2, ${protocolVersion === 5 ? 'user properties, message expiry, topic alias, ' : ''}retained, will, persistent session, keepalive`);
  for (const c of [sub, pub, late]) await c.endAsync();
  process.exit(0);
} catch (e) {
  fail(e.message);
}
