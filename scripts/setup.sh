#!/usr/bin/env bash
# Installs what building Granary needs on a fresh Debian machine with Rust: libclang (bindgen,
# for RocksDB's bindings) and a C++ compiler. Idempotent; quiet when everything is there.
set -euo pipefail
missing=()
for pkg in libclang-dev g++ make; do
    dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
    echo "setup: installing ${missing[*]}" >&2
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null
fi
command -v cargo-nextest >/dev/null 2>&1 || cargo install --locked cargo-nextest
