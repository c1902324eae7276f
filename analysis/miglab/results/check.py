"""`miglab check`: bad records (file:line), duplicate samples, cells missing against the plan."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from miglab.results.load import BadRecord, SampleSet, find_sample_files, load_samples
from miglab.results.schema import describe_line
from miglab.results.sidecars import Plan, sidecars_for
from miglab.results.stats import usable_samples


@dataclass(frozen=True)
class PlanShortfall:
    plan: Path
    cell: str
    usable: int
    expected: int
    excluded: int

    def __str__(self) -> str:
        what = "missing" if self.usable == 0 else "short"
        excluded = f", {self.excluded} excluded" if self.excluded else ""
        return (
            f"{self.plan}: {what} cell {self.cell}: {self.usable} of {self.expected} "
            f"usable samples{excluded}"
        )


@dataclass
class CheckReport:
    files: int = 0
    records: int = 0
    bad: list[BadRecord] = field(default_factory=list)
    duplicates: list[str] = field(default_factory=list)
    inconsistent: list[str] = field(default_factory=list)
    shortfalls: list[PlanShortfall] = field(default_factory=list)
    unplanned: list[str] = field(default_factory=list)
    sidecar_problems: list[str] = field(default_factory=list)
    plans: int = 0
    excluded_backing: int = 0
    excluded_failed: int = 0

    @property
    def ok(self) -> bool:
        return not (
            self.bad
            or self.duplicates
            or self.inconsistent
            or self.shortfalls
            or self.sidecar_problems
        )

    def lines(self) -> list[str]:
        lines = [str(record) for record in self.bad]
        lines += self.duplicates
        lines += self.inconsistent
        lines += self.sidecar_problems
        lines += [str(shortfall) for shortfall in self.shortfalls]
        lines += [f"note: {text}" for text in self.unplanned]
        if self.excluded_backing or self.excluded_failed:
            lines.append(
                f"note: {self.excluded_backing + self.excluded_failed} valid sample(s) the tables "
                f"exclude: {self.excluded_backing} with backing_ok false, "
                f"{self.excluded_failed} with failed pages"
            )
        missing = sum(1 for s in self.shortfalls if s.usable == 0)
        summary = (
            f"{self.files} file(s), {self.records} valid record(s): {len(self.bad)} bad, "
            f"{len(self.duplicates)} duplicate(s), {len(self.inconsistent)} inconsistent, "
            f"{self.plans} plan(s): {missing} missing "
            f"and {len(self.shortfalls) - missing} short cell(s)"
        )
        lines.append(("ok: " if self.ok else "problems: ") + summary)
        return lines


def check_plan(
    frame: pd.DataFrame, samples_file: Path, plan: Plan
) -> tuple[list[PlanShortfall], list[str]]:
    """Shortfalls of the planned cells, and cells measured that the plan does not list."""
    selected = (frame["source"] == str(samples_file)) & (frame["run_id"] == plan.run_id)
    if plan.host is not None:
        selected &= frame["host"] == plan.host
    mine = frame[selected]
    keys = ["load", "copy_config", "page_kind", "page_count", "kernel_variant"]
    usable = usable_samples(mine)
    totals: dict[tuple[object, ...], list[int]] = {}
    for values, ok in zip(mine[keys].itertuples(index=False, name=None), usable, strict=True):
        key = tuple(
            int(v) if k == "page_count" else str(v) for k, v in zip(keys, values, strict=True)
        )
        counts = totals.setdefault(key, [0, 0])
        counts[0 if ok else 1] += 1
    shortfalls = []
    planned = set()
    for cell in plan.cells:
        planned.add(cell.key)
        usable_count, excluded = totals.get(cell.key, [0, 0])
        if usable_count < plan.repetitions:
            shortfalls.append(
                PlanShortfall(plan.path, cell.describe(), usable_count, plan.repetitions, excluded)
            )
    variants = {cell.kernel_variant for cell in plan.cells}
    unplanned = [
        f"{plan.path}: samples for a cell not in the plan: {', '.join(str(v) for v in key)}"
        for key in sorted(totals, key=str)
        if key not in planned and key[-1] in variants  # other variants have their own plans
    ]
    return shortfalls, unplanned


def _jsonschema_pass(files: Sequence[Path]) -> list[BadRecord]:
    """Every line through jsonschema itself (slow: about 0.25 ms per record)."""
    bad = []
    for path in files:
        with path.open("rb") as stream:
            for number, raw in enumerate(stream, start=1):
                text = raw.decode("utf-8", errors="replace").rstrip("\r\n")
                if text.strip():
                    problems = describe_line(text)
                    if problems:
                        bad.append(BadRecord(path, number, tuple(problems)))
    return bad


def check_results(paths: Iterable[str | Path], thorough: bool = False) -> CheckReport:
    files = find_sample_files(paths)
    samples: SampleSet = load_samples(files, skip_bad=True, allow_empty=True)
    report = CheckReport(
        files=len(files), records=len(samples.frame), bad=list(samples.bad_records)
    )
    if thorough:
        known = {(record.path, record.line) for record in report.bad}
        report.bad += [
            record for record in _jsonschema_pass(files) if (record.path, record.line) not in known
        ]
        report.bad.sort(key=lambda record: (str(record.path), record.line))
    frame = samples.frame
    backing_ok = frame["backing_ok"].to_numpy(dtype=bool)
    report.excluded_backing = int((~backing_ok).sum())
    report.excluded_failed = int(((frame["failed_pages"] > 0).to_numpy() & backing_ok).sum())
    report.duplicates = [str(record) for record in samples.duplicates]
    report.inconsistent = [str(record) for record in samples.inconsistent]
    for sidecars in sidecars_for(files):
        report.sidecar_problems.extend(sidecars.problems)
        samples_file = next(f for f in files if f.parent.resolve() == sidecars.directory.resolve())
        for plan in sidecars.plans:
            report.plans += 1
            shortfalls, unplanned = check_plan(samples.frame, samples_file, plan)
            report.shortfalls += shortfalls
            report.unplanned += unplanned
    return report
