"""Analysis of sweep results (`miglab.sample/2` and `/1` records in samples.jsonl).

The library, which the `miglab` sub-commands in commands.py only wrap:

- load.load_samples(paths, skip_bad) -> SampleSet: validated samples as a pandas frame.
- tables.build_tables(frame, statistic) -> [SummaryTable]: the thread's tables.
- render.render_summary_tables(tables, fmt, rule): Markdown, text, CSV or JSON.
- compare.compare_selections / compare.speedups: cell-by-cell changes with significance.
- plots.plot_throughput / plots.plot_speedup_heatmaps: PNG and SVG files.
- report.write_report: one self-contained HTML page and a Markdown twin.
- check.check_results: bad records, duplicates, inconsistencies, plan shortfalls.
- export.export_samples: the tidy sample table as CSV or Parquet.

How to read the output: docs/analysis.md.
"""
