"""Rendering tables as Markdown, plain text, CSV and JSON.

Every table becomes a TextTable (title, header, rows of strings, notes) first, so all
formats show the same cells; JSON is built from the table objects and keeps full precision.
"""

from __future__ import annotations

import csv
import io
import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

from miglab.results.stats import (
    STATISTIC_DESCRIPTIONS,
    StabilityRule,
    format_gbps,
    format_percent,
)
from miglab.results.tables import (
    CLAMPED_MARK,
    FEW_MARK,
    MISSING_MARK,
    UNSTABLE_MARK,
    Cell,
    SummaryTable,
    page_kind_label,
)

Format = Literal["markdown", "csv", "text", "json"]
FORMATS: tuple[Format, ...] = ("markdown", "csv", "text", "json")


@dataclass
class TextTable:
    title: str
    header: list[str]
    rows: list[list[str]]
    notes: list[str] = field(default_factory=list)
    align_left: bool = False  # text columns (provenance) rather than numbers


def _markdown(table: TextTable) -> str:
    def line(cells: Sequence[str]) -> str:
        return "| " + " | ".join(cell.replace("|", "\\|") for cell in cells) + " |"

    parts = [f"### {table.title}", "", line(table.header)]
    rule = "---" if table.align_left else "---:"
    parts.append("| " + " | ".join(rule for _ in table.header) + " |")
    parts.extend(line(row) for row in table.rows)
    if table.notes:
        parts.append("")
        parts.extend(f"- {note}" for note in table.notes)
    return "\n".join(parts) + "\n"


def _text(table: TextTable) -> str:
    widths = [len(cell) for cell in table.header]
    for row in table.rows:
        widths = [max(width, len(cell)) for width, cell in zip(widths, row, strict=True)]
    parts = [table.title, ""]
    for cells in [table.header, *table.rows]:
        parts.append(
            "  ".join(cell.rjust(width) for cell, width in zip(cells, widths, strict=True)).rstrip()
        )
    if table.notes:
        parts.append("")
        parts.extend(f"  {note}" for note in table.notes)
    return "\n".join(parts) + "\n"


def _csv(table: TextTable) -> str:
    buffer = io.StringIO()
    buffer.write(f"# {table.title}\n")
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(table.header)
    writer.writerows(table.rows)
    for note in table.notes:
        buffer.write(f"# {note}\n")
    return buffer.getvalue()


def render_text_tables(
    tables: Sequence[TextTable], fmt: Format, preamble: Sequence[str] = ()
) -> str:
    """Tables in markdown, text or csv, separated by blank lines; preamble lines first."""
    renderer = {"markdown": _markdown, "text": _text, "csv": _csv}[fmt]
    blocks = []
    if preamble:
        prefix = "# " if fmt == "csv" else ""
        blocks.append("".join(f"{prefix}{line}\n" for line in preamble))
    blocks.extend(renderer(table) for table in tables)
    return "\n".join(blocks)


def two_decimals(value: float) -> str:
    return f"{value:.2f}"


def _marks(cell: Cell) -> str:
    return (UNSTABLE_MARK if cell.unstable else "") + (FEW_MARK if cell.few else "")


def _spread(cell: Cell, statistic: str) -> str:
    if math.isnan(cell.ci_low) or math.isnan(cell.ci_high):
        return ""
    if statistic == "median":
        return f" [{cell.ci_low:.2f}, {cell.ci_high:.2f}]"
    return f" ± {(cell.ci_high - cell.ci_low) / 2:.2f}"


def _noise(cell: Cell) -> str:
    cv = "-" if math.isnan(cell.cv) else format_percent(cell.cv)
    return f" (n={cell.n}, CV {cv}, {format_gbps(cell.minimum)}-{format_gbps(cell.maximum)})"


def summary_cell_text(
    cell: Cell | None,
    statistic: str,
    show_spread: bool,
    show_noise: bool = False,
    config: str | None = None,
) -> str:
    if cell is None or cell.missing:
        return MISSING_MARK
    text = two_decimals(cell.value)
    if show_spread:
        text += _spread(cell, statistic)
    text += _marks(cell)
    if config is not None and cell.clamped(config):
        text += CLAMPED_MARK
    if show_noise:
        text += _noise(cell)
    return text


def summary_text_table(
    table: SummaryTable,
    rule: StabilityRule,
    show_spread: bool,
    fmt: Format,
    show_noise: bool = False,
) -> TextTable:
    if fmt == "csv":
        return _summary_csv_table(table, rule, show_spread, show_noise)
    notes = table.notes(rule)
    if show_spread:
        notes.insert(1, _spread_note(table.statistic))
    if show_noise:
        notes.insert(1, "Noise: (n = usable samples, CV of per-sample GB/s, min-max GB/s).")
    rows = [
        [str(count)]
        + [
            summary_cell_text(
                table.cell(count, config), table.statistic, show_spread, show_noise, config
            )
            for config in table.configs
        ]
        for count in table.page_counts
    ]
    return TextTable(table.title, ["pages", *table.configs], rows, notes)


def _spread_note(statistic: str) -> str:
    if statistic == "median":
        return "Spread: median [95% CI] (order-statistic interval)."
    if statistic in ("mean", "amean"):
        return f"Spread: {statistic} ± half-width of its 95% confidence interval."
    return f"Spread: no confidence interval for the {statistic}."


def _summary_csv_table(
    table: SummaryTable, rule: StabilityRule, show_spread: bool, show_noise: bool = False
) -> TextTable:
    """CSV keeps cells numeric: missing cells are empty, marks go to an `unstable` column."""
    header = ["pages"]
    for config in table.configs:
        header.append(config)
        if show_spread:
            header.extend([f"{config}_ci_low", f"{config}_ci_high"])
        if show_noise:
            header.extend([f"{config}_n", f"{config}_cv", f"{config}_min", f"{config}_max"])
    header.extend(["unstable", "few_samples"])
    rows = []
    for count in table.page_counts:
        row = [str(count)]
        unstable, few = [], []
        for config in table.configs:
            cell = table.usable_cell(count, config)
            row.append("" if cell is None else two_decimals(cell.value))
            if show_spread:
                for bound in ("ci_low", "ci_high"):
                    value = math.nan if cell is None else getattr(cell, bound)
                    row.append("" if math.isnan(value) else two_decimals(value))
            if show_noise:
                if cell is None:
                    row.extend(["0", "", "", ""])
                else:
                    cv = "" if math.isnan(cell.cv) else f"{cell.cv:.4f}"
                    row.extend([str(cell.n), cv, f"{cell.minimum:.4g}", f"{cell.maximum:.4g}"])
            if cell is not None and cell.unstable:
                unstable.append(config)
            if cell is not None and cell.few:
                few.append(config)
        row.extend([" ".join(unstable), " ".join(few)])
        rows.append(row)
    return TextTable(table.title, header, rows, table.notes(rule))


def json_number(value: float) -> float | None:
    """A float for JSON: NaN (no value) becomes null."""
    return None if math.isnan(value) else value


def cell_to_dict(cell: Cell) -> dict[str, Any]:
    return {
        "n": cell.n,
        "value": json_number(cell.value),
        "ci_low": json_number(cell.ci_low),
        "ci_high": json_number(cell.ci_high),
        "mean": json_number(cell.mean),
        "amean": json_number(cell.amean),
        "median": json_number(cell.median),
        "min": json_number(cell.minimum),
        "max": json_number(cell.maximum),
        "cv": json_number(cell.cv),
        "unstable": cell.unstable,
        "few_samples": cell.few,
        "reason": cell.reason or None,
        "excluded": cell.excluded,
        "threads_effective": json_number(cell.threads_effective),
    }


def summary_table_to_dict(table: SummaryTable, rule: StabilityRule) -> dict[str, Any]:
    rows = []
    for count in table.page_counts:
        cells: dict[str, Any] = {}
        for config in table.configs:
            cell = table.usable_cell(count, config)
            cells[config] = (
                None if cell is None else {**cell_to_dict(cell), "clamped": cell.clamped(config)}
            )
        rows.append({"pages": count, "cells": cells})
    return {
        "title": table.title,
        "host": table.key.host,
        "page_kind": table.key.page_kind,
        "page_kind_label": page_kind_label(table.key.page_kind, table.base_page_size),
        "base_page_size": table.base_page_size,
        "load": table.key.load,
        "workqueue": table.key.workqueue,
        "variant": table.key.variant,
        "kernel_variants": table.patched_variants,
        "vanilla_kernels": table.vanilla_variants,
        "runs": table.runs,
        "statistic": table.statistic,
        "columns": table.configs,
        "rows": rows,
        "notes": table.notes(rule),
    }


def render_summary_tables(
    tables: Sequence[SummaryTable],
    fmt: Format,
    rule: StabilityRule,
    show_spread: bool = False,
    preamble: Sequence[str] = (),
    statistic: str = "mean",
    show_noise: bool = False,
) -> str:
    if fmt == "json":
        document = {
            "statistic": statistic,
            "statistic_description": STATISTIC_DESCRIPTIONS[statistic],
            "stability": {
                "cv_threshold": rule.cv_threshold,
                "low_fraction": rule.low_fraction,
                "min_samples": rule.min_samples,
            },
            "messages": list(preamble),
            "tables": [summary_table_to_dict(table, rule) for table in tables],
        }
        return json.dumps(document, indent=2) + "\n"
    text_tables = [
        summary_text_table(table, rule, show_spread, fmt, show_noise) for table in tables
    ]
    return render_text_tables(text_tables, fmt, preamble)
