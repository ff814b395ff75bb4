#!/usr/bin/env bash
# The published benchmark: every table of the README's "Performance" section, in one run of
# about 40 minutes on a 2-core machine. Each part is a loadtest/bench.sh invocation (3 runs per
# implementation, medians); the tables are gathered in <out>/summary.md.
#
#   fanout-ramp           300 subscribers in one room over 3 nodes, 3 publishers, 100-byte
#                         payloads, open loop x1.25 every 5 s until p99 > 50 ms or a loss;
#                         socketioxide as shipped and tuned (TCP_NODELAY and fred's settings)
#   fanout-ramp-generator-2-threads  the same, the load generator on two threads
#   fanout-ramp-1-thread  the same, each Rust server process on one tokio worker thread
#   fixed-30k             the same clients at a fixed 100 sends/s = 30,000 deliveries/s, 20 s
#   burst-at-once         20,000 publishes written at once by one client, its one subscriber
#                         on another node
#   burst-20k             20,000 publishes in one second from one client, 3 subscribers on
#                         3 nodes (60,000 deliveries)
#   idle-20k              20,000 idle WebSocket connections held by one server process: RSS
#                         per connection (ioscale also with --auth jwt)
#
# Usage: loadtest/bench-all.sh [--out DIR] [--runs N] [--no-build] [--only part,part]
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"
out="target/bench/all-$(date -u +%Y%m%dT%H%M%SZ)"
runs=3
build=1
only=""
while [ $# -gt 0 ]; do
  case "$1" in
    --out) out="$2"; shift 2 ;;
    --runs) runs="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --only) only="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "bench-all.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
mkdir -p "$out"
out="$(cd "$out" && pwd)"

bench=("$ROOT/loadtest/bench.sh" --runs "$runs")
if [ "$build" = 1 ]; then
  cargo build --release -p ioscale-node -p ioscale-loadtest \
    -p ioscale-baseline-socketioxide -p ioscale-baseline-raw-ws
fi
bench+=(--no-build)

part() { # name description bench.sh-args...
  local name="$1" what="$2"
  shift 2
  if [ -n "$only" ] && [[ ",$only," != *",$name,"* ]]; then
    return 0
  fi
  echo "==== $name: $what"
  "${bench[@]}" --out "$out/$name" "$@" 2>&1 | tee "$out/$name.log"
  {
    echo "### $name"
    echo
    echo "$what"
    echo
    echo '```'
    cat "$out/$name/meta.txt"
    echo '```'
    echo
    cat "$out/$name/table.md"
    echo
  } >>"$out/summary.md"
}

: >"$out/summary.md"
ramp_impls=ioscale,node-socketio,socketioxide,socketioxide-tuned,raw-ws
part fanout-ramp "Highest fan-out rate held (p99 <= 50 ms, no loss), default threads." \
  --impls "$ramp_impls"
part fanout-ramp-generator-2-threads "The same ramp, the load generator on two threads." \
  --impls ioscale,socketioxide,socketioxide-tuned --generator-threads 2
part fixed-30k "Latency at a fixed 30,000 deliveries/s." \
  --impls "$ramp_impls" --fixed-rate-per-s 100 --duration-s 20 --warmup-s 2
part burst-at-once "20,000 publishes written at once by one client, its subscriber on another node." \
  --impls ioscale,node-socketio,socketioxide,socketioxide-tuned \
  --fixed-rate-per-s 2000000000 --duration-s 0.00001 --warmup-s 0 --subscribers 1 \
  --room-size 1 --publishers 1 --drain-ms 10000
part burst-20k "A burst of 20,000 publishes in one second, 3 subscribers on 3 nodes." \
  --fixed-rate-per-s 20000 --duration-s 1 --warmup-s 0 --subscribers 3 --room-size 3 \
  --publishers 1 --drain-ms 10000
# One process holds every connection (and the generator every client socket): under a hard
# open-files limit below 20,400, hold as many as fit, leaving 400 descriptors for the rest.
idle_clients=20000
hard="$(ulimit -Hn)"
if [ "$hard" != unlimited ] && [ "$hard" -lt $((idle_clients + 400)) ]; then
  idle_clients=$((hard - 400))
fi
part idle-20k "Memory per idle WebSocket connection, $idle_clients held by one server process." \
  --scenario idle --clients "$idle_clients" --impls ioscale,ioscale-jwt,node-socketio,socketioxide,raw-ws
# Last: the longest part, and the one the others' figures do not depend on.
part fanout-ramp-1-thread "Highest fan-out rate held, each Rust server on 1 worker thread." \
  --server-threads 1
echo "==== summary: $out/summary.md"
cat "$out/summary.md"
