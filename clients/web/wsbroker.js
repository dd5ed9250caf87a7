/**
 * wsbroker.js: browser client for the wsbroker pub/sub protocol (version 1).
 *
 * A dependency-free ES module. It keeps one WebSocket to the broker, sends
 * requests with ids and matches the broker's acks and errors to them,
 * reconnects on its own with exponential backoff and full jitter,
 * resubscribes every subscription after a reconnect (concrete topics ask for
 * the messages they missed with `since`/`epoch`), checks liveness with
 * application-level pings, and queues publishes in a bounded outbox while it
 * is offline.
 *
 * @example
 * import { connect } from '/wsbroker.js';
 * const client = connect('/ws', { token: 'eyJ...' });
 * client.on('open', ({ reconnects }) => console.log('online', reconnects));
 * const sub = client.subscribe('chat.lobby', (data, { topic, seq }) => console.log(topic, seq, data));
 * const { seq } = await client.publish('chat.lobby', { text: 'hi' });
 * sub.unsubscribe();
 * client.close();
 *
 * @module wsbroker
 */

/** Version of the wire protocol this module speaks. */
export const PROTOCOL_VERSION = 1;

/**
 * Connection states, in the order a client usually goes through them.
 * @typedef {'connecting'|'open'|'reconnecting'|'closed'} ConnectionState
 */

/**
 * @typedef {object} ReconnectOptions
 * @property {number} [initialDelay=500] upper bound in ms of the first retry delay
 * @property {number} [maxDelay=30000] the retry delay never exceeds this (ms)
 * @property {number} [factor=2] growth of the upper bound per failed attempt
 */

/**
 * @typedef {object} ConnectOptions
 * @property {string|(() => (string|Promise<string>))} [token] JWT sent as the
 *   `token` query parameter (browsers cannot set an Authorization header); a
 *   function is called before every connection attempt, so it can refresh it
 * @property {ReconnectOptions|false} [reconnect] backoff settings, or `false`
 *   to stay closed after the first disconnection
 * @property {number} [pingInterval=15000] ms between application-level pings
 *   (`{"op":"ping"}`); 0 turns liveness checking off
 * @property {number} [pingTimeout=10000] ms to wait, after a ping, for any
 *   traffic from the broker before the connection is declared dead and
 *   replaced
 * @property {number} [connectTimeout=10000] ms allowed from opening the
 *   socket to the broker's `hello` (TCP, WebSocket handshake, greeting);
 *   after that the attempt is abandoned and retried
 * @property {number} [requestTimeout=15000] ms to wait for the ack of a sent
 *   request before its Promise rejects with code `timeout`
 * @property {number} [outboxLimit=100] publishes kept while offline; more
 *   reject at once with code `outbox_full`
 * @property {string|string[]} [protocols='wsbroker.v1'] WebSocket subprotocols offered
 * @property {boolean|string} [persist] keep the last seq and epoch of every
 *   concrete topic in `storage` (sessionStorage by default) under this name
 *   (`true`: "default"), so that a client made after a page reload resumes
 *   each such subscription with `since`/`epoch` and receives exactly what it
 *   missed (when the broker still retains it; else a `stale` event)
 * @property {Storage} [storage] where `persist` keeps its state (defaults to
 *   the global sessionStorage)
 * @property {typeof WebSocket} [WebSocket] WebSocket constructor to use
 *   (defaults to the global one)
 */

/**
 * Metadata passed to a subscription handler with each message.
 * @typedef {object} MessageInfo
 * @property {string} topic the concrete topic the message was published to
 * @property {number} seq the message's sequence number within its topic
 */

/**
 * @callback MessageHandler
 * @param {*} data the published JSON value
 * @param {MessageInfo} info topic and seq of the message
 * @returns {void}
 */

/**
 * Result of an acknowledged publish.
 * @typedef {object} PublishAck
 * @property {string} topic
 * @property {number} seq sequence number the broker gave the message
 */

/**
 * Error for a request the broker refused, or one that could not complete.
 * `code` is one of the broker's error codes (`bad_json`, `bad_request`,
 * `unknown_op`, `bad_topic`, `forbidden`, `too_many_subscriptions`,
 * `rate_limited`, `not_subscribed`) or one of this module's: `outbox_full`,
 * `closed`, `disconnected` (the connection dropped after the request was
 * sent, so whether it took effect is unknown), `timeout`, `too_large`.
 */
export class BrokerError extends Error {
  /**
   * @param {string} code machine-readable error code
   * @param {string} message human-readable explanation
   */
  constructor(code, message) {
    super(message);
    this.name = 'BrokerError';
    /** @type {string} */
    this.code = code;
  }
}

/**
 * Whether a concrete topic matches a subscription pattern (`*` is one
 * segment, a final `>` one or more).
 * @param {string} pattern
 * @param {string} topic
 * @returns {boolean}
 */
export function topicMatches(pattern, topic) {
  if (pattern === topic) return true;
  const p = pattern.split('.');
  const t = topic.split('.');
  for (let i = 0; i < p.length; i++) {
    if (p[i] === '>') return i === p.length - 1 && t.length > i;
    if (i >= t.length) return false;
    if (p[i] !== '*' && p[i] !== t[i]) return false;
  }
  return p.length === t.length;
}

/**
 * Whether a subscription pattern contains a wildcard segment.
 * @param {string} pattern
 * @returns {boolean}
 */
export function isPattern(pattern) {
  return pattern.split('.').some((s) => s === '*' || s === '>');
}

const DEFAULTS = {
  pingInterval: 15000,
  pingTimeout: 10000,
  connectTimeout: 10000,
  requestTimeout: 15000,
  outboxLimit: 100,
  protocols: 'wsbroker.v1',
};
const RECONNECT_DEFAULTS = { initialDelay: 500, maxDelay: 30000, factor: 2 };

/** Resolve `url` against the page (relative URLs, http→ws) and add the token. */
function buildUrl(url, token) {
  const base = typeof location !== 'undefined' ? location.href : undefined;
  let u;
  if (url === undefined || url === null || url === '') {
    if (base === undefined) throw new TypeError('connect(): a url is required outside a browser');
    u = new URL('/ws', base);
  } else {
    u = new URL(String(url), base);
  }
  if (u.protocol === 'http:') u.protocol = 'ws:';
  else if (u.protocol === 'https:') u.protocol = 'wss:';
  if (u.protocol !== 'ws:' && u.protocol !== 'wss:') {
    throw new TypeError(`connect(): unsupported URL scheme ${u.protocol}`);
  }
  if (token) u.searchParams.set('token', token);
  return u.toString();
}

/**
 * One subscription made with {@link Client#subscribe}. Several Subscription
 * objects on the same pattern share one subscription at the broker.
 */
export class Subscription {
  /** @param {Client} client @param {object} entry @param {MessageHandler} handler */
  constructor(client, entry, handler) {
    this._client = client;
    this._entry = entry;
    this._handler = handler;
    this._active = true;
    /**
     * Settles with the broker's answer to the subscribe request: resolves
     * with the ack (`seq`, `epoch`, `recovered` for concrete topics),
     * rejects with a {@link BrokerError}. Rejections are also reported as
     * `error` events, so awaiting this is optional.
     * @type {Promise<object>}
     */
    this.ready = entry.ready;
  }

  /** The pattern (or concrete topic) subscribed to. @type {string} */
  get topic() {
    return this._entry.pattern;
  }

  /** Highest seq seen on a concrete topic (null before any). @type {?number} */
  get seq() {
    return this._entry.seq;
  }

  /** Epoch of `seq`, from the broker's subscribe ack. @type {?string} */
  get epoch() {
    return this._entry.epoch;
  }

  /** Whether this subscription still delivers messages. @type {boolean} */
  get active() {
    return this._active;
  }

  /**
   * Stop delivering messages to this handler. The broker subscription is
   * removed once no handler is left on the pattern. Calling it twice is
   * harmless.
   * @returns {void}
   */
  unsubscribe() {
    if (!this._active) return;
    this._active = false;
    this._client._removeHandler(this._entry, this);
  }
}

/**
 * A connection to a wsbroker, created by {@link connect}. It is an
 * EventTarget: every event is a CustomEvent whose `detail` is described
 * below; {@link Client#on} is a shortcut that passes `detail` to the
 * listener.
 *
 * Events:
 * - `connecting` `{url}`: the first connection attempt starts.
 * - `open` `{hello, reconnects}`: the broker greeted the client; on a
 *   reconnect every subscription has been sent again and the outbox flushed.
 * - `reconnecting` `{attempt, delay, code, reason}`: the connection was lost
 *   (or never came up); the next attempt starts in `delay` ms.
 * - `closed` `{code, reason}`: the client is closed for good.
 * - `statechange` `{state, previous}`: any of the four changes above.
 * - `stale` `{topic, since, epoch, currentEpoch, seq}`: a subscription that
 *   asked for the messages after `since` (a resubscription after a
 *   reconnect, one resumed from `persist` state after a reload, or one given
 *   `since`) could not get them all (`recovered: false`): the broker
 *   restarted with a new epoch, or they left its history. Whatever the
 *   application derived from that topic may be out of date; the messages
 *   still retained (in the same epoch) follow.
 * - `error` `{code, message, topic?}`: the broker reported an error not tied
 *   to a pending Promise (a failed subscription, an error without id).
 */
export class Client extends EventTarget {
  /**
   * @param {string} url
   * @param {ConnectOptions} [options]
   */
  constructor(url, options = {}) {
    super();
    this._url = url;
    this._opts = { ...DEFAULTS, ...options };
    this._reconnect =
      options.reconnect === false ? false : { ...RECONNECT_DEFAULTS, ...(options.reconnect || {}) };
    this._WS = options.WebSocket || globalThis.WebSocket;
    if (typeof this._WS !== 'function') throw new TypeError('connect(): no WebSocket implementation');
    /** @type {ConnectionState} */
    this._state = 'connecting';
    this._ws = null;
    this._hello = null;
    this._attempt = 0;
    this._reconnects = 0;
    this._nextId = 1;
    this._pending = new Map(); // id -> {id, frame, resolve, reject, timer}
    this._outbox = []; // {frame, resolve, reject}
    this._subs = new Map(); // pattern -> entry
    this._timers = { retry: null, ping: null, pong: null, hello: null };
    this._lastRx = 0;
    this._generation = 0;
    this._lastUrl = null;
    this._everOpen = false;
    this._persist = null; // {prefix, storage} with the persist option
    if (options.persist) {
      const storage = options.storage || (typeof sessionStorage !== 'undefined' ? sessionStorage : null);
      if (!storage) throw new TypeError('connect(): persist needs a storage (no sessionStorage here)');
      const name = options.persist === true ? 'default' : String(options.persist);
      this._persist = { prefix: `wsbroker.resume.${name}.`, storage };
    }
    buildUrl(url, null); // throws now on a URL that can never work
    this._onOnline = () => {
      // The network is back: retry now instead of at the end of the backoff.
      if (this._state === 'reconnecting' && this._timers.retry) {
        clearTimeout(this._timers.retry);
        this._timers.retry = null;
        this._open();
      }
    };
    if (typeof window !== 'undefined' && window.addEventListener) {
      window.addEventListener('online', this._onOnline);
    }
    queueMicrotask(() => {
      if (this._state !== 'connecting') return;
      const detail = { url: this._safeUrl() };
      this._emit('statechange', { state: 'connecting', previous: null, ...detail });
      this._emit('connecting', detail);
    });
    this._open();
  }

  /** Current connection state. @type {ConnectionState} */
  get state() {
    return this._state;
  }

  /** Number of successful reconnections so far. @type {number} */
  get reconnects() {
    return this._reconnects;
  }

  /** The broker's `hello` on the current connection, or null. @type {?object} */
  get hello() {
    return this._hello;
  }

  /** Publishes waiting in the outbox for the connection. @type {number} */
  get queued() {
    return this._outbox.length;
  }

  /**
   * Listen to an event; the listener gets the event's `detail`.
   * @param {string} event event name (see the class description)
   * @param {(detail: object) => void} fn listener
   * @returns {() => void} a function that removes the listener
   */
  on(event, fn) {
    const wrapped = (ev) => fn(ev.detail);
    this.addEventListener(event, wrapped);
    return () => this.removeEventListener(event, wrapped);
  }

  /**
   * Wait until the client is open.
   * @param {number} [timeout] ms before rejecting with code `timeout`
   * @returns {Promise<void>} resolves when open, rejects if closed first
   */
  ready(timeout) {
    if (this._state === 'open') return Promise.resolve();
    if (this._state === 'closed') return Promise.reject(new BrokerError('closed', 'client is closed'));
    return new Promise((resolve, reject) => {
      let timer = null;
      const offs = [];
      const done = (fn, arg) => {
        offs.forEach((off) => off());
        if (timer) clearTimeout(timer);
        fn(arg);
      };
      offs.push(this.on('open', () => done(resolve)));
      offs.push(this.on('closed', () => done(reject, new BrokerError('closed', 'client is closed'))));
      if (timeout !== undefined) {
        timer = setTimeout(() => done(reject, new BrokerError('timeout', 'not open in time')), timeout);
      }
    });
  }

  /**
   * Subscribe to a topic or pattern. Stays in force across reconnects.
   * @param {string} pattern topic, or pattern with `*` / final `>`
   * @param {MessageHandler} handler called with (data, {topic, seq})
   * @param {object} [options]
   * @param {number} [options.last] replay up to this many retained messages first
   * @param {number} [options.since] concrete topics only: replay retained
   *   messages with a higher seq (resuming from a seq saved earlier); with
   *   the client's `persist` option, the saved seq of a concrete topic is
   *   used when this is not given
   * @param {string} [options.epoch] epoch that `since` belongs to
   * @returns {Subscription}
   */
  subscribe(pattern, handler, options = {}) {
    if (typeof pattern !== 'string') throw new TypeError('subscribe(): pattern must be a string');
    if (typeof handler !== 'function') throw new TypeError('subscribe(): handler must be a function');
    if (this._state === 'closed') throw new BrokerError('closed', 'client is closed');
    let entry = this._subs.get(pattern);
    if (!entry) {
      const wildcard = isPattern(pattern);
      let since = Number.isInteger(options.since) ? options.since : null;
      let epoch = typeof options.epoch === 'string' ? options.epoch : null;
      if (since === null && !wildcard) {
        const saved = this._recall(pattern);
        if (saved) ({ seq: since, epoch } = saved);
      }
      entry = {
        pattern,
        wildcard,
        handlers: new Set(),
        since, // the caller's (or the persisted one), first subscribe only
        seq: !wildcard && since !== null ? since : null,
        epoch,
        last: Number.isInteger(options.last) ? options.last : null,
        fresh: true, // no ack yet: `last`/user `since` apply
        awaiting: null, // id of the subscribe request in flight
        pendingSeq: null, // highest seq seen while awaiting the ack
        ready: null,
        settle: null,
      };
      entry.ready = new Promise((resolve, reject) => {
        entry.settle = { resolve, reject };
      });
      entry.ready.catch(() => {}); // reported as an `error` event too
      this._subs.set(pattern, entry);
      if (this._state === 'open') this._sendSubscribe(entry);
    }
    const sub = new Subscription(this, entry, handler);
    entry.handlers.add(sub);
    return sub;
  }

  /**
   * Publish `data` on a concrete topic. While offline the publish waits in
   * the outbox (at most `outboxLimit`), and is sent when the connection is
   * back.
   * @param {string} topic concrete topic (no wildcards)
   * @param {*} data any JSON-serialisable value
   * @returns {Promise<PublishAck>} resolves with the broker's ack; rejects
   *   with a {@link BrokerError} carrying the broker's `code` (e.g.
   *   `bad_topic`) or `outbox_full`, `closed`, `disconnected`, `timeout`,
   *   `too_large`
   */
  publish(topic, data) {
    if (this._state === 'closed') return Promise.reject(new BrokerError('closed', 'client is closed'));
    const json = data === undefined ? undefined : JSON.stringify(data);
    if (json === undefined) {
      return Promise.reject(new BrokerError('bad_request', 'publish(): data must be a JSON value'));
    }
    const id = this._nextId++;
    const frame = `{"op":"publish","topic":${JSON.stringify(String(topic))},"data":${json},"id":${id}}`;
    const max = this._hello && this._hello.max_message;
    if (max && utf8Length(frame) > max) {
      return Promise.reject(
        new BrokerError('too_large', `message of ${utf8Length(frame)} bytes exceeds the broker's ${max}`),
      );
    }
    return new Promise((resolve, reject) => {
      const req = {
        id,
        frame,
        resolve: (ack) => resolve({ topic: ack.topic, seq: ack.seq }),
        reject,
      };
      if (this._state === 'open') {
        this._sendRequest(req);
      } else if (this._outbox.length >= this._opts.outboxLimit) {
        reject(
          new BrokerError(
            'outbox_full',
            `offline and the outbox already holds ${this._opts.outboxLimit} publishes`,
          ),
        );
      } else {
        this._outbox.push(req);
      }
    });
  }

  /**
   * Ping the broker (`{"op":"ping"}`) and measure the round trip.
   * @returns {Promise<number>} round-trip time in ms; rejects with code
   *   `disconnected` when offline
   */
  ping() {
    if (this._state !== 'open') {
      return Promise.reject(new BrokerError('disconnected', 'not connected'));
    }
    const t0 = now();
    return new Promise((resolve, reject) => {
      const id = this._nextId++;
      this._sendRequest({
        id,
        frame: `{"op":"ping","id":${id}}`,
        resolve: () => resolve(now() - t0),
        reject,
      });
    });
  }

  /**
   * Close the connection for good. Publishes still queued or awaiting
   * their ack reject with code `closed`.
   * @param {number} [code=1000]
   * @param {string} [reason='']
   * @returns {void}
   */
  close(code = 1000, reason = '') {
    if (this._state === 'closed') return;
    this._generation++;
    this._clearTimers();
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      detach(ws);
      try {
        ws.close(code, reason);
      } catch (e) {
        ws.close();
      }
    }
    const err = () => new BrokerError('closed', 'client closed before the request completed');
    this._failPending(err);
    for (const entry of this._subs.values()) {
      entry.settle.reject(err());
      for (const sub of entry.handlers) sub._active = false;
    }
    this._subs.clear();
    this._setState('closed', { code, reason });
  }

  // ---- internals ----

  _detachWindow() {
    if (typeof window !== 'undefined' && window.removeEventListener) {
      window.removeEventListener('online', this._onOnline);
    }
  }

  _safeUrl() {
    if (!this._lastUrl) return String(this._url);
    const u = new URL(this._lastUrl);
    if (u.searchParams.has('token')) u.searchParams.set('token', 'redacted');
    return u.toString();
  }

  /** Persisted {seq, epoch} of a concrete topic, or null. */
  _recall(topic) {
    if (!this._persist) return null;
    try {
      const v = JSON.parse(this._persist.storage.getItem(this._persist.prefix + topic));
      if (v && Number.isInteger(v.seq) && v.seq >= 0) {
        return { seq: v.seq, epoch: typeof v.epoch === 'string' ? v.epoch : null };
      }
    } catch (e) {
      // unreadable or unavailable storage: start without
    }
    return null;
  }

  /** Persist what a concrete subscription has seen, or (forget) drop it. */
  _remember(entry, forget = false) {
    if (!this._persist || entry.wildcard) return;
    const key = this._persist.prefix + entry.pattern;
    try {
      if (forget) this._persist.storage.removeItem(key);
      else if (entry.seq !== null) this._persist.storage.setItem(key, JSON.stringify({ seq: entry.seq, epoch: entry.epoch }));
    } catch (e) {
      // storage full or disabled: resuming after a reload will not work
    }
  }

  _emit(type, detail) {
    this.dispatchEvent(new CustomEvent(type, { detail }));
  }

  _setState(state, detail) {
    const previous = this._state;
    if (previous === state) return;
    this._state = state;
    if (state === 'closed') this._detachWindow();
    this._emit('statechange', { state, previous, ...detail });
    this._emit(state, detail);
  }

  _clearTimers() {
    for (const k of Object.keys(this._timers)) {
      clearTimeout(this._timers[k]);
      clearInterval(this._timers[k]);
      this._timers[k] = null;
    }
  }

  async _open() {
    const gen = ++this._generation;
    let token = this._opts.token;
    try {
      if (typeof token === 'function') token = await token();
    } catch (e) {
      if (gen === this._generation) this._lost(4000, `token: ${e && e.message}`);
      return;
    }
    if (gen !== this._generation) return; // closed meanwhile
    let ws;
    try {
      this._lastUrl = buildUrl(this._url, token);
      ws = new this._WS(this._lastUrl, this._opts.protocols || undefined);
    } catch (e) {
      this._lost(4000, String(e && e.message));
      return;
    }
    this._ws = ws;
    this._hello = null;
    // A listener that accepts TCP but never completes the handshake or never
    // greets would leave the socket hanging: bound the whole setup.
    if (this._opts.connectTimeout > 0) {
      this._timers.hello = setTimeout(() => this._dead('connect timeout'), this._opts.connectTimeout);
    }
    ws.onopen = () => {
      this._lastRx = now();
    };
    ws.onmessage = (ev) => this._onMessage(ev.data);
    ws.onclose = (ev) => {
      if (this._ws !== ws) return;
      this._lost(ev.code, ev.reason);
    };
    ws.onerror = () => {}; // a close event follows; nothing useful is in the error
  }

  /** The socket is unresponsive: drop it without waiting for TCP, then retry. */
  _dead(reason) {
    const ws = this._ws;
    if (!ws) return;
    this._ws = null;
    detach(ws);
    try {
      ws.close(4000, reason);
    } catch (e) {
      ws.close();
    }
    this._lost(4000, reason);
  }

  /** The connection is gone: fail what cannot be resent and schedule a retry. */
  _lost(code, reason) {
    if (this._state === 'closed') return;
    this._ws = null;
    this._hello = null;
    this._clearTimers();
    // Requests already on the wire cannot be known to have taken effect.
    const inFlight = [...this._pending.values()];
    this._pending.clear();
    for (const req of inFlight) {
      clearTimeout(req.timer);
      req.reject(
        new BrokerError('disconnected', `connection lost before the broker answered (${code} ${reason || ''})`.trim()),
      );
    }
    for (const entry of this._subs.values()) entry.awaiting = null;
    if (this._reconnect === false) {
      this._generation++;
      this._failPending(() => new BrokerError('closed', 'connection closed'));
      for (const entry of this._subs.values()) {
        entry.settle.reject(new BrokerError('closed', 'connection closed'));
        for (const sub of entry.handlers) sub._active = false;
      }
      this._subs.clear();
      this._setState('closed', { code, reason });
      return;
    }
    const { initialDelay, maxDelay, factor } = this._reconnect;
    const cap = Math.min(maxDelay, initialDelay * Math.pow(factor, this._attempt));
    const delay = Math.floor(Math.random() * cap); // full jitter
    this._attempt++;
    const detail = { attempt: this._attempt, delay, code, reason };
    if (this._state === 'reconnecting') this._emit('reconnecting', detail);
    else this._setState('reconnecting', detail);
    this._timers.retry = setTimeout(() => {
      this._timers.retry = null;
      this._open();
    }, delay);
  }

  _failPending(makeErr) {
    const reqs = [...this._pending.values(), ...this._outbox];
    this._pending.clear();
    this._outbox = [];
    for (const req of reqs) {
      clearTimeout(req.timer);
      req.reject(makeErr());
    }
  }

  _send(frame) {
    this._ws.send(frame);
  }

  _sendRequest(req) {
    this._pending.set(req.id, req);
    if (this._opts.requestTimeout > 0) {
      req.timer = setTimeout(() => {
        if (this._pending.get(req.id) !== req) return;
        this._pending.delete(req.id);
        req.reject(new BrokerError('timeout', `no answer from the broker within ${this._opts.requestTimeout} ms`));
      }, this._opts.requestTimeout);
    }
    this._send(req.frame);
  }

  _sendSubscribe(entry) {
    const id = this._nextId++;
    const msg = { op: 'subscribe', topic: entry.pattern, id };
    let since = null;
    if (entry.fresh) {
      if (entry.last !== null) msg.last = entry.last;
      // Sent as given: on a pattern the broker answers bad_request.
      if (entry.since !== null) since = entry.wildcard ? entry.since : entry.seq;
    } else if (!entry.wildcard && entry.seq !== null) {
      since = entry.seq;
    }
    if (since !== null) {
      msg.since = since;
      if (entry.epoch !== null) msg.epoch = entry.epoch;
    }
    entry.awaiting = id;
    entry.pendingSeq = null;
    const sentEpoch = entry.epoch;
    this._sendRequest({
      id,
      frame: JSON.stringify(msg),
      resolve: (ack) => this._onSubscribeAck(entry, id, ack, since, sentEpoch),
      reject: (err) => this._onSubscribeError(entry, id, err),
    });
  }

  _onSubscribeAck(entry, id, ack, since, sentEpoch) {
    if (entry.awaiting !== id) return;
    entry.awaiting = null;
    const wasFresh = entry.fresh;
    entry.fresh = false;
    if (!entry.wildcard && Number.isInteger(ack.seq)) {
      // Every message on this connection belongs to the current epoch, so
      // seqs seen before the ack (pendingSeq) compare with ack.seq.
      const base = ack.recovered === true ? entry.seq || 0 : ack.seq;
      entry.seq = Math.max(base, entry.pendingSeq || 0);
      if (typeof ack.epoch === 'string') entry.epoch = ack.epoch;
      this._remember(entry);
    }
    entry.pendingSeq = null;
    if (ack.recovered === false) {
      this._emit('stale', {
        topic: entry.pattern,
        since,
        epoch: sentEpoch,
        currentEpoch: typeof ack.epoch === 'string' ? ack.epoch : null,
        seq: ack.seq,
      });
    }
    if (wasFresh) entry.settle.resolve(ack);
  }

  _onSubscribeError(entry, id, err) {
    if (err.code === 'disconnected') return; // resent on the next connection
    if (entry.awaiting !== id) return;
    entry.awaiting = null;
    if (err.code === 'timeout') {
      // Unknown outcome: keep the subscription, resend it on a new connection.
      this._dead('subscribe not acknowledged');
      return;
    }
    if (this._subs.get(entry.pattern) === entry) this._subs.delete(entry.pattern);
    this._remember(entry, true);
    for (const sub of entry.handlers) sub._active = false;
    entry.settle.reject(err);
    this._emit('error', { code: err.code, message: err.message, topic: entry.pattern });
  }

  _removeHandler(entry, sub) {
    entry.handlers.delete(sub);
    if (entry.handlers.size > 0 || this._subs.get(entry.pattern) !== entry) return;
    this._subs.delete(entry.pattern);
    this._remember(entry, true);
    entry.awaiting = null;
    if (this._state === 'open' && this._ws) {
      const id = this._nextId++;
      this._sendRequest({
        id,
        frame: JSON.stringify({ op: 'unsubscribe', topic: entry.pattern, id }),
        resolve: () => {},
        reject: () => {}, // not_subscribed: it never took effect; nothing to undo
      });
    }
  }

  _onHello(hello) {
    clearTimeout(this._timers.hello);
    this._timers.hello = null;
    this._hello = hello;
    this._attempt = 0;
    if (this._everOpen) this._reconnects++;
    this._everOpen = true;
    for (const entry of this._subs.values()) this._sendSubscribe(entry);
    const queued = this._outbox;
    this._outbox = [];
    for (const req of queued) this._sendRequest(req);
    this._startPings();
    this._setState('open', { hello, reconnects: this._reconnects });
  }

  _startPings() {
    const interval = this._opts.pingInterval;
    if (!(interval > 0)) return;
    const gen = this._generation;
    this._timers.ping = setInterval(() => {
      if (gen !== this._generation || !this._ws) return;
      const sentAt = now();
      const id = this._nextId++;
      this._send(`{"op":"ping","id":${id}}`);
      if (this._timers.pong) return; // an earlier ping is still being checked
      this._timers.pong = setTimeout(() => {
        this._timers.pong = null;
        // Any traffic (the pong or anything else) after the ping proves liveness.
        if (gen === this._generation && this._lastRx < sentAt) this._dead('ping timeout');
      }, this._opts.pingTimeout);
    }, interval);
  }

  _onMessage(raw) {
    this._lastRx = now();
    if (typeof raw !== 'string') return; // the protocol only uses text
    let msg;
    try {
      msg = JSON.parse(raw);
    } catch (e) {
      this._emit('error', { code: 'bad_json', message: 'broker sent a message that is not JSON' });
      return;
    }
    if (!msg || typeof msg !== 'object') return;
    switch (msg.op) {
      case 'hello':
        this._onHello(msg);
        break;
      case 'message':
        this._dispatch(msg);
        break;
      case 'ack':
      case 'pong':
      case 'error': {
        const req = msg.id !== undefined ? this._pending.get(msg.id) : undefined;
        if (!req) {
          if (msg.op === 'error') {
            this._emit('error', { code: msg.code, message: msg.message });
          }
          break;
        }
        this._pending.delete(msg.id);
        clearTimeout(req.timer);
        if (msg.op === 'error') req.reject(new BrokerError(String(msg.code), String(msg.message || msg.code)));
        else req.resolve(msg);
        break;
      }
      default:
        break; // unknown ops are ignored (forward compatibility)
    }
  }

  _dispatch(msg) {
    const { topic, seq, data } = msg;
    if (typeof topic !== 'string') return;
    const info = { topic, seq };
    // Snapshot first: handlers may subscribe or unsubscribe.
    const targets = [];
    for (const entry of this._subs.values()) {
      if (!entry.wildcard && entry.pattern === topic && Number.isInteger(seq)) {
        if (entry.awaiting !== null) {
          entry.pendingSeq = Math.max(entry.pendingSeq || 0, seq);
        } else if (seq > (entry.seq || 0)) {
          entry.seq = seq;
          this._remember(entry);
        }
      }
      if (entry.pattern === topic || (entry.wildcard && topicMatches(entry.pattern, topic))) {
        for (const sub of entry.handlers) targets.push(sub);
      }
    }
    for (const sub of targets) {
      if (!sub._active) continue;
      try {
        sub._handler(data, info);
      } catch (e) {
        // One failing handler must not starve the others or kill the client.
        setTimeout(() => {
          throw e;
        });
      }
    }
  }
}

function detach(ws) {
  ws.onopen = ws.onmessage = ws.onclose = ws.onerror = null;
}

function now() {
  return typeof performance !== 'undefined' ? performance.now() : Date.now();
}

function utf8Length(s) {
  return new TextEncoder().encode(s).length;
}

/**
 * Connect to a wsbroker. The client starts connecting at once and keeps
 * reconnecting until {@link Client#close}.
 * @param {string} [url] `ws://`/`wss://` URL, or a path such as `/ws`
 *   resolved against the page (`http` becomes `ws`); default `/ws` of the page's host
 * @param {ConnectOptions} [options]
 * @returns {Client}
 */
export function connect(url, options = {}) {
  return new Client(url, options);
}
