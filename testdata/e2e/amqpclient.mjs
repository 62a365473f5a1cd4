// Drives @cloudamqp/amqp-client's AMQPWebSocketClient, the browser AMQP
// 0-9-1 client, through wsbridge:
//   node amqpclient.mjs ws://127.0.0.1:8080/amqp
// With placeholder credentials (the gateway injects its own) it declares an
// exchange and a queue, publishes with properties and headers under
// publisher confirms, gets, rejects and consumes with manual acks and a
// prefetch, then closes. Prints "OK ..." and exits 0, or "FAIL reason".
import { WebSocket } from 'ws';
import { AMQPWebSocketClient } from '@cloudamqp/amqp-client';

globalThis.WebSocket = WebSocket; // Node 20 has no global WebSocket
const [url] = process.argv.slice(2);
const fail = (m) => { console.log('FAIL ' + m); process.exit(1); };
setTimeout(() => fail('timed out after 30s'), 30000).unref();

try {
  const client = new AMQPWebSocketClient(url, '/', 'placeholder', 'placeholder');
  const conn = await client.connect();
  const ch = await conn.channel();
  const ex = `wsbridge-e2e-${Date.now()}`;
  await ch.exchangeDeclare(ex, 'topic', { autoDelete: true });
  const q = await ch.queueDeclare('', { exclusive: true, autoDelete: true }, { 'x-max-length': 100 });
  await ch.queueBind(q.name, ex, 'prices.*');
  await ch.confirmSelect();
  await ch.prefetch(10);
  const big = 'x'.repeat(20000); // more than one 4 KiB frame
  for (const [i, body] of ['one', 'two', big].entries()) {
    await ch.basicPublish(ex, 'prices.eur', body, { contentType: 'text/plain', headers: { n: i } });
  }
  const got = await ch.basicGet(q.name, { noAck: false });
  if (got.bodyToString() !== 'one' || got.properties.headers.n !== 0) fail('basic.get ' + got.bodyToString());
  await got.reject(true);
  const seen = new Set();
  await new Promise((resolve) => {
    ch.basicConsume(q.name, { noAck: false }, async (msg) => {
      if (msg.properties.contentType !== 'text/plain') fail('content type ' + msg.properties.contentType);
      seen.add(msg.bodyToString().slice(0, 3));
      await msg.ack();
      if (seen.size === 3) resolve();
    });
  });
  await conn.close();
  console.log(`OK published 3 (one of ${big.length} bytes) with confirms; get, reject, consume with acks`);
  process.exit(0);
} catch (e) {
  fail(e?.message || String(e));
}
