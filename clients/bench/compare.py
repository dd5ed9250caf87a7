#!/usr/bin/env python3
"""compare.py - wsbroker side by side with another broker, same scenarios.

Runs every scenario of wsbroker-bench against broker A (default: wsbroker
from the build directory) and broker B (any server that speaks the subset
of PROTOCOL.md the bench uses), in alternation, with a fresh broker process
for every run, N runs each, and prints one table per scenario with both
columns: median and range, broker CPU per delivery, and the CPU everything
else on the machine used meanwhile. The key ratio is also taken run by run,
each run of A against the run of B made next to it: on a machine whose
speed drifts by 20 % over minutes, that ratio holds still where the
medians of the two columns do not.

    clients/bench/compare.py --b-cmd '/path/to/uws-broker {port}'

A broker command is split like a shell would (no shell runs it) and gets
{port} replaced by the run's port (each run has its own, so no run meets
the TIME_WAIT sockets of the one before), {port2} and {port3} by the two
ports after it (a cluster's second node and its Redis: see cluster.sh).
A broker is ready when it listens on the port(s) its URL names and their
GET /healthz does not answer 503 (a cluster node waiting for Redis).
A URL may be several, separated by spaces: each becomes a --url of the
bench, which spreads its connections over them. The broker's pid for
--broker-pid is the process that listens on that port, so a wrapper
command still measures the server itself. Every wait is bounded: a broker
gets 10 s to listen and 10 s to exit after SIGTERM (then SIGKILL), the
bench a timeout derived from its options.

Exit status: 0 every run clean; 1 some run failed (lost, duplicated or
reordered messages, errors, a broker that did not start); 2 bad options.
Raw JSON lines, bench stderr and broker output go to --out.
"""
import argparse
import datetime
import json
import os
import platform
import shlex
import signal
import socket
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))

# Scenario names of --scenarios and the titles of their tables.
SCENARIOS = {
    "fanout": "fan-out: 1 publisher -> {fanout_subs} subscribers on one topic",
    "pairs": "pairs: {pairs} topics, 1 publisher + 1 subscriber each",
    "lat1m": "latency: {lat_subs} subscribers, {lat1m_rate:g} msg/s offered "
    "({lat1m_offered} deliveries/s)",
    "lat100k": "latency: {lat_subs} subscribers, {lat100k_rate:g} msg/s offered "
    "({lat100k_offered} deliveries/s)",
    "conns": "conns: {conns} idle subscribed connections",
}
ORDER = ["fanout", "pairs", "lat1m", "lat100k", "conns"]


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def si(v):
    """1234567 -> '1.23 M'."""
    if v is None:
        return "-"
    a = abs(v)
    if a >= 1e6:
        return f"{v / 1e6:.2f} M"
    if a >= 1e4:
        return f"{v / 1e3:.1f} k"
    if a >= 1e3:
        return f"{v / 1e3:.2f} k"
    return f"{v:.0f}"


def bench_args(a, name):
    """The wsbroker-bench arguments of scenario name (without --url/--broker-pid)."""
    common = ["--payload", str(a.payload), "--threads", str(a.threads)]
    timed = ["--duration", f"{a.duration:g}", "--warmup", f"{a.warmup:g}"]
    if name == "fanout":
        return ["fanout", "--subs", str(a.fanout_subs)] + timed + common
    if name == "pairs":
        return ["pairs", "--pairs", str(a.pairs)] + timed + common
    if name == "lat1m":
        return ["latency", "--subs", str(a.lat_subs), "--rate", f"{a.lat1m_rate:g}"] + timed + common
    if name == "lat100k":
        return (
            ["latency", "--subs", str(a.lat_subs), "--rate", f"{a.lat100k_rate:g}"] + timed + common
        )
    if name == "conns":
        return ["conns", "--conns", str(a.conns), "--hold", f"{a.hold:g}"] + common
    raise ValueError(name)


def bench_timeout(a, name):
    if name == "conns":
        return 60 + a.hold + 10 + 30
    return 60 + a.warmup + a.duration + 5 + 10 + 30


PORTS_PER_RUN = 3  # {port}, {port2}, {port3}


def port_free(port):
    s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("127.0.0.1", port))
        return True
    except OSError:
        return False
    finally:
        s.close()


def listening_inodes(port):
    """Inodes of sockets listening on port (IPv4 and IPv6)."""
    inodes = set()
    for path in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            with open(path) as f:
                next(f)
                for line in f:
                    fld = line.split()
                    if fld[3] == "0A" and int(fld[1].rsplit(":", 1)[1], 16) == port:
                        inodes.add(fld[9])
        except OSError:
            pass
    return inodes


def descendants(pid):
    """pid and every process below it."""
    children = {}
    for d in os.listdir("/proc"):
        if not d.isdigit():
            continue
        try:
            with open(f"/proc/{d}/stat") as f:
                st = f.read()
            ppid = int(st[st.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError):
            continue
        children.setdefault(ppid, []).append(int(d))
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        todo.extend(children.get(p, []))
    return out


def listener_pid(root, port):
    """The process under root (inclusive) that holds the listening socket."""
    inodes = listening_inodes(port)
    if not inodes:
        return None
    for p in descendants(root):
        try:
            for fd in os.listdir(f"/proc/{p}/fd"):
                link = os.readlink(f"/proc/{p}/fd/{fd}")
                if link.startswith("socket:[") and link[8:-1] in inodes:
                    return p
        except OSError:
            continue
    return None


def unhealthy(port):
    """GET /healthz answers 503 (a cluster node whose Redis link is not up
    yet). Any other answer, or none, counts as ready: not every server has
    the endpoint."""
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
            head = s.recv(64)
    except OSError:
        return False
    return head.startswith(b"HTTP/1.1 503") or head.startswith(b"HTTP/1.0 503")


def subst(w, port):
    """{port}, {port2}, {port3}: the run's port and the two after it."""
    return w.replace("{port2}", str(port + 1)).replace("{port3}", str(port + 2)).replace(
        "{port}", str(port)
    )


class Broker:
    def __init__(self, label, cmd, url, extra=""):
        self.label, self.cmd, self.url = label, cmd, url
        self.extra = shlex.split(extra)  # bench arguments for this broker only

    def start(self, port, logpath):
        argv = [subst(w, port) for w in shlex.split(self.cmd)]
        self.argv = argv
        self.logf = open(logpath, "w")
        self.proc = subprocess.Popen(
            argv, stdout=self.logf, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                return None
            pid = listener_pid(self.proc.pid, port)
            if pid is not None and all(
                listener_pid(self.proc.pid, p) is not None for p in self.also_listen(port)
            ):
                if all(not unhealthy(p) for p in [port] + self.also_listen(port)):
                    return pid
            time.sleep(0.05)
        return None

    def also_listen(self, port):
        """The other ports the URL names, to wait for as well."""
        return [port + 1] if "{port2}" in self.url else []

    def stop(self):
        """SIGTERM, 10 s, then SIGKILL. Returns the exit status (or -signal)."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.logf.close()
        return self.proc.returncode


def run_one(a, broker, name, port, tag):
    """One fresh broker, one bench run. Returns a result dict."""
    blog = os.path.join(a.out, f"{tag}.broker.log")
    res = {"broker": broker.label, "scenario": name, "tag": tag, "port": port}
    if not all(port_free(port + i) for i in range(PORTS_PER_RUN)):
        res["failure"] = f"port {port} or one of the {PORTS_PER_RUN - 1} after it is in use"
        return res
    pid = broker.start(port, blog)
    bcmd = " ".join(shlex.quote(w) for w in broker.argv)
    if pid is None:
        res["failure"] = f"broker did not listen on {port} within 10 s (see {blog})"
        broker.stop()
        return res
    urls = [subst(u, port) for u in broker.url.split()]
    argv = [a.bench] + bench_args(a, name) + broker.extra
    for u in urls:
        argv += ["--url", u]
    argv += ["--broker-pid", str(pid)]
    res["broker_cmd"] = bcmd
    res["broker_pid"] = pid
    res["launcher_pid"] = broker.proc.pid
    res["bench_cmd"] = " ".join(shlex.quote(w) for w in argv)
    log(f"[{tag}] {broker.label}: {bcmd}   (pid {pid})")
    log(f"[{tag}] {res['bench_cmd']}")
    errpath = os.path.join(a.out, f"{tag}.bench.err")
    t0 = time.monotonic()
    try:
        with open(errpath, "w") as ef:
            p = subprocess.run(
                argv, stdout=subprocess.PIPE, stderr=ef, text=True, timeout=bench_timeout(a, name)
            )
        res["status"] = p.returncode
        line = p.stdout.strip().splitlines()[-1] if p.stdout.strip() else ""
        with open(os.path.join(a.out, f"{tag}.json"), "w") as jf:
            jf.write(p.stdout)
        res["json"] = json.loads(line) if line else None
    except subprocess.TimeoutExpired:
        res["status"] = None
        res["json"] = None
        res["failure"] = f"bench did not finish within {bench_timeout(a, name)} s"
    except json.JSONDecodeError:
        res["json"] = None
    res["wall_s"] = time.monotonic() - t0
    res["broker_exit"] = broker.stop()
    d = res.get("json")
    if "failure" not in res:
        if d is None:
            res["failure"] = f"no JSON result (bench exit {res['status']}, see {errpath})"
        elif not d.get("ok"):
            res["failure"] = d.get("failure", "not ok")
    if "failure" in res:
        log(f"[{tag}] FAILED: {res['failure']}")
    else:
        log(f"[{tag}] {summary(name, d)}")
    return res


def summary(name, d):
    if name == "conns":
        return (
            f"{d.get('per_conn_bytes', 0):.0f} B/conn, "
            f"{d.get('handshakes_per_s', 0):.0f} handshakes/s"
        )
    s = f"{d['deliveries_per_s']:.0f} deliveries/s"
    if "broker_us_per_delivery" in d:
        s += f", broker {d['broker_cpu_pct']:.0f} % CPU, {d['broker_us_per_delivery']:.3f} us/delivery"
    lat = d.get("latency_us", {})
    if name.startswith("lat") and "p99" in lat:
        s += f", p50 {lat['p50'] / 1e3:.2f} ms, p99 {lat['p99'] / 1e3:.2f} ms"
    return s


# Metrics per scenario: (label, getter over the JSON, formatter). A getter
# returns None when the run did not report the value.
def g(*path):
    def get(d):
        for k in path:
            if not isinstance(d, dict) or k not in d:
                return None
            d = d[k]
        return d

    return get


def ms(v):
    return f"{v / 1e3:.2f}"


def fmt_us(v):
    return f"{v:.2f}"


def pct(v):
    return f"{v:.0f} %"


def cpus(v):
    return f"{v:.1f}"


THROUGHPUT = [
    ("deliveries/s", g("deliveries_per_s"), si),
    ("broker CPU (100 % = one core)", g("broker_cpu_pct"), pct),
    ("broker CPU per delivery, us", g("broker_us_per_delivery"), fmt_us),
    ("bench CPU-s in the window", g("bench_cpu_s"), cpus),
    ("others' CPU-s in the window", g("other_cpu_s"), cpus),
]
LATENCY = [
    ("p50, ms", g("latency_us", "p50"), ms),
    ("p99, ms", g("latency_us", "p99"), ms),
    ("p99.9, ms", g("latency_us", "p99_9"), ms),
    ("max, ms", g("latency_us", "max"), ms),
    ("deliveries/s (achieved)", g("deliveries_per_s"), si),
    ("broker CPU (100 % = one core)", g("broker_cpu_pct"), pct),
    ("broker CPU per delivery, us", g("broker_us_per_delivery"), fmt_us),
    ("bench loop stall max, ms", g("loop_stall_max_ms"), lambda v: f"{v:.1f}"),
    ("others' CPU-s in the window", g("other_cpu_s"), cpus),
]
CONNS = [
    ("broker RSS per connection, bytes", g("per_conn_bytes"), lambda v: f"{v:,.0f}"),
    ("handshakes/s", g("handshakes_per_s"), si),
    ("broker CPU per connection set up, us", g("setup_broker_us_per_conn"), lambda v: f"{v:.1f}"),
    ("broker RSS before, KiB", g("rss_kib_before"), lambda v: f"{v:,}"),
]
METRICS = {
    "fanout": THROUGHPUT,
    "pairs": THROUGHPUT,
    "lat1m": LATENCY,
    "lat100k": LATENCY,
    "conns": CONNS,
}


# The row of METRICS whose ratio is also taken run by run, paired in the
# order the runs were made.
PAIRED = {
    "fanout": "broker CPU per delivery, us",
    "pairs": "broker CPU per delivery, us",
    "lat1m": "p99, ms",
    "lat100k": "p99, ms",
    "conns": "handshakes/s",
}


def clean(r):
    """The run's JSON result if it completed, else None."""
    return r.get("json") if "failure" not in r else None


def cell(vals, f):
    vals = [v for v in vals if v is not None]
    if not vals:
        return "-", None
    m = statistics.median(vals)
    if len(vals) == 1:
        return f(m), m
    lo, hi = min(vals), max(vals)
    return f"{f(m)} ({f(lo)} - {f(hi)})", m


def spread(vals):
    """(max - min) / median, as a percentage."""
    vals = [v for v in vals if v is not None]
    if len(vals) < 2:
        return None
    m = statistics.median(vals)
    return 100.0 * (max(vals) - min(vals)) / m if m else None


def table(a, name, results, brokers):
    out = []
    title = SCENARIOS[name].format(
        **vars(a),
        lat1m_offered=si(a.lat1m_rate * a.lat_subs),
        lat100k_offered=si(a.lat100k_rate * a.lat_subs),
    )
    out.append(f"### {title}")
    out.append("")
    hdr = ["", brokers[0].label, brokers[1].label, f"{brokers[0].label} / {brokers[1].label}"]
    out.append("| " + " | ".join(hdr) + " |")
    out.append("|---|---|---|---|")
    per = {b.label: [r for r in results if r["scenario"] == name and r["broker"] == b.label] for b in brokers}
    ok_json = {k: [clean(r) for r in v if clean(r) is not None] for k, v in per.items()}
    for label, get, f in METRICS[name]:
        cells, meds = [], []
        for b in brokers:
            c, m = cell([get(d) for d in ok_json[b.label]], f)
            cells.append(c)
            meds.append(m)
        ratio = f"{meds[0] / meds[1]:.2f}x" if meds[0] is not None and meds[1] else ""
        out.append(f"| {label} | {cells[0]} | {cells[1]} | {ratio} |")
        if label == PAIRED.get(name):
            # the k-th run of A beside the k-th of B: they ran next to each
            # other (ABBA order), so a drift of the machine cancels out
            rat = []
            for ra, rb in zip(per[brokers[0].label], per[brokers[1].label]):
                da, db = clean(ra), clean(rb)
                if da is not None and db is not None and get(da) is not None and get(db):
                    rat.append(get(da) / get(db))
            if rat:
                c, _ = cell(rat, lambda v: f"{v:.2f}x")
                out.append(f"| {label}: the ratio run by run (neighbouring runs paired), median (range) | | | {c} |")
    if name in ("fanout", "pairs"):
        sp = [spread([d.get("deliveries_per_s") for d in ok_json[b.label]]) for b in brokers]
        out.append(
            "| spread of deliveries/s, (max - min) / median | "
            + " | ".join("-" if s is None else f"{s:.0f} %" for s in sp)
            + " | |"
        )
    runs = []
    for b in brokers:
        rs = per[b.label]
        good = len(ok_json[b.label])
        lost = sum(d.get("lost", 0) + d.get("duplicates", 0) + d.get("reordered", 0) for d in ok_json[b.label])
        runs.append(f"{good}/{len(rs)} clean" + ("" if name == "conns" else f", {lost} lost+dup+reord"))
    out.append("| runs | " + " | ".join(runs) + " | |")
    out.append("")
    return out


def git_describe():
    try:
        h = subprocess.run(
            ["git", "-C", ROOT, "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", ROOT, "status", "--porcelain", "--untracked-files=no"],
            capture_output=True, text=True, timeout=10,
        ).stdout.strip()
        return h + (" (with uncommitted changes)" if dirty else "") if h else "unknown"
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"


def cpu_model():
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def main():
    build = os.path.join(ROOT, "build-test")
    ap = argparse.ArgumentParser(
        description="Run wsbroker-bench scenarios against two brokers in alternation, a fresh "
        "broker per run, and print both columns (medians and ranges). Defaults in brackets.",
    )
    bench = os.path.join(build, "clients/bench/wsbroker-bench")
    a_cmd = (os.path.join(build, "broker/wsbroker")
             + " --bind 127.0.0.1 --port {port} --workers 2 --log-level warn")
    url = "ws://127.0.0.1:{port}/ws"
    ap.add_argument("--bench", default=bench, help=f"wsbroker-bench binary [{bench}]")
    ap.add_argument("--a-name", default="wsbroker", help="broker A's column [wsbroker]")
    ap.add_argument("--a-cmd", default=a_cmd, help=f"broker A's command, {{port}} replaced [{a_cmd}]")
    ap.add_argument("--a-url", default=url, help=f"broker A's endpoint [{url}]")
    ap.add_argument("--a-commit", default=None,
                    help="the commit the report says A was built from [this checkout's HEAD]")
    ap.add_argument("--b-name", default=None, help="broker B's column [the file name of its program]")
    ap.add_argument("--b-cmd", required=True, help="broker B's command, {port} replaced (required)")
    ap.add_argument("--b-url", default=url, help=f"broker B's endpoint [{url}]")
    ap.add_argument("--a-bench-args", default="",
                    help="extra wsbroker-bench arguments for broker A's runs, e.g. --deflate")
    ap.add_argument("--b-bench-args", default="",
                    help="extra wsbroker-bench arguments for broker B's runs, e.g. --insecure")
    ap.add_argument("--scenarios", default=",".join(ORDER),
                    help=f"comma-separated, any of {','.join(ORDER)} [all]")
    ap.add_argument("--runs", type=int, default=3, help="runs per broker and scenario [3]")
    ap.add_argument("--fanout-runs", type=int, default=5, help="runs per broker of fanout [5]")
    ap.add_argument("--duration", type=float, default=10, help="measured window, s [10]")
    ap.add_argument("--warmup", type=float, default=2, help="warm-up before it, s [2]")
    ap.add_argument("--payload", type=int, default=128, help="bytes of each message's data [128]")
    ap.add_argument("--threads", type=int, default=2, help="bench threads [2]")
    ap.add_argument("--fanout-subs", type=int, default=1000, help="fanout: subscribers [1000]")
    ap.add_argument("--pairs", type=int, default=1000, help="pairs: topics [1000]")
    ap.add_argument("--lat-subs", type=int, default=100, help="latency: subscribers [100]")
    ap.add_argument("--lat1m-rate", type=float, default=10000,
                    help="lat1m: publishes/s, all to every subscriber [10000]")
    ap.add_argument("--lat100k-rate", type=float, default=1000, help="lat100k: publishes/s [1000]")
    ap.add_argument("--conns", type=int, default=10000, help="conns: connections [10000]")
    ap.add_argument("--hold", type=float, default=5, help="conns: seconds held open [5]")
    ap.add_argument("--port", type=int, default=19200,
                    help="first port; every run takes the next free one [19200]")
    ap.add_argument("--pause", type=float, default=1, help="seconds between runs [1]")
    ap.add_argument("--out", default=None,
                    help="directory for raw JSON and logs [/tmp/wsbroker-compare-DATE]")
    a = ap.parse_args()

    names = [s for s in a.scenarios.split(",") if s]
    bad = [s for s in names if s not in SCENARIOS]
    if bad or not names or a.runs < 1 or a.fanout_runs < 1:
        ap.error(f"bad --scenarios/--runs ({', '.join(bad) or 'empty'})")
    if not os.access(a.bench, os.X_OK):
        ap.error(f"{a.bench} is not an executable (build it: cmake --build build-test --target wsbroker-bench)")
    b_name = a.b_name or os.path.basename(shlex.split(a.b_cmd)[0])
    brokers = [Broker(a.a_name, a.a_cmd, a.a_url, a.a_bench_args),
               Broker(b_name, a.b_cmd, a.b_url, a.b_bench_args)]
    if brokers[0].label == brokers[1].label:
        brokers[1].label += " (B)"
    now = datetime.datetime.now(datetime.timezone.utc)
    if a.out is None:
        a.out = f"/tmp/wsbroker-compare-{now:%Y%m%d-%H%M%S}"
    os.makedirs(a.out, exist_ok=True)
    ncpu = os.cpu_count()

    runs_of = {n: (a.fanout_runs if n == "fanout" else a.runs) for n in names}
    rounds = max(runs_of.values())
    total = sum(2 * v for v in runs_of.values())
    log(f"compare: {total} runs, raw results in {a.out}")
    results, k, port = [], 0, a.port
    t_start = time.monotonic()
    for rnd in range(rounds):
        order = brokers if rnd % 2 == 0 else brokers[::-1]
        for n in names:
            if rnd >= runs_of[n]:
                continue
            for b in order:
                k += 1
                tag = f"{k:02d}-{n}-{'A' if b is brokers[0] else 'B'}{rnd + 1}"
                while not all(port_free(port + i) for i in range(PORTS_PER_RUN)):
                    port += 1
                results.append(run_one(a, b, n, port, tag))
                port += PORTS_PER_RUN
                time.sleep(a.pause)
    elapsed = time.monotonic() - t_start

    cmdline = " ".join(shlex.quote(w) for w in [sys.argv[0]] + sys.argv[1:])
    out = []
    out.append(f"## {brokers[0].label} vs {brokers[1].label}, {now:%Y-%m-%d %H:%M} UTC")
    out.append("")
    out.append(
        f"Machine: {ncpu} CPUs ({cpu_model()}), Linux {platform.release()}. "
        f"**The {ncpu} cores are shared by the broker and the load generator** (and by anything "
        "else running: see \"others' CPU-s\"), so every figure is broker + bench together on "
        f"{ncpu} cores. Loopback (127.0.0.1) only."
    )
    out.append("")
    out.append(
        f"A fresh broker process per run; the two brokers alternate (order swapped every round); "
        f"{a.runs} runs each ({a.fanout_runs} for fan-out); cells are median (min - max) over the "
        f"clean runs. Payload {a.payload} bytes; measured window {a.duration:g} s after "
        f"{a.warmup:g} s warm-up; bench with {a.threads} threads. Broker CPU is read from "
        "/proc/PID/stat of the process listening on the port (all its threads). "
        f"{brokers[0].label} at commit {a.a_commit or git_describe()}. {len(results)} runs in {elapsed:.0f} s."
    )
    out.append("")
    for n in names:
        out.extend(table(a, n, results, brokers))
    out.append("Commands (every run: start the broker, run the bench with the broker's pid, SIGTERM):")
    out.append("")
    out.append("```sh")
    out.append(cmdline)
    out.append(f"# A = {brokers[0].label}: {a.a_cmd}")
    out.append(f"# B = {brokers[1].label}: {a.b_cmd}")
    for n in names:
        bargs = " ".join(shlex.quote(w) for w in bench_args(a, n))
        out.append(f"{os.path.relpath(a.bench) if a.bench.startswith(ROOT) else a.bench} {bargs} "
                   f"--url {a.a_url} --broker-pid PID")
    out.append("```")
    failures = [r for r in results if "failure" in r]
    if failures:
        out.append("")
        out.append("Failed runs:")
        out.append("")
        for r in failures:
            out.append(f"* {r['tag']} ({r['broker']}): {r['failure']}")
    print("\n".join(out), flush=True)
    with open(os.path.join(a.out, "runs.json"), "w") as f:
        json.dump(results, f, indent=1)
    with open(os.path.join(a.out, "report.md"), "w") as f:
        f.write("\n".join(out) + "\n")
    log(f"compare: report in {a.out}/report.md")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
