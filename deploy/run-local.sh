#!/usr/bin/env bash
# Install what is missing, build the broker and the command-line clients,
# and run the broker on its defaults: the demo page at http://localhost:8080/,
# pub/sub at ws://localhost:8080/ws, /echo, /healthz, /metrics.
# Extra arguments go to wsbroker (see: build/broker/wsbroker --help).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
"$root/deploy/deps.sh"
cmake -S "$root" -B "$root/build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSBROKER_TESTS=OFF >/dev/null
cmake --build "$root/build" --target wsbroker wsbroker-pub wsbroker-sub wsbroker-bench
exec "$root/build/broker/wsbroker" "$@"
