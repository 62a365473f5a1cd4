// Drives the demo page in headless Chromium through a running wsbridge:
//   node demo.mjs http://127.0.0.1:8080 SCREENSHOT.png
// Two pages load the demo; before any message each empty pane says what
// to do; one sends a chat message over STOMP; the other must show it in
// its chat log and its SSE panel must show it too. A third page at a
// phone's 390 px width must not scroll sideways. No request may fail (a
// favicon 404 included) and nothing may be logged as a console error.
// Prints "OK ..." and exits 0, or "FAIL reason" and exits 1.
import { chromium } from 'playwright-core';

const [base, shot] = process.argv.slice(2);
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--no-first-run', '--disable-sync', '--disable-quic'],
});
const problems = [];
function watch(page) {
  page.on('response', (r) => { if (r.status() >= 400) problems.push(`${r.status()} ${r.url()}`); });
  page.on('requestfailed', (r) => {
    // Closing the browser aborts the page's open SSE stream: not a fault.
    if (!r.url().includes('/sse/')) problems.push(`failed ${r.url()}: ${r.failure()?.errorText}`);
  });
  page.on('console', (m) => { if (m.type() === 'error') problems.push('console: ' + m.text()); });
  return page;
}
// The favicon is fetched after load and on no event the page exposes:
// wait for the request to finish, or find none was made.
async function settled(page) {
  await page.waitForLoadState('networkidle', { timeout: 5000 }).catch(() => {});
}
let code = 0;
try {
  const ctx = await browser.newContext();
  const alice = watch(await ctx.newPage());
  const bob = watch(await ctx.newPage());
  for (const p of [alice, bob]) {
    await p.goto(base + '/');
    await p.locator('#status', { hasText: 'connected' }).waitFor({ timeout: 10000 });
    await p.locator('#sse-status', { hasText: 'following' }).waitFor({ timeout: 10000 });
  }
  for (const id of ['#chat-log', '#sse-log']) {
    const hint = await bob.locator(id).innerText();
    if (!/send|publish/i.test(hint)) throw new Error(`empty ${id} says ${JSON.stringify(hint)}, not what to do`);
  }
  await alice.fill('#name', 'alice');
  const text = 'hello from alice ' + Date.now();
  await alice.fill('#text', text);
  await alice.click('#send');
  await bob.locator('#chat-log li', { hasText: text }).waitFor({ timeout: 10000 });
  await bob.locator('#sse-log li', { hasText: text }).waitFor({ timeout: 10000 });
  const line = await bob.locator('#chat-log li', { hasText: text }).innerText();
  if (!line.startsWith('alice: ')) throw new Error('chat line reads ' + JSON.stringify(line));
  for (const id of ['#chat-log', '#sse-log']) {
    const n = await bob.locator(id + ' li').count();
    if (n !== 1) throw new Error(`${id} holds ${n} lines after one message: the hint stayed`);
  }
  if (shot) await bob.screenshot({ path: shot, fullPage: true });

  const phone = watch(await (await browser.newContext({ viewport: { width: 390, height: 844 } })).newPage());
  await phone.goto(base + '/');
  await phone.locator('#status', { hasText: 'connected' }).waitFor({ timeout: 10000 });
  const w = await phone.evaluate(() => ({ scroll: document.documentElement.scrollWidth, inner: innerWidth }));
  if (w.scroll > w.inner) throw new Error(`at 390 px the page is ${w.scroll} px wide: it scrolls sideways`);
  if (shot) await phone.screenshot({ path: shot.replace(/\.png$/, '-390.png'), fullPage: true });
  for (const p of [alice, bob, phone]) await settled(p);
  if (problems.length) throw new Error(problems.join('; '));
  console.log(`OK chat and SSE panel show: ${line}; at 390 px scrollWidth=${w.scroll}`);
} catch (e) {
  console.log('FAIL ' + e.message.split('\n')[0]);
  code = 1;
} finally {
  await browser.close();
}
process.exit(code);
