#!/usr/bin/env bash
# The soak: three ioscale nodes behind nginx (deploy/lb/nginx.conf.template, sticky sessions)
# on one Redis with its append-only file, under a mixed load for --duration-s, with node 3
# SIGKILLed and started again every --kill-every-s, a share of the clients' connections dropped
# between kills, and Redis SIGKILLed and restarted once.
#
# The load, all through nginx:
#   - fan-out (ioscale-loadtest fanout): --subscribers in rooms of --room-size, --publishers
#     publishing with acks at --rate-per-s, every client asking for session recovery and
#     reconnecting with socket.io-client's backoff; exact lost / duplicated / reordered counts;
#   - side (tests/js/soak-side.mjs, the official socket.io-client): --churners clients that
#     connect, join a room, leave it and disconnect, over and over, and --crud-clients running
#     Backbone.sync create / read / update / read / delete with every answer checked.
# While it runs, ioscale-loadtest soak-watch samples each node's /metrics every --interval-s
# (resident memory, descriptors, tasks, sockets). Then the clients leave, the nodes settle, and
# ioscale-loadtest soak-report writes soak.md (tables), soak.svg (plot) and soak.json (verdict):
# 0 lost or duplicated, no wrong CRUD answer, resident memory of the nodes that ran through
# growing under --max-rss-growth-pct from early to late in the load (after --warmup-s), and
# every node back to its idle descriptors and tasks once the clients left. Exit status 1 when
# a criterion failed.
#
# Node 3 is the one killed, always: nodes 1 and 2 then run through the whole soak, so their
# growth can be judged, and each kill moves node 3's clients to them.
#
# Usage: loadtest/soak.sh [options]
#   --duration-s S          load time (600)
#   --kill-every-s S        node 3 SIGKILLed and restarted every S seconds of sending (150)
#   --restart-delay-s S     node 3 stays down this long, as a supervisor's restart would (2)
#   --redis-restart-at-s S  Redis SIGKILLed and restarted at S seconds of sending (default:
#                           halfway between two kills after the middle)
#   --warmup-s S            not judged for growth (default: --kill-every-s + 30, so the first
#                           kill, which moves node 3's subscribers to nodes 1 and 2 for good, is
#                           in the warm-up)
#   --rate-per-s R          fan-out publishes per second (default: --held-share of the rate
#                           held by a fan-out ramp of the same clients through the same nginx,
#                           run first: p99 within 50 ms, nothing lost)
#   --held-share F          (0.7)
#   --subscribers N         fan-out subscribers (600)
#   --room-size N           subscribers per room (100)
#   --publishers N          fan-out publishers (3)
#   --drop-share F          fan-out subscribers dropped a third of the way after each kill (0.3)
#   --churners N            side clients coming and going (30)
#   --crud-clients N        side CRUD clients (4)
#   --interval-s S          sampling interval (5)
#   --max-rss-growth-pct P  bound on the memory growth (5)
#   --out DIR               where everything goes (target/soak/<date>)
#   --node-bin PATH         ioscale-node (target/release/ioscale-node)
#   --loadtest-bin PATH     ioscale-loadtest (target/release/ioscale-loadtest)
#   --no-build              do not run cargo build --release first
set -euo pipefail
ROOT="$(cd "$(dirname "$0")/.." && pwd)"

duration=600 kill_every=150 restart_delay=2 redis_restart_at="" warmup="" rate="" held_share=0.7
subscribers=600 room_size=100 publishers=3 drop_share=0.3 churners=30 crud_clients=4 interval=5
max_rss_growth=5 out="" node_bin="" loadtest_bin="" build=1
need_value() { [ $# -ge 2 ] || { echo "soak.sh: $1 needs a value" >&2; exit 2; }; }
while [ $# -gt 0 ]; do
  case "$1" in
    --duration-s) need_value "$@"; duration="$2"; shift 2 ;;
    --kill-every-s) need_value "$@"; kill_every="$2"; shift 2 ;;
    --restart-delay-s) need_value "$@"; restart_delay="$2"; shift 2 ;;
    --redis-restart-at-s) need_value "$@"; redis_restart_at="$2"; shift 2 ;;
    --warmup-s) need_value "$@"; warmup="$2"; shift 2 ;;
    --rate-per-s) need_value "$@"; rate="$2"; shift 2 ;;
    --held-share) need_value "$@"; held_share="$2"; shift 2 ;;
    --subscribers) need_value "$@"; subscribers="$2"; shift 2 ;;
    --room-size) need_value "$@"; room_size="$2"; shift 2 ;;
    --publishers) need_value "$@"; publishers="$2"; shift 2 ;;
    --drop-share) need_value "$@"; drop_share="$2"; shift 2 ;;
    --churners) need_value "$@"; churners="$2"; shift 2 ;;
    --crud-clients) need_value "$@"; crud_clients="$2"; shift 2 ;;
    --interval-s) need_value "$@"; interval="$2"; shift 2 ;;
    --max-rss-growth-pct) need_value "$@"; max_rss_growth="$2"; shift 2 ;;
    --out) need_value "$@"; out="$2"; shift 2 ;;
    --node-bin) need_value "$@"; node_bin="$2"; shift 2 ;;
    --loadtest-bin) need_value "$@"; loadtest_bin="$2"; shift 2 ;;
    --no-build) build=0; shift ;;
    -h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) echo "soak.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
  esac
done
for tool in redis-server redis-cli nginx node curl; do
  command -v "$tool" >/dev/null || { echo "soak.sh: $tool is needed (./test.sh installs it)" >&2; exit 1; }
done
[ -d "$ROOT/tests/js/node_modules/socket.io-client" ] \
  || { echo "soak.sh: run npm ci --prefix tests/js first (./test.sh does)" >&2; exit 1; }
if [ -z "$node_bin" ] || [ -z "$loadtest_bin" ]; then
  [ "$build" = 1 ] && (cd "$ROOT" && cargo build --release -q -p ioscale-node -p ioscale-loadtest)
  node_bin="${node_bin:-$ROOT/target/release/ioscale-node}"
  loadtest_bin="${loadtest_bin:-$ROOT/target/release/ioscale-loadtest}"
fi
out="${out:-$ROOT/target/soak/$(date -u +%Y%m%dT%H%M%SZ)}"
mkdir -p "$out/redis" "$out/nginx/tmp"
events="$out/events.log"
: >"$events"
event() { echo "$(date +%s.%N) $*" >>"$events"; }

# Fault times, from the first send: node 3 killed every --kill-every-s; a third of the way
# after each kill (and at the first third of the run) --drop-share of the fan-out subscribers
# lose their connections (a network drop: they reconnect through nginx, some of them to node 3,
# which the next kill then cuts off again); Redis restarts two thirds of the way after the
# kill before the middle (or at --redis-restart-at-s).
warmup="${warmup:-$((kill_every + 30))}"
kills="" drops=""
for ((t = kill_every; t < duration; t += kill_every)); do kills="${kills:+$kills,}$t"; done
for ((t = kill_every / 3; t < duration; t += kill_every)); do drops="${drops:+$drops,}$t"; done
[ -n "$kills" ] || { echo "soak.sh: --kill-every-s $kill_every leaves no kill within --duration-s $duration" >&2; exit 2; }
if [ -z "$redis_restart_at" ]; then
  redis_restart_at=$(( (duration / 2 / kill_every) * kill_every + 2 * kill_every / 3 ))
  [ "$redis_restart_at" -lt "$duration" ] || redis_restart_at=$((duration / 2))
fi

started=()
stop_all() {
  local pid
  for f in "$out"/*.pid; do
    [ -f "$f" ] && kill -KILL "$(cat "$f")" 2>/dev/null || true
  done
  for pid in "${started[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  sleep 0.5
  for pid in "${started[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
}
trap stop_all EXIT
trap 'exit 130' INT TERM

# shellcheck disable=SC2207
ports=($("$loadtest_bin" free-ports 5))
redis_port="${ports[3]}" lb_port="${ports[4]}"

wait_ready() { # port seconds
  local i
  for ((i = 0; i < $2 * 20; i++)); do
    curl -fsS -o /dev/null "http://127.0.0.1:$1/readyz" 2>/dev/null && return 0
    sleep 0.05
  done
  echo "soak.sh: the node on port $1 was not ready within $2 s" >&2
  return 1
}

# Each node's command line, written once so the kill hook starts the same node again.
for i in 1 2 3; do
  cat >"$out/node$i.sh" <<NODE
#!/usr/bin/env bash
# Starts node $i of the soak in the background (its log appended), its pid in node$i.pid.
# Every client comes through nginx from 127.0.0.1: the per-address handshake budget is lifted
# (behind a real proxy, --trust-proxy reads the clients' own addresses).
RUST_LOG=info IOSCALE_HANDSHAKES_PER_ADDRESS_PER_S=1000000 IOSCALE_HANDSHAKE_BURST_PER_ADDRESS=1000000 \\
  "$node_bin" --listen 127.0.0.1:${ports[$((i - 1))]} --node-id soak-$i \\
  --redis-url redis://127.0.0.1:$redis_port --trust-proxy --shutdown-timeout-ms 1000 \\
  >>"$out/node$i.log" 2>&1 </dev/null &
echo \$! >"$out/node$i.pid"
NODE
  chmod +x "$out/node$i.sh"
done

cat >"$out/redis.sh" <<REDIS
#!/usr/bin/env bash
# Starts the soak's Redis (append-only file, fsync every second) in the background.
redis-server --port $redis_port --bind 127.0.0.1 --save '' --appendonly yes --appendfsync everysec \\
  --dir "$out/redis" --protected-mode no >>"$out/redis.log" 2>&1 </dev/null &
echo \$! >"$out/redis.pid"
REDIS
cat >"$out/kill-node.sh" <<KILL
#!/usr/bin/env bash
# The fan-out's kill hook: SIGKILLs node 3, waits --restart-delay-s, starts it again.
set -eu
pid=\$(cat "$out/node3.pid")
echo "\$(date +%s.%N) node3 SIGKILLed" >>"$events"
kill -KILL "\$pid"
while kill -0 "\$pid" 2>/dev/null; do sleep 0.01; done
sleep $restart_delay
"$out/node3.sh"
for _ in \$(seq 1 600); do
  if curl -fsS -o /dev/null http://127.0.0.1:${ports[2]}/readyz 2>/dev/null; then
    echo "\$(date +%s.%N) node3 ready" >>"$events"
    exit 0
  fi
  sleep 0.05
done
echo "node 3 was not ready 30 s after its restart" >&2
exit 1
KILL
cat >"$out/restart-redis.sh" <<RESTART
#!/usr/bin/env bash
# The fan-out's Redis hook: SIGKILL, then the same server on the same port and files.
set -eu
echo "\$(date +%s.%N) redis SIGKILLed" >>"$events"
kill -KILL "\$(cat "$out/redis.pid")"
while redis-cli -p $redis_port ping >/dev/null 2>&1; do sleep 0.01; done
"$out/redis.sh"
for _ in \$(seq 1 500); do
  if [ "\$(redis-cli -p $redis_port ping 2>/dev/null)" = PONG ]; then
    echo "\$(date +%s.%N) redis back" >>"$events"
    exit 0
  fi
  sleep 0.01
done
echo "redis did not come back within 5 s" >&2
exit 1
RESTART
chmod +x "$out"/*.sh

"$out/redis.sh"
for _ in $(seq 1 100); do [ "$(redis-cli -p "$redis_port" ping 2>/dev/null)" = PONG ] && break; sleep 0.05; done
for i in 1 2 3; do "$out/node$i.sh"; done
for i in 1 2 3; do wait_ready "${ports[$((i - 1))]}" 30; done

sed -e "s|\${IOSCALE_LB_LISTEN}|127.0.0.1:$lb_port|" \
  -e "s|\${IOSCALE_NODE_1}|127.0.0.1:${ports[0]}|" -e "s|\${IOSCALE_NODE_2}|127.0.0.1:${ports[1]}|" \
  -e "s|\${IOSCALE_NODE_3}|127.0.0.1:${ports[2]}|" "$ROOT/deploy/lb/nginx.conf.template" >"$out/nginx/site.conf"
cat >"$out/nginx/nginx.conf" <<NGINX
daemon off;
worker_processes 2;
pid $out/nginx/nginx.pid;
error_log $out/nginx/error.log warn;
events { worker_connections 8192; }
http {
    access_log off;
    client_body_temp_path $out/nginx/tmp/client_body;
    proxy_temp_path $out/nginx/tmp/proxy;
    fastcgi_temp_path $out/nginx/tmp/fastcgi;
    uwsgi_temp_path $out/nginx/tmp/uwsgi;
    scgi_temp_path $out/nginx/tmp/scgi;
    include $out/nginx/site.conf;
}
NGINX
nginx -p "$out/nginx" -c "$out/nginx/nginx.conf" -e "$out/nginx/error.log" >"$out/nginx/stdout.log" 2>&1 &
started+=($!)
for _ in $(seq 1 100); do curl -fsS -o /dev/null "http://127.0.0.1:$lb_port/lb-health" 2>/dev/null && break; sleep 0.05; done

fanout_clients=(--urls "http://127.0.0.1:$lb_port" --no-progress --subscribers "$subscribers"
  --room-size "$room_size" --publishers "$publishers" --connect-rate-per-s 200 --recovery ioscale)
if [ -z "$rate" ]; then
  echo "soak.sh: measuring the held fan-out rate through nginx (a ramp)"
  "$loadtest_bin" --threads 1 fanout "${fanout_clients[@]}" --ramp --rate-per-s 50 --ramp-factor 1.25 \
    --ramp-step-s 5 --ramp-p99-ms 50 --duration-s 120 --report-json "$out/ramp.json" >"$out/ramp.log" 2>&1 \
    || { echo "soak.sh: the ramp failed:" >&2; tail -20 "$out/ramp.log" >&2; exit 1; }
  held="$(python3 -c 'import json,sys; h=json.load(open(sys.argv[1])).get("held"); print(h["rate_per_s"] if h else 0)' "$out/ramp.json")"
  held="$(printf '%.0f' "$held")"
  rate="$(awk "BEGIN { r = $held * $held_share; print (r < 1 ? 1 : int(r)) }")"
  echo "soak.sh: held $held publishes/s; the soak sends $rate ($held_share of it)"
  event "a fan-out ramp through nginx held $held publishes/s; the soak sends $rate"
fi

nodes="node1=http://127.0.0.1:${ports[0]}/metrics,node2=http://127.0.0.1:${ports[1]}/metrics,node3=http://127.0.0.1:${ports[2]}/metrics"
"$loadtest_bin" soak-watch --nodes "$nodes" --interval-s "$interval" --out "$out/samples.jsonl" \
  >"$out/soak-watch.log" 2>&1 &
watch_pid=$!
started+=("$watch_pid")
# Idle figures: a few samples before any client.
sleep "$(awk "BEGIN { print $interval * 3 + 1 }")"

echo "soak.sh: ${duration} s at $rate publishes/s, node 3 killed at ${kills} s, subscribers dropped at ${drops} s, Redis restarted at ${redis_restart_at} s; out: $out"
event load-start
node "$ROOT/tests/js/soak-side.mjs" --url "http://127.0.0.1:$lb_port" --duration-s "$((duration + 30))" \
  --churners "$churners" --crud-clients "$crud_clients" --report "$out/side.json" >"$out/side.log" 2>&1 &
side_pid=$!
started+=("$side_pid")
fanout_status=0
"$loadtest_bin" --threads 1 fanout "${fanout_clients[@]}" \
  --rate-per-s "$rate" --duration-s "$duration" --drain-ms 20000 --kill-node-at-s "$kills" --kill-node-cmd "$out/kill-node.sh" \
  --restart-redis-at-s "$redis_restart_at" --restart-redis-cmd "$out/restart-redis.sh" \
  --drop-clients-at-s "$drops" --drop-share "$drop_share" \
  --watch-pids "node1=$(cat "$out/node1.pid"),node2=$(cat "$out/node2.pid")" \
  --report-json "$out/fanout.json" >"$out/fanout.log" 2>&1 || fanout_status=$?
kill -TERM "$side_pid" 2>/dev/null || true
wait "$side_pid" 2>/dev/null || true
event load-end
[ "$fanout_status" = 0 ] || { echo "soak.sh: the fan-out failed ($fanout_status):" >&2; tail -20 "$out/fanout.log" >&2; }
# The clients are gone; what the nodes hold now should be what they held idle.
sleep 15
event settled
sleep "$(awk "BEGIN { print $interval * 3 + 1 }")"
kill -TERM "$watch_pid" 2>/dev/null || true
wait "$watch_pid" 2>/dev/null || true
"$loadtest_bin" soak-report --samples "$out/samples.jsonl" --events "$events" \
  --fanout "$out/fanout.json" --side "$out/side.json" --warmup-s "$warmup" \
  --max-rss-growth-pct "$max_rss_growth" --out "$out/soak"
