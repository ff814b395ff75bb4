#!/usr/bin/env bash
# Benchmarks ioscale against its peers and a ceiling, on this machine, with ioscale-loadtest:
#   ioscale        3 x ioscale-node (release) on one Redis
#   node-socketio  3 x socket.io 4 + @socket.io/redis-adapter (classic: PUBLISH / PSUBSCRIBE)
#   node-sharded   3 x socket.io 4 + @socket.io/redis-adapter's sharded adapter, dynamic mode
#                  (SPUBLISH / SSUBSCRIBE, one shard channel per room while it exists on a server)
#   node-streams   3 x socket.io 4 + @socket.io/redis-streams-adapter with connectionStateRecovery
#                  (a Redis stream; sessions kept 120 s; for the fault scenarios)
#   socketioxide   3 x socketioxide + socketioxide-redis (fred: SPUBLISH / SSUBSCRIBE), as its
#                  examples set it up
#   socketioxide-tuned  the same with the documented one-line settings: TCP_NODELAY on client
#                  connections (axum's ListenerExt::tap_io), fred's reconnect policy (without
#                  one a Redis restart leaves the adapter disconnected for good) and a pub/sub
#                  broadcast channel of 16,384 messages instead of 32 (a lagging receiver
#                  drops what it missed)
#   ioscale-jwt    ioscale with --auth jwt: every client sends a token (one user, every room
#                  granted) in its namespace CONNECT
#   raw-ws         1 x raw WebSocket fan-out server, no Redis (the ceiling)
# (3 server processes per clustered implementation, 6 for the rooms scenario: --nodes.)
# For each run and each implementation it starts a fresh Redis on a free port (or a fresh
# 3-master Redis Cluster with --redis cluster) and the servers, runs the scenario (default:
# open-loop fan-out ramp), stops everything, and finally prints one table of medians over the
# runs (`ioscale-loadtest compare`).
#
# Usage: loadtest/bench.sh [options] [-- extra ioscale-loadtest flags]
#   --runs N               runs per implementation, medians reported (3)
#   --impls a,b,..         implementations (ioscale,node-socketio,socketioxide,raw-ws; also
#                          node-sharded, node-streams, socketioxide-tuned, ioscale-jwt,
#                          ioscale-baseline)
#   --nodes N              server processes per clustered implementation (3; rooms: 6)
#   --redis MODE           standalone | cluster (standalone). cluster: 3 masters, no replicas
#                          (`redis-cli --cluster create`), every server given all of them:
#                          ioscale and socketioxide a `redis-cluster://` URL, the Node
#                          baselines node-redis' createCluster (node-socketio's classic
#                          PUBLISH then reaches every master over the cluster bus); raw-ws
#                          has no Redis
#   --scenario S           fanout | rooms | chat | rpc | idle | storm (fanout).
#                          rooms: --rooms rooms of --room-size members each spread over the
#                          nodes, --publishers publishing to random rooms (many small rooms: the
#                          cost of a delivery when each publish reaches few members and few
#                          nodes); a fixed rate by default (--rooms-rate-per-s), --ramp to ramp.
#                          The generator reads each ioscale node's /metrics and Redis' own
#                          counters. raw-ws has no rooms (nor chat) and is skipped.
#                          idle: the memory benchmark, one server process per implementation
#                          holding --clients idle WebSocket connections on /pubsub; reports
#                          resident memory per connection
#                          storm: a reconnect storm behind nginx (deploy/lb/nginx.conf.template,
#                          started by this script): --clients WebSocket clients from 250 loopback
#                          addresses, half of them straight to the last server and half through
#                          nginx (so that server holds well over half), at --connect-rate-per-s;
#                          3 s after the last connect the last server is stopped (--storm-fault)
#                          and every client it held reconnects through nginx with
#                          socket.io-client's backoff (ioscale's clients resuming their
#                          sessions: --recovery ioscale). ioscale runs with --trust-proxy, its
#                          per-address handshake budget as shipped, and
#                          --shutdown-drain-delay-ms --storm-drain-ms. Reports the time until
#                          50/99/100 % were back, each client's outage, failed attempts by cause
#                          and the surviving servers' CPU
#   --storm-fault F        storm: term (SIGTERM: a rolling update) or kill (SIGKILL) (term)
#   --storm-drain-ms MS    storm: ioscale's --shutdown-drain-delay-ms (8000)
#   --clients N            idle: connections held (20000)
#   --connect-rate-per-s R idle: connection attempts per second (2000)
#   --hold-s S             idle: how long every connection is held before RSS is read (5)
#   --subscribers N        receiving clients (300); chat: clients; rpc: clients
#   --rooms N              rooms: how many rooms (2000)
#   --room-size N          subscribers per room (fanout: 300; rooms: 3)
#   --publishers N         sending clients (3; rooms: 6); chat: senders
#   --payload-bytes N      message data size (100)
#   --start-rate-per-s R   first ramp step, sends/s (50)
#   --fixed-rate-per-s R   no ramp: send at R sends/s for --duration-s (latency at a fixed load;
#                          with a high R and a short duration, a burst)
#   --rooms-rate-per-s R   rooms: the fixed rate used when neither --fixed-rate-per-s nor
#                          --ramp is given (1000 sends/s)
#   --ramp                 rooms: ramp (as fanout does) instead of the fixed rate
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
# Faults (fanout; any of them also runs Redis with AOF, appendfsync everysec, and makes every
# client reconnect with socket.io-client's backoff, asking for the session recovery its
# implementation has: ioscale's for ioscale, socket.io's for node-streams, none otherwise):
#   --kill-node-at S       SIGKILL the last server process S seconds after the first send
#   --restart-redis-at S   SIGKILL Redis at S and start it again on the same port and files
#   --drop-clients-at S    --drop-share of the subscribers reset their TCP connections at S
#   --drop-share F         (0.1)
set -euo pipefail

ROOT="$(cd "$(dirname "$0")/.." && pwd)"
cd "$ROOT"

runs=3
impls="ioscale,node-socketio,socketioxide,raw-ws"
nodes=""
scenario=fanout
subscribers=300
rooms=2000
room_size=""
publishers=""
redis_mode=standalone
redis_masters=3
rooms_rate=1000
ramp=0
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
kill_node_at=""
restart_redis_at=""
drop_clients_at=""
drop_share=0.1
extra=()
storm_fault=term
storm_drain_ms=8000

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
    --rooms) need_value "$@"; rooms="$2"; shift 2 ;;
    --room-size) need_value "$@"; room_size="$2"; shift 2 ;;
    --redis) need_value "$@"; redis_mode="$2"; shift 2 ;;
    --rooms-rate-per-s) need_value "$@"; rooms_rate="$2"; shift 2 ;;
    --ramp) ramp=1; shift ;;
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
    --kill-node-at) need_value "$@"; kill_node_at="$2"; shift 2 ;;
    --restart-redis-at) need_value "$@"; restart_redis_at="$2"; shift 2 ;;
    --drop-clients-at) need_value "$@"; drop_clients_at="$2"; shift 2 ;;
    --drop-share) need_value "$@"; drop_share="$2"; shift 2 ;;
    --storm-fault) need_value "$@"; storm_fault="$2"; shift 2 ;;
    --storm-drain-ms) need_value "$@"; storm_drain_ms="$2"; shift 2 ;;
    -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    --) shift; extra=("$@"); break ;;
    *) echo "bench.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
case "$scenario" in fanout|rooms|chat|rpc|idle|storm) ;; *) echo "bench.sh: --scenario must be fanout, rooms, chat, rpc, idle or storm" >&2; exit 2 ;; esac
case "$storm_fault" in term|kill) ;; *) echo "bench.sh: --storm-fault must be term or kill" >&2; exit 2 ;; esac
case "$redis_mode" in standalone|cluster) ;; *) echo "bench.sh: --redis must be standalone or cluster" >&2; exit 2 ;; esac
if [ "$ramp" = 1 ] && [ -n "$fixed_rate" ]; then
  echo "bench.sh: --ramp and --fixed-rate-per-s exclude each other" >&2
  exit 2
fi
# Many small rooms over more nodes: each publish reaches a few members on a few of the nodes.
if [ "$scenario" = rooms ]; then
  : "${nodes:=6}" "${room_size:=3}" "${publishers:=6}"
  [ "$ramp" = 1 ] || [ -n "$fixed_rate" ] || fixed_rate="$rooms_rate"
fi
: "${nodes:=3}" "${room_size:=300}" "${publishers:=3}"
# The memory benchmark measures what one server process pays per connection.
[ "$scenario" = idle ] && nodes=1
faults=0
[ -n "$kill_node_at$restart_redis_at$drop_clients_at" ] && faults=1
if [ "$faults" = 1 ] && [ "$scenario" != fanout ]; then
  echo "bench.sh: faults are injected in the fanout scenario only" >&2
  exit 2
fi
if [ "$faults" = 1 ] && [ "$redis_mode" != standalone ]; then
  echo "bench.sh: faults need --redis standalone" >&2
  exit 2
fi
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
uses_node=0
[[ ",$impls," == *",node-"* ]] && uses_node=1
if [ "$uses_node" = 1 ]; then
  command -v node >/dev/null || { echo "bench.sh: node not found (needed by the node-* baselines)" >&2; exit 1; }
fi

BIN="$ROOT/target/release"
if [ "$build" = 1 ]; then
  echo "== building (release)"
  cargo build --release -p ioscale-node -p ioscale-loadtest \
    -p ioscale-baseline-socketioxide -p ioscale-baseline-raw-ws
fi
NODE_BASELINE="$ROOT/loadtest/baselines/node-socketio"
# npm ci when node_modules is missing or older than the lock file (npm writes
# node_modules/.package-lock.json on every install).
if [ "$uses_node" = 1 ] && { [ ! -f "$NODE_BASELINE/node_modules/.package-lock.json" ] ||
  [ "$NODE_BASELINE/package-lock.json" -nt "$NODE_BASELINE/node_modules/.package-lock.json" ]; }; then
  echo "== installing the node-socketio baseline (npm ci)"
  npm ci --prefix "$NODE_BASELINE" --no-audit --no-fund
fi
# IOSCALE_BENCH_GENERATOR: another command in its place (a wrapper that profiles it, say).
LOADTEST="${IOSCALE_BENCH_GENERATOR:-$BIN/ioscale-loadtest}"
# The secret of `ioscale-jwt`'s nodes (a benchmark's own, never a deployment's).
BENCH_JWT_SECRET="bench-only-secret-$(date +%s)-0123456789abcdef"
[ -x "$LOADTEST" ] || { echo "bench.sh: $LOADTEST missing (run without --no-build)" >&2; exit 1; }

# Every client is a file descriptor, in the generator and in the servers: raise the limit (root
# may raise the hard limit too; others get what the hard limit allows).
ulimit -n 200000 2>/dev/null || ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if { [ "$scenario" = idle ] || [ "$scenario" = storm ]; } && [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((clients + 200)) ]; then
  echo "bench.sh: open-files limit $(ulimit -n) is below --clients $clients (+200); raise it (ulimit -Hn) or hold fewer" >&2
  exit 1
fi

# Processes this script started; only these are ever signalled. Directories it made for a run's
# Redis Cluster configuration files, removed with them.
started=()
tmp_dirs=()
pid_files=()
stop_all() {
  local pid file
  # Processes a fault hook started again (Redis) are known by their pid files only.
  for file in "${pid_files[@]}"; do
    pid="$(cat "$file" 2>/dev/null || true)"
    [ -n "$pid" ] && kill -KILL "$pid" 2>/dev/null || true
  done
  pid_files=()
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
  local dir
  for dir in "${tmp_dirs[@]}"; do rm -rf "$dir"; done
  tmp_dirs=()
}
trap stop_all EXIT
trap 'exit 130' INT TERM

wait_listening() { # log name
  # Every server prints `listening bound_addr=` once it serves; an open port alone is not
  # enough (ioscale-node binds before its namespaces have joined the cluster). Six processes
  # starting at once on two cores (and a Redis Cluster's slot map to read) take a while.
  local i
  for i in $(seq 1 600); do
    grep -q 'bound_addr=' "$1" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "bench.sh: $2 did not start within 30 s (log: $1)" >&2
  tail -5 "$1" >&2 || true
  return 1
}

wait_pong() { # port
  local i
  for i in $(seq 1 100); do
    [ "$(redis-cli -p "$1" ping 2>/dev/null)" = PONG ] && return 0
    sleep 0.05
  done
  echo "bench.sh: redis-server did not answer on port $1" >&2
  return 1
}

# Sets redis_pids, redis_ports, redis_watch (the generator's `--watch-pids` entries), and the
# URLs each kind of client needs: redis_url (ioscale-node and fred), redis_node_env (the Node
# baselines' environment) and redis_urls (every server, for the generator's Redis counters).
start_redis() { # port log
  local persistence=(--appendonly no)
  if [ "$faults" = 1 ]; then
    # Durable like compose and the chart, so a restart loses nothing it acknowledged.
    local dir
    dir="$(mktemp -d "${TMPDIR:-/tmp}/ioscale-bench-redis.XXXXXX")"
    tmp_dirs+=("$dir")
    persistence=(--appendonly yes --appendfsync everysec --dir "$dir")
    redis_cmd=(redis-server --port "$1" --bind 127.0.0.1 --save '' "${persistence[@]}" --protected-mode no)
  fi
  redis-server --port "$1" --bind 127.0.0.1 --save '' "${persistence[@]}" \
    --protected-mode no >"$2" 2>&1 &
  started+=($!)
  redis_pids=($!)
  redis_ports=("$1")
  redis_watch="redis=$!"
  wait_pong "$1"
  redis_url="redis://127.0.0.1:$1"
  redis_node_env=(REDIS_URL="$redis_url")
  redis_urls="$redis_url"
}

start_redis_cluster() { # tag port bus-port [port bus-port ...]
  # Masters only (no replicas), as many as port pairs. Each gets its cluster bus port
  # explicitly: the default (port + 10000) may be taken or out of range.
  local tag="$1" dir i=0 port
  shift
  dir="$(mktemp -d "${TMPDIR:-/tmp}/ioscale-bench-redis.XXXXXX")"
  tmp_dirs+=("$dir")
  redis_pids=() redis_ports=() redis_watch=""
  while [ $# -ge 2 ]; do
    i=$((i + 1))
    redis-server --port "$1" --cluster-port "$2" --bind 127.0.0.1 --save '' --appendonly no \
      --protected-mode no --dir "$dir" --cluster-enabled yes \
      --cluster-config-file "$dir/nodes-$1.conf" --cluster-node-timeout 2000 \
      >"$out/logs/$tag.redis$i.log" 2>&1 &
    started+=($!)
    redis_pids+=($!)
    redis_ports+=("$1")
    redis_watch="${redis_watch:+$redis_watch,}redis$i=$!"
    shift 2
  done
  for port in "${redis_ports[@]}"; do wait_pong "$port"; done
  local addrs=()
  for port in "${redis_ports[@]}"; do addrs+=("127.0.0.1:$port"); done
  if ! timeout 60 redis-cli --cluster create "${addrs[@]}" --cluster-replicas 0 --cluster-yes \
    </dev/null >"$out/logs/$tag.redis-cluster-create.log" 2>&1; then
    echo "bench.sh: redis-cli --cluster create failed (log: $out/logs/$tag.redis-cluster-create.log)" >&2
    tail -5 "$out/logs/$tag.redis-cluster-create.log" >&2
    return 1
  fi
  local ok=0
  for _ in $(seq 1 300); do
    ok=1
    for port in "${redis_ports[@]}"; do
      redis-cli -p "$port" cluster info 2>/dev/null | tr -d '\r' | grep -qx 'cluster_state:ok' || { ok=0; break; }
    done
    [ "$ok" = 1 ] && break
    sleep 0.1
  done
  if [ "$ok" != 1 ]; then
    echo "bench.sh: the Redis Cluster on ports ${redis_ports[*]} did not reach cluster_state:ok within 30 s" >&2
    return 1
  fi
  # fred's (and ioscale-node's) form: redis-cluster://h:p1?node=h:p2&node=h:p3
  redis_url="redis-cluster://${addrs[0]}"
  redis_urls="redis://${addrs[0]}"
  local cluster_nodes="redis://${addrs[0]}" sep='?'
  for port in "${addrs[@]:1}"; do
    redis_url+="${sep}node=$port"
    sep='&'
    redis_urls+=",redis://$port"
    cluster_nodes+=",redis://$port"
  done
  redis_node_env=(REDIS_CLUSTER_NODES="$cluster_nodes")
}

run_one() { # impl run
  local impl="$1" run="$2" tag="$1.run$2"
  local n="$nodes"
  [ "$impl" = raw-ws ] && n=1
  # Servers, then Redis: one port, or a port and a cluster bus port per master.
  local nredis=1
  [ "$redis_mode" = cluster ] && nredis=$((2 * redis_masters))
  # shellcheck disable=SC2207
  local ports=($("$LOADTEST" free-ports $((n + nredis))))
  local watch="" urls="" metrics_urls="" proto=socketio i port auth_args=()
  # tokio reads TOKIO_WORKER_THREADS when a runtime does not set its own count; only the
  # servers get it, never the load generator.
  local threads_env=()
  [ -n "$server_threads" ] && threads_env=(TOKIO_WORKER_THREADS="$server_threads")
  redis_urls=""
  if [ "$impl" != raw-ws ]; then
    if [ "$redis_mode" = cluster ]; then
      start_redis_cluster "$tag" "${ports[@]:$n}"
    else
      start_redis "${ports[$n]}" "$out/logs/$tag.redis.log"
    fi
    watch="$redis_watch"
  fi
  for ((i = 0; i < n; i++)); do
    port="${ports[$i]}"
    local log="$out/logs/$tag.node$((i + 1)).log"
    case "$impl" in
      ioscale | ioscale-baseline | ioscale-jwt)
        local node_bin="$BIN/ioscale-node" node_extra=()
        if [ "$impl" = ioscale-jwt ]; then
          node_extra=(--auth jwt --jwt-secret "$BENCH_JWT_SECRET")
          auth_args=(--auth-token "$("$BIN/ioscale-node" token --sub bench --rooms '*' --ttl-s 86400 \
            --jwt-secret "$BENCH_JWT_SECRET")")
        fi
        if [ "$impl" = ioscale-baseline ]; then
          node_bin="$baseline_node_bin"
          read -r -a node_extra <<<"$baseline_node_args"
        fi
        # The generator's clients all come from 127.0.0.1: lift the per-address handshake
        # budget (as the variables, which builds without the flag ignore). The storm's come
        # from many addresses, through nginx: the budget as shipped, the client's address
        # from X-Forwarded-For, and a drain.
        local budget_env=(IOSCALE_HANDSHAKES_PER_ADDRESS_PER_S=1000000 IOSCALE_HANDSHAKE_BURST_PER_ADDRESS=1000000)
        if [ "$scenario" = storm ]; then
          budget_env=()
          node_extra+=(--trust-proxy --shutdown-drain-delay-ms "$storm_drain_ms")
        fi
        env "${threads_env[@]}" RUST_LOG=info "${budget_env[@]}" "$node_bin" "${node_extra[@]}" --listen "127.0.0.1:$port" --node-id "bench-$((i + 1))" \
          --redis-url "$redis_url" --shutdown-timeout-ms 1000 >"$log" 2>&1 &
        # Without --admin-listen, /metrics is served on the main port.
        metrics_urls="${metrics_urls:+$metrics_urls,}http://127.0.0.1:$port/metrics"
        ;;
      node-socketio)
        env "${redis_node_env[@]}" ADAPTER=classic node "$NODE_BASELINE/server.mjs" "$port" >"$log" 2>&1 &
        ;;
      node-sharded)
        env "${redis_node_env[@]}" ADAPTER=sharded-dynamic node "$NODE_BASELINE/server.mjs" "$port" >"$log" 2>&1 &
        ;;
      node-streams)
        env "${redis_node_env[@]}" ADAPTER=streams node "$NODE_BASELINE/server.mjs" "$port" >"$log" 2>&1 &
        ;;
      socketioxide)
        env "${threads_env[@]}" RUST_LOG=warn "$BIN/ioscale-baseline-socketioxide" --listen "127.0.0.1:$port" \
          --redis-url "$redis_url" >"$log" 2>&1 &
        ;;
      socketioxide-tuned)
        env "${threads_env[@]}" RUST_LOG=warn "$BIN/ioscale-baseline-socketioxide" --listen "127.0.0.1:$port" \
          --redis-url "$redis_url" --redis-reconnect --fred-broadcast-capacity 16384 --tcp-nodelay >"$log" 2>&1 &
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
    rooms)
      args=(rooms --rooms "$rooms" --room-size "$room_size" --publishers "$publishers" --redis-urls "$redis_urls")
      [ -n "$metrics_urls" ] && args+=(--node-metrics-urls "$metrics_urls")
      ;;
    chat) args=(chat --clients "$subscribers" --senders "$publishers") ;;
    rpc) args=(rpc --clients "$subscribers") ;;
    idle) args=(connect --clients "$clients" --connect-rate-per-s "$connect_rate" --hold-s "$hold_s" --namespace /pubsub) ;;
    storm) storm_args "$tag" "$n" ;;
  esac
  # The sending scenarios ramp the rate; the connection storm has no send schedule.
  local sched=()
  if [ "$scenario" = idle ] || [ "$scenario" = storm ]; then
    :
  elif [ -n "$fixed_rate" ]; then
    sched=(--payload-bytes "$payload_bytes" --rate-per-s "$fixed_rate" --warmup-s "$warmup_s"
      --duration-s "$duration_s" --drain-ms "$drain_ms")
  else
    sched=(--payload-bytes "$payload_bytes" --ramp --rate-per-s "$start_rate"
      --warmup-s "$warmup_s" --ramp-step-s "$ramp_step_s" --ramp-factor "$ramp_factor" --ramp-p99-ms "$ramp_p99_ms"
      --duration-s "$max_duration_s" --drain-ms "$drain_ms")
  fi
  local fault_args=()
  [ "$faults" = 1 ] && fault_flags "$impl" "$tag"
  echo "== $impl, run $run: $scenario over $urls"
  # A failed run (e.g. servers that refuse the clients) is reported and the others go on.
  if ! "$LOADTEST" "${args[@]}" --threads "$generator_threads" --urls "$urls" --protocol "$proto" --label "$impl" \
    "${sched[@]}" --no-progress \
    --watch-pids "$watch" --report-json "$out/$tag.json" "${fault_args[@]}" "${auth_args[@]}" "${extra[@]}" \
    2>&1 | tee "$out/logs/$tag.loadtest.log"; then
    echo "bench.sh: the load generator failed for $impl run $run (log: $out/logs/$tag.loadtest.log)" >&2
  fi
  stop_all
}

# Sets args, urls and watch for a storm run (tag names its files, n is the number of servers):
# nginx in front of the servers, clients half straight to the last server and half through
# nginx, the last server stopped 3 s after the last connect, the survivors and nginx watched.
storm_args() { # tag n
  local tag="$1" n="$2" dir="$out/logs/$1.nginx" lb_port victim i
  lb_port="$("$LOADTEST" free-ports 1)"
  mkdir -p "$dir/tmp"
  sed -e "s|\${IOSCALE_LB_LISTEN}|127.0.0.1:$lb_port|" \
    -e "s|\${IOSCALE_NODE_1}|127.0.0.1:${ports[0]}|" -e "s|\${IOSCALE_NODE_2}|127.0.0.1:${ports[1]}|" \
    -e "s|\${IOSCALE_NODE_3}|127.0.0.1:${ports[2]}|" "$ROOT/deploy/lb/nginx.conf.template" >"$dir/site.conf"
  # Each proxied connection is two descriptors: four workers keep each under the open-files
  # limit.
  cat >"$dir/nginx.conf" <<NGINX
daemon off;
worker_processes 4;
worker_rlimit_nofile $(ulimit -n);
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections $(( $(ulimit -n) - 100 )); }
http {
    access_log off;
    client_body_temp_path $dir/tmp/client_body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    include $dir/site.conf;
}
NGINX
  # The servers are the last n processes started so far (Redis before them).
  local first=$((${#started[@]} - n))
  victim="${started[$((first + n - 1))]}"
  nginx -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" >"$dir/stdout.log" 2>&1 &
  started+=($!)
  local nginx_pid=$!
  for i in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$lb_port") 2>/dev/null && break
    sleep 0.05
  done
  local sig=TERM
  [ "$storm_fault" = kill ] && sig=KILL
  urls="http://127.0.0.1:${ports[$((n - 1))]},http://127.0.0.1:$lb_port"
  # nginx's workers do the proxying; the master only starts them.
  watch=""
  local w k=0
  for w in $(pgrep -P "$nginx_pid"); do k=$((k + 1)); watch="${watch:+$watch,}nginx$k=$w"; done
  for ((i = 0; i < n - 1; i++)); do watch="${watch:+$watch,}node$((i + 1))=${started[$((first + i))]}"; done
  args=(connect --clients "$clients" --connect-rate-per-s "$connect_rate" --hold-s 0 --namespace /pubsub
    --source-addrs 250 --reconnect-urls "http://127.0.0.1:$lb_port"
    --fault-at-s 3 --fault-cmd "kill -$sig $victim" --storm-window-s 40)
  # Every client asks for the session recovery its server has (the peers here have none), so
  # a stormed ioscale client resumes its session on the node it reaches.
  case "$impl" in
    ioscale | ioscale-baseline | ioscale-jwt) args+=(--recovery ioscale) ;;
  esac
}

# Sets fault_args: the generator's fault flags for one run of impl (tag names its files). The
# last server started is the one killed; Redis is restarted by a hook script that knows its
# command line, and the new process is found through a pid file.
fault_flags() { # impl tag
  local impl="$1" tag="$2"
  fault_args=()
  case "$impl" in
    ioscale | ioscale-baseline | ioscale-jwt) fault_args+=(--recovery ioscale) ;;
    node-streams) fault_args+=(--recovery socketio) ;;
  esac
  [ -n "$kill_node_at" ] && fault_args+=(--kill-node-at-s "$kill_node_at" --kill-node-pid "${started[$((${#started[@]} - 1))]}")
  [ -n "$drop_clients_at" ] && fault_args+=(--drop-clients-at-s "$drop_clients_at" --drop-share "$drop_share")
  if [ -n "$restart_redis_at" ]; then
    local hook="$out/logs/$tag.restart-redis.sh" pid_file="$out/logs/$tag.redis.pid"
    echo "${redis_pids[0]}" >"$pid_file"
    pid_files+=("$pid_file")
    {
      echo '#!/usr/bin/env bash'
      echo "# Written by bench.sh: SIGKILLs the run's Redis and starts it again on its port and files."
      echo 'set -eu'
      printf 'pid_file=%q port=%q log=%q\n' "$pid_file" "${redis_ports[0]}" "$out/logs/$tag.redis.log"
      printf 'redis_cmd=(%s)\n' "$(printf '%q ' "${redis_cmd[@]}")"
      cat <<'HOOK'
kill -KILL "$(cat "$pid_file")" 2>/dev/null || true
while redis-cli -p "$port" ping >/dev/null 2>&1; do sleep 0.01; done
"${redis_cmd[@]}" >>"$log" 2>&1 </dev/null &
echo $! >"$pid_file"
for _ in $(seq 1 500); do
  [ "$(redis-cli -p "$port" ping 2>/dev/null)" = PONG ] && exit 0
  sleep 0.01
done
echo 'redis did not come back within 5 s' >&2
exit 1
HOOK
    } >"$hook"
    chmod +x "$hook"
    fault_args+=(--restart-redis-at-s "$restart_redis_at" --restart-redis-cmd "$hook")
  fi
}

redis_version() { redis-server --version | sed -n 's/.* v=\([^ ]*\).*/\1/p'; }
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git -C "$ROOT" rev-parse --short HEAD 2>/dev/null || echo unknown)$(git -C "$ROOT" diff --quiet HEAD 2>/dev/null || echo ' (with uncommitted changes)')"
  echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  if [ "$scenario" = rooms ]; then
    echo "scenario: rooms, $rooms rooms of $room_size subscribers, publishers $publishers, payload $payload_bytes B"
  else
    echo "scenario: $scenario, subscribers $subscribers, room size $room_size, publishers $publishers, payload $payload_bytes B"
  fi
  if [ -n "$fixed_rate" ]; then
    echo "fixed rate: $warmup_s s warm-up, then $fixed_rate sends/s for $duration_s s"
  elif [ "$scenario" = idle ]; then
    echo "idle: $clients WebSocket connections to one server process at $connect_rate/s, held $hold_s s"
  else
    echo "ramp: $warmup_s s warm-up, then from $start_rate sends/s, x$ramp_factor every $ramp_step_s s, until p99 > $ramp_p99_ms ms or a loss (max $max_duration_s s)"
  fi
  if [ "$redis_mode" = cluster ]; then
    echo "redis: a Redis Cluster of $redis_masters masters, no replicas ($(redis_version))"
  else
    echo "redis: one standalone server ($(redis_version))"
  fi
  echo "runs: $runs in A-B-B-A order; implementations: $impls; nodes: $nodes; server worker threads: ${server_threads:-one per core}; generator threads: $generator_threads"
  if [ "$faults" = 1 ]; then
    echo "faults:${kill_node_at:+ node $nodes SIGKILLed at $kill_node_at s;}${restart_redis_at:+ Redis SIGKILLed and restarted (AOF, everysec) at $restart_redis_at s;}${drop_clients_at:+ $drop_share of the subscribers reset at $drop_clients_at s;} clients reconnect with socket.io-client's backoff (1-5 s, ±50 %)"
  fi
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
    if [ "$impl" = raw-ws ] && { [ "$scenario" = chat ] || [ "$scenario" = rooms ]; }; then
      echo "== raw-ws has no $scenario; skipped"
      continue
    fi
    run_one "$impl" "$run"
  done
done

echo
echo "== medians over $runs run(s) ($out)"
"$LOADTEST" compare --dir "$out" --subject ioscale --ceiling raw-ws --markdown "$out/table.md"
