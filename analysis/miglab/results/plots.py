"""Plots as PNG and SVG: throughput vs page count, speedup heat maps, throughput vs the
application's loss (with the Pareto front) and CPU per GB moved (charged / charged to nobody).

Figures are built on matplotlib.figure.Figure directly (no pyplot state), rendered by the
Agg and SVG backends; PlotRenderer draws them in worker processes, one figure per task.
Every plotted series carries an SVG id `series-<panel>-<config>` so that a test or a reader
can count and find the series in the SVG file.
"""

from __future__ import annotations

import multiprocessing
import os
import re
import textwrap
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import matplotlib
import numpy as np
from matplotlib import colors, ticker
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from miglab.results.compare import ComparisonTable, change_text
from miglab.results.cost import CostTable, pareto_front, tradeoff_points
from miglab.results.tables import (
    SummaryTable,
    load_order,
    load_phrase,
    page_kind_label,
    workqueue_phrase,
)

matplotlib.use("Agg")

_RC: dict[str, Any] = {
    "svg.fonttype": "none",
    "svg.hashsalt": "miglab",
    "font.size": 9,
    "image.composite_image": False,  # one SVG image per heat-map row, named by its gid
}
_METADATA_SVG = {"Date": None}
_METADATA_PNG = {"Software": "miglab"}


@dataclass(frozen=True)
class PlotFile:
    kind: str  # "throughput", "speedup", "tradeoff" or "cpu"
    title: str
    png: Path
    svg: Path
    series: int  # plotted series (lines, or heat-map rows)


PlotFunction = Callable[..., list["PlotFile"]]


class PlotRenderer:
    """Draws plots in worker processes, one figure per task, while the caller goes on
    computing; files() gives them in the order they were asked for. Drawing dominates a
    report's time and each figure is independent, so a 2-CPU machine draws two at once. The
    files are the same bytes whichever process draws them. workers=1 draws in this process.
    """

    def __init__(self, workers: int | None = None) -> None:
        workers = workers or len(os.sched_getaffinity(0))
        self._executor: ProcessPoolExecutor | None = None
        if workers > 1:
            # a clean server process that has imported this module forks the workers: no
            # fork of the caller (its threads, its memory), no import per worker
            context = multiprocessing.get_context("forkserver")
            context.set_forkserver_preload([__name__])
            self._executor = ProcessPoolExecutor(workers, mp_context=context)
        self._pending: list[Future[list[PlotFile]] | list[PlotFile]] = []

    def submit(self, plot: PlotFunction, items: Sequence[Any], *args: Any) -> None:
        """plot(items, *args), one call per figure: a throughput figure takes the tables of
        its panels, every other figure one table."""
        if plot is plot_throughput:
            batches = list(_figure_groups(items).values())
        else:
            batches = [[item] for item in items]
        for batch in batches:
            if self._executor is None:
                self._pending.append(plot(batch, *args))
            else:
                self._pending.append(self._executor.submit(plot, batch, *args))

    def files(self) -> list[PlotFile]:
        files: list[PlotFile] = []
        for pending in self._pending:
            files += pending.result() if isinstance(pending, Future) else pending
        return files

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(cancel_futures=True)

    def __enter__(self) -> PlotRenderer:
        return self

    def __exit__(self, *_: object) -> None:
        self.close()


def _slug(*parts: str | None) -> str:
    text = "-".join(part for part in parts if part)
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("_")


def _save(figure: Figure, out_dir: Path, stem: str) -> tuple[Path, Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    png = out_dir / f"{stem}.png"
    svg = out_dir / f"{stem}.svg"
    with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
        figure.savefig(png, format="png", dpi=110, metadata=_METADATA_PNG)
        # the layout is made: the SVG keeps it rather than laying the figure out again
        figure.set_layout_engine("none")
        figure.savefig(svg, format="svg", metadata=_METADATA_SVG)
    return png, svg


def _figure_groups(
    tables: Sequence[SummaryTable],
) -> dict[tuple[str, str, str | None, str | None], list[SummaryTable]]:
    groups: dict[tuple[str, str, str | None, str | None], list[SummaryTable]] = {}
    for table in tables:
        key = (table.key.host, table.key.page_kind, table.key.workqueue, table.key.variant)
        groups.setdefault(key, []).append(table)
    return groups


def plot_throughput(
    tables: Sequence[SummaryTable], out_dir: Path, confidence: float = 0.95
) -> list[PlotFile]:
    """One figure per host, page kind and workqueue; one panel per load; one line per copy
    config with its confidence band; log2 page-count axis."""
    files = []
    for (host, page_kind, workqueue, variant), group in _figure_groups(tables).items():
        group = sorted(group, key=lambda table: load_order(table.key.load))
        with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
            figure = Figure(figsize=(4.2 * len(group) + 0.8, 4.0), layout="constrained")
            axes = figure.subplots(1, len(group), squeeze=False, sharey=True)[0]
            series = 0
            for axis, table in zip(axes, group, strict=True):
                series += _throughput_panel(axis, table)
            kind = page_kind_label(page_kind, group[0].base_page_size)
            title = f"{kind}{workqueue_phrase(workqueue)} - host {host}"
            if variant:
                title += f" - variant {variant}"
            statistic = group[0].statistic
            width = 4.2 * len(group) + 0.8
            figure.suptitle(
                textwrap.fill(
                    f"{title}: {statistic} GB/s, {confidence:.0%} CI bands", int(width * 9)
                ),
                fontsize=10,
            )
            axes[0].set_ylabel(f"{statistic} GB/s")
            handles, labels = axes[0].get_legend_handles_labels()
            for axis in axes[1:]:
                for handle, label in zip(*axis.get_legend_handles_labels(), strict=True):
                    if label not in labels:
                        handles.append(handle)
                        labels.append(label)
            figure.legend(handles, labels, loc="outside right center", fontsize=8)
        stem = _slug("throughput", host, page_kind, workqueue or "none", variant)
        png, svg = _save(figure, out_dir, stem)
        files.append(PlotFile("throughput", title, png, svg, series))
    return files


def _throughput_panel(axis: Axes, table: SummaryTable) -> int:
    palette = matplotlib.colormaps["tab10"]
    plotted = 0
    for index, config in enumerate(table.configs):
        points = [
            (count, cell)
            for count in table.page_counts
            if (cell := table.usable_cell(count, config)) is not None
        ]
        if not points:
            continue
        x = np.array([count for count, _ in points], dtype=float)
        y = np.array([cell.value for _, cell in points])
        low = np.array([cell.ci_low for _, cell in points])
        high = np.array([cell.ci_high for _, cell in points])
        color = palette(index % 10)
        gid = _slug("series", table.key.load, config)
        axis.plot(x, y, marker="o", markersize=3, color=color, label=config, gid=gid)
        band = ~(np.isnan(low) | np.isnan(high))
        if band.any():
            axis.fill_between(
                x,
                np.where(band, low, y),
                np.where(band, high, y),
                color=color,
                alpha=0.15,
                linewidth=0,
                gid=_slug("band", table.key.load, config),
            )
        unstable = np.array([cell.unstable for _, cell in points])
        if unstable.any():
            axis.plot(
                x[unstable],
                y[unstable],
                linestyle="none",
                marker="x",
                markersize=7,
                color=color,
                gid=_slug("unstable", table.key.load, config),
            )
        plotted += 1
    axis.set_xscale("log", base=2)
    # label the page counts measured, as plain numbers
    axis.set_xticks(table.page_counts, [str(count) for count in table.page_counts])
    axis.xaxis.set_minor_locator(ticker.NullLocator())
    axis.set_xlabel("pages moved")
    axis.set_title(load_phrase(table.key.load).strip() or table.key.load, fontsize=9)
    axis.grid(True, which="major", alpha=0.3)
    return plotted


def plot_speedup_heatmaps(
    tables: Sequence[ComparisonTable], out_dir: Path, baseline: str = "vanilla"
) -> list[PlotFile]:
    """Configs x page counts, colour = ratio over the baseline (log scale centred on 1);
    each cell labelled with its ratio and the significance mark, grey when missing."""
    files = []
    for table in tables:
        configs = table.configs
        counts = table.page_counts
        ratios = np.full((len(configs), len(counts)), np.nan)
        labels = [["" for _ in counts] for _ in configs]
        for row, config in enumerate(configs):
            for column, count in enumerate(counts):
                cell = table.cell(count, config)
                if cell is not None and cell.difference is not None:
                    ratios[row, column] = cell.difference.ratio
                    labels[row][column] = change_text(cell, show_spread=False, as_ratio=True)
        finite = ratios[np.isfinite(ratios) & (ratios > 0)]
        extent = max(2.0, float(np.max(np.abs(np.log2(finite)))) if finite.size else 1.0)
        with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
            figure = Figure(
                figsize=(max(4.8, 1.6 + 0.75 * len(counts)), 1.6 + 0.45 * len(configs)),
                layout="constrained",
            )
            axis = figure.subplots()
            cmap = matplotlib.colormaps["RdBu"].with_extremes(bad="#dddddd")
            norm = colors.LogNorm(vmin=2**-extent, vmax=2**extent)
            image = None
            for row, config in enumerate(configs):
                # one image per config row: each series is its own SVG element
                image = axis.imshow(
                    np.ma.masked_invalid(ratios[row : row + 1]),
                    cmap=cmap,
                    norm=norm,
                    aspect="auto",
                    extent=(-0.5, len(counts) - 0.5, row + 0.5, row - 0.5),
                    gid=_slug("series", "speedup", config),
                )
                for column in range(len(counts)):
                    value = ratios[row, column]
                    dark = np.isfinite(value) and value > 0 and abs(np.log2(value)) > 0.6 * extent
                    label = axis.text(
                        column,
                        row,
                        labels[row][column] or "-",
                        ha="center",
                        va="center",
                        fontsize=7,
                        color="white" if dark else "black",
                    )
                    # inside the axes: the layout need not measure it
                    label.set_in_layout(False)
            axis.set_xlim(-0.5, len(counts) - 0.5)
            axis.set_ylim(len(configs) - 0.5, -0.5)
            axis.set_xticks(range(len(counts)), [str(count) for count in counts])
            axis.set_yticks(range(len(configs)), configs)
            axis.set_xlabel("pages moved")
            axis.set_title(textwrap.fill(table.title, 48), fontsize=8)
            if image is not None:
                # ratios as plain numbers at powers of two (a log axis would typeset 2^k)
                figure.colorbar(
                    image,
                    ax=axis,
                    label=f"ratio over {baseline} (* significant)",
                    ticks=[2.0**k for k in range(-int(extent), int(extent) + 1)],
                    format=ticker.FuncFormatter(lambda value, _: f"{value:g}"),
                ).minorticks_off()
        identity = table.identity
        stem = _slug(
            "speedup",
            str(identity["host"]),
            str(identity["page_kind"]),
            str(identity["load"]),
            str(identity["workqueue"] or "none"),
            str(identity["kernel_variant"]) if " - variant " in table.title else None,
        )
        png, svg = _save(figure, out_dir, stem)
        files.append(PlotFile("speedup", table.title, png, svg, len(configs)))
    return files


def plot_tradeoff(tables: Sequence[CostTable], out_dir: Path) -> list[PlotFile]:
    """Under each stress load: migration throughput against the application's loss, one point
    per copy configuration and page count, the Pareto front drawn (nothing beats a point on
    it in both)."""
    files = []
    palette = matplotlib.colormaps["tab10"]
    for table in tables:
        points = tradeoff_points(table)
        if not points:
            continue
        with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
            figure = Figure(figsize=(6.0, 4.2), layout="constrained")
            axis = figure.subplots()
            for index, config in enumerate(table.configs):
                mine = [p for p in points if p.copy_config == config]
                if not mine:
                    continue
                axis.scatter(
                    [p.app_loss_percent for p in mine], [p.gbps for p in mine],
                    color=palette(index % 10), label=config, gid=f"series-tradeoff-{config}",
                )  # fmt: skip
            front = [
                points[i] for i in pareto_front([(p.app_loss_percent, p.gbps) for p in points])
            ]
            for p in front:  # the points worth reading: their configuration and page count
                label = axis.annotate(
                    f"{p.copy_config} x{p.page_count}", (p.app_loss_percent, p.gbps), fontsize=6,
                    xytext=(3, 2), textcoords="offset points",
                )  # fmt: skip
                label.set_in_layout(False)
            axis.plot(
                [p.app_loss_percent for p in front], [p.gbps for p in front], color="black",
                linewidth=1, linestyle="--", label="Pareto front", gid="series-tradeoff-front",
            )  # fmt: skip
            axis.set_xlabel("application throughput lost (%)")
            axis.set_ylabel("migration GB/s (mean)")
            kind = page_kind_label(table.page_kind, table.base_page_size)
            title = (
                f"{kind}{workqueue_phrase(table.workqueue)}{load_phrase(table.load)} - "
                f"host {table.host}: throughput vs application loss (the front labelled)"
            )
            figure.suptitle(textwrap.fill(title, 70), fontsize=9)
            axis.legend(fontsize=7)
        stem = _slug("tradeoff", table.host, table.page_kind, table.load, table.workqueue or "none")
        png, svg = _save(figure, out_dir, stem)
        files.append(PlotFile("tradeoff", title, png, svg, len(table.configs) + 1))
    return files


def plot_cpu_per_gb(tables: Sequence[CostTable], out_dir: Path) -> list[PlotFile]:
    """CPU ms per GB moved, one stacked bar per configuration at its largest page count (the
    per-call overhead amortised; the cost table has every count): charged to the caller
    below, charged to nobody (kernel threads) on top."""
    files = []
    for table in tables:
        bars = []
        for config in table.configs:
            counts = [
                count
                for count in table.page_counts
                if (count, config) in table.cells
                and not table.cells[(count, config)].charged.missing
            ]
            if counts:
                bars.append((counts[-1], config, table.cells[(counts[-1], config)]))
        if not bars:
            continue
        with matplotlib.rc_context(_RC):  # type: ignore[arg-type]
            figure = Figure(figsize=(max(4.0, 0.45 * len(bars) + 1.5), 4.2), layout="constrained")
            axis = figure.subplots()
            x = np.arange(len(bars))
            charged = np.array([cell.charged.mean for _, _, cell in bars])
            uncharged = np.array([cell.uncharged.mean for _, _, cell in bars])
            uncharged_known = np.where(np.isnan(uncharged), 0.0, uncharged)
            lower = axis.bar(x, charged, color="#4c72b0", label="charged to the caller")
            upper = axis.bar(x, uncharged_known, bottom=charged, color="#dd8452",
                             label="charged to nobody (kernel threads)")  # fmt: skip
            for (_, config, _), low, high in zip(bars, lower, upper, strict=True):
                low.set_gid(f"series-cpu-charged-{config}")
                high.set_gid(f"series-cpu-uncharged-{config}")
            axis.set_xticks(x, [f"{config}\n{count}" for count, config, _ in bars], fontsize=6)
            axis.set_ylabel("CPU ms per GB moved")
            kind = page_kind_label(table.page_kind, table.base_page_size)
            title = (
                f"{kind}{workqueue_phrase(table.workqueue)}{load_phrase(table.load)} - "
                f"host {table.host}: CPU per GB at the largest page count (config / pages)"
            )
            figure.suptitle(textwrap.fill(title, 70), fontsize=9)
            axis.legend(fontsize=7)
        stem = _slug("cpu", table.host, table.page_kind, table.load, table.workqueue or "none")
        png, svg = _save(figure, out_dir, stem)
        files.append(PlotFile("cpu", title, png, svg, 2))
    return files
