#!/usr/bin/env node
// ws_client.js - wsbroker driven by the npm "ws" client (pinned in
// package.json). Prints one "ok - ..." or "not ok - ..." line per check
// (run.sh numbers them into TAP) and exits 1 if any check failed.
//
//   node ws_client.js --url ws://127.0.0.1:P --deflate on|off \
//        --expect-ext 'permessage-deflate; ...'|none [--ca FILE] \
//        [--min-size N] [--label TEXT] [--token T | --bearer T] \
//        [--expect-status N] [--topic NAME] [--no-echo-test]
//
// With --expect-status the handshake must be refused with that HTTP status
// and nothing else is checked.
'use strict';

const fs = require('fs');
const WebSocket = require('ws');

const opt = { deflate: 'on', 'min-size': '128', label: 'ws', topic: 'interop.ws' };
for (let i = 2; i < process.argv.length; i += 2) {
  const k = process.argv[i].replace(/^--/, '');
  if (k === 'no-echo-test') { opt[k] = true; i--; continue; }
  opt[k] = process.argv[i + 1];
}
const minSize = Number(opt['min-size']);
const deflate = opt.deflate === 'on';
const expectExt = opt['expect-ext'] || 'none';
let failures = 0;

function check(cond, what, detail) {
  console.log(`${cond ? 'ok' : 'not ok'} - ${opt.label}: ${what}`);
  if (!cond) {
    failures++;
    if (detail !== undefined) console.log(`# ${String(detail).split('\n').join('\n# ')}`);
  }
  return cond;
}

function connect(path) {
  const options = { perMessageDeflate: deflate, handshakeTimeout: 5000, headers: {} };
  if (opt.ca) options.ca = fs.readFileSync(opt.ca);
  if (opt.bearer) options.headers.Authorization = `Bearer ${opt.bearer}`;
  let url = opt.url + path;
  if (opt.token) url += `?token=${encodeURIComponent(opt.token)}`;
  const ws = new WebSocket(url, options);
  const conn = { ws, ext: undefined, queue: [], waiters: [], inflated: 0, deflated: 0, status: 0 };
  ws.on('upgrade', (res) => { conn.ext = res.headers['sec-websocket-extensions']; });

  ws.on('message', (data, isBinary) => {
    // decompress() runs once per compressed frame before its message is
    // emitted, and the receiver waits for it: a rise since the last
    // message means this one arrived compressed.
    const m = { data, isBinary, compressed: conn.inflated > (conn.seen || 0) };
    conn.seen = conn.inflated;
    const w = conn.waiters.shift();
    if (w) w(m); else conn.queue.push(m);
  });
  return new Promise((resolve, reject) => {
    ws.once('open', () => {
      const pmd = ws._extensions['permessage-deflate'];
      if (pmd) {
        const decompress = pmd.decompress.bind(pmd);
        pmd.decompress = (data, fin, cb) => { conn.inflated++; decompress(data, fin, cb); };
        const compress = pmd.compress.bind(pmd);
        pmd.compress = (data, fin, cb) => { conn.deflated++; compress(data, fin, cb); };
      }
      resolve(conn);
    });
    ws.once('error', (err) => { err.conn = conn; reject(err); });
    ws.once('unexpected-response', (req, res) => {
      conn.status = res.statusCode;
      req.destroy();
      const err = new Error(`handshake answered ${res.statusCode}`);
      err.conn = conn;
      reject(err);
    });
  });
}

function next(conn, ms = 5000) {
  if (conn.queue.length) return Promise.resolve(conn.queue.shift());
  return new Promise((resolve, reject) => {
    const t = setTimeout(() => reject(new Error('timed out waiting for a message')), ms);
    conn.waiters.push((m) => { clearTimeout(t); resolve(m); });
  });
}

function send(conn, data, binary) {
  return new Promise((resolve, reject) => {
    conn.ws.send(data, { binary, compress: true }, (err) => (err ? reject(err) : resolve()));
  });
}

function close(conn) {
  return new Promise((resolve) => {
    if (conn.ws.readyState === WebSocket.CLOSED) return resolve({ code: 1006 });
    conn.ws.once('close', (code) => resolve({ code }));
    conn.ws.close(1000, 'done');
  });
}

const agreed = expectExt !== 'none';

// Wait for the ack of request id and the message on topic, in any order.
async function roundTrip(conn, topic, id) {
  let ack = null, msg = null;
  while (!ack || !msg) {
    const m = await next(conn);
    const text = m.data.toString('utf8');
    const j = JSON.parse(text);
    if (j.op === 'ack' && j.id === id) ack = j;
    else if (j.op === 'message' && j.topic === topic) msg = { j, text, compressed: m.compressed };
    else if (j.op === 'error') throw new Error(`broker error: ${text}`);
  }
  return { ack, msg };
}

async function pubsub() {
  const conn = await connect('/ws');
  check(expectExt === 'none' ? conn.ext === undefined : conn.ext === expectExt,
    `extension agreed on /ws is ${expectExt}`, `got: ${conn.ext}`);
  const hello = JSON.parse((await next(conn)).data.toString());
  check(hello.op === 'hello' && typeof hello.client === 'string', 'hello first', JSON.stringify(hello));
  const topic = `${opt.topic}.${process.pid}`;
  await send(conn, JSON.stringify({ op: 'subscribe', topic: `${topic}.*`, id: 1 }));
  const sack = JSON.parse((await next(conn)).data.toString());
  check(sack.op === 'ack' && sack.id === 1, 'subscribe acked', JSON.stringify(sack));

  // small: below --deflate-min-size, sent as it is
  const small = '{"text":"h\u00e9llo","n":[1,2,3]}';
  await send(conn, `{"op":"publish","topic":"${topic}.a","data":${small},"id":2}`);
  let r = await roundTrip(conn, `${topic}.a`, 2);
  check(r.ack.topic === `${topic}.a` && r.ack.seq === 1, 'publish acked with topic and seq 1',
    JSON.stringify(r.ack));
  check(r.msg.j.seq === 1 && r.msg.text === `{"op":"message","topic":"${topic}.a","seq":1,"data":${small}}` && r.msg.text.endsWith(`"data":${small}}`),
    'message carries the exact data', r.msg.text);
  const smallLen = Buffer.byteLength(r.msg.text);
  check(r.msg.compressed === (agreed && smallLen >= minSize),
    `small message (${smallLen} bytes) compressed: ${agreed && smallLen >= minSize}`);

  // big: well above --deflate-min-size and ws's own 1 KiB threshold
  const words = [];
  for (let i = 0; i < 600; i++) words.push(`word${i % 37}`);
  const big = JSON.stringify({ text: words.join(' '), list: words.slice(0, 200) });
  const before = conn.deflated;
  await send(conn, `{"op":"publish","topic":"${topic}.b","data":${big},"id":3}`);
  check(conn.deflated > before === agreed, `big publish (${big.length} bytes) sent compressed: ${agreed}`);
  r = await roundTrip(conn, `${topic}.b`, 3);
  check(r.ack.seq === 1 && r.msg.j.seq === 1 && r.msg.text.endsWith(`"data":${big}}`),
    'big message carries the exact data', r.msg.text.slice(0, 200));
  check(r.msg.compressed === agreed, `big message arrived compressed: ${agreed}`);

  // many in a row: order and exact data
  for (let i = 0; i < 20; i++)
    await send(conn, `{"op":"publish","topic":"${topic}.c","data":{"i":${i},"pad":"${'x'.repeat(i * 20)}"},"id":${100 + i}}`);
  let got = 0, inOrder = true;
  while (got < 20) {
    const j = JSON.parse((await next(conn)).data.toString());
    if (j.op !== 'message') continue;
    inOrder = inOrder && j.seq === got + 1 && j.data.i === got && j.data.pad.length === got * 20;
    got++;
  }
  check(inOrder, '20 messages of mixed sizes arrive in order with their data');
  const c = await close(conn);
  check(c.code === 1000, 'close handshake 1000', c.code);
}

async function echo() {
  const conn = await connect('/echo');
  check(expectExt === 'none' ? conn.ext === undefined : conn.ext === expectExt,
    `extension agreed on /echo is ${expectExt}`, `got: ${conn.ext}`);
  const text = 'The quick brown fox jumps over the lazy dog. '.repeat(100) + '\u00e9\u4e2d\u{1f600}';
  await send(conn, text, false);
  let m = await next(conn);
  check(!m.isBinary && m.data.toString('utf8') === text, 'echo: text comes back as the same text');
  check(m.compressed === agreed, `echo: text came back compressed: ${agreed}`);
  const bin = Buffer.alloc(5000);
  for (let i = 0; i < bin.length; i++) bin[i] = (i * 7) % 64;
  await send(conn, bin, true);
  m = await next(conn);
  check(m.isBinary && Buffer.compare(m.data, bin) === 0, 'echo: binary comes back as the same bytes');
  check(m.compressed === agreed, `echo: binary came back compressed: ${agreed}`);
  for (const s of ['', '', 'short', '']) {
    await send(conn, s, false);
    m = await next(conn);
    const want = agreed && Buffer.byteLength(s) >= minSize;
    check(!m.isBinary && m.data.toString('utf8') === s && m.compressed === want,
      `echo: ${JSON.stringify(s)} comes back (compressed: ${want})`, `compressed: ${m.compressed}`);
  }
  const c = await close(conn);
  check(c.code === 1000, 'echo: close handshake 1000', c.code);
}

async function refused() {
  try {
    const conn = await connect('/ws');
    check(false, `handshake refused with ${opt['expect-status']}`, `opened, extension ${conn.ext}`);
    await close(conn);
  } catch (err) {
    const status = err.conn ? err.conn.status : 0;
    check(String(status) === opt['expect-status'], `handshake refused with ${opt['expect-status']}`,
      `status ${status}: ${err.message}`);
  }
}

(async () => {
  try {
    if (opt['expect-status']) {
      await refused();
    } else {
      await pubsub();
      if (!opt['no-echo-test']) await echo();
    }
  } catch (err) {
    check(false, 'no unexpected error', err.stack);
  }
  process.exit(failures ? 1 : 0);
})();
