"""`miglab check`: bad records as file:line, duplicates, cells missing against the plan."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import results_fixture as fx
from miglab.cli import main
from miglab.results.check import check_results


def run_check(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[str]]:
    code = main(["check", *argv])
    return code, capsys.readouterr().out.splitlines()


def planned_cell(
    config: str, count: int, variant: str = "mt-unbound", load: str = "idle"
) -> dict[str, Any]:
    return {
        "cell_id": f"{variant}:{load}:{config}:2M:{count}",
        "load": load,
        "copy_config": config,
        "page_kind": "2M",
        "page_count": count,
        "kernel_variant": variant,
    }


def test_clean_results_pass(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx.write_results(tmp_path)
    code, lines = run_check(capsys, str(tmp_path))
    assert code == 0  # excluded samples are the tables' business, not a broken record
    assert lines == [
        "note: 7 valid sample(s) the tables exclude: 6 with backing_ok false, 1 with failed pages",
        "ok: 2 file(s), 185 valid record(s): 0 bad, 0 duplicate(s), 0 inconsistent, 0 plan(s): "
        "0 missing and 0 short cell(s)",
    ]


def test_truncated_lines_wrong_types_and_unknown_versions(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = fx.samples_at(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 4, [5.0, 5.0, 5.0])
    lines = [json.dumps(record) for record in records]
    lines[1] = lines[1][: len(lines[1]) // 2]  # cut in the middle, as by a full disk
    wrong = dict(records[2], rep="2", failed_pages=None)
    newer = dict(records[2], schema="miglab.sample/3")
    path = tmp_path / "samples.jsonl"
    path.write_text("\n".join([lines[0], lines[1], json.dumps(wrong), json.dumps(newer)]) + "\n")
    code, output = run_check(capsys, str(path))
    assert code == 1
    assert output[0].startswith(f"{path}:2: not valid JSON (")
    assert output[0].endswith("); truncated or corrupt line")
    assert output[1:] == [
        f"{path}:3: field 'failed_pages': None is not of type 'integer'; "
        "field 'rep': '2' is not of type 'integer'",
        f"{path}:4: unknown schema version 'miglab.sample/3' (this miglab reads "
        "'miglab.sample/1' and 'miglab.sample/2')",
        "problems: 1 file(s), 1 valid record(s): 3 bad, 0 duplicate(s), 0 inconsistent, 0 plan(s): "
        "0 missing and 0 short cell(s)",
    ]
    thorough = check_results([path], thorough=True)
    assert [str(record) for record in thorough.bad] == output[:3]


def test_duplicates_are_reported(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    records = fx.samples_at(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 4, [5.0, 5.1])
    path = fx.write_jsonl(tmp_path / "samples.jsonl", records + [records[0]])
    code, output = run_check(capsys, str(tmp_path))
    assert code == 1
    assert output[0] == f"{path}:3: duplicate sample (same cell and rep as {path}:1)"


def test_cells_missing_against_the_plan(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    directory = tmp_path / "r1" / "grace1"
    records = fx.cell_with_mean(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 1, 5.0)
    records += fx.cell_with_mean(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 2, 5.0)[:3]
    records += fx.cell_with_mean(
        fx.GRACE, fx.UNBOUND, "idle", "mt_4", "2M", 1, 5.0, backing_ok=False
    )
    records += fx.cell_with_mean(fx.GRACE, fx.UNBOUND, "idle", "mt_8", "2M", 1, 5.0)  # unplanned
    fx.write_jsonl(directory / "samples.jsonl", records)
    plan = {
        "schema": "miglab.plan/1",
        "run_id": "r1",
        "host": "grace1",
        "repetitions": 4,
        "cells": [
            planned_cell("mt_2", 1),
            planned_cell("mt_2", 2),
            planned_cell("mt_4", 1),
            planned_cell("mt_16", 1),
        ],
    }
    (directory / "plan.json").write_text(json.dumps(plan))
    code, output = run_check(capsys, str(tmp_path))
    assert code == 1
    plan_path = directory / "plan.json"
    assert output == [
        f"{plan_path}: short cell mt-unbound:idle:mt_2:2M:2 (mt-unbound, idle, mt_2, 2M, 2 pages): "
        "3 of 4 usable samples",
        f"{plan_path}: missing cell mt-unbound:idle:mt_4:2M:1 (mt-unbound, idle, mt_4, 2M, 1 page): "
        "0 of 4 usable samples, 4 excluded",
        f"{plan_path}: missing cell mt-unbound:idle:mt_16:2M:1 (mt-unbound, idle, mt_16, 2M, 1 page): "
        "0 of 4 usable samples",
        f"note: {plan_path}: samples for a cell not in the plan: idle, mt_8, 2M, 1, mt-unbound",
        "note: 4 valid sample(s) the tables exclude: 4 with backing_ok false, 0 with failed pages",
        "problems: 1 file(s), 15 valid record(s): 0 bad, 0 duplicate(s), 0 inconsistent, 1 plan(s): "
        "2 missing and 1 short cell(s)",
    ]


def test_sweep_runner_plans_per_variant(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """The runner writes variants/<name>/plan.json: variant and repetitions at the top."""
    records = fx.cell_with_mean(fx.GRACE, fx.VANILLA, "idle", "vanilla", "2M", 1, 5.0)
    records += fx.cell_with_mean(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 1, 5.0)
    fx.write_jsonl(tmp_path / "samples.jsonl", records)
    for variant, configs in (("vanilla", ["vanilla"]), ("mt-unbound", ["mt_2", "mt_4"])):
        cells = [
            {
                key: value
                for key, value in planned_cell(config, 1, variant).items()
                if key != "kernel_variant"
            }
            for config in configs
        ]
        plan = {
            "schema": "miglab.plan/1",
            "run_id": "r1",
            "variant": variant,
            "definition": {"repetitions": 4},
            "cells": cells,
        }
        (tmp_path / "variants" / variant).mkdir(parents=True)
        (tmp_path / "variants" / variant / "plan.json").write_text(json.dumps(plan))
    code, output = run_check(capsys, str(tmp_path))
    assert code == 1
    assert output[0].endswith(
        "missing cell mt-unbound:idle:mt_4:2M:1 (mt-unbound, idle, mt_4, 2M, 1 page): "
        "0 of 4 usable samples"
    )
    assert output[-1].endswith("2 plan(s): 1 missing and 0 short cell(s)")


def test_unreadable_plan_is_a_problem(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    fx.write_results(tmp_path)
    plan = tmp_path / "r1" / "grace1" / "plan.json"
    plan.write_text(json.dumps({"schema": "miglab.plan/1", "run_id": "r1", "cells": []}))
    code, output = run_check(capsys, str(tmp_path))
    assert code == 1
    assert output[0] == f"{plan}: repetitions: missing or not an integer >= 1"


def test_numbers_that_contradict_each_other(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = fx.samples_at(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 4, [5.0, 5.0, 5.0])
    records[1]["bytes"] = 4 * 65536  # base pages' bytes for a 2M move: not what was verified
    records[1]["gbps"] = records[1]["bytes"] / records[1]["elapsed_ns"]
    records[2]["gbps"] = 150.0
    path = fx.write_jsonl(tmp_path / "samples.jsonl", records)
    code, output = run_check(capsys, str(path))
    assert code == 1
    assert output[0] == f"{path}:2: bytes 262144 is not page_count x folio_size (4 x 2097152)"
    assert output[1].startswith(f"{path}:3: gbps 150.0 is not bytes / elapsed_ns (5")
    assert "1 file(s), 1 valid record(s): 0 bad, 0 duplicate(s), 2 inconsistent" in output[-1]


def test_gbps_rounded_as_migbench_writes_it_is_consistent(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Slow emulated moves give small GB/s; a writer rounding to 6 decimals is not wrong,
    # but a value off in the 5th decimal is.
    records = fx.samples_at(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "base", 32, [5.0, 5.0])
    for record, elapsed in zip(records, (13_115_000, 13_115_000), strict=True):
        record["elapsed_ns"] = elapsed
    records[0]["gbps"] = round(records[0]["bytes"] / 13_115_000, 6)
    records[1]["gbps"] = round(records[1]["bytes"] / 13_115_000, 6) + 2e-5
    path = fx.write_jsonl(tmp_path / "samples.jsonl", records)
    code, output = run_check(capsys, str(path))
    assert code == 1
    assert len(output) == 2
    assert output[0].startswith(f"{path}:2: gbps ")
