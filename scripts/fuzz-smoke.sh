#!/usr/bin/env bash
# A short libFuzzer run of the wire-protocol frame decoder (fuzz/fuzz_targets/frame_decoder.rs):
# never panics, re-encodes what it decodes. Needs a nightly toolchain and cargo-fuzz; installs
# cargo-fuzz if missing; says SKIPPED (and succeeds) where neither can be had. A crash fails.
# Usage: scripts/fuzz-smoke.sh [SECONDS] (default 30).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${1:-30}
if ! rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
  echo "fuzz: SKIPPED (no nightly toolchain; cargo-fuzz needs one)"
  exit 0
fi
if ! cargo fuzz --version >/dev/null 2>&1; then
  if ! cargo install cargo-fuzz --locked >/dev/null 2>&1; then
    echo "fuzz: SKIPPED (could not install cargo-fuzz)"
    exit 0
  fi
fi
export CARGO_TARGET_DIR="${FUZZ_TARGET_DIR:-$HOME/.cache/granary-target-fuzz}"
corpus=$(mktemp -d)
log=$(mktemp)
trap 'rm -rf "$corpus" "$log"' EXIT
rc=0
cargo +nightly fuzz run frame_decoder --fuzz-dir fuzz "$corpus" -- -max_total_time="$secs" \
  >"$log" 2>&1 || rc=$?
# Show the summary, not libFuzzer's chatter; on failure, the whole report.
if [ "$rc" -ne 0 ]; then cat "$log"; else grep -E '^(Done|INFO: Seed)' "$log" || true; fi
echo "fuzz: frame_decoder for ${secs}s: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED ($rc)")"
exit "$rc"
