#!/usr/bin/env python3
"""What migbench's CPU accounting costs per sample: the snapshots around each move_pages()
call (every kernel thread's run time from /proc/<pid>/schedstat, /proc/stat,
/proc/schedstat, /proc/vmstat, the cgroup's cpu.stat), all outside the timed window and
reported by migbench itself as accounting_ns.

Compiles migbench (gcc -O2, as the migbench role does), runs it in loopback mode on this
machine (root: PFNs), first as the machine is, then with extra sleeping processes so that
/proc lists a few hundred more (the kernel-thread scan reads every process's stat to find
the kernel threads). Prints the median and 90th percentile of accounting_ns and the
process and kernel-thread counts.

    sudo .venv/bin/python bench/bench_cpu_accounting.py [--extra 400] [--reps 200]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
SOURCE = REPO / "roles" / "migbench" / "files" / "migbench.c"


def compile_migbench(out: Path) -> Path:
    binary = out / "migbench"
    subprocess.run(
        ["gcc", "-O2", "-Wall", "-Wextra", "-pthread", "-o", str(binary), str(SOURCE), "-lnuma"],
        check=True,
    )
    return binary


def processes() -> int:
    return sum(1 for entry in os.listdir("/proc") if entry.isdigit())


def measure(binary: Path, reps: int) -> dict[str, float]:
    result = subprocess.run(
        [str(binary), "--kind", "base", "--count", "64", "--reps", str(reps), "--warmup", "1",
         "--loopback-test"],
        capture_output=True, text=True, check=True,
    )  # fmt: skip
    samples = [json.loads(line) for line in result.stdout.splitlines()]
    samples = [s for s in samples if s.get("type") == "sample"]
    costs = sorted(s["accounting_ns"] for s in samples)
    return {
        "median_us": statistics.median(costs) / 1000,
        "p90_us": costs[int(0.9 * (len(costs) - 1))] / 1000,
        "kthreads": statistics.median(s["kthreads"] for s in samples),
        "elapsed_median_us": statistics.median(s["elapsed_ns"] for s in samples) / 1000,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--extra", type=int, default=400, help="sleeping processes to add")
    parser.add_argument("--reps", type=int, default=200)
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("run as root (migbench reads PFNs)", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as tmp:
        binary = compile_migbench(Path(tmp))
        rows = [("as the machine is", processes(), measure(binary, args.reps))]
        sleepers = [subprocess.Popen(["sleep", "600"]) for _ in range(args.extra)]
        try:
            rows.append(
                (f"with {args.extra} more processes", processes(), measure(binary, args.reps))
            )
        finally:
            for sleeper in sleepers:
                sleeper.kill()
                sleeper.wait()
    for label, count, figures in rows:
        print(
            f"{label}: {count} processes, {figures['kthreads']:.0f} kernel threads: accounting "
            f"median {figures['median_us']:.0f} us, p90 {figures['p90_us']:.0f} us per sample "
            f"(the timed move itself: median {figures['elapsed_median_us']:.0f} us), "
            f"load average {os.getloadavg()[0]:.2f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
