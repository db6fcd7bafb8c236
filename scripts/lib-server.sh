# Shared by the acceptance scripts (sourced, not run): start the example server on a free port with an admin,
# on a fresh SQLite file, and stop it when the calling script exits.
#   start_server [extra env assignments...]   sets BASE (http://127.0.0.1:PORT), DATA (its directory) and
#                                             SERVER_LOG; the server is built first (debug profile) unless
#                                             TECHHUB_SERVER_BIN names a built one.
ADMIN_EMAIL="admin@example.com"
ADMIN_PASSWORD="acceptance admin passphrase"

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1]); s.close()'
}

start_server() {
  local target="${CARGO_TARGET_DIR:-target}"
  # scripts/test.sh passes the binary its `cargo test --workspace` built; building it again with this
  # package's features alone would recompile shared dependencies for nothing.
  local server="${TECHHUB_SERVER_BIN:-}"
  if [ -z "$server" ]; then
    cargo build -q -p techhub-server ${CARGO_FLAGS:-}
    server="$target/debug/techhub-server"
  fi
  DATA="$(mktemp -d)"
  SERVER_LOG="$DATA/server.log"
  local port
  port="$(free_port)"
  BASE="http://127.0.0.1:$port"
  env TECHHUB_ADDR="127.0.0.1:$port" TECHHUB_STORE="sqlite:$DATA/techhub.db" \
    TECHHUB_ADMIN_EMAIL="$ADMIN_EMAIL" TECHHUB_ADMIN_PASSWORD="$ADMIN_PASSWORD" \
    TECHHUB_JWT_SECRET="acceptance-secret-acceptance-secret-0123456789" \
    TECHHUB_AUTH_RATE_LIMIT=0 TECHHUB_LOG="${TECHHUB_LOG:-info}" "$@" \
    "$server" >"$SERVER_LOG" 2>&1 &
  SERVER_PID=$!
  trap stop_server EXIT
  for _ in $(seq 1 200); do
    if curl -fsS "$BASE/health" >/dev/null 2>&1; then return 0; fi
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
      echo "the server stopped at start:" >&2
      cat "$SERVER_LOG" >&2
      return 1
    fi
    sleep 0.1
  done
  echo "the server did not answer /health in 20 s" >&2
  return 1
}

stop_server() {
  if [ -n "${SERVER_PID:-}" ] && kill -0 "$SERVER_PID" 2>/dev/null; then
    kill "$SERVER_PID"
    wait "$SERVER_PID" 2>/dev/null || true
  fi
  if [ -n "${DATA:-}" ]; then rm -rf "$DATA"; fi
}

admin_token() {
  curl -fsS -X POST "$BASE/api/v1/auth/login" -H 'content-type: application/json' \
    -d "{\"email\":\"$ADMIN_EMAIL\",\"password\":\"$ADMIN_PASSWORD\"}" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["access_token"])'
}
