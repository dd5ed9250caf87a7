// (c) wsbroker.js API: publish acks and broker errors, subscription
// dispatch, the bounded outbox while the broker is down, close().
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Broker, startBroker, freePort, launchBrowser, openLibPage, waitFor } from './harness.js';

let broker;
let browser;
let page;

before(async () => {
  broker = await startBroker(['--max-message', '4k']);
  browser = await launchBrowser();
  page = await openLibPage(browser.context, broker);
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await broker.stop();
});

test('publish resolves with the seq from the ack', async () => {
  const acks = await page.evaluate(async (url) => {
    const c = window.wsb.connect(url);
    try {
      await c.ready(10000);
      const out = [];
      out.push(await c.publish('api.one', { a: 1 }));
      out.push(await c.publish('api.one', [1, 2, 3]));
      out.push(await c.publish('api.two', 'x'));
      out.push(await c.publish('api.one', null));
      return out;
    } finally {
      c.close();
    }
  }, broker.wsUrl);
  assert.deepEqual(acks, [
    { topic: 'api.one', seq: 1 },
    { topic: 'api.one', seq: 2 },
    { topic: 'api.two', seq: 1 },
    { topic: 'api.one', seq: 3 },
  ]);
});

test('publish rejects with the broker code (bad_topic) and local codes', async () => {
  const res = await page.evaluate(async (url) => {
    const c = window.wsb.connect(url);
    const outcome = (p) =>
      p.then(
        (v) => ({ ok: v }),
        (e) => ({ name: e.name, code: e.code, message: e.message, isError: e instanceof Error, isBroker: e instanceof window.wsb.BrokerError }),
      );
    try {
      await c.ready(10000);
      return {
        wildcard: await outcome(c.publish('chat.*', 1)),
        empty: await outcome(c.publish('a..b', 1)),
        undef: await outcome(c.publish('api.x', undefined)),
        big: await outcome(c.publish('api.x', 'y'.repeat(5000))),
        // the connection survived all of that
        after: await outcome(c.publish('api.x', 'fine')),
        rtt: await c.ping(),
        state: c.state,
        reconnects: c.reconnects,
      };
    } finally {
      c.close();
    }
  }, broker.wsUrl);
  assert.equal(res.wildcard.code, 'bad_topic');
  assert.equal(res.wildcard.name, 'BrokerError');
  assert.ok(res.wildcard.isError && res.wildcard.isBroker);
  assert.ok(res.wildcard.message.length > 0);
  assert.equal(res.empty.code, 'bad_topic');
  assert.equal(res.undef.code, 'bad_request');
  assert.equal(res.big.code, 'too_large'); // checked against hello.max_message (4k) before sending
  assert.deepEqual(res.after, { ok: { topic: 'api.x', seq: 1 } });
  assert.equal(typeof res.rtt, 'number');
  assert.equal(res.state, 'open');
  assert.equal(res.reconnects, 0);
});

test('subscriptions: patterns, one delivery per handler, unsubscribe, errors', async () => {
  const frames = [];
  const onWs = (ws) => ws.on('framesent', (f) => frames.push(String(f.payload)));
  page.on('websocket', onWs);
  const res = await page.evaluate(async (url) => {
    const c = window.wsb.connect(url);
    const got = { star: [], exact: [], exact2: [], tail: [] };
    const errors = [];
    c.on('error', (d) => errors.push(d));
    try {
      const star = c.subscribe('sub.*', (d, i) => got.star.push(`${i.topic}#${i.seq}=${JSON.stringify(d)}`));
      const exact = c.subscribe('sub.a', (d, i) => got.exact.push(`${i.topic}#${i.seq}`), { last: 5 });
      const exact2 = c.subscribe('sub.a', (d, i) => got.exact2.push(`${i.topic}#${i.seq}`));
      const tail = c.subscribe('sub.>', (d, i) => got.tail.push(`${i.topic}#${i.seq}`));
      const acks = await Promise.all([star.ready, exact.ready, tail.ready]);
      await c.publish('sub.a', { deep: { list: [1, 'two', null, true] } });
      await c.publish('sub.b', 2);
      await c.publish('sub.a.deeper', 3);
      await c.publish('other', 4);
      await c.ping(); // every message published above has been delivered before the pong
      star.unsubscribe();
      star.unsubscribe(); // harmless twice
      exact.unsubscribe(); // exact2 still holds sub.a
      await c.ping();
      await c.publish('sub.a', 5);
      await c.publish('sub.b', 6);
      await c.ping();
      const bad = c.subscribe('bad..topic', () => {});
      const badErr = await bad.ready.then(() => null, (e) => e.code);
      const badSince = c.subscribe('sub.*.x', () => {}, { since: 3 });
      const badSinceErr = await badSince.ready.then(() => null, (e) => e.code);
      return {
        got,
        acks,
        badErr,
        badActive: bad.active,
        badSinceErr,
        errors,
        states: [star.active, exact.active, exact2.active, tail.active],
      };
    } finally {
      c.close();
    }
  }, broker.wsUrl);
  page.off('websocket', onWs);

  assert.deepEqual(res.got.star, ['sub.a#1={"deep":{"list":[1,"two",null,true]}}', 'sub.b#1=2']);
  assert.deepEqual(res.got.exact, ['sub.a#1']);
  assert.deepEqual(res.got.exact2, ['sub.a#1', 'sub.a#2']);
  assert.deepEqual(res.got.tail, ['sub.a#1', 'sub.b#1', 'sub.a.deeper#1', 'sub.a#2', 'sub.b#2']);
  // concrete topic acks carry seq and epoch; pattern acks do not
  assert.equal(res.acks[0].seq, undefined);
  assert.equal(res.acks[1].seq, 0);
  assert.equal(typeof res.acks[1].epoch, 'string');
  assert.equal(res.badErr, 'bad_topic');
  assert.equal(res.badActive, false);
  assert.equal(res.badSinceErr, 'bad_request');
  assert.deepEqual(
    res.errors.map((e) => [e.code, e.topic]),
    [
      ['bad_topic', 'bad..topic'],
      ['bad_request', 'sub.*.x'],
    ],
  );
  assert.deepEqual(res.states, [false, false, true, true]);

  // On the wire: one subscribe per pattern with an id, `last` passed through,
  // unsubscribe only once no handler is left on the pattern.
  const sent = frames.map((f) => JSON.parse(f));
  const subs = sent.filter((m) => m.op === 'subscribe');
  assert.deepEqual(
    subs.map((m) => m.topic),
    ['sub.*', 'sub.a', 'sub.>', 'bad..topic', 'sub.*.x'],
  );
  assert.ok(subs.every((m) => m.id !== undefined));
  assert.equal(subs[1].last, 5);
  assert.equal(subs[4].since, 3);
  const unsubs = sent.filter((m) => m.op === 'unsubscribe').map((m) => m.topic);
  assert.deepEqual(unsubs, ['sub.*']);
  const ids = sent.filter((m) => m.id !== undefined).map((m) => m.id);
  assert.equal(new Set(ids).size, ids.length, 'request ids are unique');
});

test('bounded outbox: queues while the broker is down, rejects when full, flushes on reconnect', { timeout: 120000 }, async () => {
  const down = await startBroker();
  const port = down.port;
  const wsUrl = down.wsUrl;
  let restarted = null;
  try {
    await page.evaluate(async (url) => {
      const t = (window.ob = { results: [], events: [], got: [] });
      const c = (window.obClient = window.wsb.connect(url, {
        outboxLimit: 3,
        reconnect: { initialDelay: 100, maxDelay: 400 },
      }));
      c.on('statechange', (d) => t.events.push(d.state));
      window.obSub = c.subscribe('box.t', (d, i) => t.got.push([d, i.seq]));
      await window.obSub.ready;
    }, wsUrl);
    await down.kill();
    await waitFor(() => page.evaluate(() => window.obClient.state === 'reconnecting'), { what: 'reconnecting' });

    const early = await page.evaluate(() => {
      const { ob, obClient: c } = window;
      const record = (i) => (p) =>
        p.then(
          (v) => ob.results.push([i, 'ok', v.seq]),
          (e) => ob.results.push([i, e.code, e.message]),
        );
      for (let i = 1; i <= 4; i++) record(i)(c.publish('box.t', { i }));
      return { queued: c.queued };
    });
    assert.equal(early.queued, 3);
    await waitFor(() => page.evaluate(() => window.ob.results.length === 1), { what: 'outbox_full rejection' });
    const [full] = await page.evaluate(() => window.ob.results);
    assert.equal(full[0], 4);
    assert.equal(full[1], 'outbox_full');
    assert.match(full[2], /outbox/);

    restarted = await new Broker(port).start();
    await waitFor(() => page.evaluate(() => window.ob.results.length === 4), { timeout: 15000, what: 'outbox flushed' });
    const results = await page.evaluate(() => window.ob.results);
    assert.deepEqual(results.slice(1), [
      [1, 'ok', 1],
      [2, 'ok', 2],
      [3, 'ok', 3],
    ]);
    // The subscription was renewed before the outbox was flushed, so the
    // client also receives its own queued messages.
    await waitFor(() => page.evaluate(() => window.ob.got.length === 3), { what: 'own messages' });
    assert.deepEqual(await page.evaluate(() => window.ob.got), [
      [{ i: 1 }, 1],
      [{ i: 2 }, 2],
      [{ i: 3 }, 3],
    ]);
    assert.equal(await page.evaluate(() => window.obClient.queued), 0);
    assert.deepEqual(await page.evaluate(() => window.ob.events), ['connecting', 'open', 'reconnecting', 'open']);
  } finally {
    await page.evaluate(() => window.obClient && window.obClient.close()).catch(() => {});
    if (restarted) await restarted.stop();
    await down.kill();
  }
});

test('close() rejects queued publishes; nothing works after close', async () => {
  const deadPort = await freePort(); // nothing listens there
  const res = await page.evaluate(async (url) => {
    const c = window.wsb.connect(url, { reconnect: { initialDelay: 50, maxDelay: 200 } });
    const events = [];
    c.on('statechange', (d) => events.push(d.state));
    const p1 = c.publish('t.a', 1).then(() => 'resolved', (e) => e.code);
    const p2 = c.publish('t.a', 2).then(() => 'resolved', (e) => e.code);
    const sub = c.subscribe('t.a', () => {});
    const subReady = sub.ready.then(() => 'resolved', (e) => e.code);
    const ready = c.ready().then(() => 'resolved', (e) => e.code);
    for (let i = 0; i < 100 && c.state !== 'reconnecting'; i++) await new Promise((r) => setTimeout(r, 50));
    const queued = c.queued;
    c.close();
    let subscribeAfter;
    try {
      c.subscribe('t.b', () => {});
      subscribeAfter = 'no error';
    } catch (e) {
      subscribeAfter = e.code;
    }
    return {
      queued,
      p1: await p1,
      p2: await p2,
      subReady: await subReady,
      ready: await ready,
      after: await c.publish('t.a', 3).then(() => 'resolved', (e) => e.code),
      subscribeAfter,
      subActive: sub.active,
      state: c.state,
      events,
    };
  }, `ws://127.0.0.1:${deadPort}/ws`);
  assert.equal(res.queued, 2);
  assert.equal(res.p1, 'closed');
  assert.equal(res.p2, 'closed');
  assert.equal(res.subReady, 'closed');
  assert.equal(res.ready, 'closed');
  assert.equal(res.after, 'closed');
  assert.equal(res.subscribeAfter, 'closed');
  assert.equal(res.subActive, false);
  assert.equal(res.state, 'closed');
  assert.deepEqual(res.events, ['connecting', 'reconnecting', 'closed']);
});

test('reconnect: false closes for good when the connection drops', async () => {
  const b = await startBroker();
  try {
    await page.evaluate(async (url) => {
      const c = (window.once = window.wsb.connect(url, { reconnect: false }));
      window.onceEvents = [];
      c.on('statechange', (d) => window.onceEvents.push(d.state));
      await c.ready(10000);
    }, b.wsUrl);
    await b.kill();
    await waitFor(() => page.evaluate(() => window.once.state === 'closed'), { what: 'closed' });
    assert.deepEqual(await page.evaluate(() => window.onceEvents), ['connecting', 'open', 'closed']);
  } finally {
    await b.kill();
  }
});

test('a publish sent on a connection that then dies rejects with disconnected', async () => {
  const b = await startBroker();
  try {
    await page.evaluate(async (url) => {
      const c = (window.lossy = window.wsb.connect(url, {
        pingInterval: 200,
        pingTimeout: 400,
        reconnect: { initialDelay: 100, maxDelay: 300 },
      }));
      await c.ready(10000);
    }, b.wsUrl);
    b.pause(); // the publish goes out, the ack never comes, the ping check drops the connection
    let res;
    try {
      res = await page.evaluate(() =>
        window.lossy.publish('lossy.t', 1).then(
          () => 'resolved',
          (e) => e.code,
        ),
      );
    } finally {
      b.resume();
    }
    assert.equal(res, 'disconnected');
    await waitFor(() => page.evaluate(() => window.lossy.state === 'open'), { what: 'reopen' });
    assert.deepEqual(await page.evaluate(() => window.lossy.publish('lossy.t', 2)), { topic: 'lossy.t', seq: 2 });
  } finally {
    await page.evaluate(() => window.lossy && window.lossy.close()).catch(() => {});
    await b.kill();
  }
});
