#!/usr/bin/env python3
"""CPU seconds (user + system) the node processes of a devnet have used so far.

Usage: scripts/devnet-nodes-cpu.py DEVNET_DIR/devnet.toml
Nodes that are gone count 0.
"""
import os
import re
import sys

tick = os.sysconf("SC_CLK_TCK")
total = 0
for pid in re.findall(r"pid = (\d+)", open(sys.argv[1]).read()):
    try:
        f = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    except OSError:
        continue
    total += int(f[11]) + int(f[12])
print(f"{total / tick:.2f}")
