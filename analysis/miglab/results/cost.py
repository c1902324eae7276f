"""What a copy configuration costs the rest of the machine.

Per cell (host, page kind, load, workqueue, kernel variant, copy config, page count):

- CPU milliseconds per GB moved that are charged to the caller (its own thread's CPU time,
  caller_cpu_ns), and that are charged to nobody (the run time kernel threads gained during
  the call, kthread_cpu_ns: the copy threads' work, plus whatever else the kernel's own
  threads did meanwhile). Each is the mean of the per-sample values with a t interval.
- the application's throughput lost while the cell ran under a stress load: the load's CPU
  share during the cell against its baseline without migrations, in percent. The runner
  measures that once per cell (over the cell's whole migbench run), so it has no interval.

Records of schema version 1 have no kthread_cpu_ns: those cells show it as missing (never as
0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd
from scipy import special as scipy_special

from miglab.results.render import TextTable, json_number
from miglab.results.stats import CELL_KEYS, group_codes, usable_samples
from miglab.results.tables import (
    MISSING_MARK,
    VANILLA,
    config_sort_key,
    load_order,
    page_kind_label,
    page_kind_order,
    pages,
    workqueue_phrase,
)

NS_PER_MS = 1e6
BYTES_PER_GB = 1e9


@dataclass(frozen=True)
class Estimate:
    """A mean with its confidence interval (NaN bounds: fewer than two values)."""

    n: int
    mean: float
    low: float
    high: float

    @property
    def missing(self) -> bool:
        return self.n == 0


def estimate(values: np.ndarray, confidence: float = 0.95) -> Estimate:
    values = values[~np.isnan(values)]
    n = len(values)
    if n == 0:
        return Estimate(0, float("nan"), float("nan"), float("nan"))
    mean = float(values.mean())
    if n < 2:
        return Estimate(n, mean, float("nan"), float("nan"))
    quantile = scipy_special.stdtrit(n - 1, 0.5 + confidence / 2)  # Student's t, n - 1 dof
    half = float(quantile * values.std(ddof=1) / np.sqrt(n))
    return Estimate(n, mean, mean - half, mean + half)


@dataclass(frozen=True)
class CostCell:
    charged: Estimate  # caller CPU ms per GB
    uncharged: Estimate  # kernel-thread CPU ms per GB
    cgroup: Estimate  # ms per GB charged to the caller's cgroup (cgroup v2 only)
    gbps: float  # total bytes / total time of the cell's samples
    app_loss_percent: float  # NaN: idle, or not measured

    def cpu_per_gb(self) -> float:
        """Charged plus uncharged, NaN if either is missing."""
        return self.charged.mean + self.uncharged.mean


def _column(frame: pd.DataFrame, name: str) -> np.ndarray:
    if name not in frame.columns:
        return np.full(len(frame), np.nan)
    return pd.to_numeric(frame[name], errors="coerce").to_numpy(dtype=float)


_SAMPLE_COLUMNS = ["caller_cpu_ns", "kthread_cpu_ns", "cgroup_cpu_ns", "load_cpu_share",
                   "load_cpu_share_baseline"]  # fmt: skip


def per_sample_costs(frame: pd.DataFrame) -> pd.DataFrame:
    """The usable samples with their CPU ms per GB (charged, uncharged, cgroup) and the
    application's loss in percent."""
    columns = [*CELL_KEYS, "base_page_size", "run_id", "bytes", "elapsed_ns"]
    present = [name for name in _SAMPLE_COLUMNS if name in frame.columns]
    usable = frame[columns + present][usable_samples(frame)]  # copies only what is read
    moved_gb = usable["bytes"].to_numpy(dtype=float) / BYTES_PER_GB
    out = usable[columns].copy()
    out["charged_ms_per_gb"] = _column(usable, "caller_cpu_ns") / NS_PER_MS / moved_gb
    out["uncharged_ms_per_gb"] = _column(usable, "kthread_cpu_ns") / NS_PER_MS / moved_gb
    out["cgroup_ms_per_gb"] = _column(usable, "cgroup_cpu_ns") / NS_PER_MS / moved_gb
    share = _column(usable, "load_cpu_share")
    baseline = _column(usable, "load_cpu_share_baseline")
    with np.errstate(invalid="ignore", divide="ignore"):
        loss = np.where(baseline > 0, (baseline - share) / baseline * 100.0, np.nan)
    out["app_loss_percent"] = loss
    return out


def cost_cells(frame: pd.DataFrame, confidence: float = 0.95) -> dict[tuple[object, ...], CostCell]:
    """CostCell per cell key (CELL_KEYS order); vanilla cells pooled over variants and
    workqueues, as the tables pool them."""
    costs = per_sample_costs(frame)
    if costs.empty:
        return {}
    is_vanilla = (costs["copy_config"] == VANILLA).to_numpy()
    keys = costs[list(CELL_KEYS)].astype(object)
    keys.loc[is_vanilla, "kernel_variant"] = VANILLA
    keys.loc[is_vanilla, "workqueue"] = None
    codes, groups = group_codes(keys, CELL_KEYS)
    # each cell's rows, from one sort of the group numbers (no DataFrame per cell)
    order = np.argsort(codes, kind="stable")
    rows_of = np.split(order, np.cumsum(np.bincount(codes, minlength=len(groups)))[:-1])
    arrays = {
        name: costs[name].to_numpy(dtype=float)
        for name in ("charged_ms_per_gb", "uncharged_ms_per_gb", "cgroup_ms_per_gb",
                     "app_loss_percent", "bytes", "elapsed_ns")
    }  # fmt: skip
    cells: dict[tuple[object, ...], CostCell] = {}
    for key, rows in zip(groups.itertuples(index=False, name=None), rows_of, strict=True):
        normal = tuple(None if pd.isna(v) else v for v in key)
        loss = arrays["app_loss_percent"][rows]
        loss = loss[~np.isnan(loss)]
        cells[normal] = CostCell(
            charged=estimate(arrays["charged_ms_per_gb"][rows], confidence),
            uncharged=estimate(arrays["uncharged_ms_per_gb"][rows], confidence),
            cgroup=estimate(arrays["cgroup_ms_per_gb"][rows], confidence),
            gbps=float(arrays["bytes"][rows].sum() / arrays["elapsed_ns"][rows].sum()),
            # one measurement per cell, repeated on each of its samples
            app_loss_percent=float(np.median(loss)) if len(loss) else float("nan"),
        )
    return cells


@dataclass
class CostTable:
    host: str
    page_kind: str
    load: str
    workqueue: str | None
    base_page_size: int
    page_counts: list[int]
    configs: list[str]
    cells: dict[tuple[int, str], CostCell]

    @property
    def title(self) -> str:
        kind = page_kind_label(self.page_kind, self.base_page_size)
        return (
            f"CPU per GB moved, {kind}{workqueue_phrase(self.workqueue)} under load "
            f"{self.load} - host {self.host}"
        )


def cost_tables(frame: pd.DataFrame, confidence: float = 0.95) -> list[CostTable]:
    """One table per (host, page kind, load, workqueue), the vanilla column in every one."""
    cells = cost_cells(frame, confidence)
    sizes = frame.groupby("host", observed=True)["base_page_size"].first().to_dict()
    index = {name: i for i, name in enumerate(CELL_KEYS)}
    bases: dict[tuple[str, str, str], set[str | None]] = {}
    for key in cells:
        base = (str(key[index["host"]]), str(key[index["page_kind"]]), str(key[index["load"]]))
        if key[index["copy_config"]] != VANILLA:
            bases.setdefault(base, set()).add(key[index["workqueue"]])  # type: ignore[arg-type]
        else:
            bases.setdefault(base, set())
    tables = []
    for base in sorted(bases, key=lambda b: (b[0], page_kind_order(b[1]), load_order(b[2]))):
        host, kind, load = base
        for workqueue in sorted(bases[base], key=lambda w: (w is not None, str(w))) or [None]:
            mine = {
                (int(key[index["page_count"]]), str(key[index["copy_config"]])): cell  # type: ignore[call-overload]
                for key, cell in cells.items()
                if (str(key[index["host"]]), str(key[index["page_kind"]]), str(key[index["load"]]))
                == base
                and (key[index["copy_config"]] == VANILLA or key[index["workqueue"]] == workqueue)
            }
            tables.append(
                CostTable(
                    host, kind, load, workqueue, int(sizes.get(host, 4096)),
                    sorted({count for count, _ in mine}),
                    sorted({config for _, config in mine}, key=config_sort_key),
                    mine,
                )
            )  # fmt: skip
    return tables


def _ms(estimate_: Estimate, show_spread: bool) -> str:
    if estimate_.missing:
        return MISSING_MARK
    text = f"{estimate_.mean:.2f}" if estimate_.mean >= 0.1 else f"{estimate_.mean:.2g}"
    if show_spread and not np.isnan(estimate_.low):
        text += f" ± {(estimate_.high - estimate_.low) / 2:.2g}"
    return text


def cost_cell_text(cell: CostCell | None, show_spread: bool) -> str:
    if cell is None:
        return MISSING_MARK
    text = f"{_ms(cell.charged, show_spread)} / {_ms(cell.uncharged, show_spread)}"
    if not np.isnan(cell.app_loss_percent):
        # the application's throughput change: a loss is negative
        text += f", app {-cell.app_loss_percent:+.1f}%"
    return text


COST_NOTES = (
    "Cells: CPU ms per GB moved charged to the caller / charged to nobody (kernel threads: "
    "the copy threads and the kernel's other work meanwhile), mean of the samples "
    "(± half-width of the 95% CI with --show-spread); under a stress load, the change of the "
    "application's throughput while the cell ran (app -5.0%: it lost 5 %; its CPU share "
    "against its baseline without migrations, one measurement per cell). - : not in the "
    "records (schema 1 records have no kernel-thread time)."
)


def cost_text_tables(tables: Sequence[CostTable], show_spread: bool) -> list[TextTable]:
    out = []
    for table in tables:
        rows = [
            [str(count)]
            + [
                cost_cell_text(table.cells.get((count, config)), show_spread)
                for config in table.configs
            ]
            for count in table.page_counts
        ]
        notes = [COST_NOTES]
        missing = [
            f"{config} at {pages(count)}"
            for count in table.page_counts
            for config in table.configs
            if (count, config) in table.cells and table.cells[(count, config)].uncharged.missing
        ]
        if missing:
            notes.append("No kernel-thread CPU time in the records of: " + ", ".join(missing))
        out.append(TextTable(table.title, ["pages", *table.configs], rows, notes))
    return out


def cost_to_dict(tables: Sequence[CostTable]) -> list[dict[str, object]]:
    number = json_number

    def est(e: Estimate) -> dict[str, object]:
        return {
            "n": e.n,
            "mean": number(e.mean),
            "ci_low": number(e.low),
            "ci_high": number(e.high),
        }

    return [
        {
            "title": t.title,
            "host": t.host,
            "page_kind": t.page_kind,
            "load": t.load,
            "workqueue": t.workqueue,
            "columns": t.configs,
            "rows": [
                {
                    "pages": count,
                    "cells": {
                        config: None
                        if (cell := t.cells.get((count, config))) is None
                        else {
                            "charged_ms_per_gb": est(cell.charged),
                            "uncharged_ms_per_gb": est(cell.uncharged),
                            "cgroup_ms_per_gb": est(cell.cgroup),
                            "gbps": number(cell.gbps),
                            "app_loss_percent": number(cell.app_loss_percent),
                        }
                        for config in t.configs
                    },
                }
                for count in t.page_counts
            ],
        }
        for t in tables
    ]


def pareto_front(points: Sequence[tuple[float, float]]) -> list[int]:
    """Indices of the points (application loss %, GB/s) that no other point beats on both
    (as little loss and as much throughput, one of them strictly), by ascending loss."""
    front = []
    for i, (loss, gbps) in enumerate(points):
        dominated = any(
            other_loss <= loss and other_gbps >= gbps and (other_loss < loss or other_gbps > gbps)
            for j, (other_loss, other_gbps) in enumerate(points)
            if j != i
        )
        if not dominated:
            front.append(i)
    return sorted(front, key=lambda i: (points[i][0], -points[i][1]))


@dataclass(frozen=True)
class TradeoffPoint:
    copy_config: str
    page_count: int
    app_loss_percent: float
    gbps: float


def tradeoff_points(table: CostTable) -> list[TradeoffPoint]:
    """One point per configuration and page count that has both numbers."""
    return [
        TradeoffPoint(config, count, cell.app_loss_percent, cell.gbps)
        for (count, config), cell in sorted(table.cells.items())
        if not np.isnan(cell.app_loss_percent) and not np.isnan(cell.gbps)
    ]
