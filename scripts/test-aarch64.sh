#!/usr/bin/env bash
# Runs the proof engine's tests on aarch64 under qemu user-mode emulation, so the NEON kernels
# (which this x86 machine cannot run natively) go through the same proptests against the scalar
# reference as the AVX2/AVX-512 ones. Installs qemu-user and the aarch64 cross gcc from apt and the
# rustup target if missing; says SKIPPED (and succeeds) only where they cannot be had. A failing
# test fails. Usage: scripts/test-aarch64.sh [extra cargo test args]
set -euo pipefail
cd "$(dirname "$0")/.."
target=aarch64-unknown-linux-gnu
missing=()
for pkg in qemu-user gcc-aarch64-linux-gnu libc6-dev-arm64-cross; do
  dpkg -s "$pkg" >/dev/null 2>&1 || missing+=("$pkg")
done
if ((${#missing[@]})); then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  if ! { $SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive \
      $SUDO apt-get install -y -qq "${missing[@]}" >/dev/null; }; then
    echo "aarch64: SKIPPED (could not install ${missing[*]})"
    exit 0
  fi
fi
if ! rustup target list --installed 2>/dev/null | grep -qx "$target"; then
  if ! rustup target add "$target" >/dev/null 2>&1; then
    echo "aarch64: SKIPPED (could not add the rustup target $target)"
    exit 0
  fi
fi
export CARGO_TARGET_DIR="${AARCH64_TARGET_DIR:-$HOME/.cache/granary-target-aarch64}"
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_LINKER=aarch64-linux-gnu-gcc
export CARGO_TARGET_AARCH64_UNKNOWN_LINUX_GNU_RUNNER="qemu-aarch64 -L /usr/aarch64-linux-gnu"
export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc
cargo test -q -p granary-proofs --target "$target" "$@"
echo "aarch64: granary-proofs tests (NEON kernels) under qemu: ok"
