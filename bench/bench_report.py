#!/usr/bin/env python3
"""Time `miglab report` (every table, the cost and crossover tables, every plot, one HTML
page) on a large generated result set.

Generates N samples (default 1,000,000; bench_tables.py's generator: 2 hosts, 3 kernels,
idle and busy, base and 2M, vanilla/serial/mt_1..mt_32, with the CPU and load fields of
schema 2) in a temporary directory, then, in a fresh Python process so that peak memory is
the report's own, loads them and writes the report. Prints wall seconds per stage, the
peak RSS of the report's process, and the peak memory of it and the worker processes that
draw the plots together (their proportional set sizes summed, sampled every 0.1 s: shared
pages counted once).

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
import threading
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


def _descendants(pid: int) -> list[int]:
    parents: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        parents.setdefault(int(fields[1]), []).append(int(stat.parent.name))
    found, queue = [], [pid]
    while queue:
        current = queue.pop()
        found.append(current)
        queue += parents.get(current, [])
    return found


def _pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def tree_peak_mib(process: subprocess.Popen[str], stop: threading.Event) -> list[float]:
    """Starts a sampler of the summed PSS of process and its descendants; the returned list
    holds the peak (MiB) once stop is set."""
    peak = [0.0]

    def sample() -> None:
        while not stop.wait(0.1) and process.poll() is None:
            total = sum(_pss_kib(pid) for pid in _descendants(process.pid))
            peak[0] = max(peak[0], total / 1024)

    threading.Thread(target=sample, daemon=True).start()
    return peak


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
        process = subprocess.Popen(
            [sys.executable, __file__, "--measure", str(root / "results"), str(root / "report")],
            stdout=subprocess.PIPE,
            text=True,
        )
        stop = threading.Event()
        peak = tree_peak_mib(process, stop)
        stdout, _ = process.communicate()
        stop.set()
        if process.returncode != 0:
            raise SystemExit(f"the measurement failed (exit {process.returncode})")
        f = json.loads(stdout)
        print(
            f"{written} samples: load+validate {f['load_s']:.2f} s, report {f['report_s']:.2f} s "
            f"({int(f['plots'])} plots, HTML {f['html_mib']:.1f} MiB), total {f['total_s']:.2f} s; "
            f"peak RSS {f['peak_rss_mib']:.0f} MiB, with the plot workers {peak[0]:.0f} MiB "
            f"(PSS) (load average before {f['loadavg_before']:.2f})"
        )
        within = f["total_s"] <= 15.0 and max(f["peak_rss_mib"], peak[0]) <= 1536
        print("budget (<= 15 s, <= 1536 MiB):", "met" if within else "NOT met")
    finally:
        if args.keep is None:
            shutil.rmtree(root, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
