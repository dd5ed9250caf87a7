// wsbroker.js against a broker with retained history (--history) and with
// token authentication (--auth-secret):
// (a) a page reloads and resumes with `since` (the `persist` option keeps
//     seq and epoch in sessionStorage) after the broker kept publishing, and
//     receives exactly the messages it missed, also while a publisher keeps
//     going through the reload;
// (b) a resume that cannot be recovered raises `stale`: history too short
//     (after a reload and after a reconnect), or a restarted broker (a new
//     epoch);
// (c) tokens from a `token` callback, asked before every connection: a bad
//     one is replaced on the next attempt, an expiring one after the broker
//     closes with 1008; the ACL is enforced (forbidden).
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { startBroker, launchBrowser, openLibPage, mintToken, waitFor, sleep } from './harness.js';

let browser;

before(async () => {
  browser = await launchBrowser();
});

after(async () => {
  if (browser) await browser.close();
});

/**
 * In the page: a client with `persist`, subscribed to `topic`, logging every
 * message's seq to sessionStorage (so the log survives reloads) and every
 * stale event to window.stale (`opts.gated`: the token callback waits for
 * the Promise in window.gate). Returns the subscribe ack.
 */
async function resumeSubscriber(page, url, topic, opts = {}) {
  return page.evaluate(
    async ({ url, topic, opts }) => {
      const log = JSON.parse(sessionStorage.getItem('log') || '[]');
      window.stale = [];
      const { gated, ...rest } = opts;
      if (gated) rest.token = () => window.gate; // attempts wait for window.gate
      window.client = window.wsb.connect(url, { persist: 'test', pingInterval: 0, ...rest });
      window.client.on('stale', (d) => window.stale.push(d));
      window.sub = window.client.subscribe(topic, (data, { seq }) => {
        log.push({ seq, n: data.n });
        sessionStorage.setItem('log', JSON.stringify(log));
      });
      return window.sub.ready;
    },
    { url, topic, opts },
  );
}

const logOf = (page) => page.evaluate(() => JSON.parse(sessionStorage.getItem('log') || '[]'));

/** A second page that publishes {n} messages; returns publish(topic, n). */
async function publisherPage(broker) {
  const page = await openLibPage(browser.context, broker);
  await page.evaluate(async (url) => {
    window.pub = window.wsb.connect(url, { pingInterval: 0 });
    await window.pub.ready(10000);
  }, broker.wsUrl);
  const publish = (topic, from, to) =>
    page.evaluate(
      async ({ topic, from, to }) => {
        const seqs = [];
        for (let n = from; n <= to; n++) seqs.push((await window.pub.publish(topic, { n })).seq);
        return seqs;
      },
      { topic, from, to },
    );
  return { page, publish };
}

const range = (a, b) => Array.from({ length: b - a + 1 }, (_, i) => a + i);

test('a reloaded page resumes with since and gets exactly what it missed', { timeout: 120000 }, async () => {
  const broker = await startBroker(['--history', '1000']);
  try {
    const page = await openLibPage(browser.context, broker);
    const { page: pp, publish } = await publisherPage(broker);
    const ack1 = await resumeSubscriber(page, broker.wsUrl, 'resume.t');
    assert.equal(ack1.seq, 0);
    assert.deepEqual(await publish('resume.t', 1, 3), [1, 2, 3]);
    await waitFor(() => logOf(page).then((l) => l.length === 3), { what: 'three messages' });
    const saved = await page.evaluate(() => JSON.parse(sessionStorage.getItem('wsbroker.resume.test.resume.t')));
    assert.deepEqual(saved, { seq: 3, epoch: ack1.epoch });

    // Reload; while no client exists, the broker keeps publishing.
    await page.reload();
    await page.evaluate(async () => {
      window.wsb = await import('/wsbroker.js');
    });
    assert.deepEqual(await publish('resume.t', 4, 8), [4, 5, 6, 7, 8]);
    const ack2 = await resumeSubscriber(page, broker.wsUrl, 'resume.t');
    assert.equal(ack2.recovered, true);
    assert.equal(ack2.epoch, ack1.epoch);
    await waitFor(() => logOf(page).then((l) => l.length === 8), { what: 'the missed messages' });
    await publish('resume.t', 9, 9);
    await waitFor(() => logOf(page).then((l) => l.length === 9), { what: 'a live message' });
    await sleep(200);
    assert.deepEqual(await logOf(page), range(1, 9).map((n) => ({ seq: n, n })));
    assert.deepEqual(await page.evaluate(() => window.stale), []);

    // Reloads while a publisher keeps going: still every message exactly once.
    await pp.evaluate(() => {
      window.done = (async () => {
        for (let n = 10; n <= 150; n++) {
          await window.pub.publish('resume.t', { n });
          await new Promise((r) => setTimeout(r, 5));
        }
      })();
    });
    for (let i = 0; i < 3; i++) {
      await sleep(150);
      await page.reload();
      await page.evaluate(async () => {
        window.wsb = await import('/wsbroker.js');
      });
      await resumeSubscriber(page, broker.wsUrl, 'resume.t');
    }
    await pp.evaluate(() => window.done);
    await waitFor(() => logOf(page).then((l) => l.length >= 150), { timeout: 20000, what: 'all 150 messages' });
    await sleep(300);
    const log = await logOf(page);
    assert.deepEqual(log.map((m) => m.seq), range(1, 150), 'no gap, no duplicate across reloads');
    assert.ok(log.every((m) => m.n === m.seq));
    assert.deepEqual(await page.evaluate(() => window.stale), []);

    // Unsubscribing forgets the saved state.
    await page.evaluate(() => window.sub.unsubscribe());
    assert.equal(await page.evaluate(() => sessionStorage.getItem('wsbroker.resume.test.resume.t')), null);
    await page.evaluate(() => window.client.close());
    await pp.evaluate(() => window.pub.close());
    await page.close();
    await pp.close();
  } finally {
    await broker.stop();
  }
});

test('a resume that cannot be recovered raises stale: history too short, new epoch', { timeout: 120000 }, async () => {
  let broker = await startBroker(['--history', '3']);
  try {
    const page = await openLibPage(browser.context, broker);
    await page.evaluate(() => sessionStorage.clear());
    let { page: pp, publish } = await publisherPage(broker);
    const ack = await resumeSubscriber(page, broker.wsUrl, 'gap.t');
    await publish('gap.t', 1, 1);
    await waitFor(() => logOf(page).then((l) => l.length === 1), { what: 'first message' });

    // History too short: 2..10 published while the page reloads; 8..10 kept.
    await page.reload();
    await page.evaluate(async () => {
      window.wsb = await import('/wsbroker.js');
    });
    await publish('gap.t', 2, 10);
    const ack2 = await resumeSubscriber(page, broker.wsUrl, 'gap.t');
    assert.equal(ack2.recovered, false);
    await waitFor(() => page.evaluate(() => window.stale.length === 1), { what: 'stale event' });
    assert.deepEqual(await page.evaluate(() => window.stale[0]), {
      topic: 'gap.t',
      since: 1,
      epoch: ack.epoch,
      currentEpoch: ack.epoch,
      seq: 10,
    });
    await waitFor(() => logOf(page).then((l) => l.length === 4), { what: 'the retained messages' });
    await publish('gap.t', 11, 11);
    await waitFor(() => logOf(page).then((l) => l.length === 5), { what: 'a live message' });
    assert.deepEqual((await logOf(page)).map((m) => m.seq), [1, 8, 9, 10, 11]);

    // A broker restarted on the same port: a new epoch. The page reloads
    // meanwhile and resumes from seq 11 of the old epoch.
    await pp.close();
    await page.reload();
    const port = broker.port;
    await broker.kill();
    broker = await broker.again().start();
    assert.equal(broker.port, port);
    await page.evaluate(async () => {
      window.wsb = await import('/wsbroker.js');
    });
    const ack3 = await resumeSubscriber(page, broker.wsUrl, 'gap.t');
    assert.equal(ack3.recovered, false);
    assert.notEqual(ack3.epoch, ack.epoch);
    await waitFor(() => page.evaluate(() => window.stale.length === 1), { what: 'stale after restart' });
    const st = await page.evaluate(() => window.stale[0]);
    assert.deepEqual(st, { topic: 'gap.t', since: 11, epoch: ack.epoch, currentEpoch: ack3.epoch, seq: 0 });
    ({ page: pp, publish } = await publisherPage(broker));
    assert.deepEqual(await publish('gap.t', 12, 12), [1]); // the new epoch starts at 1
    await waitFor(() => logOf(page).then((l) => l.length === 6), { what: 'a message after the restart' });
    assert.deepEqual(await page.evaluate(() => [window.sub.seq, window.sub.epoch]), [1, ack3.epoch]);
    await page.evaluate(() => window.client.close());
    await page.close();
    await pp.close();
  } finally {
    await broker.stop();
  }
});

test('a reconnect that cannot be recovered (history too short) raises stale', { timeout: 120000 }, async () => {
  const broker = await startBroker(['--history', '2']);
  try {
    const page = await openLibPage(browser.context, broker);
    await page.evaluate(() => sessionStorage.clear());
    const { page: pp, publish } = await publisherPage(broker);
    // Liveness pings notice a frozen broker; connection attempts wait for
    // window.gate (through the token callback), which the test holds shut
    // while it publishes.
    await page.evaluate(() => {
      window.gate = Promise.resolve('x');
    });
    const ack = await resumeSubscriber(page, broker.wsUrl, 'rc.t', {
      pingInterval: 300,
      pingTimeout: 500,
      reconnect: { initialDelay: 100, maxDelay: 400 },
      gated: true,
    });
    await publish('rc.t', 1, 1);
    await waitFor(() => logOf(page).then((l) => l.length === 1), { what: 'first message' });
    await page.evaluate(() => {
      window.gate = new Promise((resolve) => (window.openGate = () => resolve('x')));
      window.reconnecting = 0;
      window.client.on('reconnecting', () => window.reconnecting++);
    });
    broker.pause();
    try {
      await waitFor(() => page.evaluate(() => window.reconnecting > 0), { timeout: 5000, what: 'ping timeout' });
    } finally {
      broker.resume();
    }
    await publish('rc.t', 2, 6); // 5 and 6 are kept
    await page.evaluate(() => window.openGate());
    await waitFor(() => page.evaluate(() => window.stale.length === 1), { what: 'stale after the reconnect' });
    assert.deepEqual(await page.evaluate(() => window.stale[0]), {
      topic: 'rc.t',
      since: 1,
      epoch: ack.epoch,
      currentEpoch: ack.epoch,
      seq: 6,
    });
    await waitFor(() => logOf(page).then((l) => l.length === 3), { what: 'the retained messages' });
    assert.deepEqual((await logOf(page)).map((m) => m.seq), [1, 5, 6]);
    await page.evaluate(() => window.client.close());
    await pp.evaluate(() => window.pub.close());
    await page.close();
    await pp.close();
  } finally {
    await broker.stop();
  }
});

test('token from a callback before every connect; forbidden outside the ACL', { timeout: 120000 }, async () => {
  const secret = 'browser-test-secret-0123456789';
  const broker = await startBroker(['--auth-secret', secret]);
  try {
    const grant = ['--sub', 'browser', '--publish', 'auth.>', '--subscribe', 'auth.>'];
    const tokens = [
      await mintToken('not-the-secret', grant), // refused: 401
      await mintToken(secret, [...grant, '--ttl', '2']), // accepted, expires in 2 s
      await mintToken(secret, [...grant, '--ttl', '600']),
    ];
    const page = await openLibPage(browser.context, broker);
    const sockets = [];
    page.on('websocket', (ws) => sockets.push(new URL(ws.url()).searchParams.get('token')));
    await page.evaluate(
      ({ url, tokens }) => {
        window.calls = 0;
        window.events = [];
        window.got = [];
        window.client = window.wsb.connect(url, {
          pingInterval: 0,
          reconnect: { initialDelay: 100, maxDelay: 300 },
          // Asynchronous on purpose: a Promise is awaited before connecting.
          token: () => new Promise((r) => setTimeout(() => r(tokens[Math.min(window.calls++, tokens.length - 1)]), 10)),
        });
        for (const type of ['open', 'reconnecting']) {
          window.client.on(type, (d) => window.events.push({ type, code: d.code, reason: d.reason }));
        }
        window.client.subscribe('auth.t', (data) => window.got.push(data));
      },
      { url: broker.wsUrl, tokens },
    );
    await waitFor(() => page.evaluate(() => window.events.filter((e) => e.type === 'open').length === 1), { what: 'open' });
    assert.equal(await page.evaluate(() => window.calls), 2);
    assert.equal((await page.evaluate(() => window.events))[0].type, 'reconnecting'); // the 401
    const forbidden = await page.evaluate(() =>
      window.client.publish('other.t', 1).then(
        () => 'published',
        (e) => e.code,
      ),
    );
    assert.equal(forbidden, 'forbidden');
    // The 2 s token expires: the broker closes with 1008, the callback gives a new one.
    await waitFor(() => page.evaluate(() => window.events.filter((e) => e.type === 'open').length === 2), {
      timeout: 10000,
      what: 'reopen after the token expired',
    });
    const events = await page.evaluate(() => window.events);
    assert.ok(events.some((e) => e.type === 'reconnecting' && e.code === 1008 && e.reason === 'token expired'), JSON.stringify(events));
    assert.equal(await page.evaluate(() => window.calls), 3);
    assert.deepEqual(sockets, tokens, 'each attempt carried the token of its call');
    // The subscription came back with the new connection.
    assert.deepEqual(await page.evaluate(() => window.client.publish('auth.t', { after: 'expiry' })), { topic: 'auth.t', seq: 1 });
    await waitFor(() => page.evaluate(() => window.got.length === 1), { what: 'message after expiry' });
    assert.deepEqual(await page.evaluate(() => window.got[0]), { after: 'expiry' });
    await page.evaluate(() => window.client.close());
    await page.close();
  } finally {
    await broker.stop();
  }
});
