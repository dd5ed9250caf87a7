#!/usr/bin/env bash
# Browser tests: Debian's headless Chromium, driven by playwright-core,
# against the demo page and wsbroker.js served by a real broker.
#
#   WSBROKER_BIN=build-test/broker/wsbroker tests/browser/run.sh [test files...]
#
# WSBROKER_BIN defaults to build-test/broker/wsbroker (relative to the
# repository root); CHROMIUM_BIN to /usr/bin/chromium. Every test file starts
# its own broker on a free 127.0.0.1 port. Exits non-zero on any failure.
# Needs node and npm; where node is older than 20 (Debian 12), a pinned
# Node 20 from the npm registry is installed under tests/browser/node/.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
cd "$here"

chromium="${CHROMIUM_BIN:-/usr/bin/chromium}"
if [ ! -x "$chromium" ]; then
  echo "browser tests: $chromium not found; install it with: apt-get install -y chromium" >&2
  exit 1
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "browser tests: node and npm are needed (apt-get install -y nodejs npm)" >&2
  exit 1
fi
node_major() { "$1" -p 'process.versions.node.split(".")[0]' 2>/dev/null || echo 0; }

# playwright-core needs Node >= 20; Debian 12's nodejs is 18. With an older
# system node, the Node pinned in node/linux-<arch>/package-lock.json (the
# npm registry's node-linux-<arch> package: exact version and sha512) is
# installed into node/linux-<arch>/node_modules and runs the tests. npm
# itself keeps running on the system's node (Debian's npm needs Debian's
# node), and the system's node is not touched.
node_bin="$(command -v node)"
if [ "$(node_major "$node_bin")" -lt 20 ]; then
  case "$(uname -m)" in
    x86_64) arch=x64 ;;
    aarch64) arch=arm64 ;;
    *) echo "browser tests: node >= 20 is needed, found $("$node_bin" --version), and there is" \
         "no pinned Node for $(uname -m) (x86_64 and aarch64 only)" >&2
       exit 1 ;;
  esac
  pinned="$here/node/linux-$arch"
  if [ ! -x "$pinned/node_modules/.bin/node" ] ||
     [ "$pinned/package-lock.json" -nt "$pinned/node_modules/.package-lock.json" ]; then
    echo "browser tests: system node is $("$node_bin" --version); installing the pinned Node 20 into $pinned/node_modules"
    (cd "$pinned" && npm ci --no-audit --no-fund --loglevel=error) || {
      echo "browser tests: npm ci in $pinned failed: registry.npmjs.org must be reachable" \
        "over verified TLS (behind a TLS-inspecting proxy, its CA must be trusted)" >&2
      exit 1
    }
  fi
  node_bin="$pinned/node_modules/.bin/node"
  if [ "$(node_major "$node_bin")" -lt 20 ]; then
    echo "browser tests: the pinned Node in $pinned does not run" >&2
    exit 1
  fi
fi

bin="${WSBROKER_BIN:-build-test/broker/wsbroker}"
case "$bin" in /*) ;; *) bin="$root/$bin" ;; esac
if [ ! -x "$bin" ]; then
  echo "browser tests: broker binary $bin not found; build it or set WSBROKER_BIN" >&2
  exit 1
fi
export WSBROKER_BIN="$bin" CHROMIUM_BIN="$chromium"

# Install playwright-core (the driver only: it never downloads a browser)
# when node_modules is missing or older than the lock file.
if [ ! -f node_modules/playwright-core/package.json ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --loglevel=error || {
    echo "browser tests: npm ci of playwright-core failed: registry.npmjs.org must be reachable" \
      "over verified TLS (behind a TLS-inspecting proxy, its CA must be trusted)" >&2
    exit 1
  }
fi

if [ "$#" -gt 0 ]; then
  files=("$@")
else
  files=(*.test.js)
fi
echo "browser tests: $("$chromium" --version 2>/dev/null || echo chromium), node $("$node_bin" --version) ($node_bin), broker $bin"
# One file at a time: each launches a browser and a broker, and the machine
# is shared. TAP output ends with "# pass N" / "# fail N".
exec "$node_bin" --test --test-reporter=tap --test-concurrency=1 --test-timeout=120000 "${files[@]}"
