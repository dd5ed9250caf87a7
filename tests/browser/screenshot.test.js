// (d) A screenshot of the demo page with a conversation, written to
// build/screenshots/demo.png at the repository root.
import { test, before, after } from 'node:test';
import assert from 'node:assert/strict';
import { mkdir, readFile } from 'node:fs/promises';
import path from 'node:path';
import { repoRoot, startBroker, launchBrowser, watchErrors } from './harness.js';

const out = path.join(repoRoot, 'build', 'screenshots', 'demo.png');
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

async function open(nick, room) {
  const ctx = await browser.newContext();
  const page = await ctx.newPage();
  const errors = watchErrors(page);
  await page.goto(`${broker.url}/`);
  await page.locator('#status[data-state="open"]').waitFor();
  await page.fill('#nick', nick);
  await page.fill('#room', room);
  await page.click('#join');
  await page.locator('#messages li.join', { hasText: `${nick} joined` }).waitFor();
  return { page, errors, nick };
}

async function say(who, text, seenBy = []) {
  await who.page.fill('#text', text);
  await who.page.press('#text', 'Enter');
  for (const other of [who, ...seenBy]) {
    await other.page.locator('#messages li.msg .text', { hasText: text }).last().waitFor();
  }
}

test('screenshot of the demo page with a conversation', { timeout: 120000 }, async () => {
  const ada = await open('ada', 'lobby');
  const grace = await open('grace', 'lobby');
  const linus = await open('linus', 'ops');
  const barbara = await open('barbara', 'random');

  await say(ada, 'Hi Grace! Is the new broker build up yet?', [grace]);
  await say(grace, 'Yes, since this morning. 4 workers, p99 under a millisecond.', [ada]);
  await say(linus, 'deploy of wsbroker 0.1.0 finished on all nodes');
  await say(ada, 'Nice. The browser tests kill it and restart it, and the page just reconnects.', [grace]);
  await say(barbara, 'anyone up for lunch?');
  await say(grace, 'Try <b>this</b>: markup is shown as text, not HTML.', [ada]);
  await say(linus, 'metrics look healthy, closing the incident');
  await say(ada, 'Perfect, see you in #ops!', [grace]);
  await ada.page.locator('#room-list li[data-room="ops"] .last', { hasText: 'closing the incident' }).waitFor();
  await ada.page.locator('#latency', { hasText: 'ms' }).waitFor();

  await mkdir(path.dirname(out), { recursive: true });
  await ada.page.screenshot({ path: out });
  const png = await readFile(out);
  assert.ok(png.length > 20000, `screenshot is ${png.length} bytes`);
  assert.equal(png.subarray(1, 4).toString(), 'PNG');
  for (const who of [ada, grace, linus, barbara]) assert.deepEqual(who.errors, []);
});
