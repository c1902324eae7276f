"""Comparing two selections cell by cell, and each copy config against a baseline.

A selection is `key=value[,key=value...]` over the loaded samples (keys: host, load, kind,
workqueue, variant, config, run; workqueue=none is the unpatched kernel's), or a results
path whose samples form the selection. Cells of A and B are matched on every dimension in
which A's and B's values overlap; dimensions in which they are disjoint (idle vs busy,
unbound vs highpri, a variant vs vanilla, run r1 vs r2) are what is being compared. One side
may span several values of such a dimension (the configs of a variant against the single
vanilla column); the other must hold one.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from miglab.errors import ConfigError
from miglab.results.render import TextTable, json_number
from miglab.results.stats import (
    CELL_KEYS,
    CORRECTION_DESCRIPTIONS,
    STATISTIC_SHORT,
    TEST_DESCRIPTIONS,
    CellSamples,
    Correction,
    Difference,
    StabilityRule,
    Statistic,
    Test,
    adjust_p_values,
    bootstrap_difference,
    format_percent,
    usable_samples,
    welch_difference,
)
from miglab.results.tables import (
    MISSING_MARK,
    UNSTABLE_MARK,
    VANILLA,
    config_sort_key,
    load_order,
    page_kind_order,
    pages,
    table_title,
    workqueue_order,
)

SIGNIFICANT_MARK = "*"
SELECTION_KEYS: dict[str, str] = {
    "host": "host",
    "load": "load",
    "kind": "page_kind",
    "page_kind": "page_kind",
    "workqueue": "workqueue",
    "wq": "workqueue",
    "variant": "kernel_variant",
    "config": "copy_config",
    "run": "run_id",
}
NONE_VALUES = frozenset({"none", "null", ""})


@dataclass(frozen=True)
class Selection:
    """`criteria` as (column, value) pairs, or a results path (`path`) selecting its samples."""

    text: str
    criteria: tuple[tuple[str, str | None], ...] = ()
    path: Path | None = None


def parse_selection(text: str) -> Selection:
    if "=" not in text:
        path = Path(text)
        if not path.exists():
            raise ConfigError(
                text,
                "neither key=value[,key=value] (keys: "
                + ", ".join(sorted(SELECTION_KEYS))
                + ") nor an existing results path",
            )
        return Selection(text, (), path)
    criteria: list[tuple[str, str | None]] = []
    for part in text.split(","):
        key, sep, value = part.partition("=")
        key = key.strip()
        if not sep or key not in SELECTION_KEYS:
            raise ConfigError(
                text,
                f"{part!r}: expected key=value with key one of {', '.join(sorted(SELECTION_KEYS))}",
            )
        column = SELECTION_KEYS[key]
        value = value.strip()
        criteria.append((column, None if column == "workqueue" and value in NONE_VALUES else value))
    return Selection(text, tuple(criteria))


def select(frame: pd.DataFrame, selection: Selection) -> pd.DataFrame:
    mask = pd.Series(True, index=frame.index)
    for column, value in selection.criteria:
        if value is None:
            mask &= frame[column].isna()
        else:
            mask &= frame[column] == value
    return frame[mask]


def _key_values(frame: pd.DataFrame, column: str) -> set[object]:
    values = frame[column]
    found: set[object] = {
        str(v) if column != "page_count" else int(v) for v in values.dropna().unique()
    }
    if values.isna().any():
        found.add(None)
    return found


@dataclass
class CellComparison:
    identity: dict[str, object]  # the multi-valued side's cell
    a: CellSamples | None
    b: CellSamples | None
    a_value: float
    b_value: float
    difference: Difference | None
    unstable: bool
    p_adjusted: float = math.nan
    significant: bool = False


@dataclass
class Comparison:
    label_a: str
    label_b: str
    statistic: Statistic
    test: Test
    correction: Correction
    alpha: float
    compared_dims: list[str]
    cells: list[CellComparison] = field(default_factory=list)


def _optional_str(value: object) -> str | None:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return None
    return str(value)


class _SampleColumns:
    """The columns a comparison reads, converted to arrays once per frame (converting them
    once per cell took most of a report's comparison time)."""

    def __init__(self, frame: pd.DataFrame) -> None:
        self.moved_bytes = frame["bytes"].to_numpy(dtype=float)
        self.elapsed_ns = frame["elapsed_ns"].to_numpy(dtype=float)
        self.gbps = frame["gbps"].to_numpy(dtype=float)

    def cell(self, positions: np.ndarray) -> CellSamples:
        return CellSamples(
            self.moved_bytes[positions], self.elapsed_ns[positions], self.gbps[positions]
        )


def _groups(frame: pd.DataFrame, keys: list[str]) -> dict[tuple[object, ...], np.ndarray]:
    if frame.empty:
        return {}
    grouped = frame.groupby(keys, observed=True, dropna=False, sort=False)
    result: dict[tuple[object, ...], np.ndarray] = {}
    for key, positions in grouped.indices.items():
        key_tuple = key if isinstance(key, tuple) else (key,)
        normalised = tuple(
            int(v) if k == "page_count" else _optional_str(v)
            for k, v in zip(keys, key_tuple, strict=True)
        )
        result[normalised] = np.asarray(positions)
    return result


def _difference(
    a: CellSamples, b: CellSamples, statistic: Statistic, test: Test, confidence: float
) -> Difference:
    if test == "welch":
        return welch_difference(a, b, statistic, confidence)
    return bootstrap_difference(a, b, statistic, confidence)


def _is_unstable(cell: CellSamples, rule: StabilityRule) -> bool:
    if len(cell) < max(2, rule.min_samples):
        return False
    cv = float(np.std(cell.gbps, ddof=1) / np.mean(cell.gbps))
    return cv > rule.cv_threshold or float(cell.gbps.min()) < rule.low_fraction * float(
        np.median(cell.gbps)
    )


def check_test(statistic: Statistic, test: Test) -> None:
    if statistic in ("min", "max"):
        raise ConfigError("--stat", f"comparisons support mean, amean and median, not {statistic}")
    if test == "welch" and statistic == "median":
        raise ConfigError(
            "--test", "Welch's t-test compares means; use --test bootstrap for median"
        )


def _comparison_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """The columns a comparison reads: selecting them first keeps the copies below small."""
    return frame[[*CELL_KEYS, "bytes", "elapsed_ns", "gbps"]]


def _pooled_vanilla(frame: pd.DataFrame) -> pd.DataFrame:
    """Vanilla samples carry no variant or workqueue identity in a comparison (tables pool
    them the same way)."""
    is_vanilla = (frame["copy_config"] == VANILLA).to_numpy()
    if not is_vanilla.any():
        return frame
    frame = frame.copy()
    for column in ("kernel_variant", "workqueue"):
        values = frame[column].astype(object)
        values[is_vanilla] = VANILLA if column == "kernel_variant" else None
        frame[column] = values
    return frame


def compare_selections(
    frame_a: pd.DataFrame,
    frame_b: pd.DataFrame,
    label_a: str,
    label_b: str,
    statistic: Statistic = "mean",
    test: Test = "welch",
    correction: Correction = "holm",
    alpha: float = 0.05,
    confidence: float = 0.95,
    rule: StabilityRule | None = None,
) -> Comparison:
    """Cell-by-cell change of B relative to A, over usable samples."""
    check_test(statistic, test)
    rule = rule or StabilityRule()
    frame_a = _pooled_vanilla(_comparison_columns(frame_a)[usable_samples(frame_a)])
    frame_b = _pooled_vanilla(_comparison_columns(frame_b)[usable_samples(frame_b)])
    if frame_a.empty:
        raise ConfigError(label_a, "selects no usable samples")
    if frame_b.empty:
        raise ConfigError(label_b, "selects no usable samples")
    dims = list(CELL_KEYS)
    differing = [d for d in dims if not (_key_values(frame_a, d) & _key_values(frame_b, d))]
    matched = [d for d in dims if d not in differing]
    a_multi = [d for d in differing if len(_key_values(frame_a, d)) > 1]
    b_multi = [d for d in differing if len(_key_values(frame_b, d)) > 1]
    if a_multi and b_multi:
        raise ConfigError(
            f"{label_a} vs {label_b}",
            f"both sides span several values of {', '.join(sorted(set(a_multi) | set(b_multi)))}; "
            "narrow one side to a single value",
        )
    # the side spanning several values (or A) keeps its full identity
    b_is_identity = bool(b_multi)
    identity_keys = dims
    result = Comparison(label_a, label_b, statistic, test, correction, alpha, differing)
    a_groups = _groups(frame_a, dims if not b_is_identity else matched)
    b_groups = _groups(frame_b, dims if b_is_identity else matched)
    identity_groups = b_groups if b_is_identity else a_groups
    other_groups = a_groups if b_is_identity else b_groups
    identity_frame = _SampleColumns(frame_b if b_is_identity else frame_a)
    other_frame = _SampleColumns(frame_a if b_is_identity else frame_b)
    matched_index = [identity_keys.index(d) for d in matched]
    seen_other: set[tuple[object, ...]] = set()
    for key, positions in identity_groups.items():
        match_key = tuple(key[i] for i in matched_index)
        identity = dict(zip(identity_keys, key, strict=True))
        mine = identity_frame.cell(positions)
        other_positions = other_groups.get(match_key)
        theirs = None if other_positions is None else other_frame.cell(other_positions)
        seen_other.add(match_key)
        a_cell, b_cell = (theirs, mine) if b_is_identity else (mine, theirs)
        difference = None
        if a_cell is not None and b_cell is not None:
            difference = _difference(a_cell, b_cell, statistic, test, confidence)
        result.cells.append(
            CellComparison(
                identity=identity,
                a=a_cell,
                b=b_cell,
                a_value=a_cell.statistic(statistic) if a_cell is not None else math.nan,
                b_value=b_cell.statistic(statistic) if b_cell is not None else math.nan,
                difference=difference,
                unstable=any(
                    cell is not None and _is_unstable(cell, rule) for cell in (a_cell, b_cell)
                ),
            )
        )
    # cells only the other side has
    for match_key, positions in other_groups.items():
        if match_key in seen_other:
            continue
        identity = {d: None for d in identity_keys}
        identity.update(dict(zip(matched, match_key, strict=True)))
        theirs = other_frame.cell(positions)
        a_cell, b_cell = (theirs, None) if b_is_identity else (None, theirs)
        result.cells.append(
            CellComparison(
                identity=identity,
                a=a_cell,
                b=b_cell,
                a_value=a_cell.statistic(statistic) if a_cell is not None else math.nan,
                b_value=b_cell.statistic(statistic) if b_cell is not None else math.nan,
                difference=None,
                unstable=False,
            )
        )
    _decide(result.cells, correction, alpha)
    return result


def _decide(cells: Sequence[CellComparison], correction: Correction, alpha: float) -> None:
    p_values = [
        cell.difference.p_value if cell.difference is not None else math.nan for cell in cells
    ]
    for cell, adjusted in zip(cells, adjust_p_values(p_values, correction), strict=True):
        cell.p_adjusted = adjusted
        cell.significant = not math.isnan(adjusted) and adjusted < alpha


def speedups(
    frame: pd.DataFrame,
    baseline: str = VANILLA,
    statistic: Statistic = "mean",
    test: Test = "welch",
    correction: Correction = "holm",
    alpha: float = 0.05,
    confidence: float = 0.95,
    rule: StabilityRule | None = None,
) -> Comparison:
    """Each copy config over the baseline config of the same host, kind, load, workqueue
    (vanilla: the unpatched kernel's column, shared by every workqueue) and page count."""
    check_test(statistic, test)
    rule = rule or StabilityRule()
    usable = _pooled_vanilla(_comparison_columns(frame)[usable_samples(frame)])
    if usable.empty:
        raise ConfigError("RESULTS", "no usable samples")
    if not (usable["copy_config"] == baseline).any():
        raise ConfigError("--baseline", f"no samples of copy config {baseline!r}")
    dims = list(CELL_KEYS)
    groups = _groups(usable, dims)
    columns = _SampleColumns(usable)
    baseline_index: dict[tuple[object, ...], tuple[object, ...]] = {}
    for key in groups:
        identity = dict(zip(dims, key, strict=True))
        if identity["copy_config"] != baseline:
            continue
        base = (identity["host"], identity["page_kind"], identity["load"], identity["page_count"])
        scope = (*base, identity["workqueue"], identity["kernel_variant"])
        baseline_index[scope] = key
        if baseline == VANILLA:
            baseline_index[base] = key
    result = Comparison(
        f"copy_config={baseline}",
        "each copy config",
        statistic,
        test,
        correction,
        alpha,
        ["copy_config"],
    )
    for key, positions in groups.items():
        identity = dict(zip(dims, key, strict=True))
        if identity["copy_config"] == baseline or identity["copy_config"] == VANILLA:
            continue
        base = (identity["host"], identity["page_kind"], identity["load"], identity["page_count"])
        scope = (*base, identity["workqueue"], identity["kernel_variant"])
        baseline_key = baseline_index.get(base if baseline == VANILLA else scope)
        b_cell = columns.cell(positions)
        a_cell = None if baseline_key is None else columns.cell(groups[baseline_key])
        difference = None
        if a_cell is not None:
            difference = _difference(a_cell, b_cell, statistic, test, confidence)
        result.cells.append(
            CellComparison(
                identity=identity,
                a=a_cell,
                b=b_cell,
                a_value=a_cell.statistic(statistic) if a_cell is not None else math.nan,
                b_value=b_cell.statistic(statistic),
                difference=difference,
                unstable=any(
                    cell is not None and _is_unstable(cell, rule) for cell in (a_cell, b_cell)
                ),
            )
        )
    _decide(result.cells, correction, alpha)
    return result


# Presentation ----------------------------------------------------------------------------


@dataclass
class ComparisonTable:
    title: str
    page_counts: list[int]
    configs: list[str]
    cells: dict[tuple[int, str], CellComparison]
    identity: dict[str, object]

    def cell(self, page_count: int, config: str) -> CellComparison | None:
        return self.cells.get((page_count, config))


def _table_order(identity: dict[str, object]) -> tuple[object, ...]:
    return (
        str(identity["host"] or ""),
        page_kind_order(str(identity["page_kind"] or "")),
        load_order(str(identity["load"] or "")),
        workqueue_order(_optional_str(identity["workqueue"])),
        str(identity["kernel_variant"] or ""),
    )


def comparison_tables(
    comparison: Comparison, page_sizes: dict[str, int], unit: str
) -> list[ComparisonTable]:
    """Group cells into tables like the summary tables: rows page counts, columns configs."""
    scope_keys = ("host", "page_kind", "load", "workqueue", "kernel_variant")
    # A compared dimension with one value on each side does not split tables (cells found on
    # one side only do not even know it).
    blank = {
        key
        for key in scope_keys
        if key in comparison.compared_dims
        and len({cell.identity[key] for cell in comparison.cells} - {None}) <= 1
    }

    def scope_of(cell: CellComparison, keys: Sequence[str]) -> tuple[object, ...]:
        return tuple(None if key in blank else cell.identity[key] for key in keys)

    grouped: dict[tuple[object, ...], list[CellComparison]] = {}
    vanilla_by_base: dict[tuple[object, ...], list[CellComparison]] = {}
    for cell in comparison.cells:
        if cell.identity["copy_config"] == VANILLA:
            vanilla_by_base.setdefault(scope_of(cell, scope_keys[:3]), []).append(cell)
        else:
            grouped.setdefault(scope_of(cell, scope_keys), []).append(cell)
    # as in the summary tables, the vanilla column joins every table of its host, kind, load
    for base, cells in vanilla_by_base.items():
        scopes = [scope for scope in grouped if scope[:3] == base]
        for scope in scopes:
            grouped[scope] = cells + grouped[scope]
        if not scopes:
            grouped[(*base, None, VANILLA)] = cells
    tables = []
    differing = set(comparison.compared_dims)
    for scope, cells in grouped.items():
        identity = dict(zip(scope_keys, scope, strict=True))
        host = _optional_str(identity["host"])
        by_cell = {
            (int(str(cell.identity["page_count"])), str(cell.identity["copy_config"] or "")): cell
            for cell in cells
        }
        # a workqueue that only one side has (a variant against vanilla) still names the table
        workqueue = next(
            (str(c.identity["workqueue"]) for c in cells if c.identity["workqueue"] is not None),
            None,
        )
        tables.append(
            ComparisonTable(
                title=table_title(
                    _optional_str(identity["page_kind"]) if "page_kind" not in differing else None,
                    page_sizes.get(host or "", 4096),
                    workqueue,
                    _optional_str(identity["load"]) if "load" not in differing else None,
                    host if "host" not in differing else None,
                    comparison.statistic,
                    unit=unit,
                ),
                page_counts=sorted({count for count, _ in by_cell}),
                configs=sorted({config for _, config in by_cell}, key=config_sort_key),
                cells=by_cell,
                identity=identity,
            )
        )
    tables.sort(key=lambda table: _table_order(table.identity))
    # two patched kernels with the same workqueue would share a title: name the variant
    titles = [table.title for table in tables]
    for table in tables:
        variant = _optional_str(table.identity["kernel_variant"])
        if titles.count(table.title) > 1 and variant is not None:
            table.title += f" - variant {variant}"
    return tables


def _signed_percent(value: float) -> str:
    """One decimal with a sign; rounding noise around zero reads +0.0, not -0.0."""
    rounded = round(value, 1)
    return f"{rounded + 0.0:+.1f}" if rounded != 0 else "+0.0"


def change_text(cell: CellComparison | None, show_spread: bool, as_ratio: bool) -> str:
    if cell is None or cell.difference is None:
        return MISSING_MARK
    difference = cell.difference
    if as_ratio:
        text = f"{difference.ratio:.2f}x"
        if show_spread and not math.isnan(difference.ci_low):
            text += f" [{difference.ci_low:.2f}, {difference.ci_high:.2f}]"
    else:
        text = f"{_signed_percent(difference.change_percent)}%"
        if show_spread and not math.isnan(difference.ci_low):
            low = _signed_percent((difference.ci_low - 1) * 100)
            high = _signed_percent((difference.ci_high - 1) * 100)
            text += f" [{low}, {high}]"
    if cell.significant:
        text += SIGNIFICANT_MARK
    if cell.unstable:
        text += UNSTABLE_MARK
    return text


def comparison_notes(comparison: Comparison, table: ComparisonTable, as_ratio: bool) -> list[str]:
    baseline = comparison.label_a.split("=", 1)[-1]
    what = f"each config over {baseline}" if as_ratio else "change of B relative to A"
    notes = [
        f"Cells: {what} in {STATISTIC_SHORT[comparison.statistic].split(' = ')[0]} GB/s. "
        f"{SIGNIFICANT_MARK} significant at alpha {comparison.alpha:g} "
        f"({TEST_DESCRIPTIONS[comparison.test]}; {CORRECTION_DESCRIPTIONS[comparison.correction]}); "
        f"{UNSTABLE_MARK} A or B unstable; {MISSING_MARK} not comparable."
    ]
    for count in table.page_counts:
        for config in table.configs:
            cell = table.cell(count, config)
            if cell is None:
                continue
            where = f"{config} at {pages(count)}"
            if cell.a is None:
                notes.append(f"Only in B: {where}")
            elif cell.b is None:
                notes.append(f"Only in A: {where}")
            elif cell.difference is not None and math.isnan(cell.difference.p_value):
                notes.append(
                    f"Not testable: {where} (n={len(cell.a)} vs n={len(cell.b)}; needs 2 each)"
                )
    return notes


def best_speedups(comparison: Comparison, table: ComparisonTable) -> list[str]:
    """Per config, the largest ratio over the baseline and whether it holds up."""
    lines = []
    for config in table.configs:
        candidates = [
            (cell.difference.ratio, count, cell)
            for count in table.page_counts
            if (cell := table.cell(count, config)) is not None and cell.difference is not None
        ]
        if not candidates:
            continue
        ratio, count, cell = max(candidates, key=lambda item: item[0])
        assert cell.difference is not None
        interval = (
            f"95% CI {cell.difference.ci_low:.2f}x-{cell.difference.ci_high:.2f}x"
            if not math.isnan(cell.difference.ci_low)
            else "no CI"
        )
        verdict = "significant" if cell.significant else "not significant"
        if cell.unstable:
            verdict += ", unstable"
        lines.append(
            f"Best {config}: {ratio:.2f}x at {pages(count)} ({interval}, {verdict}; "
            f"{format_percent(ratio - 1)} change)"
        )
    return lines


def comparison_text_tables(
    comparison: Comparison,
    tables: Sequence[ComparisonTable],
    show_spread: bool,
    as_ratio: bool,
    speedup_summary: bool = False,
) -> list[TextTable]:
    text_tables = []
    for table in tables:
        rows = [
            [str(count)]
            + [
                change_text(table.cell(count, config), show_spread, as_ratio)
                for config in table.configs
            ]
            for count in table.page_counts
        ]
        notes = comparison_notes(comparison, table, as_ratio)
        if speedup_summary:
            notes[1:1] = best_speedups(comparison, table)
        text_tables.append(TextTable(table.title, ["pages", *table.configs], rows, notes))
    return text_tables


def comparison_to_dict(
    comparison: Comparison, tables: Sequence[ComparisonTable], as_ratio: bool
) -> dict[str, Any]:
    def cell_dict(cell: CellComparison | None) -> dict[str, Any] | None:
        if cell is None:
            return None
        difference = cell.difference
        return {
            "a": json_number(cell.a_value),
            "b": json_number(cell.b_value),
            "n_a": len(cell.a) if cell.a is not None else 0,
            "n_b": len(cell.b) if cell.b is not None else 0,
            "ratio": json_number(difference.ratio) if difference else None,
            "change_percent": json_number(difference.change_percent) if difference else None,
            "ratio_ci": [json_number(difference.ci_low), json_number(difference.ci_high)]
            if difference
            else None,
            "p_value": json_number(difference.p_value) if difference else None,
            "p_adjusted": json_number(cell.p_adjusted),
            "significant": cell.significant,
            "unstable": cell.unstable,
        }

    return {
        "a": comparison.label_a,
        "b": comparison.label_b,
        "statistic": comparison.statistic,
        "test": comparison.test,
        "test_description": TEST_DESCRIPTIONS[comparison.test],
        "correction": comparison.correction,
        "alpha": comparison.alpha,
        "compared": comparison.compared_dims,
        "as_ratio": as_ratio,
        "tables": [
            {
                "title": table.title,
                "columns": table.configs,
                "rows": [
                    {
                        "pages": count,
                        "cells": {
                            config: cell_dict(table.cell(count, config)) for config in table.configs
                        },
                    }
                    for count in table.page_counts
                ],
                "notes": comparison_notes(comparison, table, as_ratio),
            }
            for table in tables
        ],
    }
