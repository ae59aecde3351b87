#!/usr/bin/env bash
# End-to-end throughput on a 6-node loopback devnet, with the limits measured in the same run:
#   put and get of a ~1 GiB sample dataset vs `cp -r` of it on the same disk and vs the pack
#   pipeline alone (`put --store` into a local shard directory);
#   10,000 files of 4 KiB put and got back (files/s).
# Usage: scripts/devnet-bench.sh [MB] (default 1024). Prints one line per figure.
# NODE_ARGS="..." passes flags to each `granary-node init`.
# ROUNDS=N repeats pack, put and get N times, interleaved, and prints medians.
# SEALED=1 also waits for the nodes to seal (slow by design) and measures the get again.
set -euo pipefail
mb=${1:-1024}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/granary-target}/debug
work=$(mktemp -d)
cleanup() { "$bin/granary" devnet down --dir "$work/devnet" >/dev/null 2>&1 || true; rm -rf "$work"; }
trap cleanup EXIT
secs() { python3 -c 'import json,sys; print(json.loads(sys.argv[1])["seconds"])' "$1"; }
now() { date +%s.%N; }
# timed CMD...: runs CMD, prints its stdout, appends its CPU seconds (user + sys) to $work/cpu.
timed() {
  python3 - "$work/cpu" "$@" <<'PY'
import resource, subprocess, sys
p = subprocess.run(sys.argv[2:], stdout=subprocess.PIPE)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
open(sys.argv[1], "a").write(f"{r.ru_utime + r.ru_stime}\n")
sys.stdout.write(p.stdout.decode()); sys.exit(p.returncode)
PY
}
last_cpu() { tail -n 1 "$work/cpu"; }
# CPU seconds the devnet's node processes have used so far.
nodes_cpu() { python3 "$(dirname "$0")/devnet-nodes-cpu.py" "$work/devnet/devnet.toml"; }
"$bin/granary" demo --help >/dev/null
python3 - "$work/src" "$mb" <<'PY'
import os, sys, random
root, mb = sys.argv[1], int(sys.argv[2])
random.seed(7); total = 0; i = 0
while total < mb * 1_000_000:
    size = random.choice([4096, 65536, 1 << 20, 8 << 20])
    d = os.path.join(root, f"part-{i % 32:02}"); os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, f"f{i:06}"), "wb") as f: f.write(os.urandom(size))
    total += size; i += 1
PY
bytes=$(du -sb "$work/src" | cut -f1)
sync
t0=$(now); cp -r "$work/src" "$work/copy"; sync; t1=$(now)
cp_s=$(python3 -c "print($t1-$t0)")
# The copy stays until the end: deleting a GB of files right before the put would make the
# nodes' file creations slower for ~30 s on ext4 without a journal (it skips recently freed
# inodes), charging the cp baseline's clean-up to the put.
# NODE_ARGS: extra `granary-node init` flags, e.g. "--seal-idle-secs=3600 --seal-unit=16G" to
# measure without background sealing competing for the cores.
init_args=()
for a in ${NODE_ARGS:-}; do init_args+=("--init-arg=$a"); done
"$bin/granary" devnet up --no-auditor --nodes 6 --dir "$work/devnet" "${init_args[@]}" >/dev/null 2>&1
export GRANARY_CONFIG="$work/devnet/client.toml"
# Shards the devnet's nodes hold but have not sealed yet.
pending() {
  local n=0 d
  for d in "$work"/devnet/node-*/; do
    n=$((n + $("$bin/granary-node" status --json --limit 0 --dir "$d" |
      python3 -c 'import json,sys; print(json.load(sys.stdin)["pending_shards"])')))
  done
  echo "$n"
}
# Waits (up to 10 min) until the nodes have sealed everything and used under 0.05 core-s in a
# second: the previous round's sealing must not be charged to the next round.
settle() {
  local a b
  for _ in $(seq 600); do
    a=$(nodes_cpu); sleep 1; b=$(nodes_cpu)
    [ "$(pending)" = 0 ] && python3 -c "import sys; sys.exit(0 if $b - $a < 0.05 else 1)" && return
  done
}
# ROUNDS=N runs pack, put and get N times, interleaved, so that each ratio compares steps a few
# seconds apart; round r > 1 puts a hard-linked copy of the dataset under another path (so
# another dataset key: nothing is deduplicated against earlier rounds).
rounds=${ROUNDS:-1}
: >"$work/rounds"
for r in $(seq "$rounds"); do
  src="$work/src"
  if [ "$r" -gt 1 ]; then src="$work/src-$r"; cp -al "$work/src" "$src"; settle; fi
  sync
  local_put=$(timed "$bin/granary" put --json -q --store "$work/local-$r" "$src")
  pack_cpu=$(last_cpu)
  n0=$(nodes_cpu)
  put=$(timed "$bin/granary" put --json -q "$src")
  put_cpu=$(last_cpu); n1=$(nodes_cpu)
  cap=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["capability"])' "$put")
  get=$(timed "$bin/granary" get --json -q "$cap" "$work/out-$r")
  get_cpu=$(last_cpu); n2=$(nodes_cpu)
  echo "$(secs "$local_put") $(secs "$put") $(secs "$get") $pack_cpu $put_cpu $get_cpu $n0 $n1 $n2" >>"$work/rounds"
done
python3 - "$bytes" "$cp_s" "$work/rounds" <<'PY'
import os, statistics, sys
b, cp = int(sys.argv[1]), float(sys.argv[2])
rounds = [list(map(float, l.split())) for l in open(sys.argv[3])]
mbs = lambda s: b / s / 1e6
gb = b / 1e9
cores = os.cpu_count()
print(f"dataset {b/1e6:.0f} MB: cp -r + sync {mbs(cp):.0f} MB/s")
for i, (pack, put, get, pack_c, put_c, get_c, n0, n1, n2) in enumerate(rounds, 1):
    tag = f"round {i}: " if len(rounds) > 1 else ""
    print(f"{tag}pack pipeline alone {mbs(pack):.0f} MB/s")
    print(f"{tag}put {mbs(put):.0f} MB/s = {cp/put:.2f}x cp, {pack/put:.2f}x pack pipeline")
    print(f"{tag}get {mbs(get):.0f} MB/s = {cp/get:.2f}x cp, {pack/get:.2f}x pack pipeline")
    # CPU budget: core-seconds per GB of dataset, and the rate that many core-seconds allow
    # on this machine's cores if nothing else ran.
    for name, wall, client, nodes in [("pack alone", pack, pack_c, 0.0),
                                      ("put", put, put_c, n1 - n0), ("get", get, get_c, n2 - n1)]:
        per_gb = (client + nodes) / gb
        print(f"{tag}cpu {name}: client {client/gb:.2f} + nodes {nodes/gb:.2f} = {per_gb:.2f} core-s/GB; "
              f"{(client + nodes) / wall:.2f} of {cores} cores busy; "
              f"all {cores} cores at this cost: {cores / per_gb * 1e3:.0f} MB/s")
if len(rounds) > 1:
    med = lambda xs: statistics.median(xs)
    put_r = [r[0] / r[1] for r in rounds]
    get_r = [r[0] / r[2] for r in rounds]
    print(f"median of {len(rounds)} rounds: pack {mbs(med([r[0] for r in rounds])):.0f} MB/s, "
          f"put {mbs(med([r[1] for r in rounds])):.0f} MB/s, get {mbs(med([r[2] for r in rounds])):.0f} MB/s; "
          f"put/pack {med(put_r):.2f}x (min {min(put_r):.2f}), get/pack {med(get_r):.2f}x (min {min(get_r):.2f})")
PY
if [ "${SEALED:-0}" = 1 ]; then
  # Reads once the nodes have sealed and dropped their plain copies: every range is unsealed.
  "$bin/granary" verify --wait 1800 --openings 0 "$cap" >/dev/null 2>&1 || true
  sget1=$("$bin/granary" get --json -q "$cap" "$work/out-sealed")
  python3 -c "print(f'get from sealed replicas {$bytes/$(secs "$sget1")/1e6:.0f} MB/s')"
fi
mkdir -p "$work/small"
python3 -c "
import os
for i in range(10000):
    d = '$work/small/d%02d' % (i % 100); os.makedirs(d, exist_ok=True)
    open(os.path.join(d, 'f%05d' % i), 'wb').write(os.urandom(4096))"
sput=$("$bin/granary" put --json -q "$work/small")
scap=$(python3 -c 'import json,sys; print(json.loads(sys.argv[1])["capability"])' "$sput")
sget=$("$bin/granary" get --json -q "$scap" "$work/small-out")
python3 -c "print(f'10,000 x 4 KiB files: put {10000/$(secs "$sput"):.0f} files/s, get {10000/$(secs "$sget"):.0f} files/s')"
