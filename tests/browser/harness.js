// Shared helpers for the browser tests: a broker process on a free loopback
// port, and Debian's Chromium driven by playwright-core with a fresh profile.
// Everything talks to 127.0.0.1 only, and every wait is bounded.
import { execFile, spawn } from 'node:child_process';
import { createHash, X509Certificate } from 'node:crypto';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { promisify } from 'node:util';
import { chromium } from 'playwright-core';

const run = promisify(execFile);

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const brokerBin = path.resolve(repoRoot, process.env.WSBROKER_BIN || 'build-test/broker/wsbroker');
export const chromiumPath = process.env.CHROMIUM_BIN || '/usr/bin/chromium';

const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-quic',
  '--no-first-run',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
];

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Poll `fn` until it returns a truthy value; throw after `timeout` ms. */
export async function waitFor(fn, { timeout = 15000, interval = 50, what = 'condition' } = {}) {
  const deadline = Date.now() + timeout;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeout} ms waiting for ${what}`);
    await sleep(interval);
  }
}

/** A TCP port that was free on 127.0.0.1 a moment ago. */
export function freePort() {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address();
      srv.close(() => resolve(port));
    });
  });
}

/**
 * Certificates for the TLS tests, made once per test file with the openssl
 * command (tests/clients/make_certs.sh): `dir` holds ca.pem, server.pem/.key
 * (localhost and 127.0.0.1, signed by the CA) and self.pem/.key; `spki` is
 * the base64 SHA-256 of server.pem's public key, which Chromium is told to
 * accept (--ignore-certificate-errors-spki-list) instead of every
 * certificate error.
 */
let certsPromise = null;
export function testCerts() {
  if (!certsPromise) {
    certsPromise = (async () => {
      const dir = await mkdtemp(path.join(os.tmpdir(), 'wsbroker-certs-'));
      await run('bash', [path.join(repoRoot, 'tests/clients/make_certs.sh'), dir]);
      const cert = new X509Certificate(await readFile(path.join(dir, 'server.pem')));
      const der = cert.publicKey.export({ type: 'spki', format: 'der' });
      const spki = createHash('sha256').update(der).digest('base64');
      return { dir, spki, ca: await readFile(path.join(dir, 'ca.pem')) };
    })();
  }
  return certsPromise;
}

/** Remove the certificates made by testCerts (if any). */
export async function removeCerts() {
  if (!certsPromise) return;
  const { dir } = await certsPromise;
  certsPromise = null;
  await rm(dir, { recursive: true, force: true });
}

/** `wsbroker token --secret secret args...`: a token for the tests. */
export async function mintToken(secret, args) {
  const { stdout } = await run(brokerBin, ['token', '--secret', secret, ...args]);
  return stdout.trim();
}

async function healthy(port) {
  try {
    const res = await fetch(`http://127.0.0.1:${port}/healthz`, { signal: AbortSignal.timeout(1000) });
    return res.ok;
  } catch {
    return false;
  }
}

/**
 * A wsbroker process on 127.0.0.1:`port`. `start()` waits for /healthz;
 * `kill()` sends SIGKILL (a crash), `stop()` SIGTERM (graceful), both wait
 * for the exit.
 */
export class Broker {
  /**
   * @param {number} port plain port
   * @param {string[]} extraArgs more broker options
   * @param {{tlsPort?: number, certDir?: string}} [tls] a TLS listener on
   *   tlsPort with server.pem/.key from certDir
   */
  constructor(port, extraArgs = [], tls = {}) {
    this.port = port;
    this.extraArgs = extraArgs;
    this.tlsPort = tls.tlsPort || 0;
    this.certDir = tls.certDir || null;
    this.proc = null;
    this.log = '';
  }

  get url() {
    return `http://127.0.0.1:${this.port}`;
  }

  get wsUrl() {
    return `ws://127.0.0.1:${this.port}/ws`;
  }

  get httpsUrl() {
    return `https://127.0.0.1:${this.tlsPort}`;
  }

  get wssUrl() {
    return `wss://127.0.0.1:${this.tlsPort}/ws`;
  }

  /** The same broker (ports, options, certificate) as a new process. */
  again() {
    return new Broker(this.port, this.extraArgs, { tlsPort: this.tlsPort, certDir: this.certDir });
  }

  async start() {
    if (!existsSync(brokerBin)) {
      throw new Error(`broker binary not found at ${brokerBin} (build it, or set WSBROKER_BIN)`);
    }
    const args = ['--port', String(this.port), '--bind', '127.0.0.1', '--workers', '2', '--log-level', 'warn', ...this.extraArgs];
    if (this.tlsPort) {
      args.push('--tls-port', String(this.tlsPort), '--tls-cert', path.join(this.certDir, 'server.pem'),
        '--tls-key', path.join(this.certDir, 'server.key'));
    }
    const proc = spawn(brokerBin, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    this.proc = proc;
    const keep = (chunk) => {
      this.log = (this.log + chunk.toString()).slice(-20000);
    };
    proc.stdout.on('data', keep);
    proc.stderr.on('data', keep);
    proc.exited = new Promise((resolve) => proc.on('exit', (code, signal) => resolve({ code, signal })));
    const deadline = Date.now() + 10000;
    while (!(await healthy(this.port))) {
      if (proc.exitCode !== null || proc.signalCode !== null) {
        throw new Error(`broker exited at start (${proc.exitCode ?? proc.signalCode}):\n${this.log}`);
      }
      if (Date.now() > deadline) {
        await this.kill();
        throw new Error(`broker not healthy on port ${this.port} within 10 s:\n${this.log}`);
      }
      await sleep(50);
    }
    return this;
  }

  async _signal(sig, timeout) {
    const proc = this.proc;
    if (!proc) return null;
    if (proc.exitCode === null && proc.signalCode === null) proc.kill(sig);
    const res = await Promise.race([proc.exited, sleep(timeout).then(() => null)]);
    if (res === null) {
      proc.kill('SIGKILL');
      await proc.exited;
    }
    this.proc = null;
    return res;
  }

  /** Crash the broker (SIGKILL). */
  kill() {
    return this._signal('SIGKILL', 5000);
  }

  /** Graceful shutdown (SIGTERM), SIGKILL after 8 s. */
  stop() {
    return this._signal('SIGTERM', 8000);
  }

  /** Freeze (SIGSTOP) or thaw (SIGCONT) the process: connections stay open but silent. */
  pause() {
    this.proc.kill('SIGSTOP');
  }

  resume() {
    this.proc.kill('SIGCONT');
  }
}

/**
 * Start a broker on a fresh free port, retrying if another process grabs the
 * port first. With `{tls: true}` it also listens for wss:// and https:// on
 * a second port, with the certificate of testCerts().
 */
export async function startBroker(extraArgs = [], { tls = false } = {}) {
  let lastErr;
  for (let i = 0; i < 5; i++) {
    const t = tls ? { tlsPort: await freePort(), certDir: (await testCerts()).dir } : {};
    const b = new Broker(await freePort(), extraArgs, t);
    try {
      return await b.start();
    } catch (e) {
      lastErr = e;
    }
  }
  throw lastErr;
}

/**
 * Launch Debian's Chromium with a fresh profile directory (`trustTestCert`:
 * accepting the key of the testCerts() certificate). Returns the
 * persistent context (its pages share the profile), `newContext()` for
 * isolated extra contexts, and `close()` that removes the profile.
 */
export async function launchBrowser({ trustTestCert = false } = {}) {
  if (!existsSync(chromiumPath)) {
    throw new Error(`${chromiumPath} not found: apt-get install -y chromium`);
  }
  const profile = await mkdtemp(path.join(os.tmpdir(), 'wsbroker-chromium-'));
  // Trust exactly the test certificate's key, not every certificate.
  const extraArgs = trustTestCert ? [`--ignore-certificate-errors-spki-list=${(await testCerts()).spki}`] : [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: chromiumPath,
    headless: true,
    args: [...CHROMIUM_ARGS, ...extraArgs],
    viewport: { width: 1280, height: 800 },
    timeout: 30000,
  });
  context.setDefaultTimeout(20000);
  const extra = [];
  return {
    context,
    async newContext(opts = {}) {
      const browser = context.browser();
      if (!browser) throw new Error('persistent context has no browser object');
      const ctx = await browser.newContext({ viewport: { width: 1280, height: 800 }, ...opts });
      ctx.setDefaultTimeout(20000);
      extra.push(ctx);
      return ctx;
    },
    async close() {
      for (const ctx of extra) await ctx.close().catch(() => {});
      await context.close().catch(() => {});
      await rm(profile, { recursive: true, force: true }).catch(() => {});
    },
  };
}

/**
 * Open a page on the broker's origin (its https:// origin with `https`)
 * with wsbroker.js loaded as `window.wsb`.
 * The page is the module's own URL (a plain-text document): it must be a
 * real response from 127.0.0.1, because Chromium's local network access
 * checks block WebSockets to loopback from pages of unknown origin (such
 * as a routed or about:blank page).
 */
export async function openLibPage(context, broker, { https = false } = {}) {
  const page = await context.newPage();
  await page.goto(`${https ? broker.httpsUrl : broker.url}/wsbroker.js`);
  await page.evaluate(async () => {
    window.wsb = await import('/wsbroker.js');
  });
  return page;
}

/** Collect page errors and console errors so a test can assert there were none. */
export function watchErrors(page) {
  const errors = [];
  page.on('pageerror', (e) => errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') errors.push(`console: ${m.text()}`);
  });
  return errors;
}
