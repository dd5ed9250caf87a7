// (d) Chromium's own WebSocket against the broker: over wss:// to the TLS
// port and over ws://, permessage-deflate negotiated both ways (the
// extension string the browser reports is asserted), a pub/sub round trip
// with a message large enough to be compressed. (e) The demo page served
// over https:// from the TLS port connects with wss:// and works.
// The certificate is made by the openssl command for this file; Chromium
// accepts exactly its key (--ignore-certificate-errors-spki-list).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, launchBrowser, removeCerts, watchErrors } from './harness.js';

let broker;
let browser;

before(async () => {
  broker = await startBroker([], { tls: true });
  browser = await launchBrowser({ trustTestCert: true });
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await broker.stop();
  await removeCerts();
});

/**
 * In a page of `origin`: open a native WebSocket to `url`, subscribe, publish
 * `data` on another socket, and return what the browser saw.
 */
async function nativeRoundTrip(page, url, data) {
  return page.evaluate(
    async ({ url, data }) => {
      const open = (u) =>
        new Promise((resolve, reject) => {
          const ws = new WebSocket(u);
          const inbox = [];
          const waiters = [];
          ws.onmessage = (ev) => {
            inbox.push(JSON.parse(ev.data));
            while (waiters.length) waiters.shift()();
          };
          ws.next = async (pred) => {
            const deadline = Date.now() + 10000;
            for (;;) {
              const i = inbox.findIndex(pred);
              if (i >= 0) return inbox.splice(i, 1)[0];
              if (Date.now() > deadline) throw new Error(`timed out on ${u}`);
              await new Promise((r) => {
                waiters.push(r);
                setTimeout(r, 200);
              });
            }
          };
          ws.onopen = () => resolve(ws);
          ws.onerror = () => reject(new Error(`cannot open ${u}`));
        });
      const sub = await open(url);
      const pub = await open(url);
      const hello = await sub.next((m) => m.op === 'hello');
      await pub.next((m) => m.op === 'hello');
      sub.send(JSON.stringify({ op: 'subscribe', topic: 'native.t', id: 1 }));
      await sub.next((m) => m.op === 'ack' && m.id === 1);
      pub.send(JSON.stringify({ op: 'publish', topic: 'native.t', data, id: 2 }));
      const ack = await pub.next((m) => m.op === 'ack' && m.id === 2);
      const msg = await sub.next((m) => m.op === 'message');
      const out = {
        subExtensions: sub.extensions,
        pubExtensions: pub.extensions,
        protocol: sub.protocol,
        hello,
        ackSeq: ack.seq,
        msg,
      };
      sub.close();
      pub.close();
      return out;
    },
    { url, data },
  );
}

// A message the broker compresses: well over --deflate-min-size (128).
const big = { text: 'compress me '.repeat(2000), n: [1, 2, 3] };

test('native WebSocket over wss:// negotiates permessage-deflate and round-trips', async () => {
  const page = await browser.context.newPage();
  await page.goto(`${broker.httpsUrl}/healthz`); // a page of the TLS origin
  const r = await nativeRoundTrip(page, broker.wssUrl, big);
  assert.match(r.subExtensions, /^permessage-deflate(;|$)/, `wss extensions: "${r.subExtensions}"`);
  assert.match(r.pubExtensions, /^permessage-deflate(;|$)/);
  assert.equal(r.hello.op, 'hello');
  assert.equal(r.ackSeq, 1);
  assert.deepEqual(r.msg, { op: 'message', topic: 'native.t', seq: 1, data: big });
  await page.close();
});

test('native WebSocket over ws:// negotiates permessage-deflate and round-trips', async () => {
  const page = await browser.context.newPage();
  await page.goto(`${broker.url}/healthz`);
  const r = await nativeRoundTrip(page, broker.wsUrl, big);
  assert.match(r.subExtensions, /^permessage-deflate(;|$)/, `ws extensions: "${r.subExtensions}"`);
  assert.deepEqual(r.msg, { op: 'message', topic: 'native.t', seq: 2, data: big });
  await page.close();
});

test('the demo page served over https:// from the TLS port works over wss://', { timeout: 60000 }, async () => {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const errors = watchErrors(page);
  const sockets = [];
  page.on('websocket', (ws) => sockets.push(ws.url()));
  await page.goto(`${broker.httpsUrl}/`);
  await page.locator('#status[data-state="open"]').waitFor();
  await page.fill('#nick', 'tess');
  await page.fill('#room', 'secure');
  await page.click('#join');
  await page.locator('#messages li.join', { hasText: 'tess joined' }).waitFor();
  await page.fill('#text', 'hello over TLS');
  await page.press('#text', 'Enter');
  await page.locator('#messages li.msg.mine', { hasText: 'hello over TLS' }).waitFor();
  assert.ok(sockets.length >= 1 && sockets.every((u) => u.startsWith(`wss://127.0.0.1:${broker.tlsPort}/ws`)), sockets.join(' '));
  assert.equal(await page.evaluate(() => location.protocol), 'https:');
  assert.deepEqual(errors, []);
  await ctx.close();
});
