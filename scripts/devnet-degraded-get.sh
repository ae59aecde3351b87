#!/usr/bin/env bash
# Degraded reads: a 6-node loopback devnet, a ~200 MB dataset put, two nodes killed with
# SIGKILL, then the dataset got back ROUNDS times (default 3), each by a fresh client process, so
# each pays anew for finding the killed nodes. Prints the seconds of each get.
# Usage: scripts/devnet-degraded-get.sh
set -euo pipefail
bin=${CARGO_TARGET_DIR:-$HOME/.cache/granary-target}/debug
work=$(mktemp -d)
cleanup() { "$bin/granary" devnet down --dir "$work/devnet" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
"$bin/granary" devnet up --no-auditor --nodes 6 --dir "$work/devnet" >/dev/null 2>&1
export GRANARY_CONFIG="$work/devnet/client.toml"
python3 - "$work/src" <<'PY'
import os, random, sys
root = sys.argv[1]; random.seed(3); total = 0; i = 0
while total < 200_000_000:
    size = random.choice([4096, 65536, 1 << 20, 4 << 20])
    d = os.path.join(root, f"d{i % 16:02}"); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:05}"), "wb") as f: f.write(os.urandom(size))
    total += size; i += 1
PY
cap=$("$bin/granary" put --json -q "$work/src" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["capability"])')
for pid in $(grep -oP 'pid = \K\d+' "$work/devnet/devnet.toml" | head -2); do kill -9 "$pid"; done
for _ in $(seq "${ROUNDS:-3}"); do
  rm -rf "$work/out"
  "$bin/granary" get --json -q "$cap" "$work/out" |
    python3 -c 'import json,sys; d=json.load(sys.stdin); print("get with 2 of 6 nodes killed: %.2f s" % d["seconds"])'
done
