#!/usr/bin/env bash
# Benchmarks ioscale against its peers and a ceiling, on this machine, with ioscale-loadtest:
#   ioscale        3 x ioscale-node (release) on one Redis
#   node-socketio  3 x socket.io 4 + @socket.io/redis-adapter on one Redis
#   socketioxide   3 x socketioxide + socketioxide-redis (fred) on one Redis
#   raw-ws         1 x raw WebSocket fan-out server, no Redis (the ceiling)
# For each run and each implementation it starts a fresh Redis on a free port and the servers,
# runs the scenario (default: open-loop fan-out ramp), stops everything, and finally prints one
# table of medians over the runs (`ioscale-loadtest compare`).
#
# Usage: loadtest/bench.sh [options] [-- extra ioscale-loadtest flags]
#   --runs N               runs per implementation, medians reported (3)
#   --impls a,b,..         implementations (ioscale,node-socketio,socketioxide,raw-ws)
#   --nodes N              server processes per clustered implementation (3)
#   --scenario S           fanout | chat | rpc | idle (fanout). idle: the memory benchmark, one
#                          server process per implementation holding --clients idle WebSocket
#                          connections on /pubsub; reports resident memory per connection
#   --clients N            idle: connections held (20000)
#   --connect-rate-per-s R idle: connection attempts per second (2000)
#   --hold-s S             idle: how long every connection is held before RSS is read (5)
#   --subscribers N        receiving clients (300); chat: clients; rpc: clients
#   --room-size N          subscribers per room, fanout (300)
#   --publishers N         sending clients (3); chat: senders
#   --payload-bytes N      message data size (100)
#   --start-rate-per-s R   first ramp step, sends/s (50)
#   --fixed-rate-per-s R   no ramp: send at R sends/s for --duration-s (latency at a fixed load;
#                          with a high R and a short duration, a burst)
#   --duration-s S         fixed-rate sending time (30)
#   --ramp-step-s S        ramp step length (5)
#   --ramp-factor F        rate factor per step (1.25)
#   --ramp-p99-ms MS       a step fails above this p99 (50)
#   --max-duration-s S     longest ramp (120)
#   --warmup-s S           warm-up at the starting rate before the first judged step (3)
#   --drain-ms MS          wait for in-flight deliveries at the end (2000)
#   --out DIR              reports, logs and table (target/bench/<date>)
#   --server-threads N     tokio worker threads of each Rust server process (ioscale,
#                          socketioxide, raw-ws; default: one per core). Node is single-threaded
#   --generator-threads N  threads of the load generator (1: its single-threaded runtime, the
#                          least CPU per delivery; every report shows what it used)
#   --baseline-node-bin P  adds the implementation `ioscale-baseline`: 3 x the ioscale-node at
#                          path P (another build, e.g. an earlier commit's), run exactly like
#                          `ioscale`, for A/B comparisons of two builds (`--impls
#                          ioscale,ioscale-baseline`)
#   --baseline-node-args A extra flags of the `ioscale-baseline` nodes only (one string, split on
#                          spaces), e.g. to compare `--auth jwt` against no auth on one build
#   --no-build             use the binaries already in target/release
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

runs=3
impls="ioscale,node-socketio,socketioxide,raw-ws"
nodes=3
scenario=fanout
subscribers=300
room_size=300
publishers=3
payload_bytes=100
start_rate=50
ramp_step_s=5
ramp_factor=1.25
ramp_p99_ms=50
max_duration_s=120
drain_ms=2000
warmup_s=3
clients=20000
fixed_rate=""
generator_threads=1
server_threads=""
duration_s=30
connect_rate=2000
hold_s=5
out=""
build=1
baseline_node_bin=""
baseline_node_args=""
extra=()

need_value() {
  [ $# -ge 2 ] || { echo "bench.sh: $1 needs a value" >&2; exit 2; }
}
while [ $# -gt 0 ]; do
  case "$1" in
    --runs) need_value "$@"; runs="$2"; shift 2 ;;
    --impls) need_value "$@"; impls="$2"; shift 2 ;;
    --nodes) need_value "$@"; nodes="$2"; shift 2 ;;
    --scenario) need_value "$@"; scenario="$2"; shift 2 ;;
    --subscribers) need_value "$@"; subscribers="$2"; shift 2 ;;
    --room-size) need_value "$@"; room_size="$2"; shift 2 ;;
    --publishers) need_value "$@"; publishers="$2"; shift 2 ;;
    --payload-bytes) need_value "$@"; payload_bytes="$2"; shift 2 ;;
    --start-rate-per-s) need_value "$@"; start_rate="$2"; shift 2 ;;
    --ramp-step-s) need_value "$@"; ramp_step_s="$2"; shift 2 ;;
    --ramp-factor) need_value "$@"; ramp_factor="$2"; shift 2 ;;
    --generator-threads) need_value "$@"; generator_threads="$2"; shift 2 ;;
    --ramp-p99-ms) need_value "$@"; ramp_p99_ms="$2"; shift 2 ;;
    --max-duration-s) need_value "$@"; max_duration_s="$2"; shift 2 ;;
    --drain-ms) need_value "$@"; drain_ms="$2"; shift 2 ;;
    --warmup-s) need_value "$@"; warmup_s="$2"; shift 2 ;;
    --clients) need_value "$@"; clients="$2"; shift 2 ;;
    --fixed-rate-per-s) need_value "$@"; fixed_rate="$2"; shift 2 ;;
    --duration-s) need_value "$@"; duration_s="$2"; shift 2 ;;
    --connect-rate-per-s) need_value "$@"; connect_rate="$2"; shift 2 ;;
    --hold-s) need_value "$@"; hold_s="$2"; shift 2 ;;
    --out) need_value "$@"; out="$2"; shift 2 ;;
    --server-threads) need_value "$@"; server_threads="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    --baseline-node-bin) need_value "$@"; baseline_node_bin="$2"; shift 2 ;;
    --baseline-node-args) need_value "$@"; baseline_node_args="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$scenario" in fanout|chat|rpc|idle) ;; *) echo "bench.sh: --scenario must be fanout, chat, rpc or idle" >&2; exit 2 ;; esac
# The memory benchmark measures what one server process pays per connection.
[ "$scenario" = idle ] && nodes=1
if [[ ",$impls," == *",ioscale-baseline,"* ]] && [ ! -x "$baseline_node_bin" ]; then
  echo "bench.sh: ioscale-baseline needs --baseline-node-bin PATH to an ioscale-node executable" >&2
  exit 2
fi

[ -n "$out" ] || out="target/bench/$(date -u +%Y%m%dT%H%M%SZ)"
mkdir -p "$out/logs"
out="$(cd "$out" && pwd)"

for tool in redis-server redis-cli cargo; do
  command -v "$tool" >/dev/null || { echo "bench.sh: $tool not found on PATH" >&2; exit 1; }
done
if [[ ",$impls," == *",node-socketio,"* ]]; then
  command -v node >/dev/null || { echo "bench.sh: node not found (needed by node-socketio)" >&2; exit 1; }
fi

BIN="$ROOT/target/release"
if [ "$build" = 1 ]; then
  echo "== building (release)"
  cargo build --release -p ioscale-node -p ioscale-loadtest \
    -p ioscale-baseline-socketioxide -p ioscale-baseline-raw-ws
fi
NODE_BASELINE="$ROOT/loadtest/baselines/node-socketio"
if [[ ",$impls," == *",node-socketio,"* ]] && [ ! -d "$NODE_BASELINE/node_modules" ]; then
  echo "== installing the node-socketio baseline (npm ci)"
  npm ci --prefix "$NODE_BASELINE" --no-audit --no-fund
fi
LOADTEST="$BIN/ioscale-loadtest"
[ -x "$LOADTEST" ] || { echo "bench.sh: $LOADTEST missing (run without --no-build)" >&2; exit 1; }

# Every client is a file descriptor, in the generator and in the servers: raise the limit (root
# may raise the hard limit too; others get what the hard limit allows).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if [ "$scenario" = idle ] && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((clients + 200)) ]; then
  echo "bench.sh: open-files limit $(ulimit -n) is below --clients $clients (+200); raise it (ulimit -Hn) or hold fewer" >&2
  exit 1
fi

# Processes this script started; only these are ever signalled.
started=()
stop_all() {
  local pid
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for _ in $(seq 1 50); do
    local alive=0
    for pid in "${started[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    [ "$alive" = 0 ] && break
    sleep 0.1
  done
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${started[@]}"; do wait "$pid" 2>/dev/null || true; done
  started=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_listening() { # log name
  # Every server prints `listening bound_addr=` once it serves; an open port alone is not
  # enough (ioscale-node binds before its namespaces have joined the cluster).
  local i
  for i in $(seq 1 300); do
    grep -q 'bound_addr=' "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench.sh: $2 did not start within 15 s (log: $1)" >&2
  tail -5 "$1" >&2 || true
  return 1
}

start_redis() { # port log
  redis-server --port "$1" --bind 127.0.0.1 --save '' --appendonly no \
    --protected-mode no >"$2" 2>&1 &
  started+=($!)
  redis_pid=$!
  local i
  for i in $(seq 1 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  echo "bench.sh: redis-server did not answer on port $1" >&2
  return 1
}

run_one() { # impl run
  local impl="$1" run="$2" tag="$1.run$2"
  local n="$nodes"
  [ "$impl" = raw-ws ] && n=1
  # shellcheck disable=SC2207
  local ports=($("$LOADTEST" free-ports $((n + 1))))
  local rport="${ports[$n]}"
  local watch="" urls="" proto=socketio i port
  # tokio reads TOKIO_WORKER_THREADS when a runtime does not set its own count; only the
  # servers get it, never the load generator.
  local threads_env=()
  [ -n "$server_threads" ] && threads_env=(TOKIO_WORKER_THREADS="$server_threads")
  if [ "$impl" != raw-ws ]; then
    start_redis "$rport" "$out/logs/$tag.redis.log"
    watch="redis=$redis_pid"
  fi
  for ((i = 0; i < n; i++)); do
    port="${ports[$i]}"
    local log="$out/logs/$tag.node$((i + 1)).log"
    case "$impl" in
      ioscale | ioscale-baseline)
        local node_bin="$BIN/ioscale-node" node_extra=()
        if [ "$impl" = ioscale-baseline ]; then
          node_bin="$baseline_node_bin"
          read -r -a node_extra <<<"$baseline_node_args"
        fi
        # The generator's clients all come from 127.0.0.1: lift the per-address handshake
        # budget (as the variables, which builds without the flag ignore).
        env "${threads_env[@]}" RUST_LOG=info IOSCALE_HANDSHAKES_PER_ADDRESS_PER_S=1000000 \
          IOSCALE_HANDSHAKE_BURST_PER_ADDRESS=1000000 "$node_bin" "${node_extra[@]}" --listen "127.0.0.1:$port" --node-id "bench-$((i + 1))" \
          --redis-url "redis://127.0.0.1:$rport" --shutdown-timeout-ms 1000 >"$log" 2>&1 &
        ;;
      node-socketio)
        REDIS_URL="redis://127.0.0.1:$rport" node "$NODE_BASELINE/server.mjs" "$port" >"$log" 2>&1 &
        ;;
      socketioxide)
        env "${threads_env[@]}" RUST_LOG=warn "$BIN/ioscale-baseline-socketioxide" --listen "127.0.0.1:$port" \
          --redis-url "redis://127.0.0.1:$rport" >"$log" 2>&1 &
        ;;
      raw-ws)
        env "${threads_env[@]}" "$BIN/ioscale-baseline-raw-ws" --listen "127.0.0.1:$port" >"$log" 2>&1 &
        proto=raw
        ;;
      *) echo "bench.sh: unknown implementation $impl" >&2; return 1 ;;
    esac
    started+=($!)
    watch="node$((i + 1))=$!${watch:+,$watch}"
    urls="${urls:+$urls,}http://127.0.0.1:$port"
  done
  for ((i = 0; i < n; i++)); do wait_listening "$out/logs/$tag.node$((i + 1)).log" "$impl node $((i + 1))"; done
  # Let the nodes find each other (ioscale heartbeats every second).
  sleep 2

  local args=()
  case "$scenario" in
    fanout) args=(fanout --subscribers "$subscribers" --room-size "$room_size" --publishers "$publishers") ;;
    chat) args=(chat --clients "$subscribers" --senders "$publishers") ;;
    rpc) args=(rpc --clients "$subscribers") ;;
    idle) args=(connect --clients "$clients" --connect-rate-per-s "$connect_rate" --hold-s "$hold_s" --namespace /pubsub) ;;
  esac
  # The sending scenarios ramp the rate; the connection storm has no send schedule.
  local sched=()
  if [ "$scenario" != idle ] && [ -n "$fixed_rate" ]; then
    sched=(--payload-bytes "$payload_bytes" --rate-per-s "$fixed_rate" --warmup-s "$warmup_s"
      --duration-s "$duration_s" --drain-ms "$drain_ms")
  elif [ "$scenario" != idle ]; then
    sched=(--payload-bytes "$payload_bytes" --ramp --rate-per-s "$start_rate"
      --warmup-s "$warmup_s" --ramp-step-s "$ramp_step_s" --ramp-factor "$ramp_factor" --ramp-p99-ms "$ramp_p99_ms"
      --duration-s "$max_duration_s" --drain-ms "$drain_ms")
  fi
  echo "== $impl, run $run: $scenario over $urls"
  # A failed run (e.g. servers that refuse the clients) is reported and the others go on.
  if ! "$LOADTEST" "${args[@]}" --threads "$generator_threads" --urls "$urls" --protocol "$proto" --label "$impl" \
    "${sched[@]}" --no-progress \
    --watch-pids "$watch" --report-json "$out/$tag.json" "${extra[@]}" \
    2>&1 | tee "$out/logs/$tag.loadtest.log"; then
    echo "bench.sh: the load generator failed for $impl run $run (log: $out/logs/$tag.loadtest.log)" >&2
  fi
  stop_all
}

{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "scenario: $scenario, subscribers $subscribers, room size $room_size, publishers $publishers, payload $payload_bytes B"
  if [ -n "$fixed_rate" ]; then
    echo "fixed rate: $warmup_s s warm-up, then $fixed_rate sends/s for $duration_s s"
  elif [ "$scenario" = idle ]; then
    echo "idle: $clients WebSocket connections to one server process at $connect_rate/s, held $hold_s s"
  else
    echo "ramp: $warmup_s s warm-up, then from $start_rate sends/s, x$ramp_factor every $ramp_step_s s, until p99 > $ramp_p99_ms ms or a loss (max $max_duration_s s)"
  fi
  echo "runs: $runs in A-B-B-A order; implementations: $impls; nodes: $nodes; server worker threads: ${server_threads:-one per core}; generator threads: $generator_threads"
} | tee "$out/meta.txt"

IFS=',' read -r -a impl_list <<<"$impls"
reversed=()
for ((i = ${#impl_list[@]} - 1; i >= 0; i--)); do reversed+=("${impl_list[$i]}"); done
for ((run = 1; run <= runs; run++)); do
  # A-B-B-A: even runs go in the reverse order, so no implementation always runs first (on a
  # cold machine) or last (after the others warmed it).
  order=("${impl_list[@]}")
  [ $((run % 2)) = 0 ] && order=("${reversed[@]}")
  for impl in "${order[@]}"; do
    if [ "$impl" = raw-ws ] && [ "$scenario" = chat ]; then
      echo "== raw-ws has no chat; skipped"
      continue
    fi
    run_one "$impl" "$run"
  done
done

echo
echo "== medians over $runs run(s) ($out)"
"$LOADTEST" compare --dir "$out" --subject ioscale --ceiling raw-ws --markdown "$out/table.md"
