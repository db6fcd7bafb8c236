#!/usr/bin/env bash
# The desktop app (examples/desktop, its own Cargo workspace): formatting, lints and every test, the one
# that runs the real app under Xvfb included. Installs the Debian packages it needs when they are missing
# (as root, or with sudo). The end-to-end check's screenshot is kept at ./desktop-screenshot.png unless
# TECHHUB_DESKTOP_SCREENSHOT says otherwise.
# Extra arguments go to the cargo runs (for example --locked).
set -euo pipefail
cd "$(dirname "$0")/.."
root="$(pwd)"

packages=(libwebkit2gtk-4.1-dev libgtk-3-dev librsvg2-dev pkg-config fonts-dejavu-core xvfb imagemagick python3-xlib)
missing=()
for package in "${packages[@]}"; do
  dpkg-query -W -f='${Status}' "${package}" 2>/dev/null | grep -q "install ok installed" || missing+=("${package}")
done
if ((${#missing[@]})); then
  echo "== installing ${missing[*]}"
  sudo=""
  if [ "$(id -u)" != 0 ]; then sudo="sudo"; fi
  ${sudo} apt-get update -qq
  # With the recommended packages (Mesa's drivers among them): WebKitGTK is tested rendering that way.
  ${sudo} env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
fi

# Shared with the root workspace: the crates both lock at the same versions are compiled once.
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-${root}/target}"
export TECHHUB_DESKTOP_SCREENSHOT="${TECHHUB_DESKTOP_SCREENSHOT:-${root}/desktop-screenshot.png}"
cd examples/desktop
echo "== desktop: cargo fmt"
cargo fmt --all -- --check
echo "== desktop: cargo clippy"
cargo clippy --all-targets "$@" -- -D warnings
echo "== desktop: cargo test"
cargo test "$@"
