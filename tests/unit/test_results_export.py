"""`miglab export`: the tidy sample table as CSV and Parquet."""

from __future__ import annotations

import io
from pathlib import Path

import pandas as pd
import pytest
import results_fixture as fx
from miglab.cli import main
from miglab.results.schema import field_names


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return fx.write_results(tmp_path_factory.mktemp("export"))


def test_csv_to_stdout(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(results), "--host", "grace1"]) == 0
    tidy = pd.read_csv(io.StringIO(capsys.readouterr().out))
    assert list(tidy.columns) == [*field_names(), "source", "line", "usable"]
    grace = fx.standard_records()[fx.GRACE]
    assert len(tidy) == len(grace)
    assert int((~tidy["usable"]).sum()) == sum(
        1 for r in grace if not r["backing_ok"] or r["failed_pages"]
    )
    first = tidy.iloc[0]
    assert first["timestamp"] == "2025-01-03T17:00:00.123456Z"
    assert first["gbps"] == pytest.approx(grace[0]["gbps"])
    assert first["line"] == 1 and first["source"].endswith("r1/grace1/samples.jsonl")


def test_parquet_keeps_types(results: Path, tmp_path: Path) -> None:
    out = tmp_path / "samples.parquet"
    assert main(["export", str(results), "--format", "parquet", "-o", str(out)]) == 0
    tidy = pd.read_parquet(out)
    assert len(tidy) == sum(len(r) for r in fx.standard_records().values())
    assert str(tidy["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert tidy["page_count"].dtype == "int64"
    assert str(tidy["threads"].dtype) == "Int64"
    assert set(tidy["workqueue"].dropna()) == {"unbound", "highpri"}
    # vanilla has no workqueue and no thread count: missing, not a made-up value
    vanilla = tidy[tidy["copy_config"] == "vanilla"]
    assert vanilla["workqueue"].isna().all() and vanilla["threads"].isna().all()


def test_parquet_needs_a_file(results: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["export", str(results), "--format", "parquet"]) == 2
    assert "parquet needs an output file" in capsys.readouterr().err
