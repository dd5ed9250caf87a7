#!/usr/bin/env bash
# Build the real images (deploy/Dockerfile) and start the real
# docker-compose.yml, with tests/deploy/compose.ci.yml on top, on a Docker
# daemon that has no bridge network; drive the stack end to end through
# haproxy; stop it and check that every broker exited 0 on SIGTERM.
#
# Runs as root on Debian 12 with nothing reachable but Debian's apt mirror:
#   * installs docker.io, docker-compose, debootstrap, python3 and openssl if
#     missing (without letting the packages start the system's Docker
#     service);
#   * starts `dockerd --bridge=none --iptables=false --ip-masq=false` if no
#     daemon answers, and stops it at the end (no container network and no
#     private address range is ever created: every service is on the host
#     network, on loopback);
#   * makes debian:bookworm and debian:bookworm-slim with debootstrap and
#     `docker import` (kept for later runs), and redis:7 and haproxy:2.8
#     from Debian's packages (tests/deploy/*.Dockerfile), so nothing is
#     pulled; images of those names that it did not make are used as they are.
#
# Environment:
#   WSBROKER_CLUSTER_TEST  auto (default): the cross-replica checks of
#                          cluster mode run if the image's `wsbroker --help`
#                          lists --redis; 1: run them; 0: check instead that
#                          replicas without cluster mode are separate
#   COMPOSE                compose command (default: `docker compose` if
#                          present, else docker-compose)
#   DOCKER_HOST            daemon to use; a unix socket where nothing answers
#                          gets a daemon of its own, its state kept in
#                          WSBROKER_DOCKERD_ROOT (beside another daemon)
# Logs go to build-deploy/. Exits non-zero on the first failed check.
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"
here="$root/tests/deploy"
logs="$root/build-deploy"
project=wsbroker-ci
mkdir -p "$logs"
check_py=(python3 "$here/stack_check.py")

t_start=$(date +%s)
t_phase=$t_start
timings=()
phase() { # name: end the previous phase, start this one
  local now
  now=$(date +%s)
  [ -z "${phase_name:-}" ] || timings+=("$phase_name $((now - t_phase)) s")
  phase_name=$1
  t_phase=$now
  echo "=== $1"
}
ok() { echo "ok: $*"; }
fail() {
  echo "FAIL: $*" >&2
  exit 1
}

# Docker unpacks every image in a mount namespace of its own. Where none
# can be made (an unprivileged container, such as a fresh-Debian check run
# inside Docker) no container can start at all: say so and exit 77, which
# tests/run.sh reports as a skipped stage. On a machine or VM as root this
# never happens.
if ! unshare --mount true 2>/dev/null; then
  echo "SKIP: this system cannot create mount namespaces (unshare --mount: $(unshare --mount true 2>&1 | tail -1)), so Docker cannot run containers here; the deploy stage needs a machine, a VM or a privileged container"
  exit 77
fi

policy_rc_d=""
dockerd_pid=""
dns_pid=""
hold_pid=""
stack_up=0
cleanup() {
  local rc=$?
  set +e
  [ -z "$policy_rc_d" ] || rm -f /usr/sbin/policy-rc.d
  [ -z "$hold_pid" ] || kill "$hold_pid" 2>/dev/null
  if [ "$stack_up" = 1 ]; then
    if [ "$rc" != 0 ]; then
      echo "--- last log lines of the stack (all in $logs/stack.log)" >&2
      dcs logs --no-color >"$logs/stack.log" 2>&1
      tail -n 60 "$logs/stack.log" >&2
    fi
    dcs down -v --remove-orphans >>"$logs/compose.log" 2>&1
  fi
  [ -z "$dns_pid" ] || kill "$dns_pid" 2>/dev/null
  if [ -n "$dockerd_pid" ]; then
    kill -TERM "$dockerd_pid" 2>/dev/null
    for _ in $(seq 150); do kill -0 "$dockerd_pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$dockerd_pid" 2>/dev/null; then
      echo "dockerd ($dockerd_pid) did not stop within 30 s" >&2
      rc=1
    else
      echo "stopped the Docker daemon this test started"
    fi
  fi
  phase done
  for t in "${timings[@]}"; do echo "time: $t"; done
  echo "time: total $(($(date +%s) - t_start)) s"
  if [ "$rc" = 0 ]; then echo "compose_test: all checks passed"; else echo "compose_test: FAILED" >&2; fi
  exit "$rc"
}
trap cleanup EXIT

# --- tools --------------------------------------------------------------------
phase "tools"
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v debootstrap >/dev/null || missing+=(debootstrap)
command -v python3 >/dev/null || missing+=(python3)
command -v openssl >/dev/null || missing+=(openssl)
if [ -z "${COMPOSE:-}" ] && ! command -v docker-compose >/dev/null &&
  ! { command -v docker >/dev/null && docker compose version >/dev/null 2>&1; }; then
  missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
  [ "$(id -u)" = 0 ] || fail "need root to install ${missing[*]}"
  echo "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >"$logs/apt.log" 2>&1 || { cat "$logs/apt.log" >&2; fail "apt-get update"; }
  # On a machine with systemd, installing docker.io would start the system's
  # daemon with its default bridge (a private address range): keep the
  # package from starting services; this test starts its own daemon.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d
    policy_rc_d=1
  fi
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >>"$logs/apt.log" 2>&1 ||
    { tail -n 30 "$logs/apt.log" >&2; fail "apt-get install ${missing[*]}"; }
  [ -z "$policy_rc_d" ] || rm -f /usr/sbin/policy-rc.d
  policy_rc_d=""
fi
if [ -n "${COMPOSE:-}" ]; then
  read -r -a compose <<<"$COMPOSE"
elif docker compose version >/dev/null 2>&1; then
  compose=(docker compose)
else
  compose=(docker-compose)
fi
ok "$("${compose[@]}" version 2>/dev/null | head -n 1); $(python3 --version)"
# The stack runs first as docker-compose.yml alone, then with TLS and
# authentication added; the CI override files come last.
files_plain=(docker-compose.yml tests/deploy/compose.ci.yml)
files_secure=(docker-compose.yml deploy/compose.tls.yml deploy/compose.auth.yml
  tests/deploy/compose.ci.yml tests/deploy/compose.ci-secure.yml)
compose_with() { # array name, compose arguments
  local -n files=$1
  local args=() f
  shift
  for f in "${files[@]}"; do args+=(-f "$root/$f"); done
  "${compose[@]}" -p "$project" "${args[@]}" "$@"
}
compose_files() { local -n l=$1; echo "${l[*]}"; }
dc() { compose_with files_plain "$@"; }
dcs() { compose_with files_secure "$@"; }

# --- Docker daemon ------------------------------------------------------------
phase "daemon"
if docker info >/dev/null 2>&1; then
  ok "using the running Docker daemon (${DOCKER_HOST:-default socket})"
else
  args=(--bridge=none --iptables=false --ip-masq=false)
  case "${DOCKER_HOST:-}" in
  "" | unix:///var/run/docker.sock | unix:///run/docker.sock) ;;
  unix://*)
    state="${WSBROKER_DOCKERD_ROOT:?DOCKER_HOST=$DOCKER_HOST answers nothing: set WSBROKER_DOCKERD_ROOT to start a daemon there}"
    mkdir -p "$state" "$(dirname "${DOCKER_HOST#unix://}")"
    args+=(-H "$DOCKER_HOST" --data-root "$state/data" --exec-root "$state/exec" --pidfile "$state/dockerd.pid")
    ;;
  *) fail "DOCKER_HOST=$DOCKER_HOST answers nothing and is not a unix socket to start a daemon on" ;;
  esac
  dockerd "${args[@]}" >"$logs/dockerd.log" 2>&1 &
  dockerd_pid=$!
  for _ in $(seq 150); do docker info >/dev/null 2>&1 && break; sleep 0.2; done
  docker info >/dev/null 2>&1 || { tail -n 20 "$logs/dockerd.log" >&2; fail "dockerd did not start"; }
  ok "started dockerd ${args[*]} (pid $dockerd_pid)"
fi
networks_before=$(docker network ls -q | sort)

# Loopback ports for the stack (compose.ci.yml needs them from here on);
# checked again just before the stack starts.
read -r http_port https_port stats_port broker_port redis_port dns_port < <("${check_py[@]}" ports 6)
export CI_HTTP_PORT=$http_port CI_HTTPS_PORT=$https_port CI_STATS_PORT=$stats_port \
  CI_BROKER_PORT=$broker_port CI_REDIS_PORT=$redis_port CI_DNS_PORT=$dns_port
front=127.0.0.1:$http_port
brokers=127.0.0.2:$broker_port,127.0.0.3:$broker_port

# --- base images --------------------------------------------------------------
phase "base images"
# An image of that name that this test did not make (one pulled from a
# registry, say) is used as it is.
label() { docker image inspect -f '{{index .Config.Labels "wsbroker.test-image"}}' "$1" 2>/dev/null; }
present() { docker image inspect "$1" >/dev/null 2>&1; }
ours() { [ -n "$(label "$1")" ]; } # made by this test
base_label="debootstrap --variant=minbase bookworm; host's apt sources; no services started; no apt caches"
need_base=()
for tag in debian:bookworm debian:bookworm-slim; do
  if ! present "$tag" || { ours "$tag" && [ "$(label "$tag")" != "$base_label" ]; }; then need_base+=("$tag"); fi
done
if [ ${#need_base[@]} -eq 0 ]; then
  ok "debian:bookworm and debian:bookworm-slim present (cached)"
else
  sources=/etc/apt/sources.list.d/debian.sources
  if [ -f "$sources" ]; then
    mirror=$(awk '/^URIs:/ { print $2; exit }' "$sources")
  else
    sources=/etc/apt/sources.list
    mirror=$(awk '$1 == "deb" { print $2; exit }' "$sources" 2>/dev/null)
  fi
  [ -n "$mirror" ] || fail "no Debian mirror in the host's apt sources"
  rootfs=$(mktemp -d -p /var/tmp)
  echo "debootstrap --variant=minbase bookworm from $mirror"
  if ! debootstrap --variant=minbase bookworm "$rootfs" "$mirror" >"$logs/debootstrap.log" 2>&1; then
    tail -n 20 "$logs/debootstrap.log" >&2
    rm -rf "$rootfs"
    fail "debootstrap"
  fi
  # apt in the images uses the host's mirror and sources, nothing else.
  rm -f "$rootfs/etc/apt/sources.list"
  cp "$sources" "$rootfs$sources"
  # As in Debian's official images: package installs start no services, and
  # apt keeps no package caches in image layers.
  printf '#!/bin/sh\nexit 101\n' >"$rootfs/usr/sbin/policy-rc.d"
  chmod 755 "$rootfs/usr/sbin/policy-rc.d"
  printf 'Dir::Cache::pkgcache "";\nDir::Cache::srcpkgcache "";\n' >"$rootfs/etc/apt/apt.conf.d/docker-no-cache"
  rm -rf "$rootfs"/var/lib/apt/lists/* "$rootfs"/var/cache/apt/*.bin "$rootfs"/var/cache/apt/archives/*.deb
  tar -C "$rootfs" -c . | docker import --change 'CMD ["bash"]' \
    --change "LABEL wsbroker.test-image=\"$base_label\"" - "${need_base[0]}" >/dev/null
  rm -rf "$rootfs"
  for tag in "${need_base[@]:1}"; do docker tag "${need_base[0]}" "$tag"; done
  ok "made ${need_base[*]} with debootstrap and docker import ($(docker image inspect -f '{{.Size}}' "${need_base[0]}" | awk '{ printf "%d MB", $1 / 1e6 }'))"
fi

# --- images -------------------------------------------------------------------
phase "images"
for pair in redis:7=redis haproxy:2.8=haproxy; do
  image=${pair%%=*} name=${pair#*=}
  if present "$image" && ! ours "$image"; then
    ok "$image present and not made by this test: used as it is"
    continue
  fi
  docker build --network host -t "$image" -f "$here/$name.Dockerfile" "$here" >"$logs/build-$name.log" 2>&1 ||
    { tail -n 30 "$logs/build-$name.log" >&2; fail "docker build $image"; }
  if [ "$name" = redis ]; then version=(redis-server --version); else version=(haproxy -v); fi
  ok "$image built from Debian's $name package: $(docker run --rm --network none --entrypoint "${version[0]}" \
    "$image" "${version[1]}" | awk 'NR == 1 { print $1, $2, $3 }')"
done
dc build broker >"$logs/build-broker.log" 2>&1 ||
  { tail -n 40 "$logs/build-broker.log" >&2; fail "compose build broker (deploy/Dockerfile)"; }
image=${WSBROKER_IMAGE:-wsbroker:latest}
user=$(docker image inspect -f '{{.Config.User}}' "$image")
[ -n "$user" ] && [ "${user%%:*}" != 0 ] && [ "${user%%:*}" != root ] || fail "$image runs as root ('$user')"
ok "$image built by compose from deploy/Dockerfile: $(docker run --rm --network none "$image" --version)," \
  "user $user, $(docker image inspect -f '{{.Size}}' "$image" | awk '{ printf "%d MB", $1 / 1e6 }')," \
  "stop signal $(docker image inspect -f '{{.Config.StopSignal}}' "$image")," \
  "health check $(docker image inspect -f '{{join .Config.Healthcheck.Test " "}}' "$image")"

case "${WSBROKER_CLUSTER_TEST:-auto}" in
auto)
  help=$(docker run --rm --network none "$image" --help)
  if grep -q -- '--redis' <<<"$help"; then cluster=1; else cluster=0; fi
  echo "WSBROKER_CLUSTER_TEST=auto: cluster mode $([ "$cluster" = 1 ] && echo "in" || echo "not in") $image's --help"
  ;;
1 | 0) cluster=$WSBROKER_CLUSTER_TEST ;;
*) fail "WSBROKER_CLUSTER_TEST must be auto, 1 or 0" ;;
esac

# --- configuration ------------------------------------------------------------
phase "configuration"
docker run --rm --network none -v "$root/deploy/haproxy:/usr/local/etc/haproxy:ro" haproxy:2.8 \
  haproxy -c -f /usr/local/etc/haproxy/haproxy.cfg >"$logs/haproxy-check.log" 2>&1 ||
  { cat "$logs/haproxy-check.log" >&2; fail "haproxy -c on deploy/haproxy/haproxy.cfg"; }
ok "deploy/haproxy/haproxy.cfg is valid as docker-compose.yml runs it (haproxy -c)"

# The TLS certificate (self-signed, for 127.0.0.1) and the auth secret of
# deploy/compose.tls.yml and deploy/compose.auth.yml, in a directory of the
# test's own (WSBROKER_SECRETS_DIR), readable by the containers' users.
secrets="$logs/secrets"
rm -rf "$secrets"
mkdir -m 0755 "$secrets"
openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj /CN=localhost \
  -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
  -keyout "$secrets/key.pem" -out "$secrets/cert.pem" >"$logs/openssl.log" 2>&1 ||
  { cat "$logs/openssl.log" >&2; fail "openssl req"; }
cat "$secrets/cert.pem" "$secrets/key.pem" >"$secrets/tls.pem"
head -c 32 /dev/urandom | base64 >"$secrets/auth_secret"
chmod 0644 "$secrets/tls.pem" "$secrets/auth_secret"
export WSBROKER_SECRETS_DIR="$secrets"
# A setting from the environment, passed on to the brokers by compose.
export WSBROKER_WORKERS=3

for files in plain secure; do
  compose_with "files_$files" config >"$logs/config-$files.yml" 2>"$logs/config-$files.err" ||
    { cat "$logs/config-$files.err" >&2; fail "compose config ($files)"; }
  echo "compose files: $(compose_files "files_$files")"
  "${check_py[@]}" hostnet --config "$logs/config-$files.yml"
  "${check_py[@]}" parity --config "$logs/config-$files.yml" --service broker --other broker-2 \
    --ignore build --ignore deploy --ignore-env WSBROKER_BIND
  "${check_py[@]}" parity --config "$logs/config-$files.yml" --service haproxy --other haproxy-ci \
    --ignore ports --ignore profiles --ignore network_mode \
    --ignore-env HTTP_BIND --ignore-env STATS_BIND --ignore-env TLS_BIND --ignore-env BROKERS --ignore-env DNS_SERVER
done

# --- start --------------------------------------------------------------------
phase "start"
"${check_py[@]}" ports --free "$http_port" "$https_port" "$stats_port" "$broker_port" "$redis_port" "$dns_port"
ok "free ports: haproxy $front (https $https_port, stats $stats_port), brokers $brokers, redis $redis_port," \
  "dns $dns_port"
"${check_py[@]}" dns --listen "127.0.0.1:$dns_port" --name broker --addr 127.0.0.2 --addr 127.0.0.3 \
  >"$logs/dns.log" 2>&1 &
dns_pid=$!
stack_up=1
dc up -d --no-build >"$logs/compose.log" 2>&1 || { cat "$logs/compose.log" >&2; fail "compose up"; }
[ "$(docker network ls -q | sort)" = "$networks_before" ] || fail "compose created a network: $(docker network ls)"
ok "compose up: $(docker ps --filter "label=com.docker.compose.project=$project" \
  --format '{{.Label "com.docker.compose.service"}}' | sort | tr '\n' ' ')on the host network, no network created"

cid() { dc ps -q "$1" 2>/dev/null; }
state() { # service: status[/health]
  docker inspect -f '{{.State.Status}}{{if .State.Health}}/{{.State.Health.Status}}{{end}}' "$(cid "$1")" 2>/dev/null ||
    echo missing
}
wait_healthy() {
  local want="redis=running/healthy broker=running/healthy broker-2=running/healthy haproxy-ci=running " states
  for _ in $(seq 120); do
    states=""
    for svc in redis broker broker-2 haproxy-ci; do states+="$svc=$(state "$svc") "; done
    case "$states" in *exited* | *dead* | *unhealthy* | *missing*) fail "stack: $states" ;; esac
    [ "$states" = "$want" ] && break
    sleep 0.5
  done
  [ "$states" = "$want" ] || fail "stack not healthy within 60 s: $states"
  ok "containers up, Docker health checks passing: $states"
}
wait_healthy

# --- checks -------------------------------------------------------------------
phase "checks"
"${check_py[@]}" http --front "$front" --stats "127.0.0.1:$stats_port" --brokers "$brokers"
"${check_py[@]}" ws --front "$front" --brokers "$brokers" --cluster "$cluster" --redis "127.0.0.1:$redis_port"
redis_key="wsbroker-compose-test-$$"
"${check_py[@]}" redis --addr "127.0.0.1:$redis_port" --set "$redis_key" --value "$project"

# --- TLS and authentication ---------------------------------------------------
phase "tls and auth"
dcs up -d --no-build >>"$logs/compose.log" 2>&1 || { tail -n 30 "$logs/compose.log" >&2; fail "compose up (tls, auth)"; }
[ "$(docker network ls -q | sort)" = "$networks_before" ] || fail "compose created a network: $(docker network ls)"
ok "compose up with deploy/compose.tls.yml and deploy/compose.auth.yml: recreated" \
  "$(grep -c '^Recreating .* done' "$logs/compose.log") containers"
wait_healthy
docker exec "$(cid broker)" wsbroker token --secret-file /run/secrets/auth_secret --sub compose-test \
  --publish 'deploy.>' --subscribe 'deploy.>' --ttl 600 >"$secrets/token" ||
  fail "wsbroker token with the mounted secret inside the broker container"
ok "minted a token inside the broker container from /run/secrets/auth_secret"
"${check_py[@]}" secure --front "$front" --tls "127.0.0.1:$https_port" --ca "$secrets/cert.pem" \
  --brokers "$brokers" --token-file "$secrets/token"

# --- stop ---------------------------------------------------------------------
phase "stop"
rm -f "$logs/hold.ready"
"${check_py[@]}" hold --front "$front" --brokers "$brokers" --token-file "$secrets/token" \
  --ready "$logs/hold.ready" >"$logs/hold.log" 2>&1 &
hold_pid=$!
for _ in $(seq 300); do [ -f "$logs/hold.ready" ] || ! kill -0 "$hold_pid" 2>/dev/null || sleep 0.1; done
[ -f "$logs/hold.ready" ] || { cat "$logs/hold.log" >&2; fail "could not open a WebSocket to each replica"; }
declare -A ids
for svc in broker broker-2 haproxy-ci redis; do ids[$svc]=$(cid "$svc"); done
t0=$(date +%s%N)
dcs stop broker broker-2 >>"$logs/compose.log" 2>&1 || fail "compose stop broker broker-2"
ms=$((($(date +%s%N) - t0) / 1000000))
rc=0
wait "$hold_pid" || rc=$?
hold_pid=""
cat "$logs/hold.log"
[ "$rc" = 0 ] || fail "the held WebSockets did not get Close 1001"
for svc in broker broker-2; do
  docker logs "${ids[$svc]}" >"$logs/$svc.log" 2>&1
  grep -q "event=listening .*workers=$WSBROKER_WORKERS " "$logs/$svc.log" ||
    fail "$svc did not take WSBROKER_WORKERS=$WSBROKER_WORKERS from the environment of compose"
  read -r code oom restarts < <(docker inspect -f '{{.State.ExitCode}} {{.State.OOMKilled}} {{.RestartCount}}' "${ids[$svc]}")
  [ "$code" = 0 ] && [ "$oom" = false ] || fail "$svc exited with $code (OOM killed: $oom) on SIGTERM"
  [ "$restarts" = 0 ] || fail "$svc was restarted $restarts times while the test ran"
  grep -q 'event=shutdown signal=15' "$logs/$svc.log" || fail "$svc did not log its SIGTERM shutdown"
  grep -q 'event=stopped' "$logs/$svc.log" || fail "$svc did not log event=stopped"
done
ok "compose stop: both brokers exited 0 on SIGTERM in $((ms / 1000)).$((ms % 1000 / 100)) s" \
  "(grace period 15 s), never restarted; both ran with workers=$WSBROKER_WORKERS, passed on by compose"
dcs restart redis >>"$logs/compose.log" 2>&1 || fail "compose restart redis"
[ "$(docker inspect -f '{{.State.ExitCode}}' "${ids[redis]}")" = 0 ] || fail "redis did not exit 0 on restart"
"${check_py[@]}" redis --addr "127.0.0.1:$redis_port" --get "$redis_key" --value "$project"
ok "redis restarted (exit 0) and kept its data: appendonly on the volume"
dcs stop >>"$logs/compose.log" 2>&1 || fail "compose stop"
code=$(docker inspect -f '{{.State.ExitCode}}' "${ids[redis]}")
[ "$code" = 0 ] || fail "redis exited with $code"
ok "redis exited 0; haproxy exited $(docker inspect -f '{{.State.ExitCode}}' "${ids[haproxy-ci]}")"
dcs logs --no-color >"$logs/stack.log" 2>&1
dcs down -v --remove-orphans >>"$logs/compose.log" 2>&1 || fail "compose down -v"
stack_up=0
left=$(docker ps -aq --filter "label=com.docker.compose.project=$project")
vols=$(docker volume ls -q --filter "label=com.docker.compose.project=$project")
[ -z "$left$vols" ] || fail "compose down -v left containers '$left' volumes '$vols'"
ok "compose down -v: no container or volume of the project left"
