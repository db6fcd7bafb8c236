#!/usr/bin/env bash
# The OpenAPI document against the real server, with tools nobody here wrote (both from PyPI, pinned, in a
# virtualenv under the target directory):
#   1. schemathesis, authenticated as an admin, with the checks not_a_server_error, status_code_conformance,
#      content_type_conformance and response_schema_conformance: zero failures allowed;
#   2. openapi-python-client generates a Python client from the served document with no warning, and a smoke
#      test drives it (register, sign in, me, import JSON users, export, list jobs, a 401 and a 403 as problems).
# Extra arguments go to cargo (for example --locked). SCHEMATHESIS_EXAMPLES bounds the examples per operation.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_FLAGS="$*"
# Absolute: the client generator runs its formatter (ruff, from the virtualenv) from another directory.
target="$(realpath -m "${CARGO_TARGET_DIR:-target}")"
venv="$target/api-venv"
started=$(date +%s)

if ! "$venv/bin/python" -c 'import schemathesis, openapi_python_client' 2>/dev/null; then
  echo "== installing schemathesis and openapi-python-client into $venv"
  python3 -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check -r scripts/acceptance/requirements.txt
fi

# shellcheck source=scripts/lib-server.sh
. scripts/lib-server.sh
start_server
token="$(admin_token)"

echo "== schemathesis"
# Ending the admin's own sessions would sign the run out halfway (every later request a 401): those two
# routes are covered by techhub-axum/tests/http_sessions.rs instead.
report="$target/schemathesis"
mkdir -p "$report"
"$venv/bin/schemathesis" --no-color run "$BASE/api/v1/openapi.json" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance \
  --header "Authorization: Bearer $token" \
  --max-examples "${SCHEMATHESIS_EXAMPLES:-25}" --seed 1 --workers 2 \
  --exclude-operation-id revoke_all_sessions --exclude-operation-id revoke_session \
  --generation-database none \
  --report junit --report-dir "$report" \
  --request-timeout 20

# schemathesis changed the admin (name, email, a locked account after wrong current passwords): the smoke
# test gets a fresh server.
stop_server
start_server

echo "== openapi-python-client"
client="$target/api_client"
rm -rf "$client"
curl -fsS "$BASE/api/v1/openapi.json" -o "$target/openapi.json"
PATH="$venv/bin:$PATH" "$venv/bin/openapi-python-client" generate --path "$target/openapi.json" --output-path "$client" \
  --config scripts/acceptance/client-config.yaml --meta none --overwrite 2>&1 | tee "$target/api-client.log"
if grep -qiE "warning|error|could not|unable" "$target/api-client.log"; then
  echo "openapi-python-client warned: see above" >&2
  exit 1
fi
PYTHONPATH="$target" "$venv/bin/python" scripts/acceptance/smoke.py "$BASE" "$ADMIN_EMAIL" "$ADMIN_PASSWORD"

echo "api acceptance: passed in $(( $(date +%s) - started )) s"
