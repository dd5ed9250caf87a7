#!/usr/bin/env bash
# Install the Debian packages wsbroker needs, skipping those already present.
#   deploy/deps.sh          build and run the broker
#   deploy/deps.sh --test   also everything the test suite uses
set -euo pipefail

pkgs=(build-essential cmake ninja-build pkg-config libuv1-dev libssl-dev libcjson-dev zlib1g-dev
      libhiredis-dev openssl curl ca-certificates)
if [ "${1:-}" = "--test" ]; then
  pkgs+=(check clang libclang-rt-14-dev python3 python3-websockets chromium redis-server haproxy)
  # Debian's node (18 on Debian 12) and npm; where node is older than 20,
  # tests/browser/run.sh adds a pinned Node 20 from the npm registry under
  # tests/browser/node/ for the browser tests only.
  command -v node >/dev/null || pkgs+=(nodejs)
  command -v npm >/dev/null || pkgs+=(npm)
fi

missing=()
for p in "${pkgs[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

sudo=""
if [ "$(id -u)" -ne 0 ]; then
  command -v sudo >/dev/null || { echo "deps.sh: need root or sudo to install: ${missing[*]}" >&2; exit 1; }
  sudo="sudo"
fi
echo "deps.sh: installing ${missing[*]}" >&2
export DEBIAN_FRONTEND=noninteractive
$sudo apt-get update -qq
$sudo apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
