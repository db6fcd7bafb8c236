#!/usr/bin/env bash
# Instruction counts (valgrind's callgrind), which do not depend on the machine's load: what to compare changes
# by on a shared machine. Not a test: it prints figures.
#
#   bash benches/callgrind.sh http          # instructions per GET /api/v1/users/me (SQLite server) and per bare_jwt request
#   bash benches/callgrind.sh jobs sqlite   # instructions per job on a store (memory, sqlite, sled)
#
# http: the server first runs natively to create its admin and sign in (argon2 under valgrind would take
# minutes), then again under callgrind on the same database; after 200 warm-up requests the counters are
# zeroed, REQUESTS keep-alive requests are sent, and the counters dumped. Same for bare_jwt.
# jobs: the `jobs` bench runs twice under callgrind, with JOBS and 2*JOBS jobs; each run handles 2N jobs
# (enqueue then process, then end to end) plus a fixed latency phase, so the difference over 2*JOBS is the
# cost of one job. Profiles stay in OUT (default /tmp/techhub-callgrind) for callgrind_annotate.
set -euo pipefail
cd "$(dirname "$0")/.."

command -v valgrind >/dev/null || { echo "valgrind is missing: apt-get install valgrind" >&2; exit 1; }
OUT=${OUT:-/tmp/techhub-callgrind}
mkdir -p "$OUT"
TARGET=${CARGO_TARGET_DIR:-target}
# Where the release binaries are; given BIN (say, a copy of an earlier build to compare with), nothing is built.
GIVEN_BIN=${BIN:-}
build() { [ -n "$GIVEN_BIN" ] || cargo build --release -q "$@"; }
BIN=${BIN:-$TARGET/release}

# The instruction total of a callgrind profile.
total() { awk '/^(summary|totals):/ {print $2; exit}' "$1"; }

# REQUESTS keep-alive GETs of $1 with the bearer token $2 (python's http.client: one connection).
requests() {
  python3 - "$1" "$2" "$3" <<'PY'
import http.client, sys, urllib.parse
url, token, count = urllib.parse.urlsplit(sys.argv[1]), sys.argv[2], int(sys.argv[3])
connection = http.client.HTTPConnection(url.hostname, url.port)
for _ in range(count):
    connection.request("GET", url.path, headers={"Authorization": f"Bearer {token}"})
    response = connection.getresponse()
    response.read()
    assert response.status == 200, response.status
PY
}

wait_for() {
  for _ in $(seq 600); do
    curl -fs -o /dev/null "$@" && return 0
    sleep 0.1
  done
  echo "no answer from $*" >&2
  exit 1
}

# Zeroes the counters of process $1 after warm-up, sends the measured requests, dumps, prints per request.
measure_requests() {
  local name=$1 pid=$2 url=$3 token=$4 requests=${REQUESTS:-1000}
  requests "$url" "$token" 200
  callgrind_control -z "$pid" >/dev/null
  requests "$url" "$token" "$requests"
  callgrind_control -d "$pid" >/dev/null
  local dump
  dump=$(ls -t "$OUT/$name.out."*.1 2>/dev/null | head -1)
  awk -v total="$(total "$dump")" -v n="$requests" -v name="$name" \
    'BEGIN { printf "bench=%s instructions_per_request=%.1fk profile=%s\n", name, total / n / 1000, ARGV[1] }' "$dump"
}

http() {
  build -p techhub-server
  build -p techhub-benches --bin bare_jwt
  local work port=18191 bare_port=18192 email=bench@example.com password=bench-password-123
  work=$(mktemp -d)
  export TECHHUB_JWT_SECRET=bench-secret-0123456789abcdef0123456789
  local env=(TECHHUB_ADDR="127.0.0.1:$port" TECHHUB_STORE="sqlite:$work/bench.db" TECHHUB_LOG=warn
    TECHHUB_AUTH_RATE_LIMIT=0 TECHHUB_ADMIN_EMAIL="$email" TECHHUB_ADMIN_PASSWORD="$password")
  env "${env[@]}" "$BIN/techhub-server" >"$work/native.log" 2>&1 &
  local server=$!
  wait_for "http://127.0.0.1:$port/health"
  local token
  token=$(curl -fs -X POST -H 'content-type: application/json' \
    -d "{\"email\":\"$email\",\"password\":\"$password\"}" "http://127.0.0.1:$port/api/v1/auth/login" |
    sed -E 's/.*"access_token":"([^"]+)".*/\1/')
  kill "$server"; wait "$server" 2>/dev/null || true

  rm -f "$OUT"/users_me.out.* "$OUT"/bare_jwt.out.*
  env "${env[@]}" valgrind --tool=callgrind --callgrind-out-file="$OUT/users_me.out.%p" \
    "$BIN/techhub-server" >"$work/server.log" 2>&1 &
  server=$!
  wait_for "http://127.0.0.1:$port/health"
  measure_requests users_me "$server" "http://127.0.0.1:$port/api/v1/users/me" "$token"
  kill "$server"; wait "$server" 2>/dev/null || true

  valgrind --tool=callgrind --callgrind-out-file="$OUT/bare_jwt.out.%p" \
    "$BIN/bare_jwt" --addr "127.0.0.1:$bare_port" >"$work/bare.log" 2>&1 &
  server=$!
  wait_for -H "Authorization: Bearer $token" "http://127.0.0.1:$bare_port/api/v1/users/me"
  measure_requests bare_jwt "$server" "http://127.0.0.1:$bare_port/api/v1/users/me" "$token"
  kill "$server"; wait "$server" 2>/dev/null || true
  rm -rf "$work"
}

jobs() {
  local store=${1:?jobs needs a store: memory, sqlite or sled} jobs=${JOBS:-2000}
  build -p techhub-benches --bin jobs
  local small large
  for n in "$jobs" $((2 * jobs)); do
    valgrind --tool=callgrind --callgrind-out-file="$OUT/jobs-$store-$n.out" \
      "$BIN/jobs" --store "$store" --jobs "$n" >"$OUT/jobs-$store-$n.txt" 2>"$OUT/jobs-$store-$n.log"
  done
  small=$(total "$OUT/jobs-$store-$jobs.out")
  large=$(total "$OUT/jobs-$store-$((2 * jobs)).out")
  awk -v small="$small" -v large="$large" -v n="$jobs" -v store="$store" -v profile="$OUT/jobs-$store-$((2 * jobs)).out" \
    'BEGIN { printf "store=%s bench=jobs instructions_per_job=%.1fk profile=%s\n", store, (large - small) / (2 * n) / 1000, profile }'
}

case "${1:-}" in
  http) http ;;
  jobs) shift; jobs "$@" ;;
  *) echo "usage: $0 http | jobs memory|sqlite|sled" >&2; exit 1 ;;
esac
