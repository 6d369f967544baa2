#!/usr/bin/env python3
"""Merges hyperfine exports of the same commands, run in rounds, into one export.

Usage: merge_rounds.py OUT_JSON ROUND_JSON...
Each command's times (and exit codes, user and system times) are concatenated in round order,
and its mean, stddev, median, min and max recomputed over all of them, so report.py reads the
merged file as if hyperfine had run every time at once.
"""
import json
import statistics
import sys

out_path, rounds = sys.argv[1], sys.argv[2:]
merged = {}
order = []
for path in rounds:
    with open(path) as f:
        for r in json.load(f)["results"]:
            if r["command"] not in merged:
                order.append(r["command"])
                merged[r["command"]] = {"command": r["command"], "times": [], "exit_codes": [],
                                        "user": [], "system": []}
            m = merged[r["command"]]
            m["times"] += r["times"]
            m["exit_codes"] += r.get("exit_codes") or [0] * len(r["times"])
            # hyperfine gives mean user/system time per round: weight by its runs.
            m["user"] += [r.get("user", 0)] * len(r["times"])
            m["system"] += [r.get("system", 0)] * len(r["times"])

results = []
for name in order:
    m = merged[name]
    t = m["times"]
    results.append({
        "command": name,
        "mean": statistics.fmean(t),
        "stddev": statistics.stdev(t) if len(t) > 1 else 0.0,
        "median": statistics.median(t),
        "user": statistics.fmean(m["user"]),
        "system": statistics.fmean(m["system"]),
        "min": min(t),
        "max": max(t),
        "times": t,
        "exit_codes": m["exit_codes"],
    })
with open(out_path, "w") as f:
    json.dump({"results": results, "rounds": len(rounds)}, f, indent=2)
