"""The benchmark's table (Markdown, pasted into docs/performance.md as is) and the issue's targets."""

from __future__ import annotations

from typing import Any

# (workload, peer, minimum of parallelrun's items/s divided by the peer's), from issue 5
RATIO_TARGETS = [("W1", "pool", 0.5), ("W1", "ray_data", 5.0), ("W2", "pool", 0.9), ("W2", "ray_data", 2.5),
                 ("W3 csv", "pool", 0.9), ("W3 csv", "ray_data", 3.0),
                 ("W3 parquet", "pool", 0.9), ("W3 parquet", "ray_data", 3.0)]
# (workload, how many times faster than Ray Data parallelrun's Ray backend should be), from issue 14
RAY_TARGETS = [("W1", 5.0), ("W2", 1.5), ("W3 csv", 2.0), ("W3 parquet", 2.0)]


def _compared(results: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """W1, W2, 'W3 csv', 'W3 parquet' -> their side-by-side summaries."""
    w = results["workloads"]
    out = {k: w[k] for k in ("W1", "W2") if k in w}
    for kind, v in w.get("W3", {}).items():
        out[f"W3 {kind}"] = v
    return out


def _row(summary: dict[str, Any], peer: str) -> dict[str, Any] | None:
    return next((r for r in summary["rows"] if r["peer"] == peer), None)


def evaluate(results: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target of issue 5 that this run measured: what was asked, what was measured, met or not."""
    out: list[dict[str, Any]] = []
    cmp = _compared(results)
    for wl, peer, want in RATIO_TARGETS:
        row = _row(cmp[wl], peer) if wl in cmp else None
        if row is None or "parallelrun_ratio" not in row:
            continue
        got = row["parallelrun_ratio"]
        out.append({"target": f"{wl}: parallelrun >= {want:g}x {peer}", "measured": f"{got:.2f}x", "met": got >= want})
    for wl, want in RAY_TARGETS:
        if wl not in cmp:
            continue
        ray_b, ray_d, local = (_row(cmp[wl], p) for p in ("parallelrun_ray", "ray_data", "parallelrun"))
        if not (ray_b and ray_b.get("median_seconds")):
            continue
        if ray_d and ray_d.get("median_seconds"):
            got = ray_d["median_seconds"] / ray_b["median_seconds"]
            out.append({"target": f"{wl}: Ray backend >= {want:g}x Ray Data", "measured": f"{got:.2f}x",
                        "met": got >= want})
        if local and local.get("median_seconds"):
            got = local["median_seconds"] / ray_b["median_seconds"]
            out.append({"target": f"{wl}: Ray backend >= 0.8x the local executor", "measured": f"{got:.2f}x",
                        "met": got >= 0.8})
    w4 = results["workloads"].get("W4")
    if w4:
        sizes = sorted(int(n) for n in w4["median"])
        large = w4["median"][str(sizes[-1])]
        out.append({"target": f"W4: >= 200,000 files/s planned ({sizes[-1]:,} files)",
                    "measured": f"{large['files_per_second']:,.0f}/s", "met": large["files_per_second"] >= 200_000})
        out.append({"target": f"W4: driver peak RSS <= 150 MB ({sizes[-1]:,} files)",
                    "measured": f"{large['driver_peak_rss_mb']:.0f} MB", "met": large["driver_peak_rss_mb"] <= 150})
        out.append({"target": f"W4: RSS growth {sizes[0]:,} -> {sizes[-1]:,} files < 1.5x",
                    "measured": f"{w4['rss_growth']:.2f}x", "met": w4["rss_growth"] < 1.5})
    w5 = results["workloads"].get("W5")
    if w5:
        got = w5["median_first_commit_s"]
        out.append({"target": "W5: first committed result <= 1 s", "measured": f"{got:.2f} s", "met": got <= 1.0})
    w6 = results["workloads"].get("W6")
    if w6:
        twice = w6["max_batches_run_twice"]
        workers = w6["runs"][0]["workers"]
        out.append({"target": f"W6: mini-batches run twice <= workers ({workers})", "measured": str(twice),
                    "met": twice <= workers})
        dup = max(r["duplicate_rows"] + r["missing_rows"] for r in w6["runs"])
        out.append({"target": "W6: no row twice or missing in the output", "measured": f"{dup} bad rows",
                    "met": dup == 0})
    out += _w7_targets(results["workloads"].get("W7"))
    return out


def _w7_targets(w7: dict[str, Any] | None) -> list[dict[str, Any]]:
    """Issue 9's targets for W7, for the one-file output (and the dataset layout beside it)."""
    if not w7 or "parallelrun" not in w7["median"]:
        return []
    out = []
    for key, peer, want in (("ratio_vs_pool", "pool", 0.9), ("ratio_vs_ray_data", "ray_data", 3.0),
                            ("dataset_ratio_vs_pool", "pool (dataset layout)", 0.9),
                            ("dataset_ratio_vs_ray_data", "ray_data (dataset layout)", 3.0)):
        if key in w7:
            out.append({"target": f"W7: parallelrun >= {want:g}x {peer}", "measured": f"{w7[key]:.2f}x",
                        "met": w7[key] >= want})
    ray_b, ray_d = w7["median"].get("parallelrun_ray"), w7["median"].get("ray_data")
    if ray_b and ray_d and ray_b.get("seconds") and ray_d.get("seconds"):
        got = ray_d["seconds"] / ray_b["seconds"]
        out.append({"target": "W7: Ray backend >= 2x ray_data", "measured": f"{got:.2f}x", "met": got >= 2.0})
    for who in ("parallelrun", "parallelrun_dataset"):
        m = w7["median"].get(who)
        if not m:
            continue
        tag = "" if who == "parallelrun" else " (dataset layout)"
        out.append({"target": f"W7: driver peak RSS <= 250 MB{tag}", "measured": f"{m['driver_peak_rss_mb']:.0f} MB",
                    "met": m["driver_peak_rss_mb"] <= 250})
        disk = m["peak_disk_mb"] / m["output_mb"]
        out.append({"target": f"W7: peak disk <= 1.25x the output{tag}", "measured": f"{disk:.2f}x",
                    "met": disk <= 1.25})
        journal = m["journal_mb"] / m["output_mb"]
        out.append({"target": f"W7: journal <= 5% of the output after the run{tag}", "measured": f"{journal:.2%}",
                    "met": journal <= 0.05})
    return out


def _w7_table(w7: dict[str, Any]) -> list[str]:
    lines = [f"W7: {w7['rows']:,} rows x 256 float32 -> Parquet, {w7['batches']} mini-batches of "
             f"{w7['mini_batch_size']}, {w7['processes']} processes.", "",
             "| W7 contender | median s | driver peak RSS MB | peak disk MB | output MB | journal MB after |",
             "|---|---:|---:|---:|---:|---:|"]
    for peer, m in w7["median"].items():
        cells = [f"{m[k]:.0f}" if k in m else "-" for k in ("driver_peak_rss_mb", "peak_disk_mb", "output_mb",
                                                              "journal_mb")]
        lines.append(f"| {peer} | {m['seconds']:.2f} | {' | '.join(cells)} |")
    for peer, err in w7.get("errors", {}).items():
        lines.append(f"| {peer} | error: {err[:80]} | | | | |")
    return [*lines, ""]


def render(results: dict[str, Any]) -> str:
    lines = [f"## Benchmark ({results['mode']}, {results['started']}, {results['seconds']:.0f} s)", ""]
    m = results["machine"]
    lines.append(f"Machine: {m.get('cpus')} CPUs ({m.get('cpu', '?')}), {m.get('memory_gib')} GiB, "
                 f"Python {m.get('python')}, Ray {m.get('ray', '-')}, onnxruntime {m.get('onnxruntime', '-')}. "
                 "Load average (1 min) before/after each workload: "
                 + ", ".join(f"{k} {v['before']:.1f}/{v['after']:.1f}" for k, v in results["load"].items()) + ".")
    lines.append("")
    cmp = _compared(results)
    if cmp:
        lines += ["| workload | contender | median s | items/s | parallelrun ÷ contender (median of runs) |",
                  "|---|---|---:|---:|---:|"]
        for wl, summary in cmp.items():
            for row in summary["rows"]:
                if row.get("error"):
                    lines.append(f"| {wl} | {row['peer']} | - | - | error: {row['error'][:80]} |")
                    continue
                if not row["seconds"]:
                    continue
                ratio = f"{row['parallelrun_ratio']:.2f}x" if "parallelrun_ratio" in row else ""
                lines.append(f"| {wl} | {row['peer']} | {row['median_seconds']:.2f} | "
                             f"{row['items_per_second']:,.0f} | {ratio} |")
        lines.append("")
    w4 = results["workloads"].get("W4")
    if w4:
        lines += ["| W4 files | first batch dispatched (s from command start) | planned files/s | "
                  "driver peak RSS MB | whole run s |", "|---:|---:|---:|---:|---:|"]
        for n, v in w4["median"].items():
            lines.append(f"| {int(n):,} | {v['first_dispatch_s']:.2f} | {v['files_per_second']:,.0f} | "
                         f"{v['driver_peak_rss_mb']:.0f} | {v['seconds']:.1f} |")
        if "flat" in w4:  # results of before the flat variant existed have none
            v = w4["flat"]["median"]
            lines.append(f"| {w4['flat']['files']:,} in one folder | {v['first_dispatch_s']:.2f} | "
                         f"{v['files_per_second']:,.0f} | {v['driver_peak_rss_mb']:.0f} | {v['seconds']:.1f} |")
        lines += [f"\nDriver RSS growth: {w4['rss_growth']:.2f}x.", ""]
    w5 = results["workloads"].get("W5")
    if w5:
        lines += [f"W5: `parallelrun run` to the first committed result: median {w5['median_first_commit_s']:.2f} s "
                  f"(runs: {', '.join(f'{x:.2f}' for x in w5['first_commit_seconds'])}); a bare Pool, started "
                  f"in-process, returns its first result after {w5['median_pool_first_result_s']:.2f} s.", ""]
    w6 = results["workloads"].get("W6")
    if w6:
        lines += ["| W6 run | committed at kill -9 | ran twice | duplicate rows | missing rows | killed s + resume s "
                  "| uninterrupted s | ratio |", "|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for i, r in enumerate(w6["runs"], 1):
            lines.append(f"| {i} | {r['killed_after_committed']}/{r['batches']} | {r['batches_run_twice']} | "
                         f"{r['duplicate_rows']} | {r['missing_rows']} | {r['killed_s']:.2f} + {r['resume_s']:.2f} | "
                         f"{r['uninterrupted_s']:.2f} | {r['total_over_uninterrupted']:.2f} |")
        lines.append("")
    if results["workloads"].get("W7"):
        lines += _w7_table(results["workloads"]["W7"])
    if results.get("targets"):
        lines += ["| target | measured | met |", "|---|---:|:---:|"]
        for t in results["targets"]:
            lines.append(f"| {t['target']} | {t['measured']} | {'yes' if t['met'] else '**no**'} |")
    return "\n".join(lines)
