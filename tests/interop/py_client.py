#!/usr/bin/python3
"""py_client.py - wsbroker driven by Debian's python3-websockets (10.4 on
Debian 12). Prints one "ok - ..." or "not ok - ..." line per check (run.sh
numbers them into TAP) and exits 1 if any check failed.

  /usr/bin/python3 py_client.py --url ws://127.0.0.1:P --deflate on|off \\
      --expect-ext 'permessage-deflate; ...'|none [--ca FILE] [--min-size N] \\
      [--label TEXT] [--token T | --bearer T] [--expect-status N] \\
      [--topic NAME] [--no-echo-test]

With --expect-status the handshake must be refused with that HTTP status
and nothing else is checked. Whether a message travelled compressed is read
off the frames themselves: the permessage-deflate extension object of the
connection is wrapped so that every data frame it decodes or encodes is
recorded with its RSV1 bit.
"""
import argparse
import asyncio
import json
import os
import ssl
import sys
import traceback
import urllib.parse

import websockets
from websockets.frames import Opcode

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--deflate", default="on", choices=["on", "off"])
ap.add_argument("--expect-ext", default="none")
ap.add_argument("--ca")
ap.add_argument("--min-size", type=int, default=128)
ap.add_argument("--label", default="websockets")
ap.add_argument("--token")
ap.add_argument("--bearer")
ap.add_argument("--expect-status", type=int)
ap.add_argument("--topic", default="interop.py")
ap.add_argument("--no-echo-test", action="store_true")
opt = ap.parse_args()
agreed = opt.expect_ext != "none"
failures = 0


def check(cond, what, detail=None):
    global failures
    print(f"{'ok' if cond else 'not ok'} - {opt.label}: {what}", flush=True)
    if not cond:
        failures += 1
        if detail is not None:
            print("# " + str(detail).replace("\n", "\n# "), flush=True)
    return cond


class Conn:
    """A connection with the RSV1 bit of the first frame of every data
    message it received and sent, in order."""

    def __init__(self, ws):
        self.ws = ws
        # RSV1 of each message received, in order; the reader task may
        # already have queued some (the hello) before the tracing starts
        self.received = [None] * len(ws.messages)
        self.sent = []
        self.nrecv = 0
        for ext in ws.extensions:
            decode, encode = ext.decode, ext.encode

            def traced_decode(frame, *, max_size=None, decode=decode):
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self.received.append(frame.rsv1)
                return decode(frame, max_size=max_size)

            def traced_encode(frame, encode=encode):
                frame = encode(frame)
                if frame.opcode in (Opcode.TEXT, Opcode.BINARY):
                    self.sent.append(frame.rsv1)
                return frame

            ext.decode, ext.encode = traced_decode, traced_encode

    async def next(self):
        m = await asyncio.wait_for(self.ws.recv(), 5)
        # the reader task runs ahead of recv(): index by message number
        compressed = self.nrecv < len(self.received) and self.received[self.nrecv]
        self.nrecv += 1
        return m, compressed


async def connect(path):
    url = opt.url + path
    if opt.token:
        url += "?token=" + urllib.parse.quote(opt.token, safe="")
    headers = {}
    if opt.bearer:
        headers["Authorization"] = "Bearer " + opt.bearer
    ctx = None
    if url.startswith("wss:"):
        ctx = ssl.create_default_context(cafile=opt.ca)
    ws = await websockets.connect(
        url,
        compression="deflate" if opt.deflate == "on" else None,
        ssl=ctx,
        extra_headers=headers,
        open_timeout=5,
        max_size=None,
    )
    return Conn(ws)


def ext_ok(ws, where):
    got = ws.response_headers.get("Sec-WebSocket-Extensions")
    want = None if opt.expect_ext == "none" else opt.expect_ext
    check(got == want, f"extension agreed on {where} is {opt.expect_ext}", f"got: {got}")
    check(bool(ws.extensions) == agreed, f"client runs permessage-deflate: {agreed}",
          repr(ws.extensions))


async def round_trip(c, topic, id_):
    ack = msg = None
    while ack is None or msg is None:
        text, compressed = await c.next()
        j = json.loads(text)
        if j["op"] == "ack" and j.get("id") == id_:
            ack = j
        elif j["op"] == "message" and j["topic"] == topic:
            msg = (j, text, compressed)
        elif j["op"] == "error":
            raise RuntimeError("broker error: " + text)
    return ack, msg


async def pubsub():
    c = await connect("/ws")
    ext_ok(c.ws, "/ws")
    hello, _ = await c.next()
    check(json.loads(hello)["op"] == "hello", "hello first", hello)
    topic = f"{opt.topic}.{os.getpid()}"
    await c.ws.send(json.dumps({"op": "subscribe", "topic": topic + ".*", "id": 1}))
    sack, _ = await c.next()
    check(json.loads(sack) == {"op": "ack", "id": 1}, "subscribe acked", sack)

    small = '{"text":"h\u00e9llo","n":[1,2,3]}'
    await c.ws.send(f'{{"op":"publish","topic":"{topic}.a","data":{small},"id":2}}')
    ack, (j, text, compressed) = await round_trip(c, topic + ".a", 2)
    check(ack == {"op": "ack", "id": 2, "topic": topic + ".a", "seq": 1},
          "publish acked with topic and seq 1", ack)
    check(text == f'{{"op":"message","topic":"{topic}.a","seq":1,"data":{small}}}',
          "message carries the exact data", text)
    n = len(text.encode())
    want = agreed and n >= opt.min_size
    check(compressed == want, f"small message ({n} bytes) compressed: {want}")
    check(c.sent[-1:] == ([True] if agreed else []),
          f"publish sent compressed: {agreed} (websockets compresses every message)", c.sent)

    words = " ".join(f"word{i % 37}" for i in range(600))
    big = json.dumps({"text": words, "list": words.split()[:200]}, separators=(",", ":"))
    await c.ws.send(f'{{"op":"publish","topic":"{topic}.b","data":{big},"id":3}}')
    ack, (j, text, compressed) = await round_trip(c, topic + ".b", 3)
    check(ack["seq"] == 1 and text.endswith(f'"data":{big}}}'),
          f"big message ({len(big)} bytes of data) carries the exact data", text[:200])
    check(compressed == agreed, f"big message arrived compressed: {agreed}")

    for i in range(20):
        await c.ws.send(json.dumps({"op": "publish", "topic": topic + ".c",
                                    "data": {"i": i, "pad": "x" * (i * 20)}, "id": 100 + i}))
    got, in_order = 0, True
    while got < 20:
        text, _ = await c.next()
        j = json.loads(text)
        if j["op"] != "message":
            continue
        in_order = in_order and j["seq"] == got + 1 and j["data"] == {"i": got, "pad": "x" * (got * 20)}
        got += 1
    check(in_order, "20 messages of mixed sizes arrive in order with their data")
    await c.ws.close()
    check(c.ws.close_code == 1000, "close handshake 1000", c.ws.close_code)


async def echo():
    c = await connect("/echo")
    ext_ok(c.ws, "/echo")
    text = "The quick brown fox jumps over the lazy dog. " * 100 + "\u00e9\u4e2d\U0001f600"
    await c.ws.send(text)
    m, compressed = await c.next()
    check(m == text, "echo: text comes back as the same text")
    check(compressed == agreed, f"echo: text came back compressed: {agreed}")
    data = bytes((i * 7) % 64 for i in range(5000))
    await c.ws.send(data)
    m, compressed = await c.next()
    check(isinstance(m, bytes) and m == data, "echo: binary comes back as the same bytes")
    check(compressed == agreed, f"echo: binary came back compressed: {agreed}")
    for s in ["", "", "short", b"", ""]:
        await c.ws.send(s)
        m, compressed = await c.next()
        want = agreed and len(s) >= opt.min_size
        check(m == s and type(m) is type(s) and compressed == want,
              f"echo: {s!r} comes back (compressed: {want})", f"{m!r} compressed {compressed}")
    await c.ws.close()
    check(c.ws.close_code == 1000, "echo: close handshake 1000", c.ws.close_code)


async def refused():
    try:
        c = await connect("/ws")
        check(False, f"handshake refused with {opt.expect_status}", "it opened")
        await c.ws.close()
    except websockets.exceptions.InvalidStatusCode as e:
        check(e.status_code == opt.expect_status,
              f"handshake refused with {opt.expect_status}", e)


async def main():
    try:
        if opt.expect_status:
            await refused()
        else:
            await pubsub()
            if not opt.no_echo_test:
                await echo()
    except Exception:
        check(False, "no unexpected error", traceback.format_exc())


asyncio.run(main())
sys.exit(1 if failures else 0)
