"""`miglab table`: the thread's tables from a fixture whose cell means are chosen values.

The fixture (results_fixture.standard_records) holds, on host grace1 (64 KiB pages): one
vanilla kernel shared by an unbound and a highpri variant on a busy system, a cell with the
thread's 0.02 GB/s (nine moves at 2 GB/s and one stalled at 0.002), samples excluded for
unverified backing and for failed pages, a cell whose samples are all excluded and a cell
never measured; on host epyc1 (4 KiB pages) vanilla only.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import results_fixture as fx
from miglab.cli import main
from miglab.results.load import SampleFilter, load_samples
from miglab.results.render import render_summary_tables
from miglab.results.stats import StabilityRule
from miglab.results.tables import build_tables, config_sort_key, page_kind_label, table_title
from scipy import stats as scipy_stats

LEGEND = (
    "Cells: mean = total bytes / total time of the samples (harmonic mean of per-sample "
    "GB/s). ! unstable (CV > 15% or a sample < 25% of the median), ? fewer than 3 samples, "
    "- no usable samples."
)

STALLED = (
    "Unstable: mt_16 at 1 page: CV 35%, a sample at 0.002 GB/s is 0.1% of the median "
    "(n=10; min 0.002, median 2.00, max 2.00)"
)

EXPECTED_MARKDOWN = f"""\
### 2MB THP on an idle system (GB/s) - host epyc1

| pages | vanilla |
| ---: | ---: |
| 1 | 3.00 |
| 4 | 4.25 |

- {LEGEND}

### 64KB with system_unbound_wq on an idle system (GB/s) - host grace1

| pages | vanilla | mt_16 |
| ---: | ---: | ---: |
| 32 | 5.43 | 8.61 |
| 256 | 6.95 | 23.39 |

- {LEGEND}

### 2MB mTHP with system_unbound_wq on an idle system (GB/s) - host grace1

| pages | vanilla | serial | mt_1 | mt_2 | mt_16 |
| ---: | ---: | ---: | ---: | ---: | ---: |
| 1 | 5.94 | 5.50 | 2.90 | 6.90 | 8.76 |
| 2 | 7.67 | 7.00 | 5.57 | 7.11 | 15.68 |
| 16 | 9.41 | 9.00 | 6.91 | 12.23 | 49.15 |

- {LEGEND}

### 2MB mTHP with system_unbound_wq on a busy system (GB/s) - host grace1

| pages | vanilla | serial | mt_1 | mt_2 | mt_16 |
| ---: | ---: | ---: | ---: | ---: | ---: |
| 1 | 1.38 | 1.20 | 0.59 | 1.45 | 0.02! |
| 2 | 1.13 | 1.50 | 3.08 | 3.11 | 1.46 |
| 16 | 3.47 | 6.00 | 5.13 | 5.72 | 6.49 |

- {LEGEND}
- {STALLED}
- Excluded 3 sample(s): 2 with backing_ok false, 1 with failed pages

### 2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1

| pages | vanilla | mt_1 | mt_2 | mt_16 |
| ---: | ---: | ---: | ---: | ---: |
| 1 | 1.38 | 1.18 | 1.17 | 3.86 |
| 2 | 1.13 | - | 1.05 | 1.84 |
| 16 | 3.47 | 6.02 | 8.44 | - |

- {LEGEND}
- Missing: mt_1 at 2 pages (all 4 samples excluded)
- Missing: mt_16 at 16 pages (no samples)
- Excluded 4 sample(s): 4 with backing_ok false, 0 with failed pages
"""

EXPECTED_BUSY_TEXT = f"""\
2MB mTHP with system_unbound_wq on a busy system (GB/s) - host grace1

pages  vanilla  serial  mt_1  mt_2  mt_16
    1     1.38    1.20  0.59  1.45  0.02!
    2     1.13    1.50  3.08  3.11   1.46
   16     3.47    6.00  5.13  5.72   6.49

  {LEGEND}
  {STALLED}
  Excluded 3 sample(s): 2 with backing_ok false, 1 with failed pages

2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1

pages  vanilla  mt_1  mt_2  mt_16
    1     1.38  1.18  1.17   3.86
    2     1.13     -  1.05   1.84
   16     3.47  6.02  8.44      -

  {LEGEND}
  Missing: mt_1 at 2 pages (all 4 samples excluded)
  Missing: mt_16 at 16 pages (no samples)
  Excluded 4 sample(s): 4 with backing_ok false, 0 with failed pages
"""

EXPECTED_BUSY_CSV = f"""\
# 2MB mTHP with system_unbound_wq on a busy system (GB/s) - host grace1
pages,vanilla,serial,mt_1,mt_2,mt_16,unstable,few_samples
1,1.38,1.20,0.59,1.45,0.02,mt_16,
2,1.13,1.50,3.08,3.11,1.46,,
16,3.47,6.00,5.13,5.72,6.49,,
# {LEGEND}
# {STALLED}
# Excluded 3 sample(s): 2 with backing_ok false, 1 with failed pages

# 2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1
pages,vanilla,mt_1,mt_2,mt_16,unstable,few_samples
1,1.38,1.18,1.17,3.86,,
2,1.13,,1.05,1.84,,
16,3.47,6.02,8.44,,,
# {LEGEND}
# Missing: mt_1 at 2 pages (all 4 samples excluded)
# Missing: mt_16 at 16 pages (no samples)
# Excluded 4 sample(s): 4 with backing_ok false, 0 with failed pages
"""


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_results(tmp_path_factory.mktemp("results"))


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_markdown_tables_are_the_chosen_means(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "table", str(results))
    assert code == 0
    assert out == EXPECTED_MARKDOWN


def test_text_tables(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "table", str(results), "--format", "text", "--load", "busy")
    assert code == 0
    assert out == EXPECTED_BUSY_TEXT


def test_csv_tables_keep_cells_numeric_and_missing_empty(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(capsys, "table", str(results), "--format", "csv", "--load", "busy")
    assert code == 0
    assert out == EXPECTED_BUSY_CSV


def test_json_tables(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run_cli(capsys, "table", str(results), "--format", "json")
    assert code == 0
    document = json.loads(out)
    assert document["statistic"] == "mean"
    titles = [table["title"] for table in document["tables"]]
    assert titles == [
        "2MB THP on an idle system (GB/s) - host epyc1",
        "64KB with system_unbound_wq on an idle system (GB/s) - host grace1",
        "2MB mTHP with system_unbound_wq on an idle system (GB/s) - host grace1",
        "2MB mTHP with system_unbound_wq on a busy system (GB/s) - host grace1",
        "2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1",
    ]
    highpri = document["tables"][4]
    assert highpri["columns"] == ["vanilla", "mt_1", "mt_2", "mt_16"]
    assert highpri["workqueue"] == "highpri" and highpri["load"] == "busy"
    assert highpri["page_kind_label"] == "2MB mTHP"
    assert highpri["kernel_variants"] == ["mt-highpri"]
    assert highpri["vanilla_kernels"] == ["vanilla"]
    rows = {row["pages"]: row["cells"] for row in highpri["rows"]}
    assert rows[2]["mt_1"] is None  # every sample excluded: missing, never 0
    assert rows[16]["mt_16"] is None  # never measured
    assert rows[16]["mt_2"]["value"] == pytest.approx(8.44, rel=1e-6)
    assert rows[16]["mt_2"]["n"] == 4
    # the vanilla column is the same cells as in the unbound table
    unbound = document["tables"][3]
    unbound_rows = {row["pages"]: row["cells"] for row in unbound["rows"]}
    for count in (1, 2, 16):
        assert unbound_rows[count]["vanilla"] == rows[count]["vanilla"]
    stalled = unbound_rows[1]["mt_16"]
    assert stalled["unstable"] is True
    assert stalled["value"] == pytest.approx(10 / (9 / 2.0 + 1 / 0.002), rel=1e-5)
    assert stalled["amean"] == pytest.approx((9 * 2.0 + 0.002) / 10, rel=1e-5)
    assert stalled["median"] == pytest.approx(2.0, rel=1e-5)
    assert stalled["min"] == pytest.approx(0.002, rel=1e-3)
    assert stalled["n"] == 10


def test_statistic_choice_changes_cells_and_title(results: Path) -> None:
    samples = load_samples([results])
    rule = StabilityRule()
    tables = build_tables(SampleFilter(loads=("busy",)).apply(samples.frame), "amean", rule)
    unbound = tables[0]
    assert unbound.title == (
        "2MB mTHP with system_unbound_wq on a busy system (GB/s, amean) - host grace1"
    )
    assert f"{unbound.cell(1, 'mt_16').value:.2f}" == "1.80"  # type: ignore[union-attr]
    median = build_tables(SampleFilter(loads=("busy",)).apply(samples.frame), "median", rule)[0]
    assert f"{median.cell(1, 'mt_16').value:.2f}" == "2.00"  # type: ignore[union-attr]
    text = render_summary_tables([median], "markdown", rule)
    assert "Cells: median of per-sample GB/s." in text


def test_show_spread_prints_the_confidence_interval(results: Path) -> None:
    samples = load_samples([results])
    rule = StabilityRule()
    tables = build_tables(SampleFilter(hosts=("epyc1",)).apply(samples.frame), "mean", rule)
    text = render_summary_tables(tables, "text", rule, show_spread=True)
    # Samples at M / (1 + d) with d = -3 %, -1 %, +1 %, +3 %: by the delta method the
    # ratio's standard error is M * sqrt(sum(d^2) / (n - 1) / n).
    deltas = fx.STABLE_SPREAD
    n = len(deltas)
    half_width_per_gbps = scipy_stats.t.ppf(0.975, n - 1) * math.sqrt(
        sum(d * d for d in deltas) / (n - 1) / n
    )
    assert f"3.00 ± {3.00 * half_width_per_gbps:.2f}" in text
    assert f"4.25 ± {4.25 * half_width_per_gbps:.2f}" in text
    assert "Spread: mean ± half-width of its 95% confidence interval." in text


def test_show_noise_prints_n_cv_and_range(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = run_cli(
        capsys,
        "table",
        str(results),
        "--load",
        "busy",
        "--variant",
        "mt-unbound",
        "--show-noise",
    )
    assert code == 0
    assert "| 1 | 1.38 (n=4, CV 3%, 1.34-1.42) |" in out
    assert "0.02! (n=10, CV 35%, 0.002-2.00)" in out
    assert "- Noise: (n = usable samples, CV of per-sample GB/s, min-max GB/s)." in out
    code, out, _ = run_cli(
        capsys, "table", str(results), "--host", "epyc1", "--format", "csv", "--show-noise"
    )
    lines = out.splitlines()
    assert (
        lines[1]
        == "pages,vanilla,vanilla_n,vanilla_cv,vanilla_min,vanilla_max,unstable,few_samples"
    )
    n, cv, low, high = lines[2].split(",")[2:6]
    assert n == "4" and 0.02 < float(cv) < 0.03 and float(low) < 3.0 < float(high)


def test_csv_show_spread_adds_interval_columns(results: Path) -> None:
    samples = load_samples([results])
    rule = StabilityRule()
    tables = build_tables(SampleFilter(hosts=("epyc1",)).apply(samples.frame), "mean", rule)
    text = render_summary_tables(tables, "csv", rule, show_spread=True)
    lines = text.splitlines()
    assert lines[1] == "pages,vanilla,vanilla_ci_low,vanilla_ci_high,unstable,few_samples"
    low, high = (float(value) for value in lines[2].split(",")[2:4])
    assert low < 3.00 < high


def test_filters_and_variant_keeps_the_vanilla_reference(results: Path) -> None:
    samples = load_samples([results])
    chosen = SampleFilter(variants=("mt-highpri",)).apply(samples.frame, keep_vanilla=True)
    tables = build_tables(chosen)
    assert [table.title for table in tables] == [
        "2MB THP on an idle system (GB/s) - host epyc1",
        "64KB on an idle system (GB/s) - host grace1",
        "2MB mTHP on an idle system (GB/s) - host grace1",
        "2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1",
    ]
    assert tables[-1].configs == ["vanilla", "mt_1", "mt_2", "mt_16"]
    only_grace_base = SampleFilter(hosts=("grace1",), page_kinds=("base",)).apply(samples.frame)
    assert [table.title for table in build_tables(only_grace_base)] == [
        "64KB with system_unbound_wq on an idle system (GB/s) - host grace1"
    ]
    assert SampleFilter(runs=("nope",)).apply(samples.frame).empty


def test_no_matching_samples_is_a_user_error(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = run_cli(capsys, "table", str(results), "--host", "nowhere")
    assert code == 2
    assert "no samples match" in err


def test_two_patched_kernels_with_one_workqueue_get_separate_tables(tmp_path: Path) -> None:
    other = fx.Kernel("mt-unbound-v2", "unbound", "6.14.0-mt+")
    records = fx.cell_with_mean(fx.GRACE, fx.VANILLA, "idle", "vanilla", "2M", 1, 5.0)
    records += fx.cell_with_mean(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 1, 6.0)
    records += fx.cell_with_mean(fx.GRACE, other, "idle", "mt_2", "2M", 1, 7.0)
    fx.write_results(tmp_path, {fx.GRACE: records})
    tables = build_tables(load_samples([tmp_path]).frame)
    assert [table.title for table in tables] == [
        "2MB mTHP with system_unbound_wq on an idle system (GB/s) - host grace1 - variant mt-unbound",
        "2MB mTHP with system_unbound_wq on an idle system (GB/s) - host grace1 - variant mt-unbound-v2",
    ]
    assert [f"{table.cell(1, 'mt_2').value:.2f}" for table in tables] == ["6.00", "7.00"]  # type: ignore[union-attr]
    assert all(f"{table.cell(1, 'vanilla').value:.2f}" == "5.00" for table in tables)  # type: ignore[union-attr]


def test_vanilla_column_pools_vanilla_kernels_and_says_so(tmp_path: Path) -> None:
    second = fx.Kernel("vanilla-6.14", None, "6.14.0")
    records = fx.samples_at(fx.GRACE, fx.VANILLA, "idle", "vanilla", "2M", 1, [4.0, 4.0, 4.0])
    records += fx.samples_at(fx.GRACE, second, "idle", "vanilla", "2M", 1, [2.0, 2.0, 2.0], 3)
    fx.write_results(tmp_path, {fx.GRACE: records})
    (table,) = build_tables(load_samples([tmp_path]).frame)
    cell = table.cell(1, "vanilla")
    assert cell is not None and cell.n == 6
    assert cell.value == pytest.approx(6 / (3 / 4.0 + 3 / 2.0), rel=1e-6)
    assert "The vanilla column pools kernels vanilla, vanilla-6.14" in table.notes(StabilityRule())


def test_few_samples_are_marked_not_judged(tmp_path: Path) -> None:
    records = fx.samples_at(fx.GRACE, fx.VANILLA, "idle", "vanilla", "2M", 1, [4.0, 0.1])
    fx.write_results(tmp_path, {fx.GRACE: records})
    (table,) = build_tables(load_samples([tmp_path]).frame)
    text = render_summary_tables([table], "markdown", StabilityRule())
    assert "| 1 | 0.20? |" in text
    assert "- Too few samples: vanilla at 1 page: n=2" in text
    assert "Unstable" not in text.replace("! unstable", "")


def test_a_clamped_mt_cell_is_marked_with_the_threads_that_ran(tmp_path: Path) -> None:
    """mt_4 on a node with 2 CPUs ran 2 copy threads: never a silent mt_4 label on it."""
    records = fx.cell_with_mean(fx.EPYC, fx.VANILLA, "idle", "vanilla", "base", 32, 1.0)
    records += fx.cell_with_mean(
        fx.EPYC, fx.UNBOUND, "idle", "mt_2", "base", 32, 2.0, threads_effective=2.0
    )
    records += fx.cell_with_mean(
        fx.EPYC, fx.UNBOUND, "idle", "mt_4", "base", 32, 2.5, threads_effective=2.0
    )
    # records of a kernel (or a miglab) without the counters: no claim either way
    records += fx.cell_with_mean(fx.EPYC, fx.UNBOUND, "idle", "mt_8", "base", 32, 3.0)
    fx.write_results(tmp_path, {fx.EPYC: records})
    (table,) = build_tables(load_samples([tmp_path]).frame)
    assert [config for _, config, _ in table.clamped_cells()] == ["mt_4"]
    text = render_summary_tables([table], "markdown", StabilityRule())
    assert "| 32 | 1.00 | 2.00 | 2.50* | 3.00 |" in text
    assert "- Clamped: mt_4 at 32 pages ran 2 copy threads per batch on average" in text
    assert "* fewer copy threads than N ran" in text
    document = json.loads(render_summary_tables([table], "json", StabilityRule()))
    cells = document["tables"][0]["rows"][0]["cells"]
    assert cells["mt_4"]["clamped"] is True and cells["mt_4"]["threads_effective"] == 2.0
    assert cells["mt_8"]["clamped"] is False and cells["mt_8"]["threads_effective"] is None


@pytest.mark.parametrize(
    ("kind", "base", "label"),
    [
        ("base", 65536, "64KB"),
        ("base", 4096, "4KB"),
        ("2M", 65536, "2MB mTHP"),
        ("2M", 4096, "2MB THP"),
        ("64K", 4096, "64KB mTHP"),
        ("512M", 65536, "512MB THP"),
        ("1G", 4096, "1GB"),
        ("32M", 16384, "32MB THP"),
        # Debian's arm64-16k kernel, the virtual lab's aarch64 known-good one
        ("base", 16384, "16KB"),
        ("2M", 16384, "2MB mTHP"),
    ],
)
def test_page_kind_labels(kind: str, base: int, label: str) -> None:
    assert page_kind_label(kind, base) == label


def test_titles_name_workqueue_and_load() -> None:
    assert table_title("2M", 65536, "highpri", "busy", "grace1") == (
        "2MB mTHP with system_highpri_wq on a busy system (GB/s) - host grace1"
    )
    assert table_title("base", 65536, None, "idle", "grace1") == (
        "64KB on an idle system (GB/s) - host grace1"
    )
    assert table_title("base", 4096, "unbound", "stream", "x1", "median") == (
        "4KB with system_unbound_wq under load stream (GB/s, median) - host x1"
    )


def test_columns_sort_by_family_then_number() -> None:
    configs = ["mt_16", "dma_2", "mt_2", "vanilla", "mt_1", "serial", "dma_16", "mt_32"]
    assert sorted(configs, key=config_sort_key) == [
        "vanilla",
        "serial",
        "mt_1",
        "mt_2",
        "mt_16",
        "mt_32",
        "dma_2",
        "dma_16",
    ]
