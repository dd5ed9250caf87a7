#!/usr/bin/env bash
# Shell tests of wsbroker-pub and wsbroker-sub against a real broker.
#
#   cli_test.sh CASE      run one case (CTest registers each as clients.cli.CASE)
#
# Environment (set by CTest): WSBROKER_BIN, WSBROKER_PUB, WSBROKER_SUB,
# WSC_TBTOOL. Every case starts its own broker on a free loopback port, every
# command runs under `timeout`, and every wait loop has a bound.
set -uo pipefail

: "${WSBROKER_BIN:?}" "${WSBROKER_PUB:?}" "${WSBROKER_SUB:?}" "${WSC_TBTOOL:?}"
PUB="$WSBROKER_PUB"
SUB="$WSBROKER_SUB"
WORK="$(mktemp -d /tmp/wsc-cli-XXXXXX)"
BPID=""
PORT=""
URL=""
BG=()

cleanup() {
  for p in "${BG[@]}" $BPID; do kill -9 "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$WORK"
}
trap cleanup EXIT

fail() {
  echo "FAIL: $*" >&2
  for f in "$WORK"/*.out "$WORK"/*.err "$WORK"/broker.log; do
    [ -s "$f" ] && { echo "--- $f" >&2; tail -20 "$f" >&2; }
  done
  exit 1
}

# start_broker [PORT] -- [broker args...]: on PORT, or on a free port.
start_broker() {
  local want="$1"; shift
  for _ in 1 2 3 4 5; do
    PORT="${want:-$("$WSC_TBTOOL" port)}"
    "$WSBROKER_BIN" --bind 127.0.0.1 --port "$PORT" --workers 1 --log-level warn "$@" \
      >>"$WORK/broker.log" 2>&1 &
    BPID=$!
    if "$WSC_TBTOOL" wait "$PORT" 10000; then
      URL="ws://127.0.0.1:$PORT/ws"
      return 0
    fi
    kill -9 "$BPID" 2>/dev/null; wait "$BPID" 2>/dev/null; BPID=""
    sleep 0.2
  done
  fail "broker did not start"
}

stop_broker() {
  kill -TERM "$BPID" 2>/dev/null
  for _ in $(seq 100); do kill -0 "$BPID" 2>/dev/null || break; sleep 0.1; done
  wait "$BPID" 2>/dev/null
  BPID=""
}

lines() { wc -l <"$1" | tr -d ' '; }

# wait_lines FILE N: until FILE has at least N lines (at most 10 s).
wait_lines() {
  for _ in $(seq 200); do
    [ -f "$1" ] && [ "$(lines "$1")" -ge "$2" ] && return 0
    sleep 0.05
  done
  fail "$1: expected $2 lines, have $(lines "$1" 2>/dev/null)"
}

# sync_sub FILE TOPIC: publish "ready" to TOPIC until the subscriber writing
# FILE has printed something, so it is known to be subscribed.
sync_sub() {
  for _ in $(seq 100); do
    timeout 5 "$PUB" "$URL" "$2" ready >/dev/null 2>&1
    [ -s "$1" ] && return 0
    sleep 0.1
  done
  fail "subscriber never received the sync message on $2"
}

# expect_status WANT CMD...: run CMD (bounded), check its exit status.
expect_status() {
  local want="$1"; shift
  timeout 10 "$@" >"$WORK/cmd.out" 2>"$WORK/cmd.err"
  local got=$?
  [ "$got" -eq "$want" ] || fail "exit $got (want $want): $*"
}

expect_err() { grep -q -- "$1" "$WORK/cmd.err" || fail "stderr lacks '$1': $(cat "$WORK/cmd.err")"; }

case_basic() {
  start_broker ""
  "$SUB" --timeout 15 "$URL" 'chat.>' --count 1 >"$WORK/sub.out" 2>"$WORK/sub.err" &
  local sub=$!; BG+=("$sub")
  # Publish until the subscriber has it (it may not be subscribed yet).
  for _ in $(seq 100); do
    echo hi | timeout 5 "$PUB" "$URL" chat.lobby || fail "pub exited $?"
    kill -0 "$sub" 2>/dev/null || break
    sleep 0.1
  done
  wait "$sub"; local st=$?
  [ "$st" -eq 0 ] || fail "sub exited $st"
  [ "$(cat "$WORK/sub.out")" = 'hi' ] || fail "sub printed: $(cat "$WORK/sub.out")"
}

case_lines() {
  start_broker ""
  "$SUB" --timeout 30 "$URL" 'many.>' >"$WORK/sub.out" 2>"$WORK/sub.err" &
  local sub=$!; BG+=("$sub")
  sync_sub "$WORK/sub.out" many.sync
  local k; k=$(lines "$WORK/sub.out")
  # 2000 lines, an empty one and a CRLF one among them.
  { seq 1 1000; echo; printf 'crlf\r\n'; seq 1001 1999; } |
    timeout 20 "$PUB" "$URL" many.data || fail "pub of many lines exited $?"
  wait_lines "$WORK/sub.out" $((k + 2000))
  kill -INT "$sub"; wait "$sub"; local st=$?
  [ "$st" -eq 0 ] || fail "sub exited $st on SIGINT"
  { seq 1 1000; echo crlf; seq 1001 1999; } >"$WORK/want.out"
  tail -n +$((k + 1)) "$WORK/sub.out" >"$WORK/got.out"
  diff -q "$WORK/want.out" "$WORK/got.out" >/dev/null || fail "lines differ: $(diff "$WORK/want.out" "$WORK/got.out" | head -5)"

  # --count: exits by itself after N messages.
  "$SUB" --timeout 15 "$URL" 'count.>' --count 51 >"$WORK/sub2.out" 2>"$WORK/sub2.err" &
  sub=$!; BG+=("$sub")
  sync_sub "$WORK/sub2.out" count.sync
  k=$(lines "$WORK/sub2.out")
  seq 1 100 | timeout 10 "$PUB" "$URL" count.data || fail "pub exited $?"
  wait "$sub"; st=$?
  [ "$st" -eq 0 ] || fail "sub --count exited $st"
  [ "$(lines "$WORK/sub2.out")" -eq 51 ] || fail "sub --count 51 printed $(lines "$WORK/sub2.out") lines"
}

case_json() {
  start_broker ""
  "$SUB" --timeout 15 "$URL" 'j.>' >"$WORK/sub.out" 2>"$WORK/sub.err" &
  local sub=$!; BG+=("$sub")
  sync_sub "$WORK/sub.out" j.sync
  local k; k=$(lines "$WORK/sub.out")
  printf '%s\n' '{"a": 1,  "b":[true,null]}' '12.50' |
    timeout 10 "$PUB" --json "$URL" j.json || fail "pub --json exited $?"
  echo '{"a": 1}' | timeout 10 "$PUB" "$URL" j.string || fail "pub exited $?"
  timeout 10 "$PUB" -j "$URL" j.arg $'{\n  "multi": "line"\n}' || fail "pub DATA exited $?"
  wait_lines "$WORK/sub.out" $((k + 4))
  kill -INT "$sub"; wait "$sub"
  tail -n +$((k + 1)) "$WORK/sub.out" >"$WORK/got.out"
  printf '%s\n' '{"a": 1,  "b":[true,null]}' '12.50' '{"a": 1}' '{   "multi": "line" }' \
    >"$WORK/want.out"
  diff "$WORK/want.out" "$WORK/got.out" >/dev/null || fail "json/string: $(diff "$WORK/want.out" "$WORK/got.out")"

  # Invalid JSON: a usage error as DATA, a failure as input (after the good lines).
  expect_status 2 "$PUB" --json "$URL" j.bad '{"a":'
  expect_err "not valid JSON"
  printf '1\n{oops\n3\n' >"$WORK/in.txt"
  expect_status 1 "$PUB" --json "$URL" j.bad - <"$WORK/in.txt"
  expect_err "line 2"
  expect_err "not valid JSON"
}

case_format() {
  start_broker ""
  for fmt in data json topic; do
    "$SUB" --timeout 15 --format "$fmt" "$URL" 'fmt.>' >"$WORK/$fmt.out" 2>"$WORK/$fmt.err" &
    BG+=("$!")
  done
  for fmt in data json topic; do sync_sub "$WORK/$fmt.out" fmt.sync; done
  timeout 10 "$PUB" --json "$URL" fmt.a '{"x":42}' || fail "pub exited $?"
  timeout 10 "$PUB" "$URL" fmt.b 'two words' || fail "pub exited $?"
  for fmt in data json topic; do wait_lines "$WORK/$fmt.out" 3; done
  local json topic
  json=$(grep '"fmt.a"' "$WORK/json.out" | tail -1)
  topic=$(grep '^fmt.a' "$WORK/topic.out" | tail -1)
  grep -qx '{"x":42}' "$WORK/data.out" || fail "data: $(cat "$WORK/data.out")"
  [ "$(tail -1 "$WORK/data.out")" = 'two words' ] || fail "data (string): $(cat "$WORK/data.out")"
  grep -qx "$(printf 'fmt.b\ttwo words')" "$WORK/topic.out" || fail "topic (string): $(cat "$WORK/topic.out")"
  [[ "$json" == '{"op":"message","topic":"fmt.a","seq":1,"data":{"x":42}}' ]] || fail "json: $json"
  [ "$topic" = "$(printf 'fmt.a\t{"x":42}')" ] || fail "topic: $topic"
}

case_errors() {
  start_broker ""
  expect_status 1 "$PUB" "$URL" 'bad..topic' hi
  expect_err "bad_topic"
  expect_status 1 "$PUB" "$URL" 'chat.*' hi
  expect_err "wildcards"
  expect_status 1 "$SUB" "$URL" 'ok.topic' 'a..b'
  expect_err "bad_topic"
  expect_err "a..b"
  expect_status 1 "$SUB" --since 3 "$URL" 'chat.*'
  expect_err "bad_request"
}

case_down() {
  local port; port=$("$WSC_TBTOOL" port)
  local t0=$SECONDS
  expect_status 1 "$PUB" "ws://127.0.0.1:$port/ws" chat.x hi
  expect_err "cannot connect"
  expect_err "refused"
  echo hi >"$WORK/in.txt"
  expect_status 1 "$PUB" "ws://127.0.0.1:$port/ws" chat.x <"$WORK/in.txt"
  expect_status 1 "$SUB" "ws://127.0.0.1:$port/ws" 'chat.>'
  expect_err "cannot connect"
  expect_status 1 "$SUB" --no-reconnect "ws://127.0.0.1:$port/ws" 'chat.>'
  [ $((SECONDS - t0)) -le 3 ] || fail "took $((SECONDS - t0)) s against a dead port"
}

case_usage() {
  expect_status 2 "$PUB"
  expect_err "missing URL"
  expect_err "--help"
  expect_status 2 "$PUB" ws://127.0.0.1:1/ws
  expect_status 2 "$PUB" --bogus ws://127.0.0.1:1/ws t x
  expect_status 2 "$PUB" ws://127.0.0.1:1/ws t a b
  expect_status 2 "$PUB" --timeout -1 ws://127.0.0.1:1/ws t x
  expect_status 2 "$PUB" http://127.0.0.1:1/ws t x
  expect_err "ws://"
  expect_status 2 "$SUB" ws://127.0.0.1:1/ws
  expect_err "missing PATTERN"
  expect_status 2 "$SUB" --format xml ws://127.0.0.1:1/ws t
  expect_status 2 "$SUB" --count 0 ws://127.0.0.1:1/ws t
  expect_status 2 "$SUB" --count x ws://127.0.0.1:1/ws t
  expect_status 2 "$SUB" --epoch e ws://127.0.0.1:1/ws t
  expect_status 2 "$PUB" --cafile
  expect_status 2 "$SUB" --since x ws://127.0.0.1:1/ws t
  expect_status 2 "$PUB" https://127.0.0.1:1/ws t x
  expect_err "wss://"
  expect_status 0 "$PUB" --help
  grep -q "^Usage: wsbroker-pub" "$WORK/cmd.out" || fail "pub --help"
  for opt in --cafile --insecure --no-deflate --token --verbose wss://; do
    grep -q -- "$opt" "$WORK/cmd.out" || fail "pub --help lacks $opt"
  done
  expect_status 0 "$SUB" --help
  grep -q "^Usage: wsbroker-sub" "$WORK/cmd.out" || fail "sub --help"
  for opt in --cafile --insecure --no-deflate --token --verbose --last --since --epoch wss://; do
    grep -q -- "$opt" "$WORK/cmd.out" || fail "sub --help lacks $opt"
  done
  expect_status 0 "$PUB" --version
  grep -q "^wsbroker-pub (wsbroker) [0-9]" "$WORK/cmd.out" || fail "pub --version"
  expect_status 0 "$SUB" -V
  grep -q "^wsbroker-sub (wsbroker) [0-9]" "$WORK/cmd.out" || fail "sub --version"
}

case_timeout() {
  start_broker ""
  local t0=$SECONDS
  expect_status 1 "$SUB" --count 5 --timeout 1 "$URL" 'quiet.>'
  expect_err "0 of 5"
  expect_status 0 "$SUB" --timeout 0.5 "$URL" 'quiet.>'
  [ $((SECONDS - t0)) -le 4 ] || fail "timeouts took $((SECONDS - t0)) s"
  # A paused broker accepts TCP but never answers: --timeout bounds the wait.
  kill -STOP "$BPID"
  t0=$SECONDS
  expect_status 1 "$PUB" --timeout 0.5 "$URL" t x
  expect_status 1 "$SUB" --timeout 0.5 "$URL" t
  kill -CONT "$BPID"
  [ $((SECONDS - t0)) -le 4 ] || fail "paused broker: took $((SECONDS - t0)) s"
}

case_reconnect() {
  start_broker ""
  local port="$PORT"
  "$SUB" --timeout 40 "$URL" 'rc.>' >"$WORK/sub.out" 2>"$WORK/sub.err" &
  local sub=$!; BG+=("$sub")
  "$SUB" --timeout 40 --no-reconnect "$URL" 'rc.>' >"$WORK/once.out" 2>"$WORK/once.err" &
  local once=$!; BG+=("$once")
  sync_sub "$WORK/sub.out" rc.sync
  sync_sub "$WORK/once.out" rc.sync
  stop_broker
  wait "$once"; local st=$?
  [ "$st" -eq 1 ] || fail "--no-reconnect sub exited $st after the broker stopped"
  grep -q "connection lost" "$WORK/once.err" || fail "no 'connection lost' message"
  kill -0 "$sub" 2>/dev/null || fail "reconnecting sub exited"
  start_broker "$port"
  # Resubscribed after the restart: a new message arrives.
  for _ in $(seq 100); do
    timeout 5 "$PUB" "$URL" rc.after back >/dev/null 2>&1
    grep -qx 'back' "$WORK/sub.out" && break
    sleep 0.1
  done
  grep -qx 'back' "$WORK/sub.out" || fail "no message after the broker restarted"
  grep -q "reconnected" "$WORK/sub.err" || fail "no 'reconnected' notice: $(cat "$WORK/sub.err")"
  grep -q "lost" "$WORK/sub.err" || fail "no notice about lost messages"
  kill -TERM "$sub"; wait "$sub"; st=$?
  [ "$st" -eq 0 ] || fail "sub exited $st on SIGTERM"
}

# wss:// with a certificate made here: --cafile, --insecure, the hint when the
# certificate is not trusted, deflate negotiated by default and --no-deflate.
case_tls() {
  local here; here="$(cd "$(dirname "$0")" && pwd)"
  bash "$here/make_certs.sh" "$WORK/certs" || fail "make_certs.sh failed"
  local tport; tport=$("$WSC_TBTOOL" port)
  start_broker "" --tls-port "$tport" --tls-cert "$WORK/certs/server.pem" \
    --tls-key "$WORK/certs/server.key"
  local wss="wss://127.0.0.1:$tport/ws" ca=(--cafile "$WORK/certs/ca.pem")

  "$SUB" -v "${ca[@]}" --timeout 15 --count 2 "wss://localhost:$tport/ws" 'tls.>' \
    >"$WORK/sub.out" 2>"$WORK/sub.err" &
  local sub=$!; BG+=("$sub")
  for _ in $(seq 100); do
    timeout 5 "$PUB" "${ca[@]}" "$wss" tls.sync ready >/dev/null 2>&1
    [ -s "$WORK/sub.out" ] && break
    sleep 0.1
  done
  # A large message: compressed by the broker, inflated by the subscriber.
  local big; big="$(printf '{"rows":[%s1]}' "$(printf '"row of text",%.0s' $(seq 5000))")"
  printf '%s\n' "$big" >"$WORK/big.json"
  timeout 10 "$PUB" -v --json "${ca[@]}" "$wss" tls.big <"$WORK/big.json" 2>"$WORK/pub.err" ||
    fail "pub over wss exited $?"
  grep -q "TLSv1\.[23]" "$WORK/pub.err" || fail "pub -v: $(cat "$WORK/pub.err")"
  grep -q "permessage-deflate" "$WORK/pub.err" || fail "pub -v: no deflate: $(cat "$WORK/pub.err")"
  wait "$sub"; local st=$?
  [ "$st" -eq 0 ] || fail "sub over wss exited $st"
  grep -q "connected to wss://localhost:$tport/ws.*TLSv1\.[23].*permessage-deflate" "$WORK/sub.err" ||
    fail "sub -v: $(cat "$WORK/sub.err")"
  tail -1 "$WORK/sub.out" | cmp -s - "$WORK/big.json" || fail "the large message arrived changed"

  expect_status 0 "$PUB" -v --no-deflate "${ca[@]}" "$wss" tls.x hi
  expect_err "TLSv1"
  if grep -q "permessage-deflate" "$WORK/cmd.err"; then fail "--no-deflate: $(cat "$WORK/cmd.err")"; fi
  # Not trusted without the CA: exit 1, with the way out named.
  expect_status 1 "$PUB" "$wss" tls.x hi
  expect_err "not trusted"
  expect_err "--cafile"
  expect_status 1 "$SUB" --timeout 5 "$wss" 'tls.>'
  expect_err "not trusted"
  expect_status 0 "$PUB" --insecure "$wss" tls.x hi
  expect_status 0 "$PUB" "${ca[@]}" "wss://localhost:$tport/ws" tls.x hi
  # Bad CA file: a usage error. TLS to the plain port: a TLS error.
  expect_status 2 "$PUB" --cafile "$WORK/nope.pem" "$wss" tls.x hi
  expect_err "cannot load the CA file"
  expect_status 1 "$PUB" "${ca[@]}" "wss://127.0.0.1:$PORT/ws" tls.x hi
  expect_err "TLS"
}

# Tokens (--token, WSBROKER_TOKEN) against a broker with --auth-secret.
case_token() {
  local secret="cli-test-secret-0123456789"
  start_broker "" --auth-secret "$secret"
  local tok; tok="$("$WSBROKER_BIN" token --secret "$secret" --sub cli --publish 'tok.>' \
    --subscribe 'tok.>')" || fail "wsbroker token exited $?"
  expect_status 1 "$PUB" "$URL" tok.a hi
  expect_err "HTTP 401"
  expect_err "WSBROKER_TOKEN"
  "$SUB" --token "$tok" --timeout 15 --count 1 "$URL" 'tok.>' >"$WORK/sub.out" 2>"$WORK/sub.err" &
  local sub=$!; BG+=("$sub")
  for _ in $(seq 100); do
    WSBROKER_TOKEN="$tok" timeout 5 "$PUB" "$URL" tok.a 'with a token' >/dev/null 2>&1 ||
      fail "pub with WSBROKER_TOKEN exited $?"
    kill -0 "$sub" 2>/dev/null || break
    sleep 0.1
  done
  wait "$sub" || fail "sub with --token exited $?"
  [ "$(cat "$WORK/sub.out")" = 'with a token' ] || fail "sub printed: $(cat "$WORK/sub.out")"
  WSBROKER_TOKEN="$tok" expect_status 1 "$PUB" "$URL" other.a hi
  expect_err "forbidden"
  expect_status 1 "$SUB" --token "$tok" --timeout 5 "$URL" 'other.>'
  expect_err "forbidden"
}

# --last, --since and --epoch against a broker with --history.
case_history() {
  start_broker "" --history 5
  seq 1 8 | timeout 10 "$PUB" --json "$URL" h.t || fail "pub exited $?"
  expect_status 0 "$SUB" --last 3 --count 3 --timeout 5 "$URL" h.t
  [ "$(tr '\n' ' ' <"$WORK/cmd.out")" = '6 7 8 ' ] || fail "--last 3: $(cat "$WORK/cmd.out")"
  expect_status 0 "$SUB" -v --last 1 --count 1 --timeout 5 "$URL" h.t
  local epoch
  epoch="$(sed -n "s/.*'h.t': subscribed at seq 8, epoch \([^ ]*\)$/\1/p" "$WORK/cmd.err")"
  [ -n "$epoch" ] || fail "sub -v did not print the epoch: $(cat "$WORK/cmd.err")"
  expect_status 0 "$SUB" --since 6 --epoch "$epoch" --count 2 --timeout 5 "$URL" h.t
  [ "$(tr '\n' ' ' <"$WORK/cmd.out")" = '7 8 ' ] || fail "--since 6: $(cat "$WORK/cmd.out")"
  if [ -s "$WORK/cmd.err" ]; then fail "--since 6: notice: $(cat "$WORK/cmd.err")"; fi
  # 2 and 3 are gone: a notice, and what is left.
  expect_status 0 "$SUB" --since 1 --epoch "$epoch" --count 5 --timeout 5 "$URL" h.t
  [ "$(tr '\n' ' ' <"$WORK/cmd.out")" = '4 5 6 7 8 ' ] || fail "--since 1: $(cat "$WORK/cmd.out")"
  expect_err "cannot replay everything after seq 1"
  # Another epoch: nothing is replayed.
  expect_status 0 "$SUB" --since 7 --epoch other-epoch --timeout 1 "$URL" h.t
  [ ! -s "$WORK/cmd.out" ] || fail "another epoch replayed: $(cat "$WORK/cmd.out")"
  expect_err "cannot replay everything after seq 7"
}

[ $# -eq 1 ] || { echo "usage: $0 CASE" >&2; exit 2; }
declare -F "case_$1" >/dev/null || { echo "no case '$1'" >&2; exit 2; }
"case_$1"
echo "ok: $1"
