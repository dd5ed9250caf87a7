#!/usr/bin/env bash
# tests/interop/run.sh - wsbroker against WebSocket clients written
# elsewhere: the npm "ws" client (version pinned in package.json and
# package-lock.json, installed here with npm ci) with perMessageDeflate on
# and off, and Debian's python3-websockets with compression "deflate" and
# None, each over ws:// and wss://. Every client run checks the extension
# the broker agreed to (the response header), pub/sub round trips (hello,
# subscribe, publish with id, ack, message with the exact data, a message
# big enough to be compressed, 20 in order), /echo with compressed text and
# binary messages and empty ones, and whether each of them really travelled
# compressed (read off the frames' RSV1 bit).
#
# Brokers, each on free 127.0.0.1 ports, with a self-signed certificate
# made here with the openssl command:
#   shared     wsbroker --port P --tls-port Q --tls-cert C --tls-key K
#   dedicated  the same with --deflate dedicated --deflate-min-size 0
#   off        the same with --deflate off
#   auth       the same with --auth-secret S; tokens from 'wsbroker token'
#
# Usage: tests/interop/run.sh   (WSBROKER_BIN=path/to/wsbroker, default
# build-test/broker/wsbroker). Prints TAP; exits non-zero on any failure.
# Needs: node and npm, /usr/bin/python3 with python3-websockets, openssl,
# curl.
set -uo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
bin="${WSBROKER_BIN:-$root/build-test/broker/wsbroker}"
py=/usr/bin/python3

n=0
nfail=0
tap() { # ok|not ok, description
  n=$((n + 1))
  [ "$1" = ok ] || nfail=$((nfail + 1))
  echo "$1 $n - $2"
}
bail() { echo "Bail out! $*"; exit 1; }

[ -x "$bin" ] || bail "no broker binary at $bin (build first, or set WSBROKER_BIN)"
command -v openssl >/dev/null || bail "openssl not found"
command -v node >/dev/null && command -v npm >/dev/null || bail "node and npm are needed"
"$py" -c 'import websockets' 2>/dev/null || bail "$py has no websockets module (apt-get install python3-websockets)"

# The pinned ws, unless node_modules already holds exactly it.
want="$(node -p "require('$here/package.json').dependencies.ws")"
have="$(node -p "try { require('$here/node_modules/ws/package.json').version } catch (e) { '' }")"
if [ "$want" != "$have" ]; then
  (cd "$here" && npm ci --no-audit --no-fund --loglevel=error >&2) || bail "npm ci failed"
fi
echo "# ws $want (npm), websockets $("$py" -c 'import websockets; print(websockets.__version__)') (Debian), node $(node --version)"

tmp="$(mktemp -d)"
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null; done
  wait 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

openssl req -x509 -newkey rsa:2048 -nodes -sha256 -days 2 -subj "/CN=127.0.0.1" \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$tmp/key.pem" -out "$tmp/cert.pem" 2>"$tmp/openssl.log" ||
  { cat "$tmp/openssl.log"; bail "openssl could not make a certificate"; }

free_port() {
  "$py" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# start_broker NAME ARGS...: sets PORT and TLS_PORT, remembers the pid
declare -A bpid bport
start_broker() {
  local name="$1"; shift
  PORT="$(free_port)"; TLS_PORT="$(free_port)"
  while [ "$TLS_PORT" = "$PORT" ]; do TLS_PORT="$(free_port)"; done
  "$bin" --port "$PORT" --tls-port "$TLS_PORT" --tls-cert "$tmp/cert.pem" --tls-key "$tmp/key.pem" \
    "$@" >"$tmp/$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid"); bpid[$name]=$pid; bport[$name]=$PORT
  for _ in $(seq 100); do
    if curl -sf "http://127.0.0.1:$PORT/healthz" >/dev/null 2>&1 &&
       curl -sf --cacert "$tmp/cert.pem" "https://127.0.0.1:$TLS_PORT/healthz" >/dev/null 2>&1; then
      echo "# broker $name: wsbroker --port $PORT --tls-port $TLS_PORT --tls-cert C --tls-key K $*"
      return 0
    fi
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.1
  done
  cat "$tmp/$name.log"
  bail "broker $name did not start"
}

# client ws|py LABEL ARGS...: runs one client, turns its lines into TAP
client() {
  local kind="$1" label="$2"; shift 2
  local out="$tmp/client.out" rc
  if [ "$kind" = ws ]; then
    timeout 60 node "$here/ws_client.js" --label "$label" "$@" >"$out" 2>&1
  else
    timeout 60 "$py" "$here/py_client.py" --label "$label" "$@" >"$out" 2>&1
  fi
  rc=$?
  local seen=0 bad=0
  while IFS= read -r line; do
    case "$line" in
      "ok - "*) tap ok "${line#ok - }"; seen=1 ;;
      "not ok - "*) tap "not ok" "${line#not ok - }"; seen=1; bad=1 ;;
      *) echo "# $line" ;;
    esac
  done <"$out"
  if [ "$seen" = 0 ] || { [ "$rc" -ne 0 ] && [ "$bad" = 0 ]; }; then
    tap "not ok" "$label: client exited $rc"
  fi
}

SHARED="permessage-deflate; server_no_context_takeover; client_no_context_takeover"
DEDICATED="permessage-deflate; client_no_context_takeover"

# both schemes for one client configuration
both() { # kind label-prefix broker-name ARGS...
  local kind="$1" label="$2" name="$3"; shift 3
  client "$kind" "$label ws://" --url "ws://127.0.0.1:$PORT" "$@"
  client "$kind" "$label wss://" --url "wss://127.0.0.1:$TLS_PORT" --ca "$tmp/cert.pem" "$@"
}

start_broker shared
both ws "shared, ws perMessageDeflate on," shared --deflate on --expect-ext "$SHARED" --topic interop.shared
both ws "shared, ws perMessageDeflate off," shared --deflate off --expect-ext none --topic interop.shared
both py "shared, websockets deflate," shared --deflate on --expect-ext "$SHARED" --topic interop.shared
both py "shared, websockets None," shared --deflate off --expect-ext none --topic interop.shared

start_broker dedicated --deflate dedicated --deflate-min-size 0
both ws "dedicated, ws perMessageDeflate on," dedicated --deflate on --expect-ext "$DEDICATED" --min-size 0
both py "dedicated, websockets deflate," dedicated --deflate on --expect-ext "$DEDICATED" --min-size 0

start_broker off --deflate off
both ws "deflate off, ws perMessageDeflate on," off --deflate on --expect-ext none
both py "deflate off, websockets deflate," off --deflate on --expect-ext none

secret="interop-secret-$$"
start_broker auth --auth-secret "$secret"
token="$("$bin" token --secret "$secret" --sub interop --publish 'interop.>' --subscribe 'interop.>' --ttl 600)" ||
  bail "wsbroker token failed"
forged="$("$bin" token --secret "not-$secret" --sub interop --publish 'interop.>' --subscribe 'interop.>')"
client ws "auth, ws ?token= ws://" --url "ws://127.0.0.1:$PORT" --token "$token" --expect-ext "$SHARED" --topic interop.auth
client ws "auth, ws Bearer wss://" --url "wss://127.0.0.1:$TLS_PORT" --ca "$tmp/cert.pem" --bearer "$token" --expect-ext "$SHARED" --topic interop.auth
client py "auth, websockets Bearer ws://" --url "ws://127.0.0.1:$PORT" --bearer "$token" --expect-ext "$SHARED" --topic interop.auth
client py "auth, websockets ?token= wss://" --url "wss://127.0.0.1:$TLS_PORT" --ca "$tmp/cert.pem" --token "$token" --expect-ext "$SHARED" --topic interop.auth
both ws "auth, ws without a token," auth --expect-status 401
both py "auth, websockets without a token," auth --expect-status 401
both ws "auth, ws with a token of another secret," auth --token "$forged" --expect-status 401
both py "auth, websockets with a token of another secret," auth --bearer "$forged" --expect-status 401

# Every broker is still up, and stops cleanly on SIGTERM.
for name in shared dedicated off auth; do
  pid="${bpid[$name]}"
  if kill -0 "$pid" 2>/dev/null && kill -TERM "$pid" && wait "$pid"; then
    tap ok "broker $name ran every client and exited 0 on SIGTERM"
  else
    tap "not ok" "broker $name ran every client and exited 0 on SIGTERM"
    tail -20 "$tmp/$name.log" | sed 's/^/# /'
  fi
done

echo "1..$n"
echo "interop: $((n - nfail)) passed, $nfail failed"
[ "$nfail" -eq 0 ]
