#!/usr/bin/env python3
"""Ratio tables tool/baseline from one anchors.sh results.tsv (one run: only those compare).

    ratios.py results.tsv [--tool dup] [--against "duplicity duplicity-noenc restic borg"]

Per corpus and step (full, incr, list, restore, restore1) and metric:
  wall   = min wall s over reps (the least disturbed rep, as the report's "min" column),
           and with several reps also the median wall s
  CPU    = user+sys s of each tool's fastest rep (as the report)
  RSS    = peak RSS, max over reps
  repo   = repository size after the step, median over reps (full and incr only)
Ratio < 1: the tool is faster / smaller than the baseline. A step that failed (rc != 0)
or whose restore did not verify is marked instead of given a ratio. A wall/CPU ratio gets
a dagger when, in the rep used, other processes took more CPU than half that rep's wall
time (on either side): the machine was busy then, so that ratio is less certain.
"""
import csv
import statistics
import sys

args = sys.argv[1:]
if not args:
    sys.exit(__doc__)
tsv = args.pop(0)
tool = "dup"
against = ["duplicity", "duplicity-noenc", "restic", "borg"]
while args:
    a = args.pop(0)
    if a == "--tool":
        tool = args.pop(0)
    elif a == "--against":
        against = args.pop(0).split()
    else:
        sys.exit("unknown argument %s" % a)

rows = list(csv.DictReader(open(tsv), delimiter="\t"))
groups = {}
for r in rows:
    groups.setdefault((r["size"], r["tool"], r["step"]), []).append(r)

STEPS = ["full", "incr", "list", "restore", "restore1"]


def metrics(g):
    best = min(g, key=lambda r: float(r["wall_s"] or 1e9))
    repo = [float(r["out_bytes"]) for r in g if r["out_bytes"]]
    bad = [r for r in g if r["rc"] != "0" or (r["check"] and r["check"] not in ("exact", "cmp ok")
                                                   and not r["check"].endswith(" lines"))]
    return {
        "wall": float(best["wall_s"]),
        "wallmed": statistics.median(float(r["wall_s"]) for r in g),
        "cpu": float(best["cpu_s"]),
        "rss": max(float(r["rss_kib"] or 0) for r in g) / 1024,
        "repo": statistics.median(repo) / 1048576 if repo else None,
        "bad": bad,
        "reps": len(g),
        "other": float(best.get("other_cpu_s") or 0),
    }


def dirty(m):
    """other processes used more CPU during the (fastest) rep than half its wall time"""
    return m["other"] > 0.5 * m["wall"]


def fmt_ratio(a, b):
    if a is None or b is None or b == 0:
        return "–"
    return "%.2f" % (a / b)


for size in dict.fromkeys(r["size"] for r in rows):
    present = [t for t in against if any(k[0] == size and k[1] == t for k in groups)]
    print()
    print("### corpus `%s`: %s / baseline (< 1 = %s better)" % (size, tool, tool))
    print()
    print("(† = contaminated: other processes used > 0.5 × wall CPU during the rep used, on either side)")
    print()
    print("| step | metric | %s | %s |" % (tool, " | ".join("÷ " + t for t in present)))
    print("| --- | --- | ---: | %s |" % " | ".join("---:" for _ in present))
    for step in STEPS:
        mine = groups.get((size, tool, step))
        if not mine:
            print("| %s | – | **missing** | %s |" % (step, " | ".join("" for _ in present)))
            continue
        m = metrics(mine)
        base = {t: metrics(groups[(size, t, step)]) for t in present if (size, t, step) in groups}
        units = {"wall": "%.2f s", "wallmed": "%.2f s", "cpu": "%.2f s", "rss": "%.0f MiB", "repo": "%.1f MiB"}
        names = {"wall": "wall (min)", "wallmed": "wall (median)", "cpu": "CPU", "rss": "peak RSS", "repo": "repo size"}
        for key in ("wall", "wallmed", "cpu", "rss", "repo"):
            if key == "repo" and step not in ("full", "incr"):
                continue
            if key == "wallmed" and m["reps"] < 2:
                continue
            val = units[key] % m[key] if m[key] is not None else "–"
            if m["bad"]:
                val += " **FAILED: %s**" % "; ".join(
                    "rep %s rc=%s %s" % (r["rep"], r["rc"], r["check"]) for r in m["bad"])
            cells = []
            for t in present:
                b = base.get(t)
                if b is None:
                    cells.append("–")
                elif b["bad"]:
                    cells.append("(%s failed)" % t)
                else:
                    r = fmt_ratio(m[key], b[key])
                    if key in ("wall", "cpu") and r != "–" and (dirty(m) or dirty(b)):
                        r += " †"
                    cells.append(r)
            print("| %s | %s | %s | %s |" % (step, names[key], val, " | ".join(cells)))
