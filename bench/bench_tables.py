#!/usr/bin/env python3
"""Time `miglab table` on a large generated result set.

Generates N samples (default 1,000,000) as results/<run>/<host>/samples.jsonl in a
temporary directory, then, in a fresh Python process so that peak memory is the
analysis' own, loads and validates them and builds and renders every summary table in
every format. Prints wall seconds per stage and the peak RSS (resource.getrusage).

The issue's budget: all tables for 1,000,000 samples in <= 5 s on 2 cores, peak <= 1 GiB.

    .venv/bin/python bench/bench_tables.py [--samples N] [--keep DIR]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HOSTS = (("grace1", "aarch64", 65536, "r1"), ("epyc1", "x86_64", 4096, "r2"))
KINDS = {
    "base": (32, 256, 512, 768, 1024),
    "2M": (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024),
}
LOADS = ("idle", "busy")
PATCHED_CONFIGS = ("serial", "mt_1", "mt_2", "mt_4", "mt_8", "mt_16", "mt_32")
KERNELS = (
    ("vanilla", None, ("vanilla",)),
    ("mt-unbound", "unbound", PATCHED_CONFIGS),
    ("mt-highpri", "highpri", PATCHED_CONFIGS),
)


def _cells(host: tuple[str, str, int, str]) -> list[dict[str, object]]:
    name, arch, page_size, run_id = host
    cells = []
    for kind, counts in KINDS.items():
        folio = page_size if kind == "base" else 2 << 20
        for load in LOADS:
            for variant, workqueue, configs in KERNELS:
                for config in configs:
                    for count in counts:
                        cells.append(
                            {
                                "schema": "miglab.sample/2",
                                "run_id": run_id,
                                "host": name,
                                "arch": arch,
                                "base_page_size": page_size,
                                "kernel_release": f"6.13.0-{variant}",
                                "kernel_variant": variant,
                                "kernel_build_hash": None if variant == "vanilla" else "0123abcd",
                                "workqueue": workqueue,
                                "load": load,
                                "copy_config": config,
                                "threads": int(config[3:]) if config.startswith("mt_") else None,
                                "page_kind": kind,
                                "folio_size": folio,
                                "page_count": count,
                                "bytes": folio * count,
                                # the load's CPU share in the cell and before it (busy only)
                                "load_cpu_share": 0.8 if load == "busy" else None,
                                "load_cpu_share_baseline": 0.9 if load == "busy" else None,
                                # as the sweep runner writes it
                                "cell_id": f"{variant}:{load}:{config}:{kind}:{count}",
                            }
                        )
    return cells


def generate(root: Path, samples: int, seed: int = 1) -> int:
    """Write about `samples` records; returns how many were written."""
    rng = np.random.default_rng(seed)
    all_cells = [(host, cell) for host in HOSTS for cell in _cells(host)]
    reps = max(1, samples // len(all_cells))
    extra = samples - reps * len(all_cells)
    written = 0
    for host in HOSTS:
        path = root / host[3] / host[0] / "samples.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("w", encoding="utf-8") as stream:
            for index, (cell_host, cell) in enumerate(all_cells):
                if cell_host is not host:
                    continue
                count = reps + (1 if index < extra else 0)
                base_gbps = 2.0 + 30.0 * rng.random()
                gbps = base_gbps * rng.lognormal(0.0, 0.1, count)
                stalled = rng.random(count) < 0.002  # the thread's 0.02 GB/s moves
                gbps[stalled] *= 0.01
                moved = int(cell["bytes"])  # type: ignore[call-overload]
                elapsed = np.maximum(1, np.rint(moved / gbps)).astype(np.int64)
                backing_ok = rng.random(count) > 0.001
                prefix = json.dumps(cell)[:-1]
                lines = []
                for rep in range(count):
                    ns = int(elapsed[rep])
                    lines.append(
                        f'{prefix}, "rep": {rep}, "src_node": 0, "dst_node": 1, '
                        f'"elapsed_ns": {ns}, "gbps": {moved / ns!r}, "failed_pages": 0, '
                        f'"backing_ok": {"true" if backing_ok[rep] else "false"}, '
                        f'"caller_cpu_ns": {ns // 3}, "system_cpu_ns": {ns * 2}, '
                        f'"kthread_cpu_ns": {ns // 4}, '
                        f'"pgmigrate_success": {cell["page_count"]}, "pgmigrate_fail": 0, '
                        f'"timestamp": "2025-01-03T17:{rep // 60 % 60:02d}:{rep % 60:02d}.'
                        f'{rep:06d}Z"}}\n'
                    )
                stream.write("".join(lines))
                written += count
    return written


def measure(root: Path) -> dict[str, float]:
    """Runs in a fresh process: load + validate, then every table in every format."""
    from miglab.results.load import load_samples
    from miglab.results.render import FORMATS, render_summary_tables
    from miglab.results.stats import StabilityRule
    from miglab.results.tables import build_tables

    rule = StabilityRule()
    load_before = os.getloadavg()[0]
    cpu_started = time.process_time()
    started = time.perf_counter()
    samples = load_samples([root])
    loaded = time.perf_counter()
    tables = build_tables(samples.frame, "mean", rule)
    built = time.perf_counter()
    sizes = [len(render_summary_tables(tables, fmt, rule)) for fmt in FORMATS]
    rendered = time.perf_counter()
    cpu = time.process_time() - cpu_started  # all threads of this process
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "samples": float(len(samples.frame)),
        "tables": float(len(tables)),
        "output_bytes": float(sum(sizes)),
        "load_s": loaded - started,
        "tables_s": built - loaded,
        "render_s": rendered - built,
        "total_s": rendered - started,
        "cpu_s": cpu,
        "peak_rss_mib": peak_kib / 1024,
        "loadavg_before": load_before,
        "loadavg_after": os.getloadavg()[0],
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep it")
    parser.add_argument("--measure", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure)))
        return 0
    root = args.keep or Path(tempfile.mkdtemp(prefix="miglab-bench-"))
    try:
        started = time.perf_counter()
        written = generate(root, args.samples)
        print(f"generated {written} samples in {time.perf_counter() - started:.1f} s ({root})")
        result = subprocess.run(
            [sys.executable, __file__, "--measure", str(root)],
            check=True,
            capture_output=True,
            text=True,
        )
        figures = json.loads(result.stdout)
        print(
            f"{int(figures['samples'])} samples, {int(figures['tables'])} tables: "
            f"load+validate {figures['load_s']:.2f} s, tables {figures['tables_s']:.2f} s, "
            f"render (4 formats) {figures['render_s']:.2f} s, "
            f"total {figures['total_s']:.2f} s wall ({figures['cpu_s']:.2f} s CPU in all threads); "
            f"peak RSS {figures['peak_rss_mib']:.0f} MiB"
        )
        print(
            f"machine load average {figures['loadavg_before']:.2f} before, "
            f"{figures['loadavg_after']:.2f} after ({os.cpu_count()} CPUs): other work on the "
            "machine stretches wall time"
        )
        within = figures["total_s"] <= 5.0 and figures["peak_rss_mib"] <= 1024
        print("budget (<= 5 s, <= 1024 MiB):", "met" if within else "NOT met")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
