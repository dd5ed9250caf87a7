#!/usr/bin/env bash
# wsbroker-bench over wss:// and with permessage-deflate, against a real
# broker: every scenario runs briefly and must report no loss, duplicate or
# reordering, the TLS version and the negotiated extension, and compressed
# traffic when deflate was asked for.
#
#   bench_test.sh CASE      (CTest registers each as clients.bench.CASE)
#
# Environment (set by CTest): WSBROKER_BIN, WSBROKER_BENCH, WSC_TBTOOL. Runs
# are small (tens of connections, one second): this checks the measuring
# stick, it does not measure.
set -uo pipefail

: "${WSBROKER_BIN:?}" "${WSBROKER_BENCH:?}" "${WSC_TBTOOL:?}"
here="$(cd "$(dirname "$0")" && pwd)"
WORK="$(mktemp -d /tmp/wsc-bench-XXXXXX)"
BPID=""
cleanup() {
  if [ -n "$BPID" ]; then
    { kill -TERM "$BPID"; wait "$BPID"; } 2>/dev/null
  fi
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.err "$WORK/broker.log"; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
  done
  exit 1
}

bash "$here/make_certs.sh" "$WORK/certs" || fail "make_certs.sh failed"

# start_broker CERT_PREFIX [args...]: plain port PORT and TLS port TPORT.
start_broker() {
  local cert="$1"; shift
  for _ in 1 2 3 4 5; do
    PORT="$("$WSC_TBTOOL" port)"
    TPORT="$("$WSC_TBTOOL" port)"
    "$WSBROKER_BIN" --bind 127.0.0.1 --port "$PORT" --workers 2 --log-level warn \
      --tls-port "$TPORT" --tls-cert "$WORK/certs/$cert.pem" --tls-key "$WORK/certs/$cert.key" \
      "$@" >>"$WORK/broker.log" 2>&1 &
    BPID=$!
    "$WSC_TBTOOL" wait "$PORT" 10000 && return 0
    kill -9 "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null; BPID=""
    sleep 0.2
  done
  fail "broker did not start"
}

# bench NAME SCENARIO [args...]: run it (bounded), keep its JSON line.
bench() {
  local name="$1"; shift
  timeout 120 "$WSBROKER_BENCH" "$@" --duration 1 --warmup 0.3 --threads 2 \
    >"$WORK/$name.json" 2>"$WORK/$name.err"
  echo $? >"$WORK/$name.status"
}

# check NAME 'python expression over d' MESSAGE
check() {
  python3 - "$WORK/$1.json" "$2" <<'EOF' || fail "$1: $3: $(cat "$WORK/$1.json")"
import json, sys
d = json.loads(open(sys.argv[1]).read())
sys.exit(0 if eval(sys.argv[2]) else 1)
EOF
}

# A clean run: exit 0, ok, nothing lost, duplicated or reordered.
clean() {
  [ "$(cat "$WORK/$1.status")" -eq 0 ] || fail "$1 exited $(cat "$WORK/$1.status")"
  check "$1" 'd["ok"] is True and d["errors"]["total"] == 0' "not ok"
  check "$1" 'd["scenario"] == "conns" or (d["lost"] == 0 and d["duplicates"] == 0 and d["reordered"] == 0 and d["delivered"] == d["expected"] > 0)' "loss checks"
}

scenarios() { # prefix, url, args...
  local p="$1" url="$2"; shift 2
  bench "$p-fanout" fanout --subs 40 --pubs 2 --url "$url" "$@"
  bench "$p-pairs" pairs --pairs 40 --url "$url" "$@"
  bench "$p-latency" latency --subs 20 --rate 400 --url "$url" "$@"
  bench "$p-conns" conns --conns 200 --hold 0.3 --url "$url" "$@"
}

case_wss() {
  start_broker server
  scenarios wss "wss://127.0.0.1:$TPORT/ws" --cafile "$WORK/certs/ca.pem" --deflate
  for s in fanout pairs latency conns; do
    clean "wss-$s"
    check "wss-$s" 'd["tls"] in ("TLSv1.2", "TLSv1.3")' "TLS version"
    check "wss-$s" 'd["extensions"].startswith("permessage-deflate") and d["params"]["deflate"] is True' "extension"
    check "wss-$s" 'd["deflate_connections"] == d["connections"]' "every connection negotiated deflate"
    check "wss-$s" 'd["params"]["url"].startswith("wss://")' "url"
  done
  for s in fanout pairs latency; do
    check "wss-$s" 'd["compressed_received"] > 0 and d["compressed_sent"] >= d["published"]' "compressed traffic"
  done
  # The same over TLS without deflate: nothing compressed, no extension.
  bench wss-plain pairs --pairs 20 --url "wss://localhost:$TPORT/ws" --cafile "$WORK/certs/ca.pem"
  clean wss-plain
  check wss-plain 'd["extensions"] == "" and d["compressed_received"] == 0 and d["compressed_sent"] == 0 and d["params"]["deflate"] is False' "no deflate"
  check wss-plain 'd["tls"].startswith("TLSv1.")' "TLS version"
}

case_deflate() {
  # dedicated: the broker keeps a context per connection, so does the bench.
  for mode in shared dedicated; do
    start_broker server --deflate "$mode"
    scenarios "ws-$mode" "ws://127.0.0.1:$PORT/ws" --deflate --payload 512
    for s in fanout pairs latency conns; do
      clean "ws-$mode-$s"
      check "ws-$mode-$s" 'd["tls"] == "" and d["extensions"].startswith("permessage-deflate")' "extension"
    done
    local want=True; [ "$mode" = dedicated ] && want=False
    check "ws-$mode-fanout" "(\"server_no_context_takeover\" in d[\"extensions\"]) == $want" \
      "server_no_context_takeover with --deflate $mode"
    check "ws-$mode-fanout" 'd["compressed_received"] > 0' "compressed traffic"
    kill -TERM "$BPID"; wait "$BPID"; BPID=""
  done
  # A broker with deflate off: offered, declined, everything still clean.
  start_broker server --deflate off
  bench ws-off fanout --subs 20 --url "ws://127.0.0.1:$PORT/ws" --deflate
  clean ws-off
  check ws-off 'd["extensions"] == "" and d["deflate_connections"] == 0 and d["compressed_received"] == 0' "declined"
}

case_tls_errors() {
  start_broker self
  # Self-signed: refused without --insecure (nothing connects: exit 2).
  bench refused pairs --pairs 5 --url "wss://127.0.0.1:$TPORT/ws" --setup-timeout 5
  [ "$(cat "$WORK/refused.status")" -eq 2 ] || fail "untrusted certificate: exit $(cat "$WORK/refused.status")"
  grep -q "self-signed" "$WORK/refused.err" || fail "no reason given: $(cat "$WORK/refused.err")"
  bench insecure pairs --pairs 5 --url "wss://127.0.0.1:$TPORT/ws" --insecure
  clean insecure
  # A CA file that cannot be read, a scheme that is not ws or wss.
  timeout 10 "$WSBROKER_BENCH" pairs --url "wss://127.0.0.1:$TPORT/ws" --cafile "$WORK/none.pem" \
    >/dev/null 2>"$WORK/cafile.err"
  [ $? -eq 2 ] || fail "bad --cafile did not exit 2"
  grep -q "none.pem" "$WORK/cafile.err" || fail "bad --cafile: $(cat "$WORK/cafile.err")"
  timeout 10 "$WSBROKER_BENCH" pairs --url "http://127.0.0.1:$PORT/ws" >/dev/null 2>"$WORK/url.err"
  [ $? -eq 2 ] || fail "http:// URL did not exit 2"
  grep -q "wss://" "$WORK/url.err" || fail "bad URL message: $(cat "$WORK/url.err")"
}

case_nodes() {
  # --url repeated: connection k goes to the (k mod n)th URL. Two URLs of one
  # broker run clean; two brokers with no cluster link between them lose
  # every pair (each subscriber on the first, its publisher on the second),
  # which shows the connections were really split; ws:// and wss:// mixed is
  # a usage error.
  start_broker server
  local p2 b2
  p2="$("$WSC_TBTOOL" port)"
  "$WSBROKER_BIN" --bind 127.0.0.1 --port "$p2" --workers 1 --log-level warn >>"$WORK/broker2.log" 2>&1 &
  b2=$!
  "$WSC_TBTOOL" wait "$p2" 10000 || { kill -9 "$b2"; fail "second broker did not start"; }
  bench same pairs --pairs 20 --url "ws://127.0.0.1:$PORT/ws" --url "ws://localhost:$PORT/ws"
  clean same
  check same 'd["params"]["urls"] == ["ws://127.0.0.1:%s/ws" % '"$PORT"', "ws://localhost:%s/ws" % '"$PORT"']' "urls"
  bench apart pairs --pairs 20 --drain 0.5 --url "ws://127.0.0.1:$PORT/ws" --url "ws://127.0.0.1:$p2/ws"
  kill -TERM "$b2"; wait "$b2" 2>/dev/null
  [ "$(cat "$WORK/apart.status")" -eq 1 ] || fail "split over two unlinked brokers exited $(cat "$WORK/apart.status"), not 1"
  check apart 'd["errors"]["total"] == 0 and d["delivered"] == 0 and d["lost"] == d["expected"] > 0' "nothing crosses"
  timeout 10 "$WSBROKER_BENCH" pairs --url "ws://127.0.0.1:$PORT/ws" --url "wss://127.0.0.1:$TPORT/ws" \
    >/dev/null 2>"$WORK/mixed.err"
  [ $? -eq 2 ] || fail "ws:// and wss:// mixed did not exit 2"
  grep -q "every --url" "$WORK/mixed.err" || fail "mixed URLs: $(cat "$WORK/mixed.err")"
  # compare.py with cluster.sh: one node against two joined through a
  # private Redis ({port2}, {port3}, two URLs), tiny pairs runs, both clean.
  command -v redis-server >/dev/null || fail "redis-server is needed (apt-get install redis-server)"
  local cl="$here/../../clients/bench/cluster.sh"
  timeout 120 python3 "$here/../../clients/bench/compare.py" --bench "$WSBROKER_BENCH" \
    --a-name 1-node --a-cmd "$cl {port3} {port} -- $WSBROKER_BIN --bind 127.0.0.1 --workers 1 --log-level warn" \
    --b-name 2-nodes --b-cmd "$cl {port3} {port} {port2} -- $WSBROKER_BIN --bind 127.0.0.1 --workers 1 --log-level warn" \
    --b-url "ws://127.0.0.1:{port}/ws ws://127.0.0.1:{port2}/ws" --scenarios pairs --runs 1 \
    --duration 0.5 --warmup 0.2 --pairs 20 --pause 0 --port "$("$WSC_TBTOOL" port)" \
    --out "$WORK/cl" >"$WORK/cl.md" 2>"$WORK/cl.err" || fail "compare.py with cluster.sh: $(tail -20 "$WORK/cl.err")"
  python3 - "$WORK/cl/runs.json" <<'PY' || fail "cluster runs: $(cat "$WORK/cl/runs.json")"
import json, sys
runs = json.load(open(sys.argv[1]))
assert [r["broker"] for r in runs] == ["1-node", "2-nodes"], runs
for r in runs:
    d = r["json"]
    assert "failure" not in r and d["ok"] and d["lost"] == 0 and d["delivered"] == d["expected"] > 0, r
    assert r["broker_exit"] == 0, r
p = r["port"]
assert d["params"]["urls"] == ["ws://127.0.0.1:%d/ws" % p, "ws://127.0.0.1:%d/ws" % (p + 1)], d["params"]
# 2 nodes: every pair's subscriber on the first, its publisher on the second.
assert r["broker_cmd"].split()[1:4] == [str(p + 2), str(p), str(p + 1)], r["broker_cmd"]
PY
}

case_compare() {
  # compare.py: wsbroker (A) against a second broker given as a command
  # (here wsbroker again, one worker, behind a shell that stays its parent:
  # the pid measured must be the listener's, not the shell's). Tiny runs.
  local cmp="$here/../../clients/bench/compare.py"
  timeout 280 python3 "$cmp" --bench "$WSBROKER_BENCH" \
    --a-cmd "$WSBROKER_BIN --bind 127.0.0.1 --port {port} --workers 2 --log-level warn" \
    --b-name one-worker --b-cmd "bash -c '$WSBROKER_BIN --bind 127.0.0.1 --port {port} --workers 1 --log-level warn; exit \$?'" \
    --runs 1 --fanout-runs 2 --duration 0.5 --warmup 0.2 --fanout-subs 20 --pairs 20 \
    --lat-subs 10 --lat1m-rate 500 --lat100k-rate 100 --conns 100 --hold 0.3 --pause 0 \
    --port "$("$WSC_TBTOOL" port)" --out "$WORK/cmp" >"$WORK/cmp.md" 2>"$WORK/cmp.err"
  local st=$?
  if [ "$st" -ne 0 ]; then
    for t in $(grep -o '^\[[0-9a-zA-Z-]*\] FAILED' "$WORK/cmp.err" | tr -d '[]' | cut -d' ' -f1); do
      echo "--- $t: bench stderr" >&2; tail -15 "$WORK/cmp/$t.bench.err" >&2
      echo "--- $t: broker output" >&2; tail -15 "$WORK/cmp/$t.broker.log" >&2
    done
    fail "compare.py exited $st: $(grep FAILED "$WORK/cmp.err")"
  fi
  python3 - "$WORK/cmp/runs.json" "$WORK/cmp.md" <<'PY' || fail "compare.py: $(cat "$WORK/cmp.md")"
import json, sys
runs = json.load(open(sys.argv[1]))
md = open(sys.argv[2]).read()
assert len(runs) == 12, len(runs)
for r in runs:
    assert "failure" not in r, r
    d = r["json"]
    assert d["ok"] is True and d["params"]["url"].endswith(":%d/ws" % r["port"]), r
    if r["scenario"] == "conns":
        assert d["per_conn_bytes"] > 0 and d["handshakes_per_s"] > 0, d
    else:
        assert d["lost"] == 0 and d["duplicates"] == 0 and d["reordered"] == 0, d
        # /proc counts CPU in 10 ms clock ticks: a short run on a busy
        # machine may show 0; the runs of a scenario together may not.
        assert d["broker_us_per_delivery"] >= 0 and d["broker_cpu_s"] >= 0, d
for sc in ("fanout", "pairs"):
    assert any(r["json"]["broker_us_per_delivery"] > 0 for r in runs if r["scenario"] == sc), sc
for r in runs:
    # A runs the broker itself; B's broker is the shell's child.
    assert (r["broker_pid"] == r["launcher_pid"]) == (r["broker"] == "wsbroker"), r
order = [(r["scenario"], r["broker"]) for r in runs]
assert order[:2] == [("fanout", "wsbroker"), ("fanout", "one-worker")], order
assert order[-1] == ("fanout", "wsbroker"), order  # second round: B first
for want in ("| deliveries/s |", "| p99, ms |", "| broker RSS per connection, bytes |",
             "| broker CPU per delivery, us |", "| wsbroker | one-worker | wsbroker / one-worker |",
             "2/2 clean", "cores are shared by the broker and the load generator",
             "wsbroker-bench pairs --pairs 20",
             "| handshakes/s: the ratio run by run (neighbouring runs paired), median (range) | | | "):
    assert want in md, want
PY
  # Bad options: exit 2 before anything runs.
  timeout 20 python3 "$cmp" --b-cmd true --scenarios nosuch >/dev/null 2>"$WORK/cmp-bad.err"
  [ $? -eq 2 ] || fail "compare.py --scenarios nosuch did not exit 2"
  grep -q nosuch "$WORK/cmp-bad.err" || fail "compare.py: no reason given: $(cat "$WORK/cmp-bad.err")"
}

[ $# -eq 1 ] || { echo "usage: $0 CASE" >&2; exit 2; }
declare -F "case_$1" >/dev/null || { echo "no case '$1'" >&2; exit 2; }
"case_$1"
echo "ok: $1"
