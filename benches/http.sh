#!/usr/bin/env bash
# The HTTP server under load, measured with wrk (Debian: `apt-get install wrk`). Not a test: it prints figures.
#
#   bash benches/http.sh            # SQLite (the server's default store)
#   STORE=memory bash benches/http.sh
#
# Starts the release techhub-server on loopback, signs in once, then prints requests/s and latency
# percentiles for: GET /health; authenticated GET /api/v1/users/me; the same request on `bare_jwt` (a bare axum
# handler that only verifies the token: the floor an authenticated request is measured against), and the
# ratio of the two; GET /health while 32 clients sign in continuously (argon2id hashing saturating its pool).
# wrk shares the machine's cores with the servers (the bare server runs only during its own measurement).
set -euo pipefail
cd "$(dirname "$0")/.."

command -v wrk >/dev/null || { echo "wrk is missing: apt-get install wrk" >&2; exit 1; }
DURATION=${DURATION:-10s}
PORT=${PORT:-18181}
STORE=${STORE:-sqlite}
WORK=$(mktemp -d)
EMAIL=bench@example.com
PASSWORD=bench-password-123
BARE_PORT=${BARE_PORT:-18182}
# Both servers sign and verify with this key.
export TECHHUB_JWT_SECRET=${TECHHUB_JWT_SECRET:-bench-secret-0123456789abcdef0123456789}

cargo build --release -q -p techhub-server
cargo build --release -q -p techhub-benches --bin bare_jwt
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

target/release/bare_jwt --addr "127.0.0.1:$BARE_PORT" >"$WORK/bare.log" 2>&1 &
BARE=$!
for _ in $(seq 100); do
  curl -fs -H "Authorization: Bearer $TOKEN" "http://127.0.0.1:$BARE_PORT/api/v1/users/me" >/dev/null && break
  sleep 0.1
done
wrk -t2 -c64 -d"$DURATION" --latency -H "Authorization: Bearer $TOKEN" \
  "http://127.0.0.1:$BARE_PORT/api/v1/users/me" >"$WORK/bare.txt"
kill "$BARE" 2>/dev/null || true
wait "$BARE" 2>/dev/null || true
summarize bare_jwt "$WORK/bare.txt"
awk -v me="$(awk '/^Requests\/sec/ {print $2}' "$WORK/me.txt")" -v bare="$(awk '/^Requests\/sec/ {print $2}' "$WORK/bare.txt")" \
  -v store="$STORE" 'BEGIN { printf "store=%s bench=users_me_vs_bare_jwt ratio_percent=%.1f\n", store, 100 * me / bare }'

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
