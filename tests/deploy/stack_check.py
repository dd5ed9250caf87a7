#!/usr/bin/env python3
"""Checks of the running compose stack for tests/deploy/compose_test.sh.

Python's standard library only (a WebSocket client, an HTTP client, a DNS
responder). Every check prints "ok: ..." and a failed one prints "FAIL: ..."
and exits 1.

  stack_check.py dns --listen 127.0.0.1:P --name broker --addr 127.0.0.2 ...
      answer A queries for NAME with the ADDRs (haproxy's resolvers on the
      host network, where there is no Docker DNS), until killed
  stack_check.py http --front H:P --stats H:P --brokers H:P,H:P
      /healthz, the demo page and its scripts, /wsbroker.js and /metrics
      through haproxy; each replica directly; both replicas UP in haproxy
  stack_check.py ws --front H:P --brokers H:P,H:P --cluster 0|1 [--redis H:P]
      WebSocket pub/sub through haproxy: a round trip, two connections that
      haproxy gives to different replicas, then what crosses between them
  stack_check.py hold --front H:P --brokers H:P,H:P --ready FILE [--token-file FILE]
      hold one connection to each replica through haproxy (FILE is written
      once they are open) and expect Close 1001 on both when the brokers stop
  stack_check.py ports N | ports --free P...
      N ports that nothing listens on (TCP and UDP, any address), or check
      that the ports P are still free
  stack_check.py redis --addr H:P (--set K | --get K) --value V
      Redis persists (appendonly) and stores K, or still has K after a restart
  stack_check.py hostnet --config FILE
      every service of `compose config` is on the host network
  stack_check.py secure --front H:P --tls H:P --ca FILE --brokers H:P,H:P --token-file FILE
      with deploy/compose.tls.yml and compose.auth.yml: HTTPS and wss://
      through haproxy (certificate verified), 401 without a valid token,
      pub/sub with one (header or ?token=) on both replicas
  stack_check.py parity --config FILE --service A --other B [--ignore KEY]... [--ignore-env VAR]...
      services A and B of `compose config` are the same but for those
"""
import argparse
import base64
import hashlib
import http.client
import json
import os
import re
import select
import socket
import ssl
import struct
import sys
import time
import uuid

GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"


class Failure(Exception):
    pass


def ok(msg):
    print("ok: " + msg, flush=True)


def check(cond, msg):
    if not cond:
        raise Failure(msg)


def hostport(s):
    host, _, port = s.rpartition(":")
    return host, int(port)


# --- HTTP -------------------------------------------------------------------


def tls_context(ca):
    """Trust only CA (the test's self-signed certificate, for 127.0.0.1)."""
    return ssl.create_default_context(cafile=ca)


def http_get(addr, path, timeout=10, ca=None):
    host, port = hostport(addr)
    if ca:
        conn = http.client.HTTPSConnection(host, port, timeout=timeout, context=tls_context(ca))
    else:
        conn = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        conn.request("GET", path, headers={"Host": "localhost"})
        resp = conn.getresponse()
        return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read()
    finally:
        conn.close()


def metric(addr, name):
    status, _, body = http_get(addr, "/metrics")
    check(status == 200, f"GET /metrics on {addr}: status {status}")
    m = re.search(rb"^" + re.escape(name.encode()) + rb" (\d+)$", body, re.M)
    check(m is not None, f"/metrics on {addr} has no {name}")
    return int(m.group(1))


def haproxy_servers(stats):
    """Rows of the "brokers" backend's servers that have an address."""
    status, _, body = http_get(stats, "/;csv")
    check(status == 200, f"haproxy stats CSV on {stats}: status {status}")
    lines = body.decode().splitlines()
    head = lines[0].lstrip("# ").split(",")
    rows = [dict(zip(head, line.split(","))) for line in lines[1:] if line]
    return [r for r in rows if r["pxname"] == "brokers" and r["svname"] not in ("FRONTEND", "BACKEND")
            and r.get("addr")]


def cmd_http(a):
    front, brokers = a.front, a.brokers.split(",")
    status, hdr, body = http_get(front, "/healthz")
    check(status == 200 and json.loads(body) == {"status": "ok"},
          f"GET /healthz through haproxy: {status} {body!r}")
    ok(f"GET /healthz through haproxy: 200 {body.decode()}")

    status, hdr, page = http_get(front, "/")
    check(status == 200 and hdr.get("content-type", "").startswith("text/html"),
          f"GET / through haproxy: {status} {hdr.get('content-type')}")
    text = page.decode()
    check("<title>wsbroker" in text, "GET /: not the wsbroker demo page")
    scripts = re.findall(r'<script[^>]*\bsrc="([^"]+)"', text)
    check(scripts, "GET /: the demo page has no <script src=...> tag")
    loaded = {}
    for src in scripts:
        path = "/" + src.lstrip("./")
        status, hdr, js = http_get(front, path)
        check(status == 200 and "javascript" in hdr.get("content-type", ""),
              f"GET {path} (script of the demo page): {status} {hdr.get('content-type')}")
        loaded[path] = js.decode()
    via = [p for p, js in loaded.items()
           if p == "/wsbroker.js" or re.search(r"""import[^;]*from\s*['"]\./wsbroker\.js['"]""", js)]
    check(via, f"the demo page loads neither wsbroker.js nor a module importing it: {scripts}")
    ok(f"GET / through haproxy: the demo page, scripts {', '.join(scripts)} served; "
       f"wsbroker.js loaded by {via[0]}")

    status, hdr, js = http_get(front, "/wsbroker.js")
    check(status == 200 and "javascript" in hdr.get("content-type", ""),
          f"GET /wsbroker.js: {status} {hdr.get('content-type')}")
    check(re.search(rb"export\s+(async\s+)?function\s+connect\b|export\s*\{[^}]*\bconnect\b", js),
          "GET /wsbroker.js: no exported connect()")
    ok(f"GET /wsbroker.js through haproxy: 200, {len(js)} bytes, exports connect()")

    status, hdr, body = http_get(front, "/metrics")
    check(status == 200 and b"wsbroker_connections_open" in body,
          f"GET /metrics through haproxy: {status}")
    ok("GET /metrics through haproxy: Prometheus text")

    for b in brokers:
        status, _, body = http_get(b, "/healthz")
        check(status == 200, f"GET /healthz on replica {b}: {status}")
        status, _, body = http_get(b, "/")
        check(status == 200 and body == page, f"GET / on replica {b}: {status}, not the same page")
    ok(f"each replica ({', '.join(brokers)}) answers /healthz and serves the demo page")

    deadline = time.time() + a.timeout
    while True:
        rows = haproxy_servers(a.stats)
        up = sorted(f"{r['addr']}" for r in rows if r["status"] == "UP")
        if up == sorted(brokers) and len(rows) == len(brokers):
            break
        check(time.time() < deadline,
              "haproxy backend 'brokers': " + ", ".join(f"{r['svname']} {r['addr']} {r['status']}" for r in rows)
              + f"; expected {', '.join(brokers)} UP")
        time.sleep(1)
    ok(f"haproxy found both replicas by DNS and reports them UP: "
       + ", ".join(f"{r['svname']}={r['addr']}" for r in rows))


# --- WebSocket --------------------------------------------------------------


class Closed(Exception):
    def __init__(self, code, reason):
        super().__init__(f"closed {code} {reason}")
        self.code, self.reason = code, reason


class WS:
    """A minimal RFC 6455 client: text frames, masked, as browsers send them."""

    def __init__(self, addr, path="/ws", timeout=10, ca=None, headers=()):
        host, port = hostport(addr)
        self.name = addr
        self.pending = []
        self.replica = None
        self.sock = socket.create_connection((host, port), timeout=timeout)
        if ca:
            self.sock = tls_context(ca).wrap_socket(self.sock, server_hostname=host)
        key = base64.b64encode(os.urandom(16))
        extra = "".join(f"{h}\r\n" for h in headers).encode()
        self.sock.sendall(b"GET " + path.encode() + b" HTTP/1.1\r\nHost: localhost\r\n"
                          b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"
                          b"Sec-WebSocket-Key: " + key + b"\r\n" + extra + b"\r\n")
        self.buf = b""
        while b"\r\n\r\n" not in self.buf:
            chunk = self.sock.recv(4096)
            check(chunk, f"WebSocket handshake on {addr}{path}: connection closed")
            self.buf += chunk
        head, self.buf = self.buf.split(b"\r\n\r\n", 1)
        lines = head.decode("latin-1").split("\r\n")
        check(lines[0].split(" ")[1] == "101", f"WebSocket handshake on {addr}{path}: {lines[0]}")
        accept = base64.b64encode(hashlib.sha1(key + GUID).digest()).decode()
        check(any(l.lower() == "sec-websocket-accept: " + accept.lower() for l in lines[1:]),
              f"WebSocket handshake on {addr}{path}: wrong Sec-WebSocket-Accept")
        self.hello = self.recv()
        check(self.hello.get("op") == "hello", f"first message is not hello: {self.hello}")

    def send_frame(self, opcode, payload):
        mask = os.urandom(4)
        n = len(payload)
        if n < 126:
            head = struct.pack("!BB", 0x80 | opcode, 0x80 | n)
        elif n < 65536:
            head = struct.pack("!BBH", 0x80 | opcode, 0xFE, n)
        else:
            head = struct.pack("!BBQ", 0x80 | opcode, 0xFF, n)
        masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + masked)

    def send(self, obj):
        self.send_frame(1, json.dumps(obj).encode())

    def _need(self, n, deadline):
        while len(self.buf) < n:
            left = deadline - time.time()
            if left <= 0:
                raise TimeoutError
            pending = self.sock.pending() if isinstance(self.sock, ssl.SSLSocket) else 0
            if not pending:
                r, _, _ = select.select([self.sock], [], [], left)
                if not r:
                    raise TimeoutError
            chunk = self.sock.recv(65536)
            if not chunk:
                raise Closed(1006, "connection dropped without a Close frame")
            self.buf += chunk

    def recv(self, timeout=10):
        """The next JSON message; answers Pings; raises Closed or TimeoutError."""
        deadline = time.time() + timeout
        while True:
            self._need(2, deadline)
            b0, b1 = self.buf[0], self.buf[1]
            n, off = b1 & 0x7F, 2
            if n == 126:
                self._need(4, deadline)
                n, off = struct.unpack("!H", self.buf[2:4])[0], 4
            elif n == 127:
                self._need(10, deadline)
                n, off = struct.unpack("!Q", self.buf[2:10])[0], 10
            self._need(off + n, deadline)
            payload, self.buf = self.buf[off:off + n], self.buf[off + n:]
            opcode = b0 & 0x0F
            if opcode == 9:
                self.send_frame(10, payload)
            elif opcode == 8:
                code = struct.unpack("!H", payload[:2])[0] if len(payload) >= 2 else 1005
                try:
                    self.send_frame(8, payload[:2])
                except OSError:
                    pass
                raise Closed(code, payload[2:].decode(errors="replace"))
            elif opcode == 1:
                check(b0 & 0x80, "the broker fragmented a message")
                return json.loads(payload)

    def request(self, obj, timeout=10):
        """Send a request with an id and return its ack; messages before it are kept."""
        self.send(obj)
        while True:
            m = self.recv(timeout)
            if m.get("id") == obj["id"] and m.get("op") in ("ack", "error"):
                check(m["op"] == "ack", f"{obj['op']} on {self.name}: {m}")
                return m
            self.pending.append(m)

    def messages(self, count, timeout=10):
        out = [m for m in self.pending if m.get("op") == "message"]
        self.pending = []
        deadline = time.time() + timeout
        while len(out) < count:
            m = self.recv(max(0.01, deadline - time.time()))
            if m.get("op") == "message":
                out.append(m)
        return out

    def quiet(self, seconds):
        """Messages that arrive within SECONDS (expected: none)."""
        got = [m for m in self.pending if m.get("op") == "message"]
        self.pending = []
        deadline = time.time() + seconds
        try:
            while True:
                m = self.recv(max(0.01, deadline - time.time()))
                if m.get("op") == "message":
                    got.append(m)
        except TimeoutError:
            return got

    def close(self):
        """Close handshake, then wait for the end of the TCP stream, so that
        the connection is gone from haproxy's and the broker's counts."""
        try:
            self.send_frame(8, struct.pack("!H", 1000))
            while True:
                self.recv(5)
        except (Closed, TimeoutError, OSError):
            pass
        deadline = time.time() + 5
        try:
            while time.time() < deadline:
                r, _, _ = select.select([self.sock], [], [], max(0.01, deadline - time.time()))
                if r and not self.sock.recv(65536):
                    break
        except OSError:
            pass
        self.sock.close()


def open_spread(front, brokers, timeout, path="/ws"):
    """One WebSocket per replica, all through haproxy; returns them in
    replica order, proven by each replica's connections_open gauge."""
    deadline = time.time() + 5  # earlier connections of the test may still be closing
    while True:
        base = [metric(b, "wsbroker_connections_open") for b in brokers]
        if not any(base) or time.time() > deadline:
            break
        time.sleep(0.1)
    conns = []
    for _ in brokers:
        conns.append(WS(front, path))
        deadline = time.time() + timeout
        while True:
            now = [metric(b, "wsbroker_connections_open") for b in brokers]
            grown = [i for i, (x, y) in enumerate(zip(base, now)) if y > x]
            if len(grown) == len(conns):
                break
            check(time.time() < deadline,
                  f"connections_open per replica went from {base} to {now} after {len(conns)} "
                  "connections through haproxy: not one per replica")
            time.sleep(0.2)
        new = [i for i in grown if i not in [c.replica for c in conns[:-1]]]
        check(len(new) == 1, f"connections_open per replica {base} -> {now}")
        conns[-1].replica = new[0]
    return sorted(conns, key=lambda c: c.replica)


def cluster_checks(a, brokers, topic, x, y):
    """Cluster mode: x and y (one connection on each replica, both
    subscribed to topic) see one stream of that topic, whoever publishes."""
    if a.redis:
        deadline = time.time() + a.timeout
        while True:
            chans = redis_command(a.redis, "PUBSUB", "CHANNELS")
            pats = int(redis_command(a.redis, "PUBSUB", "NUMPAT"))
            if chans or pats:
                break
            check(time.time() < deadline, "Redis shows no pub/sub channel or pattern while clients subscribe")
            time.sleep(0.2)
        ok(f"Redis has {len(chans)} pub/sub channel(s) and {pats} pattern(s) while clients subscribe")
    # Each way, probe until one crosses: a replica may take a moment to
    # subscribe in Redis after it acknowledged its client.
    for pub, sub in ((x, y), (y, x)):
        deadline = time.time() + a.timeout
        k = 0
        while True:
            k += 1
            pub.request({"op": "publish", "topic": topic, "data": {"probe": k}, "id": f"probe-{k}"})
            try:
                if any(m["data"] == {"probe": k} for m in sub.messages(1, timeout=1)):
                    break
            except TimeoutError:
                pass
            check(time.time() < deadline, f"cluster: a message published on replica {brokers[pub.replica]} "
                  f"did not reach a subscriber on {brokers[sub.replica]} within {a.timeout} s")
    for c in (x, y):
        c.quiet(0.5)
    ok(f"cluster: a message published on one replica reaches subscribers on the other, both ways")

    n = 10
    for i in range(n):
        x.send({"op": "publish", "topic": topic, "data": {"from": "x", "i": i}, "id": 100 + i})
        y.send({"op": "publish", "topic": topic, "data": {"from": "y", "i": i}, "id": 200 + i})
    seen = []
    for c, me, base in ((x, "x", 100), (y, "y", 200)):
        acks, msgs = {}, []
        deadline = time.time() + a.timeout
        while len(msgs) < 2 * n or len(acks) < n:
            m = c.recv(max(0.01, deadline - time.time()))
            if m.get("op") == "ack":
                acks[m["id"]] = m["seq"]
            elif m.get("op") == "message":
                msgs.append((m["seq"], json.dumps(m["data"], sort_keys=True)))
            else:
                raise Failure(f"{c.name}: unexpected {m}")
        seqs = [s for s, _ in msgs]
        check(seqs == list(range(seqs[0], seqs[0] + 2 * n)),
              f"replica {brokers[c.replica]}: seqs not gap-free and in order: {seqs}")
        by_data = {d: s for s, d in msgs}
        for i in range(n):
            d = json.dumps({"from": me, "i": i}, sort_keys=True)
            check(acks.get(base + i) == by_data.get(d),
                  f"replica {brokers[c.replica]}: ack seq {acks.get(base + i)} for {d}, "
                  f"which arrived with seq {by_data.get(d)}")
        seen.append(msgs)
    check(seen[0] == seen[1], f"the replicas delivered different sequences:\n{seen[0]}\n{seen[1]}")
    ok(f"cluster: {2 * n} publishes on both replicas at once; each replica's subscriber got "
       f"all {2 * n} in the same gap-free seq order ({seen[0][0][0]}..{seen[0][-1][0]}), "
       "and every publisher's ack carries its message's seq")


def cmd_ws(a):
    front, brokers = a.front, a.brokers.split(",")
    topic = "deploy.test." + uuid.uuid4().hex[:12]

    c = WS(front)
    check(c.hello.get("server", "").startswith("wsbroker/"), f"hello: {c.hello}")
    c.request({"op": "subscribe", "topic": topic + ".*", "id": 1})
    data = {"text": "through haproxy", "n": 1}
    ack = c.request({"op": "publish", "topic": topic + ".x", "data": data, "id": 2})
    m = c.messages(1)[0]
    check(m["topic"] == topic + ".x" and m["data"] == data and m["seq"] == ack["seq"] == 1,
          f"round trip: ack {ack}, message {m}")
    c.close()
    ok(f"WebSocket through haproxy: hello from {c.hello['server']}, subscribe {topic}.*, "
       f"publish, ack seq 1, message back with the same data")

    conns = open_spread(front, brokers, a.timeout)
    ok(f"two WebSockets through haproxy (leastconn) landed on different replicas "
       f"({', '.join(brokers)}, per their wsbroker_connections_open)")
    x, y = conns[0], conns[1]
    for i, c in enumerate(conns):
        c.request({"op": "subscribe", "topic": topic, "id": 10 + i})

    if a.cluster:
        cluster_checks(a, brokers, topic, x, y)
    else:
        for pub, other in ((x, y), (y, x)):
            data = {"from": brokers[pub.replica]}
            ack = pub.request({"op": "publish", "topic": topic, "data": data, "id": 300 + pub.replica})
            got = pub.messages(1)[0]
            check(got["data"] == data and got["seq"] == ack["seq"], f"own replica: {got}")
            stray = other.quiet(1.0)
            check(not stray, f"without cluster mode a message crossed replicas: {stray}")
        ok("without cluster mode a message published on one replica reaches that replica's "
           "subscribers and not the other's (waited 1 s each way)")
    for c in conns:
        c.close()


def handshake_status(addr, path, ca=None, headers=()):
    """The HTTP status a WebSocket handshake gets (101 on success)."""
    try:
        WS(addr, path, ca=ca, headers=headers).close()
        return 101
    except Failure as e:
        m = re.search(r": HTTP/1\.1 (\d+)", str(e))
        if m:
            return int(m.group(1))
        raise


def roundtrip(ws, topic):
    ws.request({"op": "subscribe", "topic": topic, "id": 1})
    data = {"over": ws.name}
    ack = ws.request({"op": "publish", "topic": topic, "data": data, "id": 2})
    m = ws.messages(1)[0]
    check(m["data"] == data and m["seq"] == ack["seq"], f"round trip on {ws.name}: {ack} {m}")
    ws.close()


def cmd_secure(a):
    """haproxy's TLS frontend (deploy/compose.tls.yml) and token
    authentication on the brokers (deploy/compose.auth.yml)."""
    token = open(a.token_file).read().strip()
    topic = "deploy.secure." + uuid.uuid4().hex[:12]
    status, hdr, body = http_get(a.tls, "/healthz", ca=a.ca)
    check(status == 200 and json.loads(body) == {"status": "ok"}, f"GET https /healthz: {status} {body!r}")
    status, hdr, page = http_get(a.tls, "/", ca=a.ca)
    check(status == 200 and b"<title>wsbroker" in page, f"GET https /: {status}")
    ok(f"HTTPS through haproxy on {a.tls}: certificate verified, /healthz 200, the demo page")

    for name, addr, ca in (("wss://", a.tls, a.ca), ("ws://", a.front, None)):
        st = handshake_status(addr, "/ws", ca=ca)
        check(st == 401, f"{name} handshake without a token through haproxy: {st}, expected 401")
        st = handshake_status(addr, "/ws?token=" + token[:-4] + "AAAA", ca=ca)
        check(st == 401, f"{name} handshake with a badly signed token: {st}, expected 401")
    ok("without a token, or with a badly signed one, both frontends answer the handshake with 401")

    roundtrip(WS(a.tls, "/ws", ca=a.ca, headers=["Authorization: Bearer " + token]), topic + ".tls")
    ok(f"wss:// through haproxy with 'Authorization: Bearer': subscribe, publish, ack and message on {topic}.tls")
    for b in a.brokers.split(","):
        roundtrip(WS(b, "/ws?token=" + token), topic + ".direct")
    ok(f"each replica ({a.brokers}) accepts the token in ?token= (the secret file is mounted in both) "
       "and does the round trip")


def redis_command(addr, *args):
    """One Redis command over RESP; returns the reply (bulk strings decoded)."""
    host, port = hostport(addr)
    req = f"*{len(args)}\r\n".encode() + b"".join(
        f"${len(x.encode())}\r\n".encode() + x.encode() + b"\r\n" for x in args)
    with socket.create_connection((host, port), timeout=5) as s:
        s.sendall(req)
        f = s.makefile("rb")

        def reply():
            line = f.readline().rstrip(b"\r\n")
            kind, rest = line[:1], line[1:].decode()
            if kind in (b"+", b":"):
                return rest
            if kind == b"-":
                raise Failure(f"Redis {args[0]}: {rest}")
            if kind == b"$":
                n = int(rest)
                return None if n < 0 else f.read(n + 2)[:-2].decode()
            if kind == b"*":
                return [reply() for _ in range(int(rest))]
            raise Failure(f"Redis {args[0]}: unexpected reply {line!r}")
        return reply()


def cmd_redis(a):
    """--set K --value V: check persistence is on and store; --get K --value V: read back."""
    if a.set:
        aof = redis_command(a.addr, "CONFIG", "GET", "appendonly")
        check(aof == ["appendonly", "yes"], f"Redis appendonly: {aof}")
        check(redis_command(a.addr, "SET", a.set, a.value) == "OK", "Redis SET")
        ok(f"Redis on {a.addr}: appendonly yes, stored {a.set}")
    else:
        deadline = time.time() + 30
        while True:  # Redis may still be starting or loading its append-only file
            try:
                got = redis_command(a.addr, "GET", a.get)
                break
            except (OSError, Failure) as e:
                check(time.time() < deadline, f"Redis on {a.addr} after a restart: {e}")
                time.sleep(0.2)
        check(got == a.value, f"Redis GET {a.get} after a restart: {got!r}, expected {a.value!r}")
        redis_command(a.addr, "DEL", a.get)


def cmd_hold(a):
    brokers = a.brokers.split(",")
    path = "/ws?token=" + open(a.token_file).read().strip() if a.token_file else "/ws"
    conns = open_spread(a.front, brokers, a.timeout, path)
    with open(a.ready, "w") as f:
        f.write("ready\n")
    ok(f"holding one WebSocket through haproxy on each replica ({', '.join(brokers)})")
    for c in conns:
        try:
            m = c.recv(a.timeout)
            raise Failure(f"expected Close 1001 from {brokers[c.replica]}, got {m}")
        except Closed as e:
            check(e.code == 1001, f"replica {brokers[c.replica]} closed with {e.code} {e.reason}")
            ok(f"replica {brokers[c.replica]} sent Close 1001 ({e.reason}) through haproxy on SIGTERM")
        except TimeoutError:
            raise Failure(f"no Close from replica {brokers[c.replica]} within {a.timeout} s")


# --- compose config parity --------------------------------------------------


def load_config(path):
    text = open(path).read()
    try:
        return json.loads(text)
    except ValueError:
        import yaml  # PyYAML comes with Debian's docker-compose
        return yaml.safe_load(text)


def cmd_hostnet(a):
    cfg = load_config(a.config)
    other = [n for n, s in cfg["services"].items() if s.get("network_mode") != "host"]
    check(not other, f"services not on the host network (compose would create a network for them): {other}")
    ok(f"compose config: every service ({', '.join(sorted(cfg['services']))}) is on the host network, "
       "so compose creates no network")


def cmd_parity(a):
    cfg = load_config(a.config)
    s1, s2 = (dict(cfg["services"][n]) for n in (a.service, a.other))
    for s in (s1, s2):
        for k in a.ignore or ():
            s.pop(k, None)
        env = dict(s.get("environment") or {})
        for k in a.ignore_env or ():
            env.pop(k, None)
        s["environment"] = env
    diff = sorted(k for k in set(s1) | set(s2) if s1.get(k) != s2.get(k))
    check(not diff, f"services {a.service} and {a.other} differ in: "
          + "; ".join(f"{k}: {s1.get(k)!r} vs {s2.get(k)!r}" for k in diff))
    ok(f"compose config: {a.other} is {a.service} but for "
       + ", ".join((a.ignore or []) + (a.ignore_env or []))
       + f" (same {', '.join(sorted(k for k in s1 if k != 'environment' or s1[k]))})")


# --- ports ------------------------------------------------------------------


def port_free(port):
    try:
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            with socket.socket(socket.AF_INET, kind) as s:
                s.bind(("0.0.0.0", port))
        return True
    except OSError:
        return False


def cmd_ports(a):
    """COUNT distinct ports that nothing listens on, TCP or UDP, on any
    address; with --free, check that the given ports are still so."""
    import random
    if a.free:
        busy = [p for p in a.free if not port_free(p)]
        check(not busy, f"ports in use: {busy}")
        return
    found = [p for p in random.sample(range(20000, 32000), 400) if port_free(p)][:a.count]
    check(len(found) == a.count, f"no {a.count} free ports found")
    print(" ".join(map(str, found)))


# --- DNS --------------------------------------------------------------------


def cmd_dns(a):
    host, port = hostport(a.listen)
    name = a.name.rstrip(".").lower()
    addrs = [socket.inet_aton(x) for x in a.addr]
    s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    s.bind((host, port))
    print(f"dns: answering {name} A {' '.join(a.addr)} on {a.listen}", flush=True)
    while True:
        q, peer = s.recvfrom(4096)
        if len(q) < 12:
            continue
        qid, flags, qd = struct.unpack("!HHH", q[:6])
        if qd != 1:
            continue
        i, labels = 12, []
        while i < len(q) and q[i]:
            labels.append(q[i + 1:i + 1 + q[i]].decode(errors="replace"))
            i += 1 + q[i]
        i += 1
        if i + 4 > len(q):
            continue
        qtype, qclass = struct.unpack("!HH", q[i:i + 4])
        question = q[12:i + 4]
        qname = ".".join(labels).lower()
        answers = []
        rcode = 0
        if qname != name:
            rcode = 3
        elif qtype == 1 and qclass == 1:
            answers = [b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 10, 4) + ip for ip in addrs]
        head = struct.pack("!HHHHHH", qid, 0x8400 | (flags & 0x0100) | rcode, 1, len(answers), 0, 0)
        s.sendto(head + question + b"".join(answers), peer)


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    d = sub.add_parser("dns")
    d.add_argument("--listen", required=True)
    d.add_argument("--name", required=True)
    d.add_argument("--addr", action="append", required=True)
    n = sub.add_parser("ports")
    n.add_argument("count", type=int, nargs="?")
    n.add_argument("--free", type=int, nargs="+")
    h = sub.add_parser("http")
    h.add_argument("--front", required=True)
    h.add_argument("--stats", required=True)
    h.add_argument("--brokers", required=True)
    h.add_argument("--timeout", type=float, default=30)
    w = sub.add_parser("ws")
    w.add_argument("--front", required=True)
    w.add_argument("--brokers", required=True)
    w.add_argument("--cluster", type=int, choices=(0, 1), required=True)
    w.add_argument("--redis")
    w.add_argument("--timeout", type=float, default=15)
    o = sub.add_parser("hold")
    o.add_argument("--front", required=True)
    o.add_argument("--brokers", required=True)
    o.add_argument("--ready", required=True)
    o.add_argument("--token-file")
    o.add_argument("--timeout", type=float, default=60)
    t = sub.add_parser("secure")
    t.add_argument("--front", required=True)
    t.add_argument("--tls", required=True)
    t.add_argument("--ca", required=True)
    t.add_argument("--brokers", required=True)
    t.add_argument("--token-file", required=True)
    r = sub.add_parser("redis")
    r.add_argument("--addr", required=True)
    r.add_argument("--set")
    r.add_argument("--get")
    r.add_argument("--value", required=True)
    c = sub.add_parser("hostnet")
    c.add_argument("--config", required=True)
    c = sub.add_parser("parity")
    c.add_argument("--config", required=True)
    c.add_argument("--service", required=True)
    c.add_argument("--other", required=True)
    c.add_argument("--ignore", action="append", help="a service key allowed to differ")
    c.add_argument("--ignore-env", action="append", help="an environment variable allowed to differ")
    a = p.parse_args()
    try:
        {"ports": cmd_ports, "dns": cmd_dns, "http": cmd_http, "ws": cmd_ws, "hold": cmd_hold, "secure": cmd_secure, "redis": cmd_redis, "hostnet": cmd_hostnet, "parity": cmd_parity}[a.cmd](a)
    except (Failure, Closed, TimeoutError, OSError, ValueError, KeyError) as e:
        print(f"FAIL: {a.cmd}: {type(e).__name__ + ': ' if not isinstance(e, Failure) else ''}{e}",
              file=sys.stderr, flush=True)
        sys.exit(1)


if __name__ == "__main__":
    main()
