#!/usr/bin/env bash
# Installs the system packages tend needs to build and test, or says how to.
# Usage: scripts/deps.sh PACKAGE...
set -euo pipefail

missing=()
for pkg in "$@"; do
  if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$pkg")
  fi
done
if ! command -v cargo >/dev/null 2>&1; then
  echo "tend: cargo is not installed; install Rust with rustup (https://rustup.rs) first" >&2
  exit 1
fi
[ ${#missing[@]} -eq 0 ] && exit 0

if [ "$(id -u)" -eq 0 ]; then
  echo "tend: installing ${missing[*]}" >&2
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
else
  echo "tend: missing system packages: ${missing[*]}" >&2
  echo "tend: run: sudo apt-get install -y --no-install-recommends ${missing[*]}" >&2
  exit 1
fi
