#!/usr/bin/env bash
# One put of DIR to a fresh 6-node loopback devnet, with the CPU it cost: the put's rate, the
# client's user + system seconds, and the six node processes' CPU seconds over their whole life
# (start-up included). Caches are dropped first when running as root.
# Usage: scripts/devnet-put-cpu.sh DIR
#   PERF=1 also records the nodes with `perf record --call-graph dwarf` into $work/perf.data
#   (kept); NODE_ENV="VAR=value" sets environment variables for the nodes; PUT_ARGS="..." adds
#   flags to the put (e.g. "--shard-size 1M").
set -euo pipefail
src=${1:?usage: $0 DIR}
bin=${CARGO_TARGET_DIR:-$HOME/.cache/granary-target}/debug
work=$(mktemp -d)
cleanup() {
  "$bin/granary" devnet down --dir "$work/devnet" >/dev/null 2>&1 || true
  [ "${PERF:-0}" = 1 ] || rm -rf "$work"
}
trap cleanup EXIT
env ${NODE_ENV:-} "$bin/granary" devnet up --no-auditor --nodes 6 --dir "$work/devnet" >/dev/null 2>&1
export GRANARY_CONFIG="$work/devnet/client.toml"
pids=$(grep -oP 'pid = \K\d+' "$work/devnet/devnet.toml" | paste -sd,)
if [ "$(id -u)" = 0 ]; then sync; echo 3 > /proc/sys/vm/drop_caches; fi
if [ "${PERF:-0}" = 1 ]; then
  perf record --call-graph dwarf,32768 -e cpu-clock -F 299 -p "$pids" -o "$work/perf.data" \
    >/dev/null 2>&1 &
  perf_pid=$!
fi
out=$(python3 - "$bin/granary" "$src" ${PUT_ARGS:-} <<'PY'
import json, resource, subprocess, sys
p = subprocess.run([sys.argv[1], "put", "--json", "-q", *sys.argv[2:]], stdout=subprocess.PIPE, check=True)
r = resource.getrusage(resource.RUSAGE_CHILDREN)
d = json.loads(p.stdout)
print(f"put {d['bytes'] / d['seconds'] / 1e6:.0f} MB/s; client CPU {r.ru_utime + r.ru_stime:.2f} s")
PY
)
if [ "${PERF:-0}" = 1 ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
nodes=$(python3 "$(dirname "$0")/devnet-nodes-cpu.py" "$work/devnet/devnet.toml")
echo "$out; nodes CPU $nodes s"
[ "${PERF:-0}" = 1 ] && echo "perf data: $work/perf.data"
exit 0
