"""`miglab compare`: significance verdicts on cells built to be clearly different and
clearly equal, for idle vs busy, unbound vs highpri, a variant vs vanilla, two runs, and the
speedup over vanilla."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import results_fixture as fx
from miglab.cli import main
from miglab.errors import ConfigError
from miglab.results.compare import compare_selections, parse_selection, select, speedups
from miglab.results.load import load_samples

# Equal means from different samples: Welch's t is exactly 0 (p = 1).
OTHER_SPREAD = (-0.02, -0.02, 0.02, 0.02)

IDLE = {
    (fx.VANILLA, "vanilla"): {1: 2.00, 2: 4.00},
    (fx.UNBOUND, "mt_2"): {1: 3.00, 2: 6.00},
    (fx.UNBOUND, "mt_16"): {1: 8.00, 2: 16.00},
    (fx.HIGHPRI, "mt_2"): {1: 3.00, 2: 6.00},
    (fx.HIGHPRI, "mt_16"): {1: 4.00, 2: 16.00},
}
BUSY = {
    (fx.VANILLA, "vanilla"): {1: 1.00, 2: 4.00},
    (fx.UNBOUND, "mt_2"): {1: 3.00, 2: 3.00},
    (fx.UNBOUND, "mt_16"): {1: 0.80, 2: 16.00},
}


def records_for(
    load: str,
    cells: dict[tuple[fx.Kernel, str], dict[int, float]],
    spread: tuple[float, ...] = fx.STABLE_SPREAD,
    host: fx.Host = fx.GRACE,
) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for (kernel, config), by_count in cells.items():
        for count, mean in by_count.items():
            found += fx.cell_with_mean(host, kernel, load, config, "2M", count, mean, spread)
    return found


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("compare")
    fx.write_results(
        root, {fx.GRACE: records_for("idle", IDLE) + records_for("busy", BUSY, OTHER_SPREAD)}
    )
    return root


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> str:
    assert main(list(argv)) == 0
    return capsys.readouterr().out


def table_rows(text: str, title: str) -> list[str]:
    """The header and rows of the text-format table with this title."""
    lines = text.splitlines()
    start = lines.index(title) + 2
    end = lines.index("", start)
    return lines[start:end]


def test_idle_vs_busy(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(capsys, "compare", "load=idle", "load=busy", str(results), "--format", "text")
    assert out.startswith("A = load=idle; B = load=busy; compared: load\n")
    assert table_rows(
        out, "2MB mTHP with system_unbound_wq (change in % of GB/s) - host grace1"
    ) == [
        "pages  vanilla     mt_2    mt_16",
        "    1  -50.0%*    +0.0%  -90.0%*",
        "    2    +0.0%  -50.0%*    +0.0%",
    ]
    # highpri was only measured idle: nothing to compare, and the table says so
    assert table_rows(
        out, "2MB mTHP with system_highpri_wq (change in % of GB/s) - host grace1"
    ) == [
        "pages  vanilla  mt_2  mt_16",
        "    1  -50.0%*     -      -",
        "    2    +0.0%     -      -",
    ]
    assert "  Only in A: mt_16 at 2 pages" in out
    assert "Welch's t-test" in out and "Holm's correction" in out


def test_verdicts_in_json(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    document = json.loads(
        run_cli(
            capsys,
            "compare",
            "load=idle",
            "load=busy",
            str(results),
            "--format",
            "json",
            "--variant",
            "mt-unbound",
        )
    )
    assert document["test"] == "welch" and document["compared"] == ["load"]
    (table,) = document["tables"]
    cells = {
        (row["pages"], config): cell
        for row in table["rows"]
        for config, cell in row["cells"].items()
    }
    clearly_different = cells[(2, "mt_2")]
    assert clearly_different["ratio"] == pytest.approx(0.5)
    assert clearly_different["significant"] and clearly_different["p_adjusted"] < 1e-4
    assert clearly_different["ratio_ci"][0] < 0.5 < clearly_different["ratio_ci"][1]
    clearly_equal = cells[(1, "mt_2")]
    assert clearly_equal["ratio"] == pytest.approx(1.0)
    # elapsed_ns is whole nanoseconds: the means are equal to about 1e-7
    assert not clearly_equal["significant"] and clearly_equal["p_value"] == pytest.approx(
        1.0, abs=1e-3
    )
    assert clearly_equal["n_a"] == 4 and clearly_equal["n_b"] == 4


def test_unbound_vs_highpri(results: Path) -> None:
    frame = load_samples([results]).frame
    idle = frame[frame["load"] == "idle"]
    a, b = parse_selection("workqueue=unbound"), parse_selection("wq=highpri")
    comparison = compare_selections(select(idle, a), select(idle, b), a.text, b.text)
    assert set(comparison.compared_dims) == {"workqueue", "kernel_variant"}
    verdicts = {
        (c.identity["copy_config"], c.identity["page_count"]): (
            round(c.difference.change_percent, 6),
            c.significant,
        )
        for c in comparison.cells
        if c.difference is not None
    }
    assert verdicts == {
        ("mt_2", 1): (0.0, False),
        ("mt_2", 2): (0.0, False),
        ("mt_16", 1): (-50.0, True),
        ("mt_16", 2): (0.0, False),
    }


def test_variant_vs_vanilla(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(
        capsys,
        "compare",
        "variant=vanilla",
        "variant=mt-unbound",
        str(results),
        "--load",
        "idle",
        "--format",
        "text",
        "--show-spread",
    )
    rows = table_rows(
        out, "2MB mTHP with system_unbound_wq on an idle system (change in % of GB/s) - host grace1"
    )
    assert rows[0].split() == ["pages", "mt_2", "mt_16"]
    assert rows[1].split()[:2] == ["1", "+50.0%"] and rows[1].endswith("*")
    assert "+300.0%" in rows[1] and "+300.0%" in rows[2]


def test_two_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    second = fx.Host("grace1", "aarch64", 65536, "r2")
    run1 = records_for("idle", {(fx.VANILLA, "vanilla"): {1: 2.0, 2: 4.0}})
    run2 = records_for("idle", {(fx.VANILLA, "vanilla"): {1: 2.0, 2: 3.0}}, OTHER_SPREAD, second)
    fx.write_jsonl(tmp_path / "r1" / "grace1" / "samples.jsonl", run1)
    fx.write_jsonl(tmp_path / "r2" / "grace1" / "samples.jsonl", run2)
    by_selection = run_cli(capsys, "compare", "run=r1", "run=r2", str(tmp_path), "--format", "text")
    by_path = run_cli(
        capsys, "compare", str(tmp_path / "r1"), str(tmp_path / "r2"), "--format", "text"
    )
    for out in (by_selection, by_path):
        assert table_rows(
            out, "2MB mTHP on an idle system (change in % of GB/s) - host grace1"
        ) == [
            "pages  vanilla",
            "    1    +0.0%",
            "    2  -25.0%*",
        ]


def test_speedup_over_vanilla_checks_the_claims(
    results: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = run_cli(
        capsys, "compare", "--speedup", str(results), "--load", "idle", "--format", "text"
    )
    title = "2MB mTHP with system_highpri_wq on an idle system (x over vanilla) - host grace1"
    assert table_rows(out, title) == [
        "pages    mt_2   mt_16",
        "    1  1.50x*  2.00x*",
        "    2  1.50x*  4.00x*",
    ]
    assert "  Best mt_16: 4.00x at 2 pages (95% CI " in out
    frame = load_samples([results]).frame
    over_mt_2 = speedups(frame[frame["load"] == "idle"], baseline="mt_2")
    ratios = {
        (c.identity["kernel_variant"], c.identity["page_count"]): c.difference.ratio
        for c in over_mt_2.cells
        if c.difference is not None
    }
    assert ratios == pytest.approx(
        {
            ("mt-unbound", 1): 8 / 3,
            ("mt-unbound", 2): 8 / 3,
            ("mt-highpri", 1): 4 / 3,
            ("mt-highpri", 2): 8 / 3,
        }
    )


def test_bootstrap_and_median(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    out = run_cli(
        capsys,
        "compare",
        "load=idle",
        "load=busy",
        str(results),
        "--test",
        "bootstrap",
        "--stat",
        "median",
        "--format",
        "text",
        "--variant",
        "mt-unbound",
    )
    assert "bootstrap" in out
    rows = table_rows(
        out, "2MB mTHP with system_unbound_wq (change in % of median GB/s, median) - host grace1"
    )
    # the medians of the +-3 % and +-2 % spreads differ by a fraction of a percent
    assert [row.split() for row in rows] == [
        ["pages", "mt_2", "mt_16"],
        ["1", "+0.0%", "-90.0%*"],
        ["2", "-50.0%*", "+0.0%"],
    ]


def test_user_errors(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(ConfigError, match="key=value"):
        parse_selection("colour=blue")
    with pytest.raises(ConfigError, match="neither key=value"):
        parse_selection("no/such/path")
    for argv, message in [
        (
            ["compare", "load=idle", "load=busy", str(results), "--stat", "median"],
            "use --test bootstrap",
        ),
        (["compare", "load=idle", "load=busy", str(results), "--stat", "min"], "not min"),
        (["compare", "load=idle", "load=nope", str(results)], "selects no usable samples"),
        (["compare", "load=idle", "load=busy"], "need result files"),
        (
            ["compare", "--speedup", str(results), "--baseline", "dma_8"],
            "no samples of copy config",
        ),
    ]:
        assert main(argv) == 2
        assert message in capsys.readouterr().err
