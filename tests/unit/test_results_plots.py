"""`miglab plot`: PNG and SVG files that exist, are valid, and hold the right series."""

from __future__ import annotations

import struct
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
import results_fixture as fx
from miglab.cli import main

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
SVG_NS = "{http://www.w3.org/2000/svg}"


@pytest.fixture(scope="module")
def plots(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("plots")
    results = fx.write_results(root / "results")
    out = root / "out"
    assert main(["plot", str(results), "-o", str(out)]) == 0
    return out


def png_size(path: Path) -> tuple[int, int]:
    data = path.read_bytes()
    assert data[:8] == PNG_SIGNATURE, f"{path} is not a PNG"
    assert data[12:16] == b"IHDR"
    width, height = struct.unpack(">II", data[16:24])
    assert data.rstrip(b"\x00")[-8:-4] == b"IEND"
    return width, height


def series_ids(path: Path) -> list[str]:
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG_NS}svg", f"{path} is not an SVG document"
    return [
        element.get("id", "")
        for element in root.iter()
        if element.get("id", "").startswith("series-")
    ]


def test_every_plot_is_written_in_both_formats(plots: Path) -> None:
    stems = {
        "throughput-epyc1-2M-none",
        "throughput-grace1-base-unbound",
        "throughput-grace1-2M-unbound",
        "throughput-grace1-2M-highpri",
        "speedup-grace1-base-idle-unbound",
        "speedup-grace1-2M-idle-unbound",
        "speedup-grace1-2M-busy-unbound",
        "speedup-grace1-2M-busy-highpri",
        # CPU per GB: every (host, kind, load, workqueue) with CPU times in its records; no
        # trade-off plot (the fixture has no load shares)
        "cpu-epyc1-2M-idle-none",
        "cpu-grace1-base-idle-unbound",
        "cpu-grace1-2M-idle-unbound",
        "cpu-grace1-2M-busy-unbound",
        "cpu-grace1-2M-busy-highpri",
    }
    assert {path.name for path in plots.iterdir()} == {
        f"{stem}.{suffix}" for stem in stems for suffix in ("png", "svg")
    }
    for path in plots.glob("*.png"):
        width, height = png_size(path)
        assert width > 200 and height > 150


def test_throughput_series_one_per_config_and_load(plots: Path) -> None:
    # the unbound figure: panels idle and busy, five configs each (vanilla shared)
    assert series_ids(plots / "throughput-grace1-2M-unbound.svg") == [
        f"series-{load}-{config}"
        for load in ("idle", "busy")
        for config in ("vanilla", "serial", "mt_1", "mt_2", "mt_16")
    ]
    # highpri was measured busy only; mt_1 at 2 pages is missing but the line exists
    assert series_ids(plots / "throughput-grace1-2M-highpri.svg") == [
        "series-busy-vanilla",
        "series-busy-mt_1",
        "series-busy-mt_2",
        "series-busy-mt_16",
    ]
    assert series_ids(plots / "throughput-epyc1-2M-none.svg") == ["series-idle-vanilla"]
    text = (plots / "throughput-grace1-2M-unbound.svg").read_text()
    assert "series-" in text and "unstable-busy-mt_16" in text  # the stalled cell is marked
    assert "band-idle-mt_16" in text  # confidence bands


def test_speedup_heat_map_rows_and_labels(plots: Path) -> None:
    path = plots / "speedup-grace1-2M-busy-highpri.svg"
    assert series_ids(path) == [
        "series-speedup-mt_1",
        "series-speedup-mt_2",
        "series-speedup-mt_16",
    ]
    labels = [element.text for element in ET.parse(path).getroot().iter(f"{SVG_NS}text")]
    # mt_2 over vanilla at 16 pages: 8.44 / 3.47; missing cells are labelled "-"
    assert f"{8.44 / 3.47:.2f}x*" in labels
    assert labels.count("-") == 2
    assert series_ids(plots / "speedup-grace1-2M-busy-unbound.svg") == [
        "series-speedup-serial",
        "series-speedup-mt_1",
        "series-speedup-mt_2",
        "series-speedup-mt_16",
    ]


def test_cpu_bars_are_split_charged_and_charged_to_nobody(plots: Path) -> None:
    # one bar each per config (vanilla shared with the highpri figure)
    configs = ("vanilla", "serial", "mt_1", "mt_2", "mt_16")
    assert series_ids(plots / "cpu-grace1-2M-busy-unbound.svg") == [
        f"series-cpu-{part}-{config}" for part in ("charged", "uncharged") for config in configs
    ]


def test_worker_processes_draw_the_same_files_in_the_same_order(tmp_path: Path) -> None:
    """The report draws its figures in worker processes: the files, their order in the report
    and their bytes are those drawn in the calling process."""
    from miglab.results.load import load_samples
    from miglab.results.report import write_report

    samples = load_samples([fx.write_results(tmp_path / "results")])
    here = write_report(samples, tmp_path / "here", workers=1)
    workers = write_report(samples, tmp_path / "workers", workers=2)
    assert [plot.png.name for plot in workers.plots] == [plot.png.name for plot in here.plots]
    assert len(here.plots) == 13
    for mine, theirs in zip(here.plots, workers.plots, strict=True):
        assert (mine.title, mine.kind, mine.series) == (theirs.title, theirs.kind, theirs.series)
        assert mine.svg.read_bytes() == theirs.svg.read_bytes(), mine.svg.name
        assert mine.png.read_bytes() == theirs.png.read_bytes(), mine.png.name
