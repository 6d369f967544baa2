#!/usr/bin/env python3
"""Summarises the hyperfine exports and extra figures of integration/bench.sh.

Usage: report.py OUT_DIR RESULTS_JSON
OUT_DIR holds hyperfine exports (<section>.json, command names set with -n) and extra.json
(name -> number, e.g. peak RSS in KiB or concurrency results). Prints one table per section with
medians in ms and the ratio to each peer, then the targets with PASS/FAIL, and writes RESULTS_JSON.
"""
import json
import os
import sys

out_dir, results_path = sys.argv[1], sys.argv[2]

sections = {}
for name in sorted(os.listdir(out_dir)):
    if not name.endswith(".json") or name == "extra.json":
        continue
    with open(os.path.join(out_dir, name)) as f:
        data = json.load(f)
    rows = {}
    for r in data["results"]:
        rows[r["command"]] = {
            "median_ms": r["median"] * 1000,
            "mean_ms": r["mean"] * 1000,
            "stddev_ms": (r.get("stddev") or 0) * 1000,
            "min_ms": r["min"] * 1000,
            "max_ms": r["max"] * 1000,
            "runs": len(r["times"]),
            "failed_runs": sum(1 for c in (r.get("exit_codes") or []) if c != 0),
        }
    sections[name[:-5]] = rows

extra = {}
if os.path.exists(os.path.join(out_dir, "extra.json")):
    with open(os.path.join(out_dir, "extra.json")) as f:
        extra = json.load(f)


def median(section, cmd):
    return sections.get(section, {}).get(cmd, {}).get("median_ms")


for section, rows in sections.items():
    print(f"\n== {section} (median ms; ratio = row / column) ==")
    names = list(rows)
    base = [n for n in names if n.startswith("rcrun")]
    peers = [n for n in names if not n.startswith("rcrun")]
    width = max(len(n) for n in names)
    head = f"{'command':<{width}} {'median':>9} {'min':>9} {'runs':>4}"
    for p in peers:
        head += f" {'/' + p[:14]:>15}"
    print(head)
    for n in names:
        r = rows[n]
        line = f"{n:<{width}} {r['median_ms']:9.1f} {r['min_ms']:9.1f} {r['runs']:4d}"
        if r["failed_runs"]:
            line += f" ({r['failed_runs']} failed)"
        if n in base:
            for p in peers:
                line += f" {r['median_ms'] / rows[p]['median_ms']:15.2f}"
        print(line)

if extra:
    print("\n== other figures ==")
    for k, v in extra.items():
        print(f"{k}: {v}")

# Targets from the performance issue: (description, value, limit).
targets = []


def ratio(sa, a, sb, b, limit, what):
    x, y = median(sa, a), median(sb, b)
    if x is not None and y is not None:
        targets.append((what, round(x / y, 3), limit, "ratio"))


ratio("start-rootless", "rcrun", "start-rootless", "crun (no seccomp)", 0.5,
      "warm rootless start / crun rootless no seccomp")
ratio("start-rootless", "rcrun", "start-rootless", "bwrap", 1.5, "warm rootless start / bwrap")
ratio("start-rootless", "rcrun", "start-rootless", "C floor", 2.5,
      "warm rootless start / hand-written C floor (clone, 1-id map, overlay of 3 lowers, pivot_root, exec)")
ratio("start-rootless-single", "rcrun (single id)", "start-rootless-single", "crun (no seccomp)", 0.5,
      "warm rootless start, single-id map like crun's bundle / crun rootless no seccomp")
ratio("start-rootless-single", "rcrun (single id)", "start-rootless-single", "bwrap", 1.5,
      "warm rootless start, single-id map / bwrap")
ratio("start-root", "rcrun", "start-root", "crun (no seccomp)", 0.5, "warm root start / crun root no seccomp")
ratio("cold-plain", "rcrun run (cold store)", "cold-plain", "tar -xf x3", 1.0,
      "cold 300 MB plain / sequential tar -xf into 3 dirs")
ratio("cold-plain-fresh", "rcrun run (cold store)", "cold-plain-fresh", "tar -xf x3", 1.0,
      "cold 300 MB plain, nothing deleted before the runs / tar -xf into 3 dirs")
ratio("cold-gzip", "rcrun run gzip (cold store)", "cold-gzip", "tar -xzf x3", 0.7,
      "cold 300 MB gzip / tar -xzf")
ratio("cold-zstd", "rcrun run zstd (cold store)", "cold-zstd", "tar --zstd -xf x3", 1.0,
      "cold 300 MB zstd / tar --zstd -xf (no target given; 1.0 shown)")
ratio("unpack", "rcrun unpack (cold store)", "unpack", "tar -xf x3", 1.0,
      "issue A: cold rcrun unpack / tar -xf into 3 dirs")
ratio("scale", "rcrun 200 layers", "scale", "rcrun 1 layer", 2.0, "200-layer start / 1-layer start")
for key, limit in (("rss_kib_cold_300mb", 32 * 1024), ("rss_kib_warm", 8 * 1024),
                   ("rss_kib_unpack_cold_300mb", 32 * 1024)):
    if key in extra:
        targets.append((key, extra[key], limit, "KiB"))
if "concurrent_20_ok" in extra:
    targets.append(("20 concurrent cold runs succeeded", extra["concurrent_20_ok"], 20, "min"))
if "concurrent_20_extractions" in extra and "concurrent_20_layers" in extra:
    targets.append(("extractions per layer (20 concurrent)",
                    extra["concurrent_20_extractions"] / max(1, extra["concurrent_20_layers"]), 1.0, "eq"))

print("\n== targets ==")
report_targets = []
for what, value, limit, kind in targets:
    if kind == "min":
        ok = value >= limit
    elif kind == "eq":
        ok = value == limit
    elif kind == "KiB":
        ok = value < limit
    else:
        ok = value <= limit
    report_targets.append({"target": what, "value": value, "limit": limit, "pass": ok})
    print(f"{'PASS' if ok else 'FAIL'}  {what}: {value} (limit {limit})")

with open(results_path, "w") as f:
    json.dump({"sections": sections, "extra": extra, "targets": report_targets}, f, indent=2)
print(f"\nwrote {results_path}")
