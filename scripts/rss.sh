#!/usr/bin/env bash
# Peak RSS of `granary put` and `granary get` for a dataset of N GiB (default 10): a sparse
# N GiB file plus 1,000 small files. By default into a local shard store (needs ~1.5·N GiB of
# free disk in $TMPDIR); with DEVNET=1 to a 6-node loopback devnet with default settings
# (background sealing on), also printing each node's peak RSS (VmHWM) after the put and the get
# (needs ~2.5·N GiB free: the nodes' shards and the restored copy).
set -euo pipefail
gib=${1:-10}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/granary-target}/debug
work=$(mktemp -d)
cleanup() {
  [ "${DEVNET:-0}" = 1 ] && "$bin/granary" devnet down --dir "$work/devnet" >/dev/null 2>&1
  rm -rf "$work"
}
trap cleanup EXIT
mkdir -p "$work/src"
truncate -s "${gib}G" "$work/src/big.bin"
for i in $(seq 1 1000); do head -c 4096 /dev/urandom > "$work/src/small-$i"; done
# The nodes' peak RSS so far, in MiB, one per node.
nodes_hwm() {
  python3 - "$work/devnet/devnet.toml" <<'PY'
import re, sys
pids = re.findall(r"pid = (\d+)", open(sys.argv[1]).read())
out = []
for p in pids:
    for line in open(f"/proc/{p}/status"):
        if line.startswith("VmHWM:"):
            out.append(str(int(line.split()[1]) // 1024))
print(" ".join(out))
PY
}
if [ "${DEVNET:-0}" = 1 ]; then
  "$bin/granary" devnet up --no-auditor --nodes 6 --dir "$work/devnet" >/dev/null 2>&1
  export GRANARY_CONFIG="$work/devnet/client.toml"
  store=()
else
  store=(--store "$work/store")
fi
put=$("$bin/granary" put --json -q "${store[@]}" "$work/src")
[ "${DEVNET:-0}" = 1 ] && echo "nodes' peak RSS after the put (MiB): $(nodes_hwm)"
cap=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["capability"])' "$put")
get=$("$bin/granary" get --json -q "$cap" "$work/out" "${store[@]}")
[ "${DEVNET:-0}" = 1 ] && echo "nodes' peak RSS after the get (MiB): $(nodes_hwm)"
python3 - "$put" "$get" "$gib" <<'PY'
import json, sys
p, g, gib = json.loads(sys.argv[1]), json.loads(sys.argv[2]), sys.argv[3]
print(f"{gib} GiB: put {p['bytes']/p['seconds']/1e6:.0f} MB/s, peak RSS {p['peak_rss_kib']//1024} MiB; "
      f"get {g['bytes']/g['seconds']/1e6:.0f} MB/s, peak RSS {g['peak_rss_kib']//1024} MiB")
PY
