#!/usr/bin/env bash
# Every test of the repository: the README's test command and what CI runs.
#   1. the whole workspace (core, every store's conformance suite and crash rounds, the HTTP suite on memory);
#   2. the HTTP black-box suite again on SQLite files, the default store of every real user;
#   3. the webhook delivery suite again on SQLite and on sled;
#   4. the OpenAPI document against the real server: schemathesis and a generated Python client
#      (scripts/api-acceptance.sh, which installs both from PyPI into a virtualenv when missing).
#   5. the desktop app (its own workspace, examples/desktop): scripts/test-desktop.sh.
# Extra arguments go to every cargo run (for example --locked).
set -euo pipefail
cd "$(dirname "$0")/.."

cargo test --workspace "$@"
TECHHUB_TEST_STORE=sqlite cargo test -p techhub-axum --tests "$@"
TECHHUB_TEST_STORE=sqlite cargo test -p techhub-core --test webhooks "$@"
TECHHUB_TEST_STORE=sled cargo test -p techhub-core --test webhooks "$@"
bash scripts/api-acceptance.sh "$@"
if [ "${TECHHUB_SKIP_DESKTOP:-}" = 1 ]; then
  echo "== SKIPPED: the desktop app's tests (TECHHUB_SKIP_DESKTOP=1)"
else
  bash scripts/test-desktop.sh "$@"
fi
