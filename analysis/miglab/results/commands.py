"""The analysis sub-commands: table, compare, plot, report, check, export, summary.

Each handler parses nothing itself: it turns the argparse namespace into library calls and
returns an exit code (0 success, 1 `check` found problems; user errors raise MiglabError,
which the CLI prints with exit code 2).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, cast

from miglab.errors import ConfigError
from miglab.results.ceiling import relative_to_ceiling
from miglab.results.check import check_results
from miglab.results.compare import (
    Comparison,
    compare_selections,
    comparison_tables,
    comparison_text_tables,
    comparison_to_dict,
    parse_selection,
    select,
    speedups,
)
from miglab.results.cost import cost_tables, cost_text_tables, cost_to_dict
from miglab.results.crossover import crossover_text_tables, crossover_to_dict, crossovers
from miglab.results.export import EXPORT_FORMATS, ExportFormat, export_samples
from miglab.results.load import SampleFilter, SampleSet, load_samples
from miglab.results.plots import (
    PlotRenderer,
    plot_cpu_per_gb,
    plot_speedup_heatmaps,
    plot_throughput,
    plot_tradeoff,
)
from miglab.results.render import FORMATS, Format, render_summary_tables, render_text_tables
from miglab.results.report import write_report
from miglab.results.sidecars import sidecars_for
from miglab.results.stats import STATISTICS, StabilityRule, Statistic, Test
from miglab.results.tables import VANILLA, build_tables


def _split(values: list[str] | None) -> tuple[str, ...]:
    """Repeatable options that also take comma-separated lists."""
    return tuple(
        part.strip() for value in values or [] for part in value.split(",") if part.strip()
    )


def _add_input(parser: argparse.ArgumentParser, nargs: str = "+") -> None:
    parser.add_argument(
        "results",
        nargs=nargs,
        metavar="RESULTS",
        help="samples.jsonl files, or directories searched recursively for them",
    )
    parser.add_argument(
        "--skip-bad",
        action="store_true",
        help="leave out records that are not valid sample records (and say how many) "
        "instead of refusing the input",
    )


def _add_filters(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("filters (repeatable or comma-separated)")
    group.add_argument("--host", action="append", help="inventory hostname")
    group.add_argument("--load", action="append", help="idle, busy or a configured load name")
    group.add_argument("--page-kind", action="append", help="base or a folio size such as 2M")
    group.add_argument(
        "--variant",
        action="append",
        help="kernel variant; tables keep the vanilla column as their reference",
    )
    group.add_argument("--run", action="append", help="run id")


def _add_statistics(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("statistics")
    group.add_argument(
        "--stat",
        choices=STATISTICS,
        default="mean",
        help="mean (default) = total bytes / total time of a cell's samples, as the thread's "
        "scripts compute it; amean = arithmetic mean of per-sample GB/s; median; min; max",
    )
    group.add_argument("--confidence", type=float, default=0.95, help="confidence level (0.95)")
    group.add_argument(
        "--cv-threshold",
        type=float,
        default=0.15,
        help="coefficient of variation above which a cell is unstable (0.15)",
    )
    group.add_argument(
        "--low-fraction",
        type=float,
        default=0.25,
        help="a sample below this fraction of the cell's median makes it unstable (0.25)",
    )
    group.add_argument(
        "--min-samples",
        type=int,
        default=3,
        help="fewer usable samples than this and a cell gets no verdict (3)",
    )


def _add_significance(parser: argparse.ArgumentParser) -> None:
    """What "significantly different" means: the test, the correction, the level."""
    group = parser.add_argument_group("significance")
    group.add_argument(
        "--test", choices=("welch", "bootstrap"), default="welch",
        help="Welch's t-test (default; mean and amean) or a bootstrap CI (also median)",
    )  # fmt: skip
    group.add_argument(
        "--correction", choices=("holm", "bh", "none"), default="holm",
        help="multiple-comparison correction across the compared cells (holm)",
    )  # fmt: skip
    group.add_argument("--alpha", type=float, default=0.05, help="significance level (0.05)")


def _rule(args: argparse.Namespace) -> StabilityRule:
    if not 0 < args.confidence < 1:
        raise ConfigError("--confidence", "must be between 0 and 1")
    if args.cv_threshold <= 0 or not 0 < args.low_fraction < 1 or args.min_samples < 1:
        raise ConfigError(
            "--cv-threshold/--low-fraction/--min-samples",
            "need a positive threshold, a fraction between 0 and 1 and at least 1 sample",
        )
    return StabilityRule(args.cv_threshold, args.low_fraction, args.min_samples)


def _filter(args: argparse.Namespace) -> SampleFilter:
    return SampleFilter(
        hosts=_split(args.host),
        loads=_split(args.load),
        page_kinds=_split(args.page_kind),
        variants=_split(args.variant),
        runs=_split(args.run),
    )


def _load(args: argparse.Namespace, results: list[str] | None = None) -> SampleSet:
    samples = load_samples(results if results is not None else args.results, skip_bad=args.skip_bad)
    if samples.skipped:
        print(
            f"miglab: skipped {samples.skipped} bad record(s) (`miglab check` lists them)",
            file=sys.stderr,
        )
    return samples


def _write(text: str, output: Path | None) -> None:
    if output is None or str(output) == "-":
        sys.stdout.write(text)
    else:
        output.write_text(text, encoding="utf-8")


def _messages(samples: SampleSet) -> list[str]:
    return [f"skipped {samples.skipped} bad record(s)"] if samples.skipped else []


def run_table(args: argparse.Namespace) -> int:
    rule = _rule(args)
    samples = _load(args)
    frame = _filter(args).apply(samples.frame, keep_vanilla=True)
    if frame.empty:
        raise ConfigError("filters", "no samples match")
    statistic = cast(Statistic, args.stat)
    tables = build_tables(frame, statistic, rule, args.confidence)
    if args.relative_to == "ceiling":
        sidecars = sidecars_for(source.path for source in samples.sources)
        tables = relative_to_ceiling(tables, sidecars, args.ceiling_direction)
    _write(
        render_summary_tables(
            tables,
            cast(Format, args.format),
            rule,
            args.show_spread,
            _messages(samples),
            statistic,
            args.show_noise,
        ),
        args.output,
    )
    return 0


def _render_comparison(
    comparison: Comparison,
    frame_for_sizes: Any,
    args: argparse.Namespace,
    as_ratio: bool,
    preamble: list[str],
) -> str:
    page_sizes = {
        str(host): int(size)
        for host, size in frame_for_sizes.groupby("host", observed=True)["base_page_size"]
        .first()
        .items()
    }
    statistic = comparison.statistic
    unit = f"x over {args.baseline}" if as_ratio else "change in % of GB/s"
    if statistic != "mean":
        unit = unit.replace("GB/s", f"{statistic} GB/s")
    tables = comparison_tables(comparison, page_sizes, unit)
    if args.format == "json":
        document = comparison_to_dict(comparison, tables, as_ratio)
        document["messages"] = preamble
        return json.dumps(document, indent=2) + "\n"
    text_tables = comparison_text_tables(
        comparison, tables, args.show_spread, as_ratio, speedup_summary=as_ratio
    )
    return render_text_tables(text_tables, cast(Format, args.format), preamble)


def run_compare(args: argparse.Namespace) -> int:
    rule = _rule(args)
    statistic = cast(Statistic, args.stat)
    test = cast(Test, args.test)
    if args.speedup:
        samples = _load(args, args.args)
        frame = _filter(args).apply(samples.frame, keep_vanilla=True)
        if frame.empty:
            raise ConfigError("filters", "no samples match")
        comparison = speedups(
            frame,
            args.baseline,
            statistic,
            test,
            args.correction,
            args.alpha,
            args.confidence,
            rule,
        )
        preamble = _messages(samples) + [
            f"Speedup of each copy config over {args.baseline} ({statistic} GB/s ratio)."
        ]
        _write(_render_comparison(comparison, frame, args, True, preamble), args.output)
        return 0
    if len(args.args) < 2:
        raise ConfigError("compare", "needs A and B (selections or result paths), then RESULTS")
    selection_a, selection_b = parse_selection(args.args[0]), parse_selection(args.args[1])
    results = args.args[2:]
    frames = []
    messages: list[str] = []
    shared = None
    if any(selection.path is None for selection in (selection_a, selection_b)):
        if not results:
            raise ConfigError("RESULTS", "key=value selections need result files or directories")
        shared = _load(args, results)
        messages += _messages(shared)
    if selection_a.path is not None and selection_b.path is not None and results:
        raise ConfigError("RESULTS", "not used when both A and B are result paths")
    for selection in (selection_a, selection_b):
        if selection.path is not None:
            own = _load(args, [str(selection.path)])
            messages += _messages(own)
            frames.append(_filter(args).apply(own.frame))
        else:
            assert shared is not None
            frames.append(select(_filter(args).apply(shared.frame), selection))
    comparison = compare_selections(
        frames[0],
        frames[1],
        selection_a.text,
        selection_b.text,
        statistic,
        test,
        args.correction,
        args.alpha,
        args.confidence,
        rule,
    )
    preamble = messages + [
        f"A = {selection_a.text}; B = {selection_b.text}; compared: "
        + (", ".join(comparison.compared_dims) or "nothing differs")
    ]
    frame_for_sizes = frames[0] if not frames[0].empty else frames[1]
    _write(_render_comparison(comparison, frame_for_sizes, args, False, preamble), args.output)
    return 0


def run_cost(args: argparse.Namespace) -> int:
    samples = _load(args)
    frame = _filter(args).apply(samples.frame, keep_vanilla=True)
    if frame.empty:
        raise ConfigError("filters", "no samples match")
    if not 0 < args.confidence < 1:
        raise ConfigError("--confidence", "must be between 0 and 1")
    tables = cost_tables(frame, args.confidence)
    if args.format == "json":
        document = {"messages": _messages(samples), "tables": cost_to_dict(tables)}
        _write(json.dumps(document, indent=2) + "\n", args.output)
        return 0
    text = cost_text_tables(tables, args.show_spread)
    _write(render_text_tables(text, cast(Format, args.format), _messages(samples)), args.output)
    return 0


def run_crossover(args: argparse.Namespace) -> int:
    rule = _rule(args)
    statistic = cast(Statistic, args.stat)
    samples = _load(args)
    frame = _filter(args).apply(samples.frame, keep_vanilla=True)
    if frame.empty:
        raise ConfigError("filters", "no samples match")
    found = crossovers(
        frame, statistic, cast(Test, args.test), args.correction, args.alpha, args.confidence,
        rule,
    )  # fmt: skip
    if not found:
        raise ConfigError("RESULTS", "no mt_N or dma_N cells next to serial or vanilla cells")
    if args.format == "json":
        document = {"messages": _messages(samples), "crossovers": crossover_to_dict(found)}
        _write(json.dumps(document, indent=2) + "\n", args.output)
        return 0
    sizes = {
        str(host): int(size)
        for host, size in frame.groupby("host", observed=True)["base_page_size"].first().items()
    }
    text = crossover_text_tables(found, sizes, args.alpha, args.correction)
    _write(render_text_tables(text, cast(Format, args.format), _messages(samples)), args.output)
    return 0


def run_plot(args: argparse.Namespace) -> int:
    rule = _rule(args)
    samples = _load(args)
    frame = _filter(args).apply(samples.frame, keep_vanilla=True)
    if frame.empty:
        raise ConfigError("filters", "no samples match")
    statistic = cast(Statistic, args.stat)
    tables = build_tables(frame, statistic, rule, args.confidence)
    with PlotRenderer() as renderer:
        renderer.submit(plot_throughput, tables, args.output, args.confidence)
        if (frame["copy_config"] == VANILLA).any() and (frame["copy_config"] != VANILLA).any():
            if statistic in ("mean", "amean", "median"):
                test: Test = "bootstrap" if statistic == "median" else "welch"
                comparison = speedups(
                    frame, VANILLA, statistic, test, confidence=args.confidence, rule=rule
                )
                page_sizes = {table.key.host: table.base_page_size for table in tables}
                speedup_tables = comparison_tables(comparison, page_sizes, "x over vanilla")
                renderer.submit(plot_speedup_heatmaps, speedup_tables, args.output)
        costs = cost_tables(frame, args.confidence)
        renderer.submit(plot_tradeoff, costs, args.output)
        renderer.submit(plot_cpu_per_gb, costs, args.output)
        files = renderer.files()
    for file in files:
        print(f"{file.png}\n{file.svg}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    rule = _rule(args)
    samples = _load(args)
    samples.frame = _filter(args).apply(samples.frame, keep_vanilla=True)
    if samples.frame.empty:
        raise ConfigError("filters", "no samples match")
    files = write_report(
        samples,
        args.output,
        cast(Statistic, args.stat),
        rule,
        args.confidence,
        args.show_spread,
        args.show_noise,
    )
    print(f"{files.html}\n{files.markdown}")
    return 0


def summarise(run_dir: Path, report_dir: Path | None = None, skip_bad: bool = False) -> str:
    """What a run's main job ends with: every table of the run as plain text, then the HTML
    report (written under the run's directory), its path on the last line."""
    rule = StabilityRule()
    samples = load_samples([str(run_dir)], skip_bad=skip_bad)
    statistic: Statistic = "mean"
    tables = build_tables(samples.frame, statistic, rule, 0.95)
    text = render_summary_tables(tables, "text", rule, False, _messages(samples), statistic)
    files = write_report(samples, report_dir or run_dir / "report", statistic, rule)
    return f"{text}\nresults: {run_dir}\nreport: {files.html}\n"


def run_summary(args: argparse.Namespace) -> int:
    sys.stdout.write(summarise(Path(args.run_dir), args.output, args.skip_bad))
    return 0


def run_check(args: argparse.Namespace) -> int:
    report = check_results(args.results, thorough=args.thorough)
    for line in report.lines():
        print(line)
    return 0 if report.ok else 1


def run_export(args: argparse.Namespace) -> int:
    samples = _load(args)
    frame = _filter(args).apply(samples.frame)
    export_samples(frame, cast(ExportFormat, args.format), args.output)
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    table = subparsers.add_parser(
        "table",
        help="the thread's summary tables (GB/s), with noise made visible",
        description="One table per host, page kind, load and workqueue: rows = pages moved, "
        "columns = vanilla, serial, mt_N, dma_N.",
    )
    _add_input(table)
    _add_filters(table)
    _add_statistics(table)
    table.add_argument("--format", choices=FORMATS, default="markdown")
    table.add_argument("--show-spread", action="store_true", help="print each cell with its CI")
    table.add_argument(
        "--show-noise",
        action="store_true",
        help="print each cell's n, CV and min-max (JSON always has them)",
    )
    table.add_argument(
        "--relative-to",
        choices=("ceiling",),
        help="ceiling: each cell as a percentage of the user-space copy ceiling at the same "
        "thread count, host, load and variant (migbench --ceiling, measured by the sweep)",
    )
    table.add_argument(
        "--ceiling-direction",
        choices=("push", "pull"),
        default="push",
        help="the ceiling copied by source-node CPUs (push, the default) or destination-node "
        "CPUs (pull), as the variant's vm.push_0_pull_1",
    )
    table.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    table.set_defaults(func=run_table)

    compare = subparsers.add_parser(
        "compare",
        help="cell-by-cell change between two selections, with significance",
        description="miglab compare A B RESULTS...: A and B are key=value[,key=value] "
        "selections (keys: host, load, kind, workqueue (none = unpatched), variant, config, "
        "run) or result paths. Cells show B's change relative to A. With --speedup: "
        "miglab compare --speedup RESULTS... shows each config over --baseline.",
    )
    compare.add_argument("args", nargs="+", metavar="A B RESULTS")
    compare.add_argument("--skip-bad", action="store_true", help="as for table")
    _add_filters(compare)
    _add_statistics(compare)
    _add_significance(compare)
    compare.add_argument("--speedup", action="store_true", help="each config over --baseline")
    compare.add_argument("--baseline", default=VANILLA, help="baseline config for --speedup")
    compare.add_argument("--format", choices=FORMATS, default="markdown")
    compare.add_argument("--show-spread", action="store_true", help="print the CI of each change")
    compare.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    compare.set_defaults(func=run_compare)

    cost = subparsers.add_parser(
        "cost",
        help="CPU per GB moved (charged to the caller / to nobody) and the application's loss",
        description="Per host, page kind, load and workqueue: rows = pages moved, columns = "
        "copy configs; each cell: CPU ms per GB charged to the caller / charged to nobody "
        "(kernel threads), and under a stress load the application's throughput lost.",
    )
    _add_input(cost)
    _add_filters(cost)
    cost.add_argument("--confidence", type=float, default=0.95, help="confidence level (0.95)")
    cost.add_argument("--format", choices=FORMATS, default="markdown")
    cost.add_argument("--show-spread", action="store_true", help="print each CPU figure's CI")
    cost.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    cost.set_defaults(func=run_cost)

    crossover = subparsers.add_parser(
        "crossover",
        help="from which page count each config is significantly faster than serial",
        description="Per host, page kind and load: for each copy config the smallest page count "
        "from which it is significantly faster than serial (and than vanilla) at that count "
        "and every larger one, or never.",
    )
    _add_input(crossover)
    _add_filters(crossover)
    _add_statistics(crossover)
    _add_significance(crossover)
    crossover.add_argument("--format", choices=FORMATS, default="markdown")
    crossover.add_argument("-o", "--output", type=Path, help="write here instead of stdout")
    crossover.set_defaults(func=run_crossover)

    plot = subparsers.add_parser(
        "plot",
        help="GB/s vs pages (PNG and SVG), speedup heat maps, trade-off and CPU plots",
    )
    _add_input(plot)
    _add_filters(plot)
    _add_statistics(plot)
    plot.add_argument("-o", "--output", type=Path, required=True, help="directory for the plots")
    plot.set_defaults(func=run_plot)

    report = subparsers.add_parser(
        "report",
        help="one self-contained HTML page (and Markdown): tables, plots, provenance",
    )
    _add_input(report)
    _add_filters(report)
    _add_statistics(report)
    report.add_argument("--show-spread", action="store_true", help="cells with their CI")
    report.add_argument("--show-noise", action="store_true", help="cells with n, CV, min-max")
    report.add_argument("-o", "--output", type=Path, required=True, help="output directory")
    report.set_defaults(func=run_report)

    check = subparsers.add_parser(
        "check",
        help="validate sample records (file:line), duplicates, cells missing vs the plan",
    )
    check.add_argument("results", nargs="+", metavar="RESULTS")
    check.add_argument(
        "--thorough",
        action="store_true",
        help="also run every record through jsonschema itself (slow: ~0.25 ms per record)",
    )
    check.set_defaults(func=run_check)

    summary = subparsers.add_parser(
        "summary",
        help="a run's tables as plain text and its HTML report (what site.yml ends with)",
        description="Prints every table of results/<run_id>/ as aligned text, writes the HTML and "
        "Markdown report to RUN_DIR/report/ (or -o) and prints the report's path last.",
    )
    summary.add_argument("run_dir", metavar="RUN_DIR", help="results/<run_id>/")
    summary.add_argument("--skip-bad", action="store_true", help="as for table")
    summary.add_argument("-o", "--output", type=Path, help="report directory (RUN_DIR/report)")
    summary.set_defaults(func=run_summary)

    export = subparsers.add_parser("export", help="the tidy sample table as CSV or Parquet")
    _add_input(export)
    _add_filters(export)
    export.add_argument("--format", choices=EXPORT_FORMATS, default="csv")
    export.add_argument("-o", "--output", type=Path, help="output file (CSV: stdout by default)")
    export.set_defaults(func=run_export)
