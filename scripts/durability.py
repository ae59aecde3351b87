#!/usr/bin/env python3
"""Durability of erasure-coded segments under independent node failures and periodic repair.

A segment of k data + m parity shards on k + m distinct nodes is lost when more than m of those
nodes fail within one repair window T (the time to notice a lost shard and rebuild it: an
auditor epoch plus `granary repair`). Nodes fail independently at an annual failure rate AFR,
so a node fails within T with probability q = 1 - (1 - AFR)^(T / 1 year).

    P(segment lost in one window) = sum_{j=m+1}^{k+m} C(k+m, j) q^j (1 - q)^(k+m-j)
    P(segment lost in a year)    ~= (1 year / T) * P(window)        (small probabilities)
    P(dataset of S segments loses data in a year) ~= 1 - (1 - P_year)^S

Usage: scripts/durability.py  (prints the table in docs/architecture.md)
"""
from math import comb

YEAR_H = 365 * 24


def p_window(k, m, q):
    n = k + m
    return sum(comb(n, j) * q**j * (1 - q) ** (n - j) for j in range(m + 1, n + 1))


def nines(p):
    if p <= 0:
        return "> 15"
    from math import log10
    return f"{-log10(p):.1f}"


print("| code | node AFR | repair window | P(segment lost / year) | nines | 1 TB dataset (4 MiB segments) lost / year |")
print("|---|---|---|---|---|---|")
for (k, m) in [(4, 2), (10, 4)]:
    for afr in [0.05, 0.5]:
        for hours in [24, 24 * 7, 24 * 30]:
            q = 1 - (1 - afr) ** (hours / YEAR_H)
            p_year = min(1.0, p_window(k, m, q) * YEAR_H / hours)
            segments = 10**12 / (4 * 2**20)
            p_ds = 1 - (1 - p_year) ** segments
            print(f"| {k}+{m} | {afr:.0%} | {hours // 24} d | {p_year:.1e} | {nines(p_year)} | {p_ds:.1e} |")
