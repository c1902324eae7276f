"""When a copy configuration pays off: the smallest page count from which it is significantly
faster than a baseline at that count and at every larger count measured ("never" if there is
none). The threshold the series' TODO asks for ("a runtime check to decide when to use
multi-threaded folio copy"), read off the measurements.

"Significantly faster" is the comparison `miglab compare --speedup` makes: the same test,
multiple-comparison correction and significance level, over every cell of the input.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pandas as pd

from miglab.results.compare import CellComparison, Comparison, speedups
from miglab.results.render import TextTable
from miglab.results.stats import Correction, StabilityRule, Statistic, Test
from miglab.results.tables import (
    VANILLA,
    config_sort_key,
    load_order,
    page_kind_label,
    page_kind_order,
    pages,
    workqueue_phrase,
)

NEVER = "never"
BASELINES = ("serial", VANILLA)


@dataclass(frozen=True)
class Crossover:
    host: str
    page_kind: str
    load: str
    workqueue: str | None
    kernel_variant: str
    copy_config: str
    baseline: str
    page_count: int | None  # None: never
    counts: tuple[int, ...]  # the page counts compared, ascending
    faster: tuple[bool, ...]  # significantly faster at each of them

    def text(self) -> str:
        return NEVER if self.page_count is None else f">= {pages(self.page_count)}"


def threshold(counts: Sequence[int], faster: Sequence[bool]) -> int | None:
    """The smallest count from which every count (itself and all larger) is faster."""
    found = None
    for count, is_faster in sorted(zip(counts, faster, strict=True), reverse=True):
        if not is_faster:
            break
        found = count
    return found


def _faster(cell: CellComparison) -> bool:
    return cell.significant and cell.difference is not None and cell.difference.ratio > 1


def crossovers(
    frame: pd.DataFrame,
    statistic: Statistic = "mean",
    test: Test = "welch",
    correction: Correction = "holm",
    alpha: float = 0.05,
    confidence: float = 0.95,
    rule: StabilityRule | None = None,
    baselines: Sequence[str] = BASELINES,
    known: dict[str, Comparison] | None = None,
) -> list[Crossover]:
    """`known`: speedup comparisons already made with the same settings, by baseline (the
    report has the one over vanilla)."""
    out: list[Crossover] = []
    for baseline in baselines:
        if not (frame["copy_config"] == baseline).any():
            continue
        comparison = (known or {}).get(baseline) or speedups(
            frame, baseline, statistic, test, correction, alpha, confidence, rule
        )
        by_config: dict[tuple[object, ...], list[CellComparison]] = {}
        for cell in comparison.cells:
            i = cell.identity
            if i["copy_config"] in BASELINES:
                continue
            key = (i["host"], i["page_kind"], i["load"], i["workqueue"], i["kernel_variant"],
                   i["copy_config"])  # fmt: skip
            by_config.setdefault(key, []).append(cell)
        for scope, cells in by_config.items():
            host, kind, load, workqueue, variant, config = scope
            cells.sort(key=lambda c: int(c.identity["page_count"]))  # type: ignore[call-overload]
            counts = tuple(int(c.identity["page_count"]) for c in cells)  # type: ignore[call-overload]
            faster = tuple(_faster(c) for c in cells)
            out.append(
                Crossover(
                    str(host), str(kind), str(load), None if workqueue is None else str(workqueue),
                    str(variant), str(config), baseline, threshold(counts, faster), counts, faster,
                )
            )  # fmt: skip
    out.sort(
        key=lambda c: (
            c.host, page_kind_order(c.page_kind), load_order(c.load), str(c.workqueue),
            c.kernel_variant, config_sort_key(c.copy_config), c.baseline,
        )
    )  # fmt: skip
    return out


def crossover_text_tables(
    found: Sequence[Crossover], page_sizes: dict[str, int], alpha: float, correction: str
) -> list[TextTable]:
    """Per host: rows = (kind, load, workqueue), columns = config, cells 'vs serial; vs
    vanilla'."""
    tables = []
    for host in sorted({c.host for c in found}):
        mine = [c for c in found if c.host == host]
        configs = sorted({c.copy_config for c in mine}, key=config_sort_key)
        scopes = sorted(
            {(c.page_kind, c.load, c.workqueue) for c in mine},
            key=lambda s: (page_kind_order(s[0]), load_order(s[1]), str(s[2])),
        )
        rows = []
        for kind, load, workqueue in scopes:
            label = (
                f"{page_kind_label(kind, page_sizes.get(host, 4096))}"
                f"{workqueue_phrase(workqueue)}, {load}"
            )
            row = [label]
            for config in configs:
                parts = []
                for baseline in BASELINES:
                    match = [
                        c for c in mine
                        if (c.page_kind, c.load, c.workqueue, c.copy_config, c.baseline)
                        == (kind, load, workqueue, config, baseline)
                    ]  # fmt: skip
                    if match:
                        parts.append(f"{match[0].text()} vs {baseline}")
                row.append("; ".join(parts) or "-")
            rows.append(row)
        notes = [
            "From which page count each configuration is significantly faster than serial "
            "(and than vanilla) at that count and every larger one measured, or never "
            f"(the --speedup comparison: significance {alpha}, {correction} correction)."
        ]
        tables.append(TextTable(f"Crossover - host {host}", ["", *configs], rows, notes))
    return tables


def crossover_to_dict(found: Sequence[Crossover]) -> list[dict[str, object]]:
    return [
        {
            "host": c.host,
            "page_kind": c.page_kind,
            "load": c.load,
            "workqueue": c.workqueue,
            "kernel_variant": c.kernel_variant,
            "copy_config": c.copy_config,
            "baseline": c.baseline,
            "from_page_count": c.page_count,
            "page_counts": list(c.counts),
            "significantly_faster": list(c.faster),
        }
        for c in found
    ]
