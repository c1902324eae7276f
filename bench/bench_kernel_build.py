#!/usr/bin/env python3
"""Kernel build speed: the virtual lab's vanilla kernel from scratch, a cached rerun, and a
second variant (mt-unbound, the copy series in mm/) on the same tree.

Goal (2-core machine): the second variant takes <= 40% of the first build's time.
Run from the repo root: `.venv/bin/python bench/bench_kernel_build.py [--jobs N] [--keep]`;
`--arch aarch64` cross-builds the kernels of the lab's grace group (64 KiB pages) instead.
Builds go to a fresh temporary work and cache directory (under /var/tmp), so the lab's own
cache (/var/cache/miglab/kernels) is untouched; it needs ~4 GiB and Debian's linux-source-6.12.
The specs are exactly what the kernel_build role passes for inventory/vlab's variants.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
HOST_DIR = REPO / "host"  # the build tool: python3 -m miglab_host kbuild, run from here
VARIANTS = REPO / "inventory" / "vlab" / "group_vars" / "all" / "kernel_variants.yml"
BASE_DIR = REPO / "kernels" / "vlab"
# The inventory group of each guest architecture, whose lab_arch_kernel_options every kernel
# built for it gets (the kernel_build role's kernel_build_host_options).
ARCH_GROUPS = {"x86_64": "x86", "aarch64": "grace"}
CROSS_COMPILE = {"aarch64": "aarch64-linux-gnu-", "x86_64": "x86_64-linux-gnu-"}


def spec(name: str, work: Path, jobs: int, arch: str) -> dict[str, Any]:
    """The build spec of one of the virtual lab's variants (as roles/kernel_build makes it)."""
    data = yaml.safe_load(VARIANTS.read_text())
    defaults = data["kernel_variant_defaults"]
    variant = next(v for v in data["kernel_variants"] if v["name"] == name)
    config = {**defaults["config"], **variant.get("config", {})}
    group_file = REPO / "inventory" / "vlab" / "group_vars" / ARCH_GROUPS[arch] / "kernel.yml"
    group_options = yaml.safe_load(group_file.read_text())["lab_arch_kernel_options"]
    return {
        "variant": name,
        "arch": arch,
        "cross_compile": "" if arch == os.uname().machine else CROSS_COMPILE[arch],
        "source": {"kind": "debian_package", "package": defaults["source"]["debian_package"]},
        "patches": [
            {"name": Path(p["file"]).name, "path": str(BASE_DIR / p["file"])}
            for p in variant.get("patches", [])
        ],
        "config": {
            "base": {"kind": "make", "target": config["base"]},
            "targets": config.get("targets", []),
            "fragments": [
                {"name": f, "text": (BASE_DIR / f).read_text()} for f in config.get("fragments", [])
            ],
            "options": config.get("options", []) + group_options,
        },
        "required": ["CONFIG_NUMA", "CONFIG_MIGRATION", "CONFIG_TRANSPARENT_HUGEPAGE"]
        + group_options,
        "package_format": "deb",
        "cache_dir": str(work / "cache"),
        "work_dir": str(work / "work"),
        "jobs": jobs,
    }


def timed_build(data: dict[str, Any]) -> tuple[float, dict[str, Any]]:
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-m", "miglab_host", "kbuild", "build", "--spec-json", json.dumps(data)],
        cwd=HOST_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    seconds = time.monotonic() - started
    answer = json.loads(result.stdout.strip().splitlines()[-1])
    if result.returncode != 0:
        raise SystemExit(f"build of {data['variant']} failed: {answer.get('error')}")
    return seconds, answer


def load_average() -> str:
    return " ".join(Path("/proc/loadavg").read_text().split()[:3])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1, help="make -j")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument(
        "--arch", choices=sorted(ARCH_GROUPS), default="x86_64", help="the guests' architecture"
    )
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="miglab-kbench-", dir="/var/tmp"))
    print(
        f"work directory {work}, {os.cpu_count()} CPUs, make -j{args.jobs}, {args.arch}, "
        f"load {load_average()}"
    )
    try:
        first, vanilla = timed_build(spec("vanilla", work, args.jobs, args.arch))
        assert vanilla["built"], vanilla
        print(
            f"first build (vanilla, from the tarball): {first:.1f} s "
            f"(compile+package {vanilla['build_seconds']:.1f} s), load {load_average()}"
        )

        cached, again = timed_build(spec("vanilla", work, args.jobs, args.arch))
        assert not again["built"] and again["build_hash"] == vanilla["build_hash"], again
        print(f"cached rerun (inputs unchanged, no compile): {cached:.1f} s")

        for memo in (work / "cache" / "index").glob("*.json"):
            memo.unlink()
        by_hash, again = timed_build(spec("vanilla", work, args.jobs, args.arch))
        assert not again["built"], again
        print(
            f"cached rerun found by build hash (tree checked out, config made, no compile): "
            f"{by_hash:.1f} s"
        )

        second, patched = timed_build(spec("mt-unbound", work, args.jobs, args.arch))
        assert patched["built"] and patched["build_hash"] != vanilla["build_hash"], patched
        ratio = second / first
        print(
            f"second variant on the same tree (mt-unbound, mm/ patched): {second:.1f} s "
            f"= {ratio:.0%} of the first build (goal <= 40%), load {load_average()}"
        )
        print(
            json.dumps(
                {
                    "first_s": round(first, 1),
                    "cached_s": round(cached, 1),
                    "cached_by_hash_s": round(by_hash, 1),
                    "second_variant_s": round(second, 1),
                    "ratio": round(ratio, 3),
                    "jobs": args.jobs,
                }
            )
        )
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
