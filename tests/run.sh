#!/usr/bin/env bash
# Build and run the whole test suite:
#   plain  unit, integration and client suites, gcc RelWithDebInfo
#   builds the whole tree (tests included) as gcc Release (-O3) and as clang
#          Release, and their unit suites: a warning under either fails
#   asan   the plain stage's suites under AddressSanitizer and
#          UndefinedBehaviorSanitizer
#   tsan   the integration and client suites (real broker, 4 workers,
#          churn, C client library) under ThreadSanitizer
#   fuzz   every libFuzzer target for FUZZ_SECONDS (default 20) each
#   browser  headless Chromium (Debian's) driving the demo page and
#          wsbroker.js against the plain build's broker
#   interop  clients written elsewhere (npm ws, Debian's python3-websockets)
#          over ws:// and wss://, with and without permessage-deflate
#   deploy tests/deploy/compose_test.sh: the real images and
#          docker-compose.yml started on a bridgeless Docker daemon, checked
#          end to end through haproxy (root only: it installs and starts
#          Docker). Where Docker cannot run containers at all (no mount
#          namespaces: an unprivileged container) it is reported as
#          SKIPPED with that reason, and counts as neither passed nor failed
# Every build here has -Wall -Wextra -Werror (WSBROKER_WERROR=ON; a plain
# cmake build leaves it off). Select stages with STAGES="plain asan"
# (default: all, in the order above). Exits non-zero on any failure and
# ends with one "N passed, N failed" line.
set -uo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"
"$root/deploy/deps.sh" --test || exit 1

stages="${STAGES:-plain builds asan tsan fuzz browser interop deploy}"
fuzz_seconds="${FUZZ_SECONDS:-20}"
jobs="$(nproc)"
passed=0
failed=0
failures=()
skipped=()

configure_build() { # dir, cmake args...
  local dir="$1"; shift
  cmake -S "$root" -B "$dir" -G Ninja -DWSBROKER_WERROR=ON "$@" >/dev/null &&
    cmake --build "$dir" -j "$jobs"
}

run_ctest() { # stage, dir, ctest args...
  local stage="$1" dir="$2"; shift 2
  local log="$dir/ctest-$stage.log"
  ctest --test-dir "$dir" --output-on-failure --timeout 300 "$@" 2>&1 | tee "$log"
  local total fails
  total=$(grep -Eo 'tests failed out of [0-9]+' "$log" | grep -Eo '[0-9]+$' | tail -1)
  fails=$(grep -Eo '[0-9]+ tests failed out of' "$log" | grep -Eo '^[0-9]+' | tail -1)
  if [ -z "$total" ]; then
    failed=$((failed + 1)); failures+=("$stage: ctest did not run"); return
  fi
  passed=$((passed + total - fails)); failed=$((failed + fails))
  [ "$fails" -eq 0 ] || failures+=("$stage: $fails of $total failed")
}

for stage in $stages; do
  echo "=== stage: $stage"
  case "$stage" in
    plain)
      if configure_build build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
        run_ctest plain build-test
      else failed=$((failed + 1)); failures+=("plain: build failed"); fi ;;
    builds)
      if configure_build build-release -DCMAKE_BUILD_TYPE=Release; then
        passed=$((passed + 1)); echo "builds: gcc Release: ok"
        run_ctest builds-gcc build-release -L unit
      else failed=$((failed + 1)); failures+=("builds: gcc Release build failed"); fi
      if CC=clang configure_build build-clang -DCMAKE_BUILD_TYPE=Release; then
        passed=$((passed + 1)); echo "builds: clang Release: ok"
        run_ctest builds-clang build-clang -L unit
      else failed=$((failed + 1)); failures+=("builds: clang Release build failed"); fi ;;
    asan)
      if configure_build build-asan -DCMAKE_BUILD_TYPE=Debug -DWSBROKER_SANITIZE=address; then
        ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1 \
          run_ctest asan build-asan
      else failed=$((failed + 1)); failures+=("asan: build failed"); fi ;;
    tsan)
      if configure_build build-tsan -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSBROKER_SANITIZE=thread; then
        TSAN_OPTIONS="halt_on_error=0 exitcode=66 second_deadlock_stack=1" \
          run_ctest tsan build-tsan -L 'integration|clients'
      else failed=$((failed + 1)); failures+=("tsan: build failed"); fi ;;
    fuzz)
      if CC=clang configure_build build-fuzz -DCMAKE_BUILD_TYPE=RelWithDebInfo -DWSBROKER_FUZZ=ON \
           -DWSBROKER_TESTS=OFF; then
        for bin in build-fuzz/tests/fuzz/fuzz_*; do
          [ -x "$bin" ] || continue
          name="$(basename "$bin")"
          corpus="build-fuzz/corpus/$name"; mkdir -p "$corpus"
          seeds="tests/fuzz/corpus/$name"
          [ -d "$seeds" ] || seeds=""
          if "$bin" -max_total_time="$fuzz_seconds" -print_final_stats=1 "$corpus" $seeds \
               >"build-fuzz/$name.log" 2>&1; then
            passed=$((passed + 1)); echo "fuzz $name: ok ($(grep -Eo 'stat::number_of_executed_units: [0-9]+' "build-fuzz/$name.log" | grep -Eo '[0-9]+') runs)"
          else
            failed=$((failed + 1)); failures+=("fuzz: $name"); tail -40 "build-fuzz/$name.log"
          fi
        done
      else failed=$((failed + 1)); failures+=("fuzz: build failed"); fi ;;
    browser)
      if [ ! -x tests/browser/run.sh ]; then
        echo "browser: no tests/browser/run.sh"
      elif configure_build build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
        if WSBROKER_BIN="$root/build-test/broker/wsbroker" tests/browser/run.sh 2>&1 | tee build-test/browser.log; then
          n=$(grep -Eo '^# pass [0-9]+' build-test/browser.log | grep -Eo '[0-9]+' | tail -1)
          passed=$((passed + ${n:-1}))
        else
          n=$(grep -Eo '^# fail [0-9]+' build-test/browser.log | grep -Eo '[0-9]+' | tail -1)
          failed=$((failed + ${n:-1})); failures+=("browser: ${n:-?} failed")
        fi
      else failed=$((failed + 1)); failures+=("browser: build failed"); fi ;;
    interop)
      if configure_build build-test -DCMAKE_BUILD_TYPE=RelWithDebInfo; then
        if WSBROKER_BIN="$root/build-test/broker/wsbroker" tests/interop/run.sh 2>&1 | tee build-test/interop.log; then
          passed=$((passed + $(grep -c '^ok ' build-test/interop.log)))
        else
          n=$(grep -c '^not ok ' build-test/interop.log)
          failed=$((failed + (n > 0 ? n : 1))); failures+=("interop: ${n} failed")
        fi
      else failed=$((failed + 1)); failures+=("interop: build failed"); fi ;;
    deploy)
      mkdir -p build-deploy
      tests/deploy/compose_test.sh 2>&1 | tee build-deploy/compose_test.out
      st=${PIPESTATUS[0]}
      if [ "$st" -eq 0 ]; then
        passed=$((passed + $(grep -c '^ok: ' build-deploy/compose_test.out)))
      elif [ "$st" -eq 77 ]; then
        skipped+=("deploy: $(grep -m1 '^SKIP: ' build-deploy/compose_test.out | cut -c7-)")
      else failed=$((failed + 1)); failures+=("deploy: $(grep -m1 '^FAIL: ' build-deploy/compose_test.out || echo 'compose_test.sh failed')"); fi ;;
    *)
      echo "unknown stage '$stage'" >&2; failed=$((failed + 1)); failures+=("unknown stage $stage") ;;
  esac
done

for f in "${skipped[@]}"; do echo "SKIPPED: $f"; done
for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed${skipped:+, ${#skipped[@]} stage skipped}"
[ "$failed" -eq 0 ]
