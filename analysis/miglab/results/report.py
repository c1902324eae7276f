"""`miglab report`: one self-contained HTML page and a Markdown twin.

The page holds every summary table, the speedups over vanilla, what each configuration
costs (CPU per GB, charged and not, and the application's loss), from which page count it
pays off, how close it gets to the copy ceiling, the plots (embedded as PNG
data in the HTML; files under plots/ for the Markdown), the provenance of the numbers
(hosts and their NUMA shapes, kernels and variants, knob values, load settings, runs, dates)
and every warning: skipped bad records, excluded samples, unstable and missing cells,
duplicates and shortfalls against the run's plan.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from miglab import __version__
from miglab.errors import ConfigError
from miglab.results.ceiling import relative_to_ceiling
from miglab.results.check import check_plan
from miglab.results.compare import (
    Comparison,
    comparison_tables,
    comparison_text_tables,
    speedups,
)
from miglab.results.cost import cost_tables, cost_text_tables
from miglab.results.crossover import crossover_text_tables, crossovers
from miglab.results.load import SampleSet
from miglab.results.plots import (
    PlotFile,
    PlotRenderer,
    plot_cpu_per_gb,
    plot_speedup_heatmaps,
    plot_throughput,
    plot_tradeoff,
)
from miglab.results.render import TextTable, render_text_tables, summary_text_table
from miglab.results.sidecars import Sidecars, flatten, numa_shape, sidecars_for
from miglab.results.stats import (
    STATISTIC_DESCRIPTIONS,
    StabilityRule,
    Statistic,
    Test,
    usable_samples,
)
from miglab.results.tables import (
    FEW_MARK,
    MISSING_MARK,
    UNSTABLE_MARK,
    VANILLA,
    SummaryTable,
    build_tables,
    config_sort_key,
    page_kind_label,
    pages,
)

_BAD_RECORDS_LISTED = 50

_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 75em; color: #222; }
h1, h2, h3 { font-weight: 600; }
table { border-collapse: collapse; margin: 0.5em 0 0.3em; font-variant-numeric: tabular-nums; }
th, td { border: 1px solid #ccc; padding: 0.2em 0.6em; text-align: right; }
table.left td, table.left th { text-align: left; }
th { background: #f3f3f3; }
td.unstable { background: #fde2c8; }
td.missing { color: #999; background: #f6f6f6; }
td.significant { font-weight: 600; }
ul.notes { font-size: 0.9em; color: #444; margin-top: 0.2em; }
.warnings li { color: #8a3b00; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
code { background: #f3f3f3; padding: 0 0.2em; }
"""


@dataclass(frozen=True)
class ReportFiles:
    html: Path
    markdown: Path
    plots: list[PlotFile]


@dataclass
class _Section:
    heading: str
    tables: list[TextTable]
    paragraphs: list[str]
    plots: list[PlotFile]


def _warnings(
    samples: SampleSet,
    tables: Sequence[SummaryTable],
    sidecars: Sequence[Sidecars],
    frame: pd.DataFrame,
) -> list[str]:
    warnings = []
    if samples.bad_records:
        warnings.append(f"{len(samples.bad_records)} bad record(s) skipped (--skip-bad):")
        warnings += [f"  {record}" for record in samples.bad_records[:_BAD_RECORDS_LISTED]]
        if len(samples.bad_records) > _BAD_RECORDS_LISTED:
            warnings.append(f"  ... and {len(samples.bad_records) - _BAD_RECORDS_LISTED} more")
    for kind, records in (
        ("Duplicate", samples.duplicates),
        ("Inconsistent", samples.inconsistent),
    ):
        shown = records[:_BAD_RECORDS_LISTED]
        warnings += [f"{kind} (left out): {record}" for record in shown]
        if len(records) > len(shown):
            warnings.append(f"  ... and {len(records) - len(shown)} more {kind.lower()} record(s)")
    usable = usable_samples(frame)
    excluded = int((~usable).sum())
    if excluded:
        backing = int((~frame["backing_ok"].to_numpy(dtype=bool)).sum())
        failed = int(
            (
                (frame["failed_pages"] > 0).to_numpy() & frame["backing_ok"].to_numpy(dtype=bool)
            ).sum()
        )
        warnings.append(
            f"{excluded} sample(s) excluded from every table: {backing} with backing_ok false "
            f"(folios not of the requested size), {failed} with pages that did not move"
        )
    for table in tables:
        for count, config, cell in table.unstable_cells():
            warnings.append(f"Unstable: {table.title}: {config} at {pages(count)}: {cell.reason}")
        for count, config, maybe_cell in table.missing_cells():
            why = (
                "no samples"
                if maybe_cell is None
                else f"all {maybe_cell.excluded} samples excluded"
            )
            warnings.append(f"Missing: {table.title}: {config} at {pages(count)} ({why})")
        for count, config, cell in table.few_sample_cells():
            warnings.append(
                f"Too few samples: {table.title}: {config} at {pages(count)}: n={cell.n}"
            )
    for sidecar in sidecars:
        warnings += [f"Unreadable sidecar: {problem}" for problem in sidecar.problems]
        samples_file = next(
            (
                s.path
                for s in samples.sources
                if s.path.parent.resolve() == sidecar.directory.resolve()
            ),
            None,
        )
        for plan in sidecar.plans if samples_file is not None else []:
            assert samples_file is not None
            shortfalls, _ = check_plan(frame, samples_file, plan)
            warnings += [f"Plan: {shortfall}" for shortfall in shortfalls]
    return warnings


def _date(value: object) -> str:
    if isinstance(value, pd.Timestamp) and not pd.isna(value):
        return value.strftime("%Y-%m-%d %H:%M:%S UTC")
    return "?"


def _provenance(
    frame: pd.DataFrame, samples: SampleSet, sidecars: Sequence[Sidecars]
) -> list[TextTable]:
    provenance = []
    runs = []
    if not frame.empty:
        for run_id, group in frame.groupby("run_id", observed=True):
            runs.append(
                [
                    str(run_id),
                    ", ".join(sorted({str(h) for h in group["host"].unique()})),
                    str(len(group)),
                    _date(group["timestamp"].min()),
                    _date(group["timestamp"].max()),
                ]
            )
    provenance.append(
        TextTable("Runs", ["run", "hosts", "samples", "first", "last"], runs, align_left=True)
    )

    facts_by_host: dict[str, dict[str, object]] = {}
    for sidecar in sidecars:
        if sidecar.lab_facts is not None:
            hosts_here = {
                str(h)
                for h in frame.loc[
                    frame["source"]
                    .astype(str)
                    .map(lambda s, d=sidecar.directory: Path(s).parent == d),
                    "host",
                ].unique()
            } or {sidecar.directory.name}
            for host in hosts_here:
                facts_by_host[host] = sidecar.lab_facts
    hosts = []
    if not frame.empty:
        for host, group in frame.groupby("host", observed=True):
            facts = facts_by_host.get(str(host), {})
            moves = sorted(
                {f"{s} -> {d}" for s, d in zip(group["src_node"], group["dst_node"], strict=True)}
            )
            sizes = sorted({int(v) for v in group["base_page_size"].unique()})
            hosts.append(
                [
                    str(host),
                    ", ".join(sorted({str(a) for a in group["arch"].unique()})),
                    ", ".join(page_kind_label("base", size) for size in sizes),
                    numa_shape(facts) if facts else "not recorded (no lab-facts.json)",
                    str(facts.get("cpu_model", "?")),
                    ", ".join(moves),
                ]
            )
    provenance.append(
        TextTable(
            "Hosts",
            ["host", "arch", "base page", "NUMA shape", "CPU model", "moves (node -> node)"],
            hosts,
            align_left=True,
        )
    )

    kernels = []
    if not frame.empty:
        keys = ["host", "kernel_variant", "kernel_release", "kernel_build_hash", "workqueue"]
        for key, group in frame.groupby(keys, observed=True, dropna=False):
            host, variant, release, build, workqueue = key
            configs = sorted({str(c) for c in group["copy_config"].unique()}, key=config_sort_key)
            kernels.append(
                [
                    str(host),
                    str(variant),
                    str(release),
                    "-" if pd.isna(build) else str(build),
                    "-" if pd.isna(workqueue) else f"system_{workqueue}_wq",
                    " ".join(configs),
                    str(len(group)),
                ]
            )
    provenance.append(
        TextTable(
            "Kernels and variants",
            [
                "host",
                "variant",
                "kernel release",
                "build hash",
                "workqueue",
                "copy configs",
                "samples",
            ],
            kernels,
            align_left=True,
        )
    )

    loads = []
    if not frame.empty:
        for (run_id, host, load), group in frame.groupby(["run_id", "host", "load"], observed=True):
            loads.append([str(run_id), str(host), str(load), str(len(group))])
    provenance.append(
        TextTable("Loads", ["run", "host", "load", "samples"], loads, align_left=True)
    )

    for sidecar in sidecars:
        if sidecar.run_meta is not None:
            provenance.append(
                TextTable(
                    f"Run metadata: {sidecar.directory / 'run-meta.json'}",
                    ["key", "value"],
                    [[key, value] for key, value in flatten(sidecar.run_meta)],
                    align_left=True,
                )
            )
        if sidecar.lab_facts is not None:
            provenance.append(
                TextTable(
                    f"Lab facts: {sidecar.directory / 'lab-facts.json'}",
                    ["key", "value"],
                    [[key, value] for key, value in flatten(sidecar.lab_facts)],
                    align_left=True,
                )
            )

    files = [
        [
            str(source.path),
            str(source.records),
            str(source.bad),
            "line by line" if source.read_line_by_line else "fast",
        ]
        for source in samples.sources
    ]
    provenance.append(
        TextTable("Input files", ["file", "valid records", "bad", "reader"], files, align_left=True)
    )
    return provenance


def _html_table(table: TextTable, level: int = 3) -> str:
    classes = ' class="left"' if table.align_left else ""
    parts = [f"<h{level}>{html.escape(table.title)}</h{level}>", f"<table{classes}>"]
    parts.append(
        "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in table.header) + "</tr>"
    )
    for row in table.rows:
        cells = []
        for index, cell in enumerate(row):
            css = []
            if index > 0 and not table.align_left:
                if cell == MISSING_MARK:
                    css.append("missing")
                if UNSTABLE_MARK in cell or FEW_MARK in cell:
                    css.append("unstable")
                if "*" in cell:
                    css.append("significant")
            attribute = f' class="{" ".join(css)}"' if css else ""
            cells.append(f"<td{attribute}>{html.escape(cell)}</td>")
        parts.append("<tr>" + "".join(cells) + "</tr>")
    parts.append("</table>")
    if table.notes:
        parts.append(
            '<ul class="notes">'
            + "".join(f"<li>{html.escape(n)}</li>" for n in table.notes)
            + "</ul>"
        )
    return "\n".join(parts)


def _embedded_png(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


COST_LEGEND = (
    "What each configuration costs: CPU milliseconds per GB moved charged to the migrating "
    "task, and charged to nobody (the run time kernel threads gained during the call: the "
    "copy threads, which no task or cgroup pays for); under a stress load, the application's "
    "throughput lost while the cell ran."
)
CROSSOVER_LEGEND = (
    "When a configuration pays off: the smallest page count from which it is significantly "
    "faster than serial (and than vanilla) at that count and every larger one, or never."
)
CEILING_LEGEND = (
    "How close each cell gets to what the machine can copy at all: the statistic as a "
    "percentage of the user-space copy between the same nodes with the same number of threads "
    "(1 for vanilla and serial), pushed by source-node CPUs, under the same load."
)
PLOT_LEGEND = (
    "Throughput plots: GB/s against pages moved per configuration, with confidence bands. "
    "Speedup heat maps: each configuration over vanilla. Trade-off plots (stress loads): "
    "migration GB/s against the application's loss, one point per configuration and page "
    "count, the dashed line the Pareto front. CPU plots: CPU ms per GB moved, charged to the "
    "caller (below) and to nobody (on top)."
)


def _analysis_sections(
    cost_text: list[TextTable], crossover_text: list[TextTable], ceiling_text: list[TextTable]
) -> list[tuple[str, str, list[TextTable]]]:
    sections = [
        ("Cost: CPU per GB and the application's loss", COST_LEGEND, cost_text),
        ("Crossover", CROSSOVER_LEGEND, crossover_text),
        ("Relative to the copy ceiling", CEILING_LEGEND, ceiling_text),
    ]
    return [section for section in sections if section[2]]


def write_report(
    samples: SampleSet,
    out_dir: Path,
    statistic: Statistic = "mean",
    rule: StabilityRule | None = None,
    confidence: float = 0.95,
    show_spread: bool = False,
    show_noise: bool = False,
    workers: int | None = None,
) -> ReportFiles:
    """workers: processes drawing the plots (default: one per CPU; 1 draws them here)."""
    rule = rule or StabilityRule()
    out_dir.mkdir(parents=True, exist_ok=True)
    frame = samples.frame
    tables = build_tables(frame, statistic, rule, confidence)
    sidecars = sidecars_for(source.path for source in samples.sources)
    plot_dir = out_dir / "plots"
    # the figures are drawn in worker processes while the statistics below are computed
    with PlotRenderer(workers) as renderer:
        renderer.submit(plot_throughput, tables, plot_dir, confidence)

        speedup: Comparison | None = None
        speedup_text: list[TextTable] = []
        has_vanilla = bool((frame["copy_config"] == VANILLA).any()) if not frame.empty else False
        has_patched = bool((frame["copy_config"] != VANILLA).any()) if not frame.empty else False
        if has_vanilla and has_patched and statistic in ("mean", "amean", "median"):
            test: Test = "bootstrap" if statistic == "median" else "welch"
            speedup = speedups(frame, VANILLA, statistic, test, confidence=confidence, rule=rule)
            page_sizes = {table.key.host: table.base_page_size for table in tables}
            speedup_tables = comparison_tables(speedup, page_sizes, "x over vanilla")
            speedup_text = comparison_text_tables(speedup, speedup_tables, show_spread, True, True)
            renderer.submit(plot_speedup_heatmaps, speedup_tables, plot_dir)

        costs = cost_tables(frame, confidence)
        cost_text = cost_text_tables(costs, show_spread)
        renderer.submit(plot_tradeoff, costs, plot_dir)
        renderer.submit(plot_cpu_per_gb, costs, plot_dir)
        crossover_text: list[TextTable] = []
        if statistic in ("mean", "amean", "median") and has_patched:
            test = "bootstrap" if statistic == "median" else "welch"
            known = {VANILLA: speedup} if speedup is not None else {}
            found = crossovers(
                frame, statistic, test, confidence=confidence, rule=rule, known=known
            )
            sizes = {table.key.host: table.base_page_size for table in tables}
            crossover_text = crossover_text_tables(found, sizes, 0.05, "holm")
        ceiling_text: list[TextTable] = []
        if any(side.ceilings for side in sidecars):
            try:
                relative = relative_to_ceiling(tables, sidecars)
            except ConfigError as error:
                ceiling_text = []
                ceiling_problem = str(error)
            else:
                ceiling_problem = ""
                ceiling_text = [
                    summary_text_table(table, rule, show_spread, "markdown") for table in relative
                ]
        else:
            ceiling_problem = ""
        plots = renderer.files()

    warnings = _warnings(samples, tables, sidecars, frame)
    if ceiling_problem:
        warnings.append(f"No table relative to the copy ceiling: {ceiling_problem}")
    summary_tables = [
        summary_text_table(table, rule, show_spread, "markdown", show_noise) for table in tables
    ]
    provenance = _provenance(frame, samples, sidecars)
    generated = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    intro = [
        f"Generated {generated} by miglab {__version__} from {len(samples.sources)} file(s): "
        f"{len(frame)} valid sample(s), {samples.skipped} bad record(s) skipped.",
        f"Cells show the {statistic}: {STATISTIC_DESCRIPTIONS[statistic]}. Unstable cells "
        f"({rule.describe()}) are marked {UNSTABLE_MARK}, cells with fewer than "
        f"{rule.min_samples} samples {FEW_MARK}, missing cells {MISSING_MARK}; samples whose "
        "backing was not verified or whose pages did not all move are excluded.",
    ]

    markdown = ["# miglab report", "", *intro, "", "## Warnings", ""]
    markdown += [f"- {warning}" for warning in warnings] or ["None."]
    markdown += ["", "## Summary tables", "", render_text_tables(summary_tables, "markdown")]
    if speedup_text:
        markdown += ["## Speedup over vanilla", "", render_text_tables(speedup_text, "markdown")]
    for heading, legend, section in _analysis_sections(cost_text, crossover_text, ceiling_text):
        markdown += [f"## {heading}", "", legend, "", render_text_tables(section, "markdown")]
    markdown += ["## Plots", "", PLOT_LEGEND, ""]
    for plot in plots:
        markdown.append(f"![{plot.title}](plots/{plot.png.name}) ([SVG](plots/{plot.svg.name}))")
        markdown.append("")
    markdown += ["## Provenance", "", render_text_tables(provenance, "markdown")]
    markdown_path = out_dir / "report.md"
    markdown_path.write_text("\n".join(markdown), encoding="utf-8")

    body = ["<h1>miglab report</h1>"]
    body += [f"<p>{html.escape(line)}</p>" for line in intro]
    body.append("<h2>Warnings</h2>")
    if warnings:
        body.append(
            '<ul class="warnings">'
            + "".join(f"<li>{html.escape(w)}</li>" for w in warnings)
            + "</ul>"
        )
    else:
        body.append("<p>None.</p>")
    body.append("<h2>Summary tables</h2>")
    body += [_html_table(table) for table in summary_tables]
    if speedup_text:
        body.append("<h2>Speedup over vanilla</h2>")
        body += [_html_table(table) for table in speedup_text]
    for heading, legend, section in _analysis_sections(cost_text, crossover_text, ceiling_text):
        body.append(f"<h2>{html.escape(heading)}</h2>")
        body.append(f"<p>{html.escape(legend)}</p>")
        body += [_html_table(table) for table in section]
    body.append("<h2>Plots</h2>")
    body.append(f"<p>{html.escape(PLOT_LEGEND)}</p>")
    for plot in plots:
        body.append(f"<h3>{html.escape(plot.title)}</h3>")
        body.append(_embedded_png(plot.png, plot.title))
    body.append("<h2>Provenance</h2>")
    body += [_html_table(table) for table in provenance]
    page = (
        '<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
        "<title>miglab report</title>"
        f"<style>{_CSS}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n"
    )
    html_path = out_dir / "report.html"
    html_path.write_text(page, encoding="utf-8")
    return ReportFiles(html_path, markdown_path, plots)
