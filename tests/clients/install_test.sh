#!/usr/bin/env bash
# Install the client library (component "client") and the tools (component
# "cli") into a temporary prefix, then build tests/clients/consumer, an
# outside CMake project using find_package(wsbroker-client), and a pkg-config
# build of the same program, and run them against a broker.
#
#   install_test.sh BUILD_DIR
# Environment (set by CTest): WSBROKER_BIN, WSC_TBTOOL, WSC_CMAKE,
# WSC_GENERATOR, WSC_CC, WSC_CFLAGS (sanitizer flags of this build, if any).
set -uo pipefail
build="${1:?build dir}"
here="$(cd "$(dirname "$0")" && pwd)"
tmp="$(mktemp -d /tmp/wsc-install-XXXXXX)"
bpid=""
cleanup() { [ -n "$bpid" ] && kill -9 "$bpid" 2>/dev/null; wait 2>/dev/null; rm -rf "$tmp"; }
trap cleanup EXIT
fail() { echo "FAIL: $*" >&2; exit 1; }
prefix="$tmp/prefix"

"$WSC_CMAKE" --install "$build" --prefix "$prefix" --component client >"$tmp/install.log" 2>&1 ||
  fail "install of component client: $(cat "$tmp/install.log")"
"$WSC_CMAKE" --install "$build" --prefix "$prefix" --component cli >>"$tmp/install.log" 2>&1 ||
  fail "install of component cli"

for f in include/wsbroker/client.h bin/wsbroker-pub bin/wsbroker-sub; do
  [ -e "$prefix/$f" ] || fail "not installed: $f"
done
pc="$(find "$prefix" -name wsbroker-client.pc)"
[ -n "$pc" ] || fail "no wsbroker-client.pc"
libdir="$(dirname "$(dirname "$pc")")"
for f in libwsbroker-client.so libwsbroker-client.a cmake/wsbroker-client/wsbroker-clientConfig.cmake \
         cmake/wsbroker-client/wsbroker-clientTargets.cmake; do
  [ -e "$libdir/$f" ] || fail "not installed: $libdir/$f"
done
if grep -q "wsproto" "$prefix/include/wsbroker/client.h"; then fail "public header includes wsproto"; fi
if find "$prefix" -name '*.h' | grep -v client.h | grep -q .; then fail "extra headers installed"; fi
"$prefix/bin/wsbroker-pub" --version | grep -q "wsbroker" || fail "installed wsbroker-pub does not run"

# The shared library exports exactly the functions the header declares.
grep -Eo 'WSC_API [^;]*\b(wsc_[a-z_]+)\(' "$prefix/include/wsbroker/client.h" |
  grep -Eo 'wsc_[a-z_]+\($' | tr -d '(' | sort -u >"$tmp/declared"
nm -D --defined-only "$libdir/libwsbroker-client.so" | awk '$2 ~ /^[TDBR]$/ {print $3}' |
  grep -v '^_' | sort -u >"$tmp/exported"
diff "$tmp/declared" "$tmp/exported" >"$tmp/symbols.diff" ||
  fail "exports differ from the header's WSC_API list (< header only, > library only): $(cat "$tmp/symbols.diff")"
[ "$(wc -l <"$tmp/declared")" -ge 20 ] || fail "only $(wc -l <"$tmp/declared") functions declared?"

flags=()
[ -n "${WSC_CFLAGS:-}" ] && flags=(-DCMAKE_C_FLAGS="$WSC_CFLAGS" -DCMAKE_EXE_LINKER_FLAGS="$WSC_CFLAGS")
"$WSC_CMAKE" -S "$here/consumer" -B "$tmp/build" -G "$WSC_GENERATOR" -DCMAKE_C_COMPILER="$WSC_CC" \
  -DCMAKE_PREFIX_PATH="$prefix" "${flags[@]}" >"$tmp/configure.log" 2>&1 ||
  fail "consumer configure: $(tail -30 "$tmp/configure.log")"
"$WSC_CMAKE" --build "$tmp/build" >"$tmp/build.log" 2>&1 || fail "consumer build: $(tail -30 "$tmp/build.log")"

export PKG_CONFIG_PATH="$(dirname "$pc")"
pkg-config --exists wsbroker-client || fail "pkg-config does not find wsbroker-client"
# shellcheck disable=SC2046
"$WSC_CC" ${WSC_CFLAGS:-} "$here/consumer/main.c" -o "$tmp/consumer_pc" \
  $(pkg-config --cflags --libs wsbroker-client) 2>"$tmp/pc.log" || fail "pkg-config build: $(cat "$tmp/pc.log")"
# Static: the archive plus what Requires.private names (libssl, zlib...).
# shellcheck disable=SC2046
"$WSC_CC" ${WSC_CFLAGS:-} "$here/consumer/main.c" -o "$tmp/consumer_pc_static" \
  $(pkg-config --cflags wsbroker-client) "$libdir/libwsbroker-client.a" \
  $(pkg-config --static --libs wsbroker-client | sed 's/-lwsbroker-client//') 2>"$tmp/pcs.log" ||
  fail "pkg-config --static build: $(cat "$tmp/pcs.log")"

bash "$here/make_certs.sh" "$tmp/certs" || fail "make_certs.sh failed"
for _ in 1 2 3 4 5; do
  port="$("$WSC_TBTOOL" port)"
  tls_port="$("$WSC_TBTOOL" port)"
  "$WSBROKER_BIN" --bind 127.0.0.1 --port "$port" --workers 1 --log-level warn \
    --tls-port "$tls_port" --tls-cert "$tmp/certs/server.pem" --tls-key "$tmp/certs/server.key" \
    >"$tmp/broker.log" 2>&1 &
  bpid=$!
  "$WSC_TBTOOL" wait "$port" 10000 && break
  kill -9 "$bpid"; wait "$bpid" 2>/dev/null; bpid=""
done
[ -n "$bpid" ] || fail "broker did not start"
url="ws://127.0.0.1:$port/ws"
wss="wss://127.0.0.1:$tls_port/ws"
for prog in "$tmp/build/consumer" "$tmp/build/consumer_static" "$tmp/consumer_pc_static"; do
  out="$(timeout 20 "$prog" "$url" 2>&1)" || fail "$prog: $out"
  [[ "$out" == ok* ]] || fail "$prog printed: $out"
  out="$(timeout 20 "$prog" "$wss" "$tmp/certs/ca.pem" 2>&1)" || fail "$prog over wss: $out"
  [[ "$out" == "ok ("*", TLSv1."* ]] || fail "$prog over wss printed: $out"
done
out="$(LD_LIBRARY_PATH="$libdir" timeout 20 "$tmp/consumer_pc" "$wss" "$tmp/certs/ca.pem" 2>&1)" ||
  fail "pkg-config build: $out"
echo "ok: installed package used by CMake (shared, static) and pkg-config (shared, static), ws:// and wss://"
