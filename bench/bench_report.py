#!/usr/bin/env python3
"""Time `miglab report` (every table, the cost and crossover tables, every plot, one HTML
page) on a large generated result set.

Generates N samples (default 1,000,000; bench_tables.py's generator: 2 hosts, 3 kernels,
idle and busy, base and 2M, vanilla/serial/mt_1..mt_32, with the CPU and load fields of
schema 2) in a temporary directory, then, in a fresh Python process so that peak memory is
the report's own, loads them and writes the report. Prints wall seconds per stage and the
peak RSS.

The issue's budget: <= 15 s and <= 1.5 GiB for 1,000,000 samples on this 2-core machine.

    .venv/bin/python bench/bench_report.py [--samples N] [--keep DIR]
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

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_tables import generate  # noqa: E402 (the same generator as the table bench)


def measure(root: Path, out: Path) -> dict[str, float]:
    from miglab.results.load import load_samples
    from miglab.results.report import write_report

    load_before = os.getloadavg()[0]
    started = time.perf_counter()
    samples = load_samples([root])
    loaded = time.perf_counter()
    files = write_report(samples, out)
    done = time.perf_counter()
    return {
        "samples": float(len(samples.frame)),
        "plots": float(len(files.plots)),
        "html_mib": files.html.stat().st_size / (1 << 20),
        "load_s": loaded - started,
        "report_s": done - loaded,
        "total_s": done - started,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "loadavg_before": load_before,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=1_000_000)
    parser.add_argument("--keep", type=Path, help="generate into this directory and keep it")
    parser.add_argument("--measure", type=Path, nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(*args.measure)))
        return 0
    root = args.keep or Path(tempfile.mkdtemp(prefix="miglab-bench-"))
    try:
        written = generate(root / "results", args.samples)
        result = subprocess.run(
            [sys.executable, __file__, "--measure", str(root / "results"), str(root / "report")],
            check=True,
            capture_output=True,
            text=True,
        )
        f = json.loads(result.stdout)
        print(
            f"{written} samples: load+validate {f['load_s']:.2f} s, report {f['report_s']:.2f} s "
            f"({int(f['plots'])} plots, HTML {f['html_mib']:.1f} MiB), total {f['total_s']:.2f} s; "
            f"peak RSS {f['peak_rss_mib']:.0f} MiB (load average before {f['loadavg_before']:.2f})"
        )
        within = f["total_s"] <= 15.0 and f["peak_rss_mib"] <= 1536
        print("budget (<= 15 s, <= 1536 MiB):", "met" if within else "NOT met")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
