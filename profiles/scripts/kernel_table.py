#!/usr/bin/env python3
"""Per-kernel table from an Nsight Compute CSV (`ncu --import X.ncu-rep --csv --page raw --metrics ...`,
as written by profiles/scripts/ncu.sh): launches, total time, time share, mean time, achieved DRAM
bandwidth (GB/s and % of peak), SM throughput %, achieved occupancy %, tensor-pipe %, registers/thread.

Kernels are grouped by name (template arguments stripped; cuBLASLt kernels keep their name).
Usage: kernel_table.py FILE.csv [--json]   (stdlib only)
"""
import csv
import json
import re
import sys
from collections import OrderedDict

COLS = {
    "time": "gpu__time_duration.sum",
    "dram_bps": "dram__bytes.sum.per_second",
    "dram_pct": "dram__throughput.avg.pct_of_peak_sustained_elapsed",
    "sm_pct": "sm__throughput.avg.pct_of_peak_sustained_elapsed",
    "occ_pct": "sm__warps_active.avg.pct_of_peak_sustained_active",
    "regs": "launch__registers_per_thread",
    "tensor_pct": "sm__pipe_tensor_op_hmma_cycles_active.avg.pct_of_peak_sustained_active",
}
# Units ncu may print in the second header row, to seconds / bytes per second.
TIME = {"ns": 1e-9, "nsecond": 1e-9, "us": 1e-6, "usecond": 1e-6, "ms": 1e-3, "msecond": 1e-3, "s": 1.0, "second": 1.0}
RATE = {"byte/s": 1.0, "B/s": 1.0, "Kbyte/s": 1e3, "Mbyte/s": 1e6, "Gbyte/s": 1e9, "Tbyte/s": 1e12,
        "KB/s": 1e3, "MB/s": 1e6, "GB/s": 1e9, "TB/s": 1e12}


def num(s):
    try:
        return float(str(s).replace(",", ""))
    except ValueError:
        return None


def short(name: str) -> str:
    name = re.sub(r"<.*>", "", name)
    name = re.sub(r"\(.*\)", "", name)
    return name.strip() or "?"


def read(path):
    with open(path, newline="") as f:
        lines = [l for l in f if not l.startswith("==")]  # ncu's own messages
    rows = list(csv.reader(lines))
    header = rows[0]
    units = rows[1] if len(rows) > 1 and not num(rows[1][0] if rows[1] else "") and "Kernel Name" in header else None
    body = rows[2:] if units else rows[1:]
    idx = {c: i for i, c in enumerate(header)}
    name_col = idx.get("Kernel Name", idx.get("Function Name"))
    if name_col is None:
        raise SystemExit(f"{path}: no 'Kernel Name' column (export with --page raw --csv)")
    out = []
    for r in body:
        if len(r) < len(header):
            continue
        rec = {"name": short(r[name_col])}
        for key, col in COLS.items():
            v = num(r[idx[col]]) if col in idx else None
            if v is not None and units:
                u = units[idx[col]].strip()
                if key == "time":
                    v *= TIME.get(u, 1e-9)
                elif key == "dram_bps":
                    v *= RATE.get(u, 1.0)
            elif v is not None and key == "time":
                v *= 1e-9  # ncu's default unit for gpu__time_duration is ns
            rec[key] = v
        out.append(rec)
    return out


def table(recs):
    groups = OrderedDict()
    for r in recs:
        groups.setdefault(r["name"], []).append(r)
    total = sum(r["time"] or 0 for r in recs) or 1.0
    rows = []
    for name, rs in groups.items():
        t = sum(r["time"] or 0 for r in rs)

        def wavg(k):
            vals = [(r[k], r["time"] or 0) for r in rs if r.get(k) is not None]
            w = sum(x[1] for x in vals)
            return sum(v * tw for v, tw in vals) / w if w else None

        rows.append({"kernel": name, "launches": len(rs), "total_ms": t * 1e3, "share_pct": 100 * t / total,
                     "mean_us": t / len(rs) * 1e6, "dram_gbps": (wavg("dram_bps") or 0) / 1e9 if wavg("dram_bps") is not None else None,
                     "dram_pct": wavg("dram_pct"), "sm_pct": wavg("sm_pct"), "occupancy_pct": wavg("occ_pct"),
                     "tensor_pct": wavg("tensor_pct"), "regs": max((r["regs"] or 0) for r in rs) or None})
    rows.sort(key=lambda r: -r["total_ms"])
    return rows, total


def main():
    if len(sys.argv) < 2:
        raise SystemExit(__doc__)
    rows, total = table(read(sys.argv[1]))
    if "--json" in sys.argv:
        for r in rows:
            print(json.dumps(r))
        return
    f = lambda v, p=1: "-" if v is None else f"{v:.{p}f}"
    print(f"{'kernel':<48} {'n':>5} {'ms':>9} {'share%':>7} {'mean us':>9} {'DRAM GB/s':>9} {'DRAM%':>6} {'SM%':>6} {'occ%':>6} {'TC%':>6} {'regs':>5}")
    for r in rows:
        print(f"{r['kernel'][:48]:<48} {r['launches']:>5} {r['total_ms']:>9.3f} {r['share_pct']:>7.1f} {r['mean_us']:>9.2f} "
              f"{f(r['dram_gbps'], 0):>9} {f(r['dram_pct']):>6} {f(r['sm_pct']):>6} {f(r['occupancy_pct']):>6} {f(r['tensor_pct']):>6} {f(r['regs'], 0):>5}")
    print(f"# total kernel time {total * 1e3:.3f} ms over {sum(r['launches'] for r in rows)} launches")


if __name__ == "__main__":
    main()
