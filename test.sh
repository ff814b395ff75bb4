#!/usr/bin/env bash
# The test command: checks the system tools the tests drive, installs what is missing when it
# can (as root with apt-get; cargo-nextest with cargo; the npm clients with npm ci), or stops in
# its first seconds with the exact command to run. Then runs the whole suite with nextest.
# Arguments are passed to `cargo nextest run`, e.g. `./test.sh -p ioscale-adapter`.
set -euo pipefail
cd "$(dirname "$0")"

# tool -> Debian package(s) providing it
declare -A packages=(
  [redis-server]="redis-server"
  [redis-cli]="redis-tools"
  [node]="nodejs npm"
  [npm]="npm"
  # The chat page test's browser (playwright-core drives it), with a font for screenshots.
  [chromium]="chromium fonts-liberation"
  # The real load balancers of deploy/lb, run by tests/tests/load_balancers.rs.
  [nginx]="nginx"
  [haproxy]="haproxy"
  [python3]="python3"
  # Certificates for the rediss:// test (tests/tests/redis_tls_acl.rs).
  [openssl]="openssl"
  # The soak script's readiness checks (loadtest/soak.sh, run by loadtest/tests/soak.rs).
  [curl]="curl"
)
missing=()
for tool in "${!packages[@]}"; do
  command -v "$tool" >/dev/null 2>&1 || missing+=(${packages[$tool]})
done
# python-socketio (dialect tests) and the deployment linters live in venvs.
if command -v python3 >/dev/null 2>&1 && ! python3 -c 'import venv, ensurepip' >/dev/null 2>&1; then
  missing+=(python3-venv)
fi
if [ ${#missing[@]} -gt 0 ]; then
  # Unique, sorted, for a stable command line.
  mapfile -t missing < <(printf '%s\n' "${missing[@]}" | sort -u)
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "test.sh: installing ${missing[*]}" >&2
    export DEBIAN_FRONTEND=noninteractive
    apt-get update
    apt-get install -y --no-install-recommends "${missing[@]}"
  else
    echo "test.sh: the tests need ${missing[*]}; install them first:" >&2
    echo "  sudo apt-get update && sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
    exit 1
  fi
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest

# npm clients: the one the cluster tests drive, the browser client the nodes serve, the
# recovery helper's (its own tests run against socket.io-client), and the Node baseline the
# load generator's recovery is tested against.
for dir in tests/js node/client clients/js loadtest/baselines/node-socketio; do
  if [ ! -f "$dir/node_modules/.package-lock.json" ] \
    || [ "$dir/package-lock.json" -nt "$dir/node_modules/.package-lock.json" ]; then
    npm ci --prefix "$dir" --no-audit --no-fund
  fi
done

# On CI (CI=true) the same command also runs the Compose end-to-end test on a real Docker
# engine (about 15 minutes: image builds from Debian's packages, then `docker compose up --wait`
# of the whole stack); elsewhere it is skipped unless IOSCALE_COMPOSE_E2E=1.
if [ "${CI:-}" = true ]; then
  export IOSCALE_COMPOSE_E2E="${IOSCALE_COMPOSE_E2E:-1}"
fi

exec cargo nextest run --workspace "$@"
