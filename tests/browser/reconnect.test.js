// (b) wsbroker.js survives the broker: it reconnects by itself, resubscribes
// with since/epoch, reports recovered:false as a `stale` event, and keeps
// receiving. Also: liveness pings force a reconnect to a frozen broker.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { Broker, startBroker, launchBrowser, openLibPage, waitFor, sleep } from './harness.js';

let broker;
let browser;

before(async () => {
  broker = await startBroker();
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
  if (broker) await broker.stop();
});

/**
 * In the page: a client recording its events in window.t, subscribed to
 * <ns>.alpha (concrete) and <ns>.> (wildcard). Connection attempts wait for
 * window.gate, which the test can hold closed.
 */
async function setupSubscriber(page, url, opts, ns) {
  await page.evaluate(
    ({ url, opts, ns }) => {
      const t = (window.t = { events: [], alpha: [], wild: [], stale: [], errors: [] });
      window.gate = Promise.resolve();
      const client = (window.client = window.wsb.connect(url, {
        ...opts,
        token: () => window.gate.then(() => 'test-token'),
      }));
      for (const type of ['connecting', 'open', 'reconnecting', 'closed']) {
        client.on(type, (d) =>
          t.events.push({ type, state: client.state, attempt: d.attempt, reason: d.reason, reconnects: d.reconnects }),
        );
      }
      client.on('stale', (d) => t.stale.push(d));
      client.on('error', (d) => t.errors.push(d));
      window.alpha = client.subscribe(`${ns}.alpha`, (data, info) => t.alpha.push({ data, ...info }));
      window.wild = client.subscribe(`${ns}.>`, (data, info) => t.wild.push({ data, ...info }));
    },
    { url, opts, ns },
  );
  return page.evaluate(() => window.alpha.ready);
}

/** A second page whose client publishes; returns publish(topic, data) → ack. */
async function setupPublisher(page, url) {
  await page.evaluate((url) => {
    window.pub = window.wsb.connect(url, { pingInterval: 0, reconnect: { initialDelay: 100, maxDelay: 500 } });
  }, url);
  return (topic, data) =>
    page.evaluate(
      async ({ topic, data }) => {
        await window.pub.ready(10000);
        return window.pub.publish(topic, data);
      },
      { topic, data },
    );
}

const countOf = (page, type) => page.evaluate((type) => window.t.events.filter((e) => e.type === type).length, type);

test('reconnects after a broker restart, resubscribes, reports stale state, receives again', { timeout: 120000 }, async () => {
  const page = await openLibPage(browser.context, broker);
  const wsUrls = [];
  page.on('websocket', (ws) => wsUrls.push(ws.url()));
  const ack1 = await setupSubscriber(page, broker.wsUrl, {
    reconnect: { initialDelay: 100, maxDelay: 600 },
    pingInterval: 1000,
    pingTimeout: 1000,
  }, 'news');
  assert.equal(ack1.seq, 0);
  assert.match(ack1.epoch, /^\S+$/);
  const epoch1 = ack1.epoch;

  const pubPage = await openLibPage(browser.context, broker);
  const publish = await setupPublisher(pubPage, broker.wsUrl);
  assert.deepEqual(await publish('news.alpha', { n: 1 }), { topic: 'news.alpha', seq: 1 });
  assert.deepEqual(await publish('news.alpha', { n: 2 }), { topic: 'news.alpha', seq: 2 });
  await waitFor(() => page.evaluate(() => window.t.alpha.length === 2), { what: 'two messages' });
  assert.deepEqual(await page.evaluate(() => window.t.alpha), [
    { data: { n: 1 }, topic: 'news.alpha', seq: 1 },
    { data: { n: 2 }, topic: 'news.alpha', seq: 2 },
  ]);
  assert.deepEqual(await page.evaluate(() => [window.alpha.seq, window.alpha.epoch]), [2, epoch1]);
  assert.ok(wsUrls[0].endsWith('/ws?token=test-token'), `token travels as a query parameter: ${wsUrls[0]}`);

  // Crash the broker. The client notices and starts retrying on its own.
  const port = broker.port;
  await broker.kill();
  await waitFor(() => countOf(page, 'reconnecting').then((n) => n >= 1), { what: 'reconnecting event' });
  assert.equal(await page.evaluate(() => window.client.state), 'reconnecting');
  await sleep(700); // a few failed attempts against the closed port
  const attempts = await page.evaluate(() => window.t.events.filter((e) => e.type === 'reconnecting').map((e) => e.attempt));
  assert.deepEqual(attempts, attempts.map((_, i) => i + 1), 'attempts are numbered 1, 2, …');

  // Same port, new process: a new epoch, seq space starts again.
  broker = await new Broker(port).start();
  await waitFor(() => countOf(page, 'open').then((n) => n === 2), { timeout: 15000, what: 'second open' });
  assert.equal(await page.evaluate(() => window.client.reconnects), 1);

  // The resubscription of news.alpha carried since=2 and the old epoch; the
  // new broker has another epoch and no history: recovered:false → stale.
  await waitFor(() => page.evaluate(() => window.t.stale.length === 1), { what: 'stale event' });
  const stale = await page.evaluate(() => window.t.stale[0]);
  assert.equal(stale.topic, 'news.alpha');
  assert.equal(stale.since, 2);
  assert.equal(stale.epoch, epoch1);
  assert.notEqual(stale.currentEpoch, epoch1);
  assert.equal(stale.seq, 0);
  assert.deepEqual(await page.evaluate(() => [window.alpha.seq, window.alpha.epoch]), [0, stale.currentEpoch]);

  // Messages published after the restart arrive, on the concrete and the wildcard subscription.
  assert.deepEqual(await publish('news.alpha', { n: 3 }), { topic: 'news.alpha', seq: 1 });
  assert.deepEqual(await publish('news.beta', 'b'), { topic: 'news.beta', seq: 1 });
  await waitFor(() => page.evaluate(() => window.t.alpha.length === 3 && window.t.wild.length === 4), {
    what: 'messages after restart',
  });
  assert.deepEqual(await page.evaluate(() => window.t.alpha[2]), { data: { n: 3 }, topic: 'news.alpha', seq: 1 });
  assert.deepEqual(await page.evaluate(() => window.t.wild.map((m) => `${m.topic}#${m.seq}`)), [
    'news.alpha#1',
    'news.alpha#2',
    'news.alpha#1',
    'news.beta#1',
  ]);

  const types = await page.evaluate(() => window.t.events.map((e) => e.type));
  assert.equal(types[0], 'connecting');
  assert.equal(types[1], 'open');
  assert.equal(types[types.length - 1], 'open');
  assert.ok(types.slice(2, -1).every((t) => t === 'reconnecting'), types.join(','));
  assert.deepEqual(await page.evaluate(() => window.t.errors), []);
  assert.ok(wsUrls.length >= 2 && wsUrls.every((u) => u.endsWith('?token=test-token')));

  await page.evaluate(() => window.client.close());
  await pubPage.evaluate(() => window.pub.close());
  assert.equal(await countOf(page, 'closed'), 1);
  await page.close();
  await pubPage.close();
});

test('ping timeout forces a reconnect; recovered is true when nothing was missed, false when something was', { timeout: 120000 }, async () => {
  const page = await openLibPage(browser.context, broker);
  const ack = await setupSubscriber(page, broker.wsUrl, {
    reconnect: { initialDelay: 100, maxDelay: 400 },
    pingInterval: 400,
    pingTimeout: 600,
    connectTimeout: 1500,
  }, 'live');
  const epoch = ack.epoch;
  const pubPage = await openLibPage(browser.context, broker);
  const publish = await setupPublisher(pubPage, broker.wsUrl);
  assert.deepEqual(await publish('live.alpha', 'x'), { topic: 'live.alpha', seq: 1 });
  await waitFor(() => page.evaluate(() => window.t.alpha.length === 1), { what: 'first message' });

  // Freeze the broker: TCP stays up but nothing answers the pings.
  broker.pause();
  try {
    await waitFor(() => countOf(page, 'reconnecting').then((n) => n >= 1), { timeout: 5000, what: 'ping timeout' });
  } finally {
    broker.resume();
  }
  const first = await page.evaluate(() => window.t.events.find((e) => e.type === 'reconnecting'));
  assert.equal(first.reason, 'ping timeout');

  // Back with the same epoch and nothing published meanwhile: since=1 is
  // exactly the topic's seq, so the broker answers recovered:true.
  await waitFor(() => countOf(page, 'open').then((n) => n === 2), { timeout: 15000, what: 'reopen' });
  const reack = await page.evaluate(() => window.alpha.epoch);
  assert.equal(reack, epoch);
  await sleep(300);
  assert.deepEqual(await page.evaluate(() => window.t.stale), []);

  // Now miss a message: hold the next connection attempt, freeze the broker
  // until the client gives up on this connection, publish, then let it in.
  await page.evaluate(() => {
    window.gate = new Promise((resolve) => (window.openGate = resolve));
  });
  broker.pause();
  try {
    await waitFor(() => countOf(page, 'reconnecting').then((n) => n >= 2), { timeout: 5000, what: 'second ping timeout' });
  } finally {
    broker.resume();
  }
  assert.deepEqual(await publish('live.alpha', 'missed'), { topic: 'live.alpha', seq: 2 });
  await page.evaluate(() => window.openGate());
  await waitFor(() => countOf(page, 'open').then((n) => n === 3), { timeout: 15000, what: 'third open' });
  await waitFor(() => page.evaluate(() => window.t.stale.length === 1), { what: 'stale after a miss' });
  const stale = await page.evaluate(() => window.t.stale[0]);
  assert.deepEqual(
    { topic: stale.topic, since: stale.since, epoch: stale.epoch, currentEpoch: stale.currentEpoch, seq: stale.seq },
    { topic: 'live.alpha', since: 1, epoch, currentEpoch: epoch, seq: 2 },
  );
  assert.equal(await page.evaluate(() => window.client.reconnects), 2);
  // The missed message is gone (no history); the next one arrives.
  assert.deepEqual(await publish('live.alpha', 'after'), { topic: 'live.alpha', seq: 3 });
  await waitFor(() => page.evaluate(() => window.t.alpha.length === 2), { what: 'message after recovery' });
  assert.deepEqual(await page.evaluate(() => window.t.alpha.map((m) => [m.data, m.seq])), [
    ['x', 1],
    ['after', 3],
  ]);
  assert.equal(await page.evaluate(() => window.alpha.seq), 3);

  await page.evaluate(() => window.client.close());
  await pubPage.evaluate(() => window.pub.close());
  await page.close();
  await pubPage.close();
});
