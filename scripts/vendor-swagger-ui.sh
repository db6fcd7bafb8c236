#!/usr/bin/env bash
# Refreshes the Swagger UI files that /docs serves (techhub-axum/assets/docs/vendor), from the npm registry's
# `swagger-ui-dist` package at the pinned version. Its output is committed: building the crates needs no
# Node.js and serving needs no network. Run it by hand to upgrade, then review the diff.
set -euo pipefail
cd "$(dirname "$0")/.."
version="${1:-5.35.0}"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
(cd "$work" && npm pack --silent "swagger-ui-dist@$version" >/dev/null && tar xzf "swagger-ui-dist-$version.tgz")
out=techhub-axum/assets/docs/vendor
mkdir -p "$out"
for file in swagger-ui-bundle.js swagger-ui.css LICENSE NOTICE; do
  cp "$work/package/$file" "$out/$file"
done
# The source map reference points at a file not served.
sed -i '/^\/\/# sourceMappingURL=/d' "$out/swagger-ui-bundle.js"
sed -i '/sourceMappingURL=/d' "$out/swagger-ui.css"
echo "swagger-ui-dist $version" >"$out/VERSION"
echo "vendored swagger-ui-dist $version into $out"
