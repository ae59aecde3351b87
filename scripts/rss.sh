#!/usr/bin/env bash
# Peak RSS of `granary put` and `granary get` for a dataset of N GiB (default 10) in a local
# shard store: a sparse N GiB file plus 1,000 small files. Needs ~1.5·N GiB of free disk in $TMPDIR.
set -euo pipefail
gib=${1:-10}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/granary-target}/debug/granary
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
mkdir -p "$work/src"
truncate -s "${gib}G" "$work/src/big.bin"
for i in $(seq 1 1000); do head -c 4096 /dev/urandom > "$work/src/small-$i"; done
put=$("$bin" put --json -q --store "$work/store" "$work/src")
cap=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["capability"])' "$put")
get=$("$bin" get --json -q "$cap" "$work/out" --store "$work/store")
python3 - "$put" "$get" "$gib" <<'PY'
import json, sys
p, g, gib = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"{gib} GiB: put {p['bytes']/p['seconds']/1e6:.0f} MB/s, peak RSS {p['peak_rss_kib']//1024} MiB; "
      f"get {g['bytes']/g['seconds']/1e6:.0f} MB/s, peak RSS {g['peak_rss_kib']//1024} MiB")
PY
