// (a) The demo page: two browser contexts chat in one room, and the wildcard
// side panel (chat.>) shows the activity of another room.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot, brokerBin, startBroker, launchBrowser, watchErrors } from './harness.js';

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

/** Open the demo page in `context`, wait for the connection, join `room` as `nick`. */
async function joinAs(context, nick, room) {
  const page = await context.newPage();
  const errors = watchErrors(page);
  await page.goto(`${broker.url}/`);
  await page.locator('#status[data-state="open"]').waitFor();
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join');
  await page.locator('#room-title', { hasText: `#${room}` }).waitFor();
  // Our own join notice coming back means the room subscription is live.
  await page.locator('#messages li.join', { hasText: `${nick} joined` }).waitFor();
  return { page, errors };
}

async function say(page, text) {
  await page.fill('#text', text);
  await page.press('#text', 'Enter');
}

test('demo page is served by the broker with its assets', async () => {
  for (const [p, type] of [
    ['/', 'text/html'],
    ['/index.html', 'text/html'],
    ['/app.js', 'text/javascript'],
    ['/wsbroker.js', 'text/javascript'],
    ['/style.css', 'text/css'],
    ['/favicon.svg', 'image/svg+xml'],
  ]) {
    const res = await fetch(`${broker.url}${p}`);
    assert.equal(res.status, 200, p);
    assert.ok(res.headers.get('content-type').startsWith(type), `${p}: ${res.headers.get('content-type')}`);
    // The broker embeds clients/web at build time: a stale binary would test old files.
    const file = path.join(repoRoot, 'clients', 'web', p === '/' ? 'index.html' : p.slice(1));
    assert.ok(
      Buffer.from(await res.arrayBuffer()).equals(await readFile(file)),
      `${p} served by ${brokerBin} differs from ${file}: rebuild the broker`,
    );
  }
});

test('two contexts chat in one room; the side panel sees another room', { timeout: 120000 }, async () => {
  const ctxA = await browser.newContext();
  const ctxB = await browser.newContext();
  const ctxC = await browser.newContext();
  const alice = await joinAs(ctxA, 'alice', 'lobby');
  const bob = await joinAs(ctxB, 'bob', 'lobby');

  // alice sees bob arrive
  await alice.page.locator('#messages li.join', { hasText: 'bob joined' }).waitFor();

  await say(alice.page, 'hello from alice');
  const atBob = bob.page.locator('#messages li.msg', { hasText: 'hello from alice' });
  await atBob.waitFor();
  assert.equal(await atBob.locator('.nick').textContent(), 'alice');
  assert.equal(await atBob.evaluate((li) => li.classList.contains('mine')), false);
  // alice's own copy comes back through the broker and is marked as hers
  const atAlice = alice.page.locator('#messages li.msg.mine', { hasText: 'hello from alice' });
  await atAlice.waitFor();

  await say(bob.page, 'hi alice, bob here');
  await alice.page.locator('#messages li.msg', { hasText: 'hi alice, bob here' }).waitFor();
  assert.equal(
    await alice.page.locator('#messages li.msg', { hasText: 'hi alice, bob here' }).locator('.nick').textContent(),
    'bob',
  );

  // Text is rendered as text, never as HTML.
  const evil = '<img src=x onerror="window.__pwned=1"><b>bold?</b>';
  await say(bob.page, evil);
  const evilAtAlice = alice.page.locator('#messages li.msg .text', { hasText: 'bold?' });
  await evilAtAlice.waitFor();
  assert.equal(await evilAtAlice.textContent(), evil);
  assert.equal(await evilAtAlice.locator('img, b').count(), 0);
  assert.equal(await alice.page.evaluate(() => window.__pwned), undefined);

  // carol, in another room, shows up in the wildcard side panel of alice and bob
  const carol = await joinAs(ctxC, 'carol', 'random');
  await say(carol.page, 'anyone in random?');
  for (const { page } of [alice, bob]) {
    const item = page.locator('#room-list li[data-room="random"]');
    await item.waitFor();
    await item.locator('.last', { hasText: 'carol: anyone in random?' }).waitFor();
    assert.equal(await item.locator('.badge').textContent(), '1');
    await page.locator('#activity li[data-room="random"]', { hasText: 'carol: anyone in random?' }).waitFor();
    // the room itself did not receive carol's message
    assert.equal(await page.locator('#messages li.msg', { hasText: 'anyone in random?' }).count(), 0);
  }
  // carol's panel shows the lobby conversation too (it happened before she came, so only later activity)
  await say(alice.page, 'welcome carol');
  await carol.page.locator('#room-list li[data-room="lobby"] .last', { hasText: 'alice: welcome carol' }).waitFor();
  assert.equal(await carol.page.locator('#messages li.msg', { hasText: 'welcome carol' }).count(), 0);

  // Clicking a room in the side panel switches to it.
  await alice.page.click('#room-list li[data-room="random"] button');
  await alice.page.locator('#room-title', { hasText: '#random' }).waitFor();
  await carol.page.locator('#messages li.join', { hasText: 'alice joined' }).waitFor();
  await say(carol.page, 'hi alice');
  await alice.page.locator('#messages li.msg', { hasText: 'hi alice' }).waitFor();
  // bob, still in lobby, does not get it in the room, only in the panel
  await bob.page.locator('#activity li[data-room="random"]', { hasText: 'carol: hi alice' }).waitFor();
  assert.equal(await bob.page.locator('#messages li.msg', { hasText: 'hi alice' }).count(), 1); // "hi alice, bob here"

  for (const who of [alice, bob, carol]) {
    assert.equal(await who.page.locator('#reconnects').textContent(), '0');
    assert.deepEqual(who.errors, []);
  }
});
