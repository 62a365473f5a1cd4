// Drives the demo page in headless Chromium through a running wsbridge:
//   node demo.mjs http://127.0.0.1:8080 SCREENSHOT.png
// Two pages load the demo; one sends a chat message over STOMP; the other
// must show it in its chat log and its SSE panel must show it too. Prints
// "OK ..." and exits 0, or "FAIL reason" and exits 1.
import { chromium } from 'playwright-core';

const [base, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
});
let code = 0;
try {
  const ctx = await browser.newContext();
  const alice = await ctx.newPage();
  const bob = await ctx.newPage();
  for (const p of [alice, bob]) {
    await p.goto(base + '/');
    await p.locator('#status', { hasText: 'connected' }).waitFor({ timeout: 10000 });
    await p.locator('#sse-status', { hasText: 'following' }).waitFor({ timeout: 10000 });
  }
  await alice.fill('#name', 'alice');
  const text = 'hello from alice ' + Date.now();
  await alice.fill('#text', text);
  await alice.click('#send');
  await bob.locator('#chat-log li', { hasText: text }).waitFor({ timeout: 10000 });
  await bob.locator('#sse-log li', { hasText: text }).waitFor({ timeout: 10000 });
  const line = await bob.locator('#chat-log li', { hasText: text }).innerText();
  if (!line.startsWith('alice: ')) throw new Error('chat line reads ' + JSON.stringify(line));
  if (shot) await bob.screenshot({ path: shot, fullPage: true });
  console.log('OK chat and SSE panel show: ' + line);
} catch (e) {
  console.log('FAIL ' + e.message.split('\n')[0]);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
