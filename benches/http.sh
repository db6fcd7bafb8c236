#!/usr/bin/env bash
# The HTTP server under load, measured with wrk (Debian: `apt-get install wrk`). Not a test: it prints figures.
#
#   bash benches/http.sh            # SQLite (the server's default store)
#   STORE=memory bash benches/http.sh
#
# Starts the release techhub-server on loopback, signs in once, then prints requests/s and latency
# percentiles for: GET /health; authenticated GET /api/v1/users/me; GET /health while 32 clients sign in
# continuously (argon2id hashing saturating its pool). wrk shares the machine's cores with the server.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
DURATION=${DURATION:-10s}
PORT=${PORT:-18181}
STORE=${STORE:-sqlite}
WORK=$(mktemp -d)
EMAIL=bench@example.com
PASSWORD=bench-password-123

cargo build --release -q -p techhub-server
case "$STORE" in
  sqlite) STORE_SETTING="sqlite:$WORK/bench.db" ;;
  sled) STORE_SETTING="sled:$WORK/bench.sled" ;;
  memory) STORE_SETTING="memory" ;;
  *) echo "STORE must be sqlite, sled or memory" >&2; exit 1 ;;
esac

TECHHUB_ADDR="127.0.0.1:$PORT" TECHHUB_STORE="$STORE_SETTING" TECHHUB_LOG=warn TECHHUB_AUTH_RATE_LIMIT=0 \
  TECHHUB_ADMIN_EMAIL="$EMAIL" TECHHUB_ADMIN_PASSWORD="$PASSWORD" target/release/techhub-server >"$WORK/server.log" 2>&1 &
SERVER=$!
cleanup() { kill "$SERVER" 2>/dev/null || true; wait "$SERVER" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

for _ in $(seq 100); do
  curl -fs "http://127.0.0.1:$PORT/health" >/dev/null && break
  sleep 0.1
done
LOGIN_BODY="{\"email\":\"$EMAIL\",\"password\":\"$PASSWORD\"}"
TOKEN=$(curl -fs -X POST -H 'content-type: application/json' -d "$LOGIN_BODY" "http://127.0.0.1:$PORT/api/v1/auth/login" |
  sed -E 's/.*"access_token":"([^"]+)".*/\1/')

# One line per run: name, requests/s, latency p50/p90/p99, errors.
summarize() {
  local name=$1 file=$2
  local rps p50 p90 p99 errors
  rps=$(awk '/^Requests\/sec/ {print $2}' "$file")
  p50=$(awk '$1 == "50%" {print $2}' "$file")
  p90=$(awk '$1 == "90%" {print $2}' "$file")
  p99=$(awk '$1 == "99%" {print $2}' "$file")
  errors=$(awk '/Non-2xx|Socket errors/ {printf "%s ", $0}' "$file")
  echo "store=$STORE bench=$name requests_per_s=$rps p50=$p50 p90=$p90 p99=$p99 ${errors:+errors=\"$errors\"}"
}

wrk -t2 -c64 -d"$DURATION" --latency "http://127.0.0.1:$PORT/health" >"$WORK/health.txt"
summarize health "$WORK/health.txt"

wrk -t2 -c64 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$PORT/api/v1/users/me" >"$WORK/me.txt"
summarize users_me "$WORK/me.txt"

cat >"$WORK/login.lua" <<LUA
wrk.method = "POST"
wrk.body = '$LOGIN_BODY'
wrk.headers["Content-Type"] = "application/json"
LUA
wrk -t1 -c32 -d"$DURATION" -s "$WORK/login.lua" "http://127.0.0.1:$PORT/api/v1/auth/login" >"$WORK/logins.txt" &
STORM=$!
sleep 1
wrk -t1 -c16 -d"$DURATION" --latency "http://127.0.0.1:$PORT/health" >"$WORK/health-storm.txt"
wait "$STORM"
summarize health_during_login_storm "$WORK/health-storm.txt"
echo "store=$STORE bench=login_storm logins_per_s=$(awk '/^Requests\/sec/ {print $2}' "$WORK/logins.txt")"
