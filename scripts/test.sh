#!/usr/bin/env bash
# Every test of the repository: the README's test command and what CI runs.
#   1. the whole workspace (core, every store's conformance suite and crash rounds, the HTTP suite on memory);
#   2. the HTTP black-box suite again on SQLite files, the default store of every real user, and on
#      PostgreSQL (a fresh database per test on the test server, see below);
#   3. the webhook delivery suite again on SQLite and on sled;
#   4. the OpenAPI document against the real server: schemathesis and a generated Python client
#      (scripts/api-acceptance.sh, which installs both from PyPI into a virtualenv when missing);
#   5. the dashboard in a real browser: Debian's chromium driven by playwright-core (scripts/browser-tests.sh,
#      which installs chromium with apt and playwright-core with npm when missing);
#   6. the desktop app (its own workspace, examples/desktop): scripts/test-desktop.sh.
# Extra arguments go to every cargo run (for example --locked).
#
# The PostgreSQL store's tests start a real server themselves with Debian's `initdb` and `pg_ctl` (package
# `postgresql`), unless TECHHUB_TEST_POSTGRES_URL names an existing server. When neither is there, the
# package is installed here (apt-get, non-interactive; needs root, as on CI).
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -z "${TECHHUB_TEST_POSTGRES_URL:-}" ] && [ -z "${TECHHUB_PG_BIN:-}" ] \
  && ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; then
  echo "== installing PostgreSQL (the postgres store's tests run a real server)"
  if [ "$(id -u)" -eq 0 ]; then sudo=""; else sudo="sudo"; fi
  export DEBIAN_FRONTEND=noninteractive
  $sudo apt-get update -qq
  $sudo apt-get install -y -qq --no-install-recommends postgresql >/dev/null
fi

cargo test --workspace "$@"
TECHHUB_TEST_STORE=sqlite cargo test -p techhub-axum --tests "$@"
TECHHUB_TEST_STORE=postgres cargo test -p techhub-axum --tests "$@"
TECHHUB_TEST_STORE=sqlite cargo test -p techhub-core --test webhooks "$@"
TECHHUB_TEST_STORE=sled cargo test -p techhub-core --test webhooks "$@"
# The server binary the workspace run just built (with the `dashboard` feature the example enables).
TECHHUB_SERVER_BIN="$(realpath -m "${CARGO_TARGET_DIR:-target}")/debug/techhub-server"
export TECHHUB_SERVER_BIN
bash scripts/api-acceptance.sh "$@"
bash scripts/browser-tests.sh "$@"
if [ "${TECHHUB_SKIP_DESKTOP:-}" = 1 ]; then
  echo "== SKIPPED: the desktop app's tests (TECHHUB_SKIP_DESKTOP=1)"
else
  bash scripts/test-desktop.sh "$@"
fi
