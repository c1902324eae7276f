"""The thread's summary tables: one per (host, page kind, load, workqueue).

Rows are page counts, columns vanilla, serial, mt_N, dma_N; the vanilla column comes from the
unpatched kernel and is shared by every workqueue's table of the same host, kind and load.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from miglab.results.stats import (
    CELL_KEYS,
    STATISTIC_SHORT,
    StabilityRule,
    Statistic,
    cell_statistics,
    ci_columns,
    format_gbps,
)

VANILLA = "vanilla"
_CONFIG_RE = re.compile(r"^(vanilla|serial|mt|dma)(?:_([0-9]+))?$")
_CONFIG_RANK = {"vanilla": 0, "serial": 1, "mt": 2, "dma": 3}
_SIZE_RE = re.compile(r"^([0-9]+)([KMG])$")
_UNIT_BYTES = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}

MISSING_MARK = "-"
UNSTABLE_MARK = "!"
FEW_MARK = "?"
CLAMPED_MARK = "*"


def pages(count: int) -> str:
    return f"{count} page" if count == 1 else f"{count} pages"


def config_sort_key(config: str) -> tuple[int, int, str]:
    """vanilla, serial, mt_N by N, dma_N by N; anything else last, by name."""
    match = _CONFIG_RE.match(config)
    if match is None:
        return (9, 0, config)
    return (_CONFIG_RANK[match.group(1)], int(match.group(2) or 0), config)


def _size_label(size: int) -> str:
    for unit, scale in (("GB", 1 << 30), ("MB", 1 << 20), ("KB", 1 << 10)):
        if size >= scale and size % scale == 0:
            return f"{size // scale}{unit}"
    return f"{size}B"


def page_kind_label(page_kind: str, base_page_size: int) -> str:
    """'base' by the base page size ("64KB"); a folio size as THP when it is the PMD size of
    that base page size, mTHP when smaller ("2MB mTHP" on 64 KiB pages, "2MB THP" on 4 KiB)."""
    if page_kind == "base":
        return _size_label(base_page_size)
    match = _SIZE_RE.match(page_kind)
    if match is None:
        return page_kind
    size = int(match.group(1)) * _UNIT_BYTES[match.group(2)]
    pmd_size = base_page_size * (base_page_size // 8)  # one page of 8-byte entries
    if size == pmd_size:
        return f"{_size_label(size)} THP"
    if base_page_size < size < pmd_size:
        return f"{_size_label(size)} mTHP"
    return _size_label(size)


def workqueue_phrase(workqueue: str | None) -> str:
    return "" if workqueue is None else f" with system_{workqueue}_wq"


def load_phrase(load: str | None) -> str:
    if load is None:
        return ""
    if load == "idle":
        return " on an idle system"
    if load == "busy":
        return " on a busy system"
    return f" under load {load}"


@dataclass(frozen=True)
class TableKey:
    host: str
    page_kind: str
    load: str
    workqueue: str | None
    variant: str | None = None  # only when several patched kernels share the other fields


@dataclass(frozen=True)
class Cell:
    """One table cell: the chosen statistic of the cell's usable samples and its spread."""

    n: int
    value: float
    ci_low: float
    ci_high: float
    mean: float
    amean: float
    median: float
    minimum: float
    maximum: float
    cv: float
    unstable: bool
    few: bool
    reason: str
    excluded: int
    excluded_backing: int
    excluded_failed: int
    # copy threads the kernel used per batch (NaN: a kernel that does not count them)
    threads_effective: float = float("nan")

    @property
    def missing(self) -> bool:
        return self.n == 0

    def clamped(self, config: str) -> bool:
        """mt_N that ran with fewer copy threads than N (a node with fewer CPUs than N)."""
        requested = requested_threads(config)
        return (
            requested is not None
            and not np.isnan(self.threads_effective)
            and self.threads_effective < requested - 0.01
        )


def requested_threads(config: str) -> int | None:
    match = _CONFIG_RE.match(config)
    if match is None or match.group(1) != "mt" or match.group(2) is None:
        return None
    return int(match.group(2))


@dataclass
class SummaryTable:
    key: TableKey
    title: str
    statistic: Statistic
    page_counts: list[int]
    configs: list[str]
    cells: dict[tuple[int, str], Cell]
    base_page_size: int
    runs: list[str]
    vanilla_variants: list[str] = field(default_factory=list)
    patched_variants: list[str] = field(default_factory=list)
    # notes that come first, e.g. what the cells are relative to
    preface: list[str] = field(default_factory=list)

    def cell(self, page_count: int, config: str) -> Cell | None:
        """None when the cell has no samples at all; a Cell with n == 0 when every sample
        was excluded."""
        return self.cells.get((page_count, config))

    def usable_cell(self, page_count: int, config: str) -> Cell | None:
        cell = self.cell(page_count, config)
        return None if cell is None or cell.missing else cell

    def missing_cells(self) -> list[tuple[int, str, Cell | None]]:
        return [
            (count, config, self.cell(count, config))
            for count in self.page_counts
            for config in self.configs
            if self.usable_cell(count, config) is None
        ]

    def unstable_cells(self) -> list[tuple[int, str, Cell]]:
        found = []
        for count in self.page_counts:
            for config in self.configs:
                cell = self.usable_cell(count, config)
                if cell is not None and cell.unstable:
                    found.append((count, config, cell))
        return found

    def clamped_cells(self) -> list[tuple[int, str, Cell]]:
        found = []
        for count in self.page_counts:
            for config in self.configs:
                cell = self.usable_cell(count, config)
                if cell is not None and cell.clamped(config):
                    found.append((count, config, cell))
        return found

    def few_sample_cells(self) -> list[tuple[int, str, Cell]]:
        found = []
        for count in self.page_counts:
            for config in self.configs:
                cell = self.usable_cell(count, config)
                if cell is not None and cell.few:
                    found.append((count, config, cell))
        return found

    @property
    def excluded(self) -> tuple[int, int, int]:
        """Excluded samples: total, backing not verified, pages failed to move."""
        cells = self.cells.values()
        return (
            sum(cell.excluded for cell in cells),
            sum(cell.excluded_backing for cell in cells),
            sum(cell.excluded_failed for cell in cells),
        )

    def notes(self, rule: StabilityRule) -> list[str]:
        """What a reader needs beside the numbers, in the order the table shows them."""
        notes = [
            f"Cells: {STATISTIC_SHORT[self.statistic]}. {UNSTABLE_MARK} unstable "
            f"({rule.describe()}), {FEW_MARK} fewer than {rule.min_samples} samples, "
            f"{MISSING_MARK} no usable samples."
        ]
        clamped = self.clamped_cells()
        if clamped:
            notes[0] += (
                f" {CLAMPED_MARK} fewer copy threads than N ran (the copying node has fewer "
                "CPUs): the cell's effective threads are in a note."
            )
        notes = [*self.preface, *notes]
        if len(self.vanilla_variants) > 1:
            notes.append("The vanilla column pools kernels " + ", ".join(self.vanilla_variants))
        if len(self.runs) > 1:
            notes.append("Pooled runs: " + ", ".join(self.runs))
        for count, config, cell in self.unstable_cells():
            notes.append(
                f"Unstable: {config} at {pages(count)}: {cell.reason} (n={cell.n}; "
                f"min {format_gbps(cell.minimum)}, median {format_gbps(cell.median)}, "
                f"max {format_gbps(cell.maximum)})"
            )
        for count, config, cell in clamped:
            threads = cell.threads_effective
            notes.append(
                f"Clamped: {config} at {pages(count)} ran {threads:g} copy "
                f"thread{'' if threads == 1 else 's'} per batch on average"
            )
        for count, config, cell in self.few_sample_cells():
            notes.append(f"Too few samples: {config} at {pages(count)}: n={cell.n}")
        for count, config, maybe_cell in self.missing_cells():
            if maybe_cell is None:
                notes.append(f"Missing: {config} at {pages(count)} (no samples)")
            else:
                notes.append(
                    f"Missing: {config} at {pages(count)} "
                    f"(all {maybe_cell.excluded} samples excluded)"
                )
        total, backing, failed = self.excluded
        if total:
            notes.append(
                f"Excluded {total} sample(s): {backing} with backing_ok false, "
                f"{failed} with failed pages"
            )
        return notes


def page_kind_order(page_kind: str) -> tuple[int, int, str]:
    """Base pages first, then folio sizes ascending."""
    if page_kind == "base":
        return (0, 0, page_kind)
    match = _SIZE_RE.match(page_kind)
    if match is None:
        return (2, 0, page_kind)
    return (1, int(match.group(1)) * _UNIT_BYTES[match.group(2)], page_kind)


def load_order(load: str) -> tuple[int, str]:
    """idle, busy, then other loads by name."""
    return ({"idle": 0, "busy": 1}.get(load, 2), load)


def workqueue_order(workqueue: str | None) -> tuple[int, str]:
    """No workqueue (kernels without the series) first, then the schema's order."""
    if workqueue is None:
        return (0, "")
    return ({"unbound": 1, "highpri": 2}.get(workqueue, 3), workqueue)


def _base_order(base: tuple[str, str, str]) -> tuple[object, ...]:
    host, page_kind, load = base
    return (host, page_kind_order(page_kind), load_order(load))


def table_title(
    page_kind: str | None,
    base_page_size: int,
    workqueue: str | None,
    load: str | None,
    host: str | None,
    statistic: Statistic = "mean",
    unit: str = "GB/s",
    variant: str | None = None,
) -> str:
    kind = page_kind_label(page_kind, base_page_size) if page_kind is not None else ""
    what = unit if statistic == "mean" else f"{unit}, {statistic}"
    title = f"{kind}{workqueue_phrase(workqueue)}{load_phrase(load)} ({what})".strip()
    if host is not None:
        title += f" - host {host}"
    if variant is not None:
        title += f" - variant {variant}"
    return title


def _optional(value: object) -> str | None:
    return None if value is None or (isinstance(value, float) and np.isnan(value)) else str(value)


def _cell_from_row(row: dict[str, Any], statistic: Statistic) -> Cell:
    ci = ci_columns(statistic)
    return Cell(
        n=int(row["n"]),
        value=float(row[statistic]),
        ci_low=float(row[ci[0]]) if ci else float("nan"),
        ci_high=float(row[ci[1]]) if ci else float("nan"),
        mean=float(row["mean"]),
        amean=float(row["amean"]),
        median=float(row["median"]),
        minimum=float(row["min"]),
        maximum=float(row["max"]),
        cv=float(row["cv"]),
        unstable=bool(row["unstable"]),
        few=bool(row["few"]),
        reason=str(row["reason"]),
        excluded=int(row["excluded"]),
        excluded_backing=int(row["excluded_backing"]),
        excluded_failed=int(row["excluded_failed"]),
        threads_effective=float(row.get("threads_effective", float("nan"))),
    )


def _host_page_sizes(frame: pd.DataFrame) -> dict[str, int]:
    if frame.empty:
        return {}
    counts = frame.groupby(["host", "base_page_size"], observed=True).size()
    sizes: dict[str, int] = {}
    for (host, size), _ in counts.sort_values().items():
        sizes[str(host)] = int(size)  # most common size wins (sorted ascending)
    return sizes


def _values_by_group(
    frame: pd.DataFrame, keys: list[str], column: str
) -> dict[tuple[str, ...], list[str]]:
    """Distinct values of `column` per group of `keys`, sorted."""
    if frame.empty:
        return {}
    pairs = frame.groupby([*keys, column], observed=True).size().reset_index()
    found: dict[tuple[str, ...], list[str]] = {}
    for row in pairs.itertuples(index=False):
        values = tuple(str(getattr(row, key)) for key in keys)
        found.setdefault(values, []).append(str(getattr(row, column)))
    return {group: sorted(values) for group, values in found.items()}


POOLED_VANILLA = "(vanilla kernels)"


@dataclass
class _CellRecord:
    host: str
    page_kind: str
    load: str
    workqueue: str | None
    kernel_variant: str | None
    config: str
    page_count: int
    cell: Cell


def _cell_records(cells: pd.DataFrame, statistic: Statistic) -> list[_CellRecord]:
    records = []
    has_variant = "kernel_variant" in cells.columns
    for row in cells.to_dict("records"):
        records.append(
            _CellRecord(
                host=str(row["host"]),
                page_kind=str(row["page_kind"]),
                load=str(row["load"]),
                workqueue=_optional(row.get("workqueue")),
                kernel_variant=str(row["kernel_variant"]) if has_variant else None,
                config=str(row["copy_config"]),
                page_count=int(row["page_count"]),
                cell=_cell_from_row(row, statistic),
            )
        )
    return records


def build_tables(
    frame: pd.DataFrame,
    statistic: Statistic = "mean",
    rule: StabilityRule | None = None,
    confidence: float = 0.95,
) -> list[SummaryTable]:
    """Every summary table of the samples in `frame` (already filtered), in order of
    host, page kind, load, workqueue (none first), variant."""
    rule = rule or StabilityRule()
    if frame.empty:
        return []
    is_vanilla = (frame["copy_config"] == VANILLA).to_numpy()
    # One pass over all samples; the unpatched kernel's cells pool every vanilla sample of
    # a host, kind and load, whatever kernel variant or workqueue it was recorded with.
    key_frame = frame[list(CELL_KEYS)].copy()
    if is_vanilla.any():
        variants = key_frame["kernel_variant"]
        if POOLED_VANILLA not in variants.cat.categories:
            key_frame["kernel_variant"] = variants.cat.add_categories([POOLED_VANILLA])
        key_frame.loc[is_vanilla, "kernel_variant"] = POOLED_VANILLA
        key_frame.loc[is_vanilla, "workqueue"] = None
    all_cells = cell_statistics(frame, rule, confidence, CELL_KEYS, key_frame)
    del key_frame
    vanilla_rows = (all_cells["copy_config"] == VANILLA).to_numpy()
    vanilla_cells = _cell_records(all_cells[vanilla_rows], statistic)
    patched_cells = _cell_records(all_cells[~vanilla_rows], statistic)
    page_sizes = _host_page_sizes(frame)
    base_keys = ["host", "page_kind", "load"]
    runs = _values_by_group(frame, base_keys, "run_id")
    vanilla_kernels = _values_by_group(frame[is_vanilla], base_keys, "kernel_variant")

    vanilla_by_base: dict[tuple[str, str, str], list[_CellRecord]] = {}
    for record in vanilla_cells:
        vanilla_by_base.setdefault((record.host, record.page_kind, record.load), []).append(record)
    patched_by_table: dict[tuple[str, str, str], dict[tuple[str | None, str], list[_CellRecord]]]
    patched_by_table = {}
    for record in patched_cells:
        base = (record.host, record.page_kind, record.load)
        group = (record.workqueue, str(record.kernel_variant))
        patched_by_table.setdefault(base, {}).setdefault(group, []).append(record)

    tables: list[SummaryTable] = []
    for base in sorted(set(vanilla_by_base) | set(patched_by_table), key=_base_order):
        host, page_kind, load = base
        groups = patched_by_table.get(base, {})
        variants_per_wq: dict[str | None, int] = {}
        for workqueue, _ in groups:
            variants_per_wq[workqueue] = variants_per_wq.get(workqueue, 0) + 1
        ordered = sorted(groups, key=lambda group: (workqueue_order(group[0]), group[1]))
        keyed = [
            (
                TableKey(
                    host,
                    page_kind,
                    load,
                    workqueue,
                    variant if variants_per_wq[workqueue] > 1 else None,
                ),
                groups[(workqueue, variant)],
            )
            for workqueue, variant in ordered
        ] or [(TableKey(host, page_kind, load, None), [])]
        for key, records in keyed:
            table_cells = {
                (record.page_count, record.config): record.cell
                for record in vanilla_by_base.get(base, []) + records
            }
            base_page_size = page_sizes.get(host, 4096)
            tables.append(
                SummaryTable(
                    key=key,
                    title=table_title(
                        page_kind,
                        base_page_size,
                        key.workqueue,
                        load,
                        host,
                        statistic,
                        variant=key.variant,
                    ),
                    statistic=statistic,
                    page_counts=sorted({count for count, _ in table_cells}),
                    configs=sorted({config for _, config in table_cells}, key=config_sort_key),
                    cells=table_cells,
                    base_page_size=base_page_size,
                    runs=runs.get(base, []),
                    vanilla_variants=vanilla_kernels.get(base, []),
                    patched_variants=sorted({str(record.kernel_variant) for record in records}),
                )
            )
    return tables
