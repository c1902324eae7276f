"""How close a copy configuration gets to what the machine can copy at all.

The sweep measures, once per host, kernel variant and load, the user-space copy throughput
from the source node's memory to the destination node's with T threads (migbench --ceiling;
variants/<variant>/ceiling-<load>.json beside samples.jsonl). `miglab table --relative-to
ceiling` divides each cell by the ceiling at the same thread count: 1 for vanilla and serial,
N for mt_N, measured under the same load on the same host.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence

import numpy as np
import pandas as pd

from miglab.errors import ConfigError
from miglab.results.sidecars import Sidecars
from miglab.results.tables import VANILLA, SummaryTable, requested_threads, table_title

CEILING_UNIT = "% of the copy ceiling"
_SCALED = ("value", "ci_low", "ci_high", "mean", "amean", "median", "minimum", "maximum")


def ceiling_frame(sidecars: Sequence[Sidecars]) -> pd.DataFrame:
    """One row per good measurement: run_id, host, kernel_variant, load, direction, threads,
    cpus, gbps, path."""
    rows = [
        {
            "run_id": ceiling.run_id,
            "host": ceiling.host,
            "kernel_variant": ceiling.kernel_variant,
            "load": ceiling.load,
            "direction": m.direction,
            "threads": m.threads,
            "cpus": m.cpus,
            "gbps": m.gbps,
            "path": str(ceiling.path),
        }
        for side in sidecars
        for ceiling in side.ceilings
        if ceiling.ok
        for m in ceiling.measurements
    ]
    columns = ["run_id", "host", "kernel_variant", "load", "direction", "threads", "cpus", "gbps"]
    return pd.DataFrame(rows, columns=[*columns, "path"])


def ceiling_summary(frame: pd.DataFrame) -> pd.DataFrame:
    """The median GB/s of each (run, host, variant, load, direction, threads)."""
    keys = ["run_id", "host", "kernel_variant", "load", "direction", "threads"]
    if frame.empty:
        return pd.DataFrame(columns=[*keys, "cpus", "gbps", "n"])
    grouped = frame.groupby(keys, observed=True)
    return grouped.agg(
        cpus=("cpus", "max"), gbps=("gbps", "median"), n=("gbps", "size")
    ).reset_index()


def config_threads(config: str) -> int:
    """The thread count a configuration is held against: N of mt_N, 1 otherwise."""
    return requested_threads(config) or 1


class CeilingLookup:
    def __init__(self, sidecars: Sequence[Sidecars], direction: str) -> None:
        self.direction = direction
        self.summary = ceiling_summary(ceiling_frame(sidecars))
        self.failed = {
            (c.run_id, c.host, c.kernel_variant, c.load): c.error or "failed"
            for side in sidecars
            for c in side.ceilings
            if not c.ok
        }

    def value(
        self, runs: Sequence[str], host: str, variants: Sequence[str], load: str, threads: int
    ) -> float:
        """The median over the runs and variants given of their ceilings; ConfigError naming
        the run and host when none has one."""
        s = self.summary
        rows = s[
            s["run_id"].isin(list(runs))
            & (s["host"] == host)
            & s["kernel_variant"].isin(list(variants))
            & (s["load"] == load)
            & (s["direction"] == self.direction)
            & (s["threads"] == threads)
        ]
        if not rows.empty:
            return float(np.median(rows["gbps"].to_numpy(dtype=float)))
        where = ", ".join(f"run {run}, host {host}" for run in runs) or f"host {host}"
        reasons = [
            f"{variant}: {self.failed[(run, host, variant, load)]}"
            for run in runs
            for variant in variants
            if (run, host, variant, load) in self.failed
        ]
        detail = f" (the measurement failed: {'; '.join(reasons)})" if reasons else ""
        raise ConfigError(
            "--relative-to ceiling",
            f"{where}: no {self.direction} ceiling of variant {', '.join(variants)} under load "
            f"{load} at {threads} thread(s) (variants/<variant>/ceiling-{load}.json){detail}",
        )


def relative_to_ceiling(
    tables: Sequence[SummaryTable], sidecars: Sequence[Sidecars], direction: str = "push"
) -> list[SummaryTable]:
    """The same tables with every cell as a percentage of the ceiling at its thread count."""
    lookup = CeilingLookup(sidecars, direction)
    if lookup.summary.empty and not lookup.failed:
        runs = sorted({run for table in tables for run in table.runs})
        hosts = sorted({table.key.host for table in tables})
        raise ConfigError(
            "--relative-to ceiling",
            f"run {', '.join(runs)} has no ceiling measurements for host {', '.join(hosts)} "
            "(sweep_ceiling was off, or the run predates it)",
        )
    out = []
    for table in tables:
        cells = {}
        for (count, config), cell in table.cells.items():
            variants = table.vanilla_variants if config == VANILLA else table.patched_variants
            ceiling = lookup.value(
                table.runs, table.key.host, variants or [VANILLA], table.key.load,
                config_threads(config),
            )  # fmt: skip
            scale = 100.0 / ceiling
            cells[(count, config)] = dataclasses.replace(
                cell,
                **{name: getattr(cell, name) * scale for name in _SCALED},
            )
        key = table.key
        title = table_title(
            key.page_kind, table.base_page_size, key.workqueue, key.load, key.host,
            table.statistic, unit=f"{CEILING_UNIT}, {direction}", variant=key.variant,
        )  # fmt: skip
        out.append(
            dataclasses.replace(
                table, title=title, cells=cells, preface=[*ceiling_notes(direction), *table.preface]
            )
        )
    return out


def ceiling_notes(direction: str) -> list[str]:
    return [
        f"Cells: the statistic as a percentage of the user-space {direction} copy ceiling "
        "(migbench --ceiling) at the same thread count (1 for vanilla and serial, N for mt_N), "
        "same host, load and kernel variant."
    ]
