"""Sample records with chosen per-cell statistics, written the way the sweep runner does.

A cell's samples move the same bytes, so choosing per-sample times t_i = B (1 + d_i) / M
with sum(d_i) = 0 makes the cell's mean (total bytes / total time) exactly M GB/s.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

KIB = 1 << 10
MIB = 1 << 20

# +-3 % around the mean: stable (CV about 2.6 %)
STABLE_SPREAD = (-0.03, -0.01, 0.01, 0.03)


@dataclass(frozen=True)
class Host:
    name: str
    arch: str
    base_page_size: int
    run_id: str


GRACE = Host("grace1", "aarch64", 64 * KIB, "r1")
EPYC = Host("epyc1", "x86_64", 4 * KIB, "r2")


@dataclass(frozen=True)
class Kernel:
    variant: str
    workqueue: str | None
    release: str


VANILLA = Kernel("vanilla", None, "6.13.0-rc5")
UNBOUND = Kernel("mt-unbound", "unbound", "6.13.0-rc5-mt+")
HIGHPRI = Kernel("mt-highpri", "highpri", "6.13.0-rc5-mt-highpri+")


def folio_size(host: Host, page_kind: str) -> int:
    if page_kind == "base":
        return host.base_page_size
    units = {"K": KIB, "M": MIB, "G": 1 << 30}
    return int(page_kind[:-1]) * units[page_kind[-1]]


def record(
    host: Host,
    kernel: Kernel,
    load: str,
    config: str,
    page_kind: str,
    page_count: int,
    rep: int,
    elapsed_ns: int,
    **overrides: Any,
) -> dict[str, Any]:
    size = folio_size(host, page_kind)
    moved = size * page_count
    threads = int(config.split("_")[1]) if "_" in config else None
    sample: dict[str, Any] = {
        "schema": "miglab.sample/1",
        "run_id": host.run_id,
        "host": host.name,
        "arch": host.arch,
        "base_page_size": host.base_page_size,
        "kernel_release": kernel.release,
        "kernel_variant": kernel.variant,
        "kernel_build_hash": None if kernel is VANILLA else "0123abc",
        "workqueue": kernel.workqueue,
        "load": load,
        "copy_config": config,
        "threads": threads,
        "page_kind": page_kind,
        "folio_size": size,
        "page_count": page_count,
        "bytes": moved,
        "rep": rep,
        "src_node": 0,
        "dst_node": 1,
        "elapsed_ns": elapsed_ns,
        "gbps": moved / elapsed_ns,
        "failed_pages": 0,
        "backing_ok": True,
        "caller_cpu_ns": elapsed_ns // 2,
        "system_cpu_ns": elapsed_ns,
        "pgmigrate_success": page_count,
        "pgmigrate_fail": 0,
        "cell_id": f"{load}/{config}/{page_kind}/{page_count}",
        "timestamp": f"2025-01-03T17:{rep % 60:02d}:00.123456Z",
    }
    sample.update(overrides)
    return sample


def samples_at(
    host: Host,
    kernel: Kernel,
    load: str,
    config: str,
    page_kind: str,
    page_count: int,
    gbps: Sequence[float],
    first_rep: int = 0,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """One sample per listed per-sample GB/s."""
    moved = folio_size(host, page_kind) * page_count
    return [
        record(
            host,
            kernel,
            load,
            config,
            page_kind,
            page_count,
            first_rep + index,
            max(1, round(moved / value)),
            **overrides,
        )
        for index, value in enumerate(gbps)
    ]


def cell_with_mean(
    host: Host,
    kernel: Kernel,
    load: str,
    config: str,
    page_kind: str,
    page_count: int,
    mean_gbps: float,
    spread: Sequence[float] = STABLE_SPREAD,
    **overrides: Any,
) -> list[dict[str, Any]]:
    """Samples whose total bytes / total time is mean_gbps."""
    return samples_at(
        host,
        kernel,
        load,
        config,
        page_kind,
        page_count,
        [mean_gbps / (1 + delta) for delta in spread],
        **overrides,
    )


@dataclass
class Grid:
    """Cells of one (host, kernel, load, page kind): {config: {page_count: mean GB/s}}."""

    host: Host
    kernel: Kernel
    load: str
    page_kind: str
    means: dict[str, dict[int, float]] = field(default_factory=dict)

    def records(self) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        for config, by_count in self.means.items():
            for count, mean in by_count.items():
                found.extend(
                    cell_with_mean(
                        self.host, self.kernel, self.load, config, self.page_kind, count, mean
                    )
                )
        return found


def standard_records() -> dict[Host, list[dict[str, Any]]]:
    """The fixture the table tests read: see test_results_tables.py for the tables."""
    grace: list[dict[str, Any]] = []
    # 2 MiB mTHP, busy system: one vanilla kernel shared by the unbound and highpri tables
    grace += Grid(GRACE, VANILLA, "busy", "2M", {"vanilla": {1: 1.38, 2: 1.13, 16: 3.47}}).records()
    grace += Grid(
        GRACE,
        UNBOUND,
        "busy",
        "2M",
        {
            "serial": {1: 1.20, 2: 1.50, 16: 6.00},
            "mt_1": {1: 0.59, 2: 3.08, 16: 5.13},
            "mt_2": {1: 1.45, 2: 3.11, 16: 5.72},
            "mt_16": {2: 1.46, 16: 6.49},
        },
    ).records()
    # The thread's 0.02: nine moves at 2 GB/s and one that stalled at 0.002 GB/s
    grace += samples_at(GRACE, UNBOUND, "busy", "mt_16", "2M", 1, [2.0] * 9 + [0.002])
    # Excluded: unverified backing (the "150 GB/s" pitfall) and pages that did not move
    grace += samples_at(
        GRACE, UNBOUND, "busy", "serial", "2M", 16, [150.0, 150.0], first_rep=10, backing_ok=False
    )
    grace += samples_at(
        GRACE, UNBOUND, "busy", "serial", "2M", 16, [0.5], first_rep=12, failed_pages=3
    )
    grace += Grid(
        GRACE,
        HIGHPRI,
        "busy",
        "2M",
        {
            "mt_1": {1: 1.18, 16: 6.02},
            "mt_2": {1: 1.17, 2: 1.05, 16: 8.44},
            "mt_16": {1: 3.86, 2: 1.84},  # no samples at 16 pages: a missing cell
        },
    ).records()
    # every sample of this cell excluded: missing, not 0
    grace += cell_with_mean(GRACE, HIGHPRI, "busy", "mt_1", "2M", 2, 1.78, backing_ok=False)
    # 2 MiB mTHP, idle system
    grace += Grid(GRACE, VANILLA, "idle", "2M", {"vanilla": {1: 5.94, 2: 7.67, 16: 9.41}}).records()
    grace += Grid(
        GRACE,
        UNBOUND,
        "idle",
        "2M",
        {
            "serial": {1: 5.50, 2: 7.00, 16: 9.00},
            "mt_1": {1: 2.90, 2: 5.57, 16: 6.91},
            "mt_2": {1: 6.90, 2: 7.11, 16: 12.23},
            "mt_16": {1: 8.76, 2: 15.68, 16: 49.15},
        },
    ).records()
    # 64 KiB base pages, idle system
    grace += Grid(GRACE, VANILLA, "idle", "base", {"vanilla": {32: 5.43, 256: 6.95}}).records()
    grace += Grid(GRACE, UNBOUND, "idle", "base", {"mt_16": {32: 8.61, 256: 23.39}}).records()
    epyc = Grid(EPYC, VANILLA, "idle", "2M", {"vanilla": {1: 3.00, 4: 4.25}}).records()
    return {GRACE: grace, EPYC: epyc}


def write_jsonl(path: Path, records: Iterable[dict[str, Any]]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as stream:
        for item in records:
            stream.write(json.dumps(item) + "\n")
    return path


def write_results(root: Path, by_host: dict[Host, list[dict[str, Any]]] | None = None) -> Path:
    """results/<run_id>/<host>/samples.jsonl for each host; returns `root`."""
    for host, records in (by_host or standard_records()).items():
        write_jsonl(root / host.run_id / host.name / "samples.jsonl", records)
    return root
