#!/usr/bin/env bash
# The dashboard's browser tests: Playwright (playwright-core from npm, pinned in scripts/browser/package-lock.json)
# driving Debian's chromium (installed with apt-get when missing; never a downloaded browser), against the
# example server with the process build executor. Screenshots of every view go to
# $CARGO_TARGET_DIR/dashboard-screenshots (target/ by default). Extra arguments go to cargo (e.g. --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_FLAGS="$*"
target="${CARGO_TARGET_DIR:-target}"
started=$(date +%s)

if [ ! -x /usr/bin/chromium ]; then
  echo "== installing chromium (apt)"
  sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq chromium >/dev/null
fi
if ! command -v node >/dev/null || ! command -v npm >/dev/null; then
  echo "== installing node and npm (apt)"
  sudo_if_needed() { if [ "$(id -u)" -eq 0 ]; then "$@"; else sudo "$@"; fi; }
  sudo_if_needed apt-get update -qq
  DEBIAN_FRONTEND=noninteractive sudo_if_needed apt-get install -y -qq nodejs npm >/dev/null
fi
if [ ! -d scripts/browser/node_modules/playwright-core ]; then
  echo "== installing playwright-core (npm ci)"
  (cd scripts/browser && PLAYWRIGHT_SKIP_BROWSER_DOWNLOAD=1 npm ci --no-audit --no-fund --silent)
fi

# shellcheck source=scripts/lib-server.sh
. scripts/lib-server.sh
# Webhook endpoints on this machine are allowed, so the notifications view can create one.
start_server TECHHUB_BUILD_EXECUTOR=process TECHHUB_WEBHOOK_ALLOW_PRIVATE=loopback
shots="$(cd "$target" && pwd)/dashboard-screenshots"
rm -rf "$shots"

echo "== browser tests"
(cd scripts/browser && BASE="$BASE" ADMIN_EMAIL="$ADMIN_EMAIL" ADMIN_PASSWORD="$ADMIN_PASSWORD" SHOTS="$shots" \
  node --test --test-concurrency=1 dashboard.test.mjs)
echo "browser tests: passed in $(( $(date +%s) - started )) s; screenshots in $shots"
