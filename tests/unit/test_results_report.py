"""`miglab report`: one self-contained HTML page and its Markdown twin, with every table,
plot, the provenance of the numbers and every warning."""

from __future__ import annotations

import base64
import io
import json
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest
import results_fixture as fx
from matplotlib import image as matplotlib_image
from miglab.cli import main

LAB_FACTS = {
    "schema": "miglab.labfacts/1",
    "hostname": "grace1",
    "arch": "aarch64",
    "kernel_release": "6.13.0-rc5-mt+",
    "cpu_model": "Neoverse-V2",
    "base_page_size": 65536,
    "numa_nodes": [
        {"node": 0, "cpus": list(range(72)), "memory_bytes": 480 << 30},
        {"node": 1, "cpus": list(range(72, 144)), "memory_bytes": 480 << 30},
    ],
}
RUN_META = {
    "knobs": {"vm.use_mt_copy": 1, "vm.limit_mt_num": 16, "vm.push_0_pull_1": 0},
    "stress_ng": {"busy": ["--cpu", "0", "--cpu-method", "matrixprod"]},
    "variant": {"name": "mt-highpri", "patches": ["0001-highpri.patch"]},
    "migbench": {"version": "0.3", "build": "9f8e7d6"},
}


class _Collector(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.external: list[str] = []
        self.images = 0
        self.tables = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "table":
            self.tables += 1
        if tag == "img":
            self.images += 1
        for key in ("src", "href"):
            value = values.get(key)
            if value and not value.startswith("data:"):
                self.external.append(value)


@pytest.fixture(scope="module")
def report(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("report")
    results = fx.write_results(root / "results")
    grace = results / "r1" / "grace1"
    (grace / "lab-facts.json").write_text(json.dumps(LAB_FACTS))
    (grace / "run-meta.json").write_text(json.dumps(RUN_META))
    (grace / "plan.json").write_text(
        json.dumps(
            {
                "schema": "miglab.plan/1",
                "run_id": "r1",
                "host": "grace1",
                "repetitions": 4,
                "cells": [
                    {
                        "cell_id": "c1",
                        "load": "busy",
                        "copy_config": "mt_16",
                        "page_kind": "2M",
                        "page_count": 16,
                        "kernel_variant": "mt-highpri",
                    }
                ],
            }
        )
    )
    with (grace / "samples.jsonl").open("a") as stream:
        stream.write('{"schema": "miglab.sample/1", "run_id"\n')  # a torn last line
    out = root / "out"
    assert main(["report", str(results), "-o", str(out), "--skip-bad"]) == 0
    return out


def test_html_is_self_contained(report: Path) -> None:
    page = (report / "report.html").read_text()
    collector = _Collector()
    collector.feed(page)
    assert collector.external == []
    # 4 throughput figures, 4 speedup heat maps, 5 CPU-per-GB plots (no trade-off plot: the
    # fixture has no load shares)
    assert collector.images == 4 + 4 + 5
    # 5 summary tables, 4 speedup tables, 5 cost tables, 1 crossover table, provenance:
    # runs, hosts, kernels, loads, run metadata, lab facts, input files
    assert collector.tables == 5 + 4 + 5 + 1 + 7


def test_every_table_and_mark(report: Path) -> None:
    page = (report / "report.html").read_text()
    markdown = (report / "report.md").read_text()
    for title in (
        "2MB THP on an idle system (GB/s) - host epyc1",
        "64KB with system_unbound_wq on an idle system (GB/s) - host grace1",
        "2MB mTHP with system_unbound_wq on an idle system (GB/s) - host grace1",
        "2MB mTHP with system_unbound_wq on a busy system (GB/s) - host grace1",
        "2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1",
        "2MB mTHP with system_highpri_wq on a busy system (x over vanilla) - host grace1",
    ):
        assert title in page and f"### {title}" in markdown
    assert '<td class="unstable">0.02!</td>' in page
    assert page.count('<td class="missing">-</td>') >= 2
    assert "| 2 | 1.13 | - | 1.05 | 1.84 |" in markdown


def test_warnings(report: Path) -> None:
    markdown = (report / "report.md").read_text()
    warnings = markdown.split("## Warnings", 1)[1].split("## Summary tables", 1)[0]
    samples = report.parent / "results" / "r1" / "grace1" / "samples.jsonl"
    line = len(fx.standard_records()[fx.GRACE]) + 1
    assert "- 1 bad record(s) skipped (--skip-bad):" in warnings
    assert f"-   {samples}:{line}: not valid JSON" in warnings
    assert "- 7 sample(s) excluded from every table: 6 with backing_ok false" in warnings
    busy_unbound = "2MB mTHP with system_unbound_wq on a busy system (GB/s) - host grace1"
    busy_highpri = "2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1"
    assert f"Unstable: {busy_unbound}: mt_16 at 1 page" in warnings
    assert f"Missing: {busy_highpri}: mt_1 at 2 pages (all 4 samples excluded)" in warnings
    assert f"Missing: {busy_highpri}: mt_16 at 16 pages (no samples)" in warnings
    assert (
        "Plan: " in warnings
        and "missing cell c1 (mt-highpri, busy, mt_16, 2M, 16 pages): 0 of 4" in warnings
    )


def test_provenance(report: Path) -> None:
    markdown = (report / "report.md").read_text()
    provenance = markdown.split("## Provenance", 1)[1]
    assert "| r1 | grace1 | 177 | 2025-01-03 17:00:00 UTC | 2025-01-03 17:12:00 UTC |" in provenance
    assert "| r2 | epyc1 | 8 |" in provenance
    numa = "2 node(s): node 0: 72 CPUs, 480.0 GiB; node 1: 72 CPUs, 480.0 GiB"
    assert f"| grace1 | aarch64 | 64KB | {numa} | Neoverse-V2 | 0 -> 1 |" in provenance
    assert "| epyc1 | x86_64 | 4KB | not recorded (no lab-facts.json) |" in provenance
    assert (
        "| grace1 | mt-highpri | 6.13.0-rc5-mt-highpri+ | 0123abc | system_highpri_wq "
        "| mt_1 mt_2 mt_16 |"
    ) in provenance
    assert "| knobs.vm.limit_mt_num | 16 |" in provenance
    assert '| stress_ng.busy | ["--cpu", "0", "--cpu-method", "matrixprod"] |' in provenance
    assert "| migbench.build | 9f8e7d6 |" in provenance
    assert "| r1 | grace1 | busy |" in provenance and "| r1 | grace1 | idle |" in provenance


def test_markdown_plots_exist(report: Path) -> None:
    markdown = (report / "report.md").read_text()
    links = re.findall(r"\]\((plots/[^)]+)\)", markdown)
    assert len(links) == 2 * 13  # PNG and SVG of each plot
    for link in links:
        assert (report / link).is_file()


@pytest.mark.parametrize(("statistic", "speedups"), [("median", True), ("min", False)])
def test_other_statistics(tmp_path: Path, statistic: str, speedups: bool) -> None:
    results = fx.write_results(
        tmp_path / "results",
        {fx.EPYC: fx.standard_records()[fx.EPYC]}
        | {fx.GRACE: [r for r in fx.standard_records()[fx.GRACE] if r["load"] == "idle"]},
    )
    out = tmp_path / "out"
    assert main(["report", str(results), "-o", str(out), "--stat", statistic]) == 0
    markdown = (out / "report.md").read_text()
    assert f"(GB/s, {statistic}) - host grace1" in markdown
    # medians are compared by bootstrap; min and max have no test, so no speedup section
    assert ("## Speedup over vanilla" in markdown) is speedups
    assert ("bootstrap" in markdown) is speedups


def test_cost_crossover_and_ceiling_sections(tmp_path: Path) -> None:
    """What a configuration costs, when it pays off and how close it gets to the ceiling, each
    with its legend; the trade-off plot where a stress load measured the application; every
    embedded image is a PNG that decodes, and nothing links outside the page."""
    records = []
    for config, mean, share in (("serial", 1.0, 0.88), ("mt_2", 2.0, 0.80)):
        for count in (4, 16):
            records += [
                {**r, "schema": "miglab.sample/2", "kthread_cpu_ns": 2_000_000 if config == "mt_2"
                 else 1000, "load_cpu_share": share, "load_cpu_share_baseline": 0.9}
                for r in fx.cell_with_mean(fx.EPYC, fx.UNBOUND, "busy", config, "2M", count, mean)
            ]  # fmt: skip
    records += fx.Grid(fx.EPYC, fx.VANILLA, "busy", "2M", {"vanilla": {4: 1.0, 16: 1.0}}).records()
    host_dir = tmp_path / "results" / "r2" / "epyc1"
    fx.write_jsonl(host_dir / "samples.jsonl", records)
    for variant in ("vanilla", "mt-unbound"):
        path = host_dir / "variants" / variant / "ceiling-busy.json"
        path.parent.mkdir(parents=True)
        path.write_text(json.dumps({
            "schema": "miglab.ceiling/1", "run_id": "r2", "host": "epyc1",
            "kernel_variant": variant, "load": "busy", "ok": True, "error": None,
            "measurements": [{"direction": d, "threads": t, "cpus": t, "gbps": 4.0 * t,
                              "placement_ok": True} for d in ("push", "pull") for t in (1, 2)],
        }))  # fmt: skip
    out = tmp_path / "out"
    assert main(["report", str(tmp_path / "results"), "-o", str(out)]) == 0
    page = (out / "report.html").read_text()
    for heading in (
        "Cost: CPU per GB and the application&#x27;s loss",
        "Crossover",
        "Relative to the copy ceiling",
    ):
        assert f"<h2>{heading}</h2>" in page, heading
    assert "charged to nobody (the run time kernel threads gained" in page
    assert "CPU per GB moved, 2MB THP with system_unbound_wq under load busy - host epyc1" in page
    assert "Crossover - host epyc1" in page and "&gt;= 4 pages vs serial" in page
    assert "% of the copy ceiling, push" in page
    assert "throughput vs application loss" in page
    markdown = (out / "report.md").read_text()
    assert "app -11.1%" in markdown  # mt_2: (0.9 - 0.8) / 0.9 lost
    collector = _Collector()
    collector.feed(page)
    assert collector.external == []
    for data in re.findall(r'src="data:image/png;base64,([^"]+)"', page):
        image = matplotlib_image.imread(io.BytesIO(base64.b64decode(data)), format="png")
        assert image.shape[0] > 100 and image.shape[1] > 100
