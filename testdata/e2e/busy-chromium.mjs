// Headless Chromium against a gateway whose limits refuse it for load:
//   node busy-chromium.mjs http://127.0.0.1:8080
// From a page of the gateway's own origin, opens 4 EventSources on
// /sse/crowd at once (the handshake rate refuses some: each must come back
// by itself after its busy stream's retry, and receive a published
// message), then, with the address at its connection limit or out of
// handshakes, a STOMP WebSocket: the page must see close 1013 with a retry
// hint, not 1006.
// Prints "OK streams=4 busy=K ws=1013 ..." and exits 0, or "FAIL reason"
// and exits 1.
import { chromium } from 'playwright-core';

const [base] = process.argv.slice(2);
setTimeout(() => {
  console.log('FAIL timed out after 60s');
  process.exit(1);
}, 60000).unref();
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
});
let code = 0;
try {
  const page = await (await browser.newContext()).newPage();
  await page.goto(base + '/healthz'); // the gateway's origin; exempt from the rate
  const result = await page.evaluate(async () => {
    const n = 4; // Chromium keeps 6 HTTP/1.1 connections per host: streams and a publish fit
    let busy = 0;
    const inside = new Set();
    const sources = [];
    const streams = new Promise((resolve, reject) => {
      for (let i = 0; i < n; i++) {
        const es = new EventSource('/sse/crowd');
        es.addEventListener('busy', () => busy++);
        es.onmessage = () => {
          inside.add(i);
          if (inside.size === n) resolve();
        };
        es.onerror = () => {
          if (es.readyState === EventSource.CLOSED) reject(new Error(`stream ${i} gave up`));
        };
        sources.push(es);
      }
    });
    let done = false;
    streams.finally(() => { done = true; });
    while (!done) {
      await fetch('/publish/crowd', { method: 'POST', body: 'ping' });
      await Promise.race([streams.catch(() => {}), new Promise((ok) => setTimeout(ok, 250))]);
    }
    await streams;
    const ws = await new Promise((resolve) => {
      const s = new WebSocket(location.origin.replace('http', 'ws') + '/stomp', ['v12.stomp']);
      s.onclose = (e) => resolve({ code: e.code, reason: e.reason });
    });
    sources.forEach((es) => es.close());
    return { n, busy, ws };
  });
  if (result.busy < 1) throw new Error('no stream was refused: the test proves nothing');
  if (result.ws.code !== 1013 || !/; retry in [0-9.]+s$/.test(result.ws.reason)) {
    throw new Error(`WebSocket closed with ${result.ws.code} ${result.ws.reason}`);
  }
  console.log(`OK streams=${result.n} busy=${result.busy} ws=${result.ws.code} reason=${result.ws.reason}`);
} catch (e) {
  console.log('FAIL ' + e.message.split('\n')[0]);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
