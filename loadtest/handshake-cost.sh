#!/usr/bin/env bash
# What one handshake costs a node: one ioscale-node (release) pinned to CPU 0, the generator
# pinned to CPU 1 (so it does not share the node's core), --clients WebSocket clients opening
# /pubsub at --connect-rate-per-s; the node's CPU seconds over the run divided by the
# handshakes. Runs each variant --runs times in A-B-B-A order: as shipped (--auth none) and
# with --auth jwt (every client sends a token). Prints one line per run and the medians.
#
# Usage: loadtest/handshake-cost.sh [--runs N] [--clients N] [--connect-rate-per-s R] [--no-build]
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
runs=3 clients=10000 rate=2000 build=1
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) runs="$2"; shift 2 ;;
    --clients) clients="$2"; shift 2 ;;
    --connect-rate-per-s) rate="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    *) echo "handshake-cost.sh: unknown option $1" >&2; exit 2 ;;
  esac
done
[ "$(nproc)" -ge 2 ] || { echo "handshake-cost.sh: needs 2 cores (node and generator apart)" >&2; exit 1; }
[ "$build" = 1 ] && cargo build --release --locked -p ioscale-node -p ioscale-loadtest --manifest-path "$ROOT/Cargo.toml"
BIN="$ROOT/target/release"
out="$(mktemp -d /tmp/handshake-cost.XXXXXX)"
secret="handshake-cost-only-secret-$(date +%s)-0123456789"
ulimit -n "$(ulimit -Hn)"
pids=()
cleanup() { for p in "${pids[@]}"; do kill -KILL "$p" 2>/dev/null || true; done; }
trap cleanup EXIT

one() { # variant run
  local variant="$1" run="$2" ports redis_port node_port extra=() auth=()
  mapfile -t ports < <("$BIN/ioscale-loadtest" free-ports 2)
  redis_port="${ports[0]}" node_port="${ports[1]}"
  redis-server --port "$redis_port" --save '' --appendonly no >"$out/$variant.$run.redis.log" 2>&1 &
  pids+=($!)
  until [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ]; do sleep 0.05; done
  if [ "$variant" = jwt ]; then
    extra=(--auth jwt --jwt-secret "$secret")
    auth=(--auth-token "$("$BIN/ioscale-node" token --sub bench --rooms '*' --ttl-s 3600 --jwt-secret "$secret")")
  fi
  # The generator's clients all come from 127.0.0.1: the per-address budget lifted.
  IOSCALE_HANDSHAKES_PER_ADDRESS_PER_S=1000000 IOSCALE_HANDSHAKE_BURST_PER_ADDRESS=1000000 \
    taskset -c 0 "$BIN/ioscale-node" --listen "127.0.0.1:$node_port" --redis-url "redis://127.0.0.1:$redis_port" \
    "${extra[@]}" >"$out/$variant.$run.node.log" 2>&1 &
  local node=$!
  pids+=($node)
  until grep -qs bound_addr= "$out/$variant.$run.node.log"; do sleep 0.05; done
  sleep 1
  taskset -c 1 "$BIN/ioscale-loadtest" connect --urls "http://127.0.0.1:$node_port" --clients "$clients" \
    --connect-rate-per-s "$rate" --hold-s 1 --namespace /pubsub --no-progress --watch-pids "node=$node" \
    "${auth[@]}" --report-json "$out/$variant.$run.json" >"$out/$variant.$run.loadtest.log" 2>&1
  python3 - "$out/$variant.$run.json" "$variant" "$run" <<'PY'
import json, sys
r = json.load(open(sys.argv[1]))
node = r["processes"][0]
n = r["clients"]["connected"]
print(f"{sys.argv[2]:5} run {sys.argv[3]}: {n} handshakes, node {node['cpu_seconds']:.2f} CPU-s = "
      f"{node['cpu_seconds'] / max(n, 1) * 1e6:.0f} us per handshake; handshake p50 {r['clients']['handshake_ms']['p50_ms']:.1f} ms p99 {r['clients']['handshake_ms']['p99_ms']:.1f} ms")
PY
  kill -TERM "$node" 2>/dev/null; wait "$node" 2>/dev/null || true
  redis-cli -p "$redis_port" shutdown nosave >/dev/null 2>&1 || true
}

for ((run = 1; run <= runs; run++)); do
  if [ $((run % 2)) = 1 ]; then order=(none jwt); else order=(jwt none); fi
  for v in "${order[@]}"; do one "$v" "$run"; done
done | tee "$out/summary.txt"
echo "medians:"
for v in none jwt; do
  grep "^$v " "$out/summary.txt" | sed 's/.*= \([0-9]*\) us.*/\1/' | sort -n | awk -v v="$v" '{a[NR]=$1} END {print "  " v ": " a[int((NR+1)/2)] " us per handshake"}'
done
echo "reports: $out"
