"""Reading samples.jsonl: the fast (Arrow) and line-by-line readers, and file:line messages
for truncated lines, wrong types and unknown schema versions."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
import results_fixture as fx
from miglab.cli import main
from miglab.errors import ConfigError
from miglab.results.load import CorruptInputError, find_sample_files, load_samples
from miglab.results.load import _read_file as read_file
from miglab.results.schema import (
    SAMPLE_SCHEMA_ID,
    describe_line,
    describe_record,
    field_specs,
    is_date_time,
    record_is_valid,
    sample_schema,
)


def good_records(count: int = 6) -> list[dict[str, Any]]:
    return fx.samples_at(fx.GRACE, fx.UNBOUND, "idle", "mt_2", "2M", 4, [5.0] * count)


def write_lines(path: Path, lines: list[str]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
    return path


TRUNCATED = '{"schema": "miglab.sample/1", "run_id": '


def corrupt_file(tmp_path: Path) -> tuple[Path, dict[int, str]]:
    """Good records with a truncated line, wrong types and an unknown schema version; the
    expected message for each bad line number."""
    records = good_records(8)
    wrong_type = copy.deepcopy(records[2])
    wrong_type["page_count"] = "4"
    several = copy.deepcopy(records[3])
    several["backing_ok"] = 1
    several["gbps"] = -1.0
    newer = copy.deepcopy(records[4])
    newer["schema"] = "miglab.sample/3"
    no_workqueue = copy.deepcopy(records[5])
    del no_workqueue["workqueue"]
    lines = [
        json.dumps(records[0]),
        json.dumps(records[1]),
        TRUNCATED,
        json.dumps(wrong_type),
        json.dumps(several),
        json.dumps(newer),
        json.dumps(no_workqueue),
        json.dumps(records[6]),
        json.dumps(records[7]),
    ]
    path = write_lines(tmp_path / "r1" / "grace1" / "samples.jsonl", lines)
    expected = {
        3: "not valid JSON (Expecting value at column 41); truncated or corrupt line",
        4: "field 'page_count': '4' is not of type 'integer'",
        5: "field 'backing_ok': 1 is not of type 'boolean'; "
        "field 'gbps': -1.0 is less than the minimum of 0",
        6: "unknown schema version 'miglab.sample/3' (this miglab reads 'miglab.sample/1' and "
        "'miglab.sample/2')",
        7: "missing required field 'workqueue'",
    }
    return path, expected


def test_bad_records_are_refused_with_file_and_line(tmp_path: Path) -> None:
    path, expected = corrupt_file(tmp_path)
    with pytest.raises(CorruptInputError) as raised:
        load_samples([tmp_path])
    assert [str(record) for record in raised.value.bad_records] == [
        f"{path}:{line}: {message}" for line, message in expected.items()
    ]
    assert str(raised.value).startswith("5 bad sample record(s); fix them or pass --skip-bad:")


def test_skip_bad_keeps_the_good_records(tmp_path: Path) -> None:
    path, expected = corrupt_file(tmp_path)
    samples = load_samples([tmp_path], skip_bad=True)
    assert samples.skipped == len(expected)
    assert list(samples.frame["line"]) == [1, 2, 8, 9]
    assert set(samples.frame["source"].astype(str)) == {str(path)}
    (source,) = samples.sources
    assert source.records == 4 and source.bad == 5 and source.read_line_by_line


def test_cli_refuses_or_skips_with_the_same_messages(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path, expected = corrupt_file(tmp_path)
    for command in (
        ["table"],
        ["compare", "load=idle", "load=busy"],
        ["report", "-o", str(tmp_path / "out")],
    ):
        assert main([*command, str(tmp_path)]) == 2
        err = capsys.readouterr().err
        for line, message in expected.items():
            assert f"{path}:{line}: {message}" in err
    assert main(["table", str(tmp_path), "--skip-bad"]) == 0
    captured = capsys.readouterr()
    assert "skipped 5 bad record(s)" in captured.err
    assert "| 4 | 5.00 |" in captured.out
    assert main(["check", str(tmp_path)]) == 1
    out = capsys.readouterr().out.splitlines()
    for line, message in expected.items():
        assert f"{path}:{line}: {message}" in out


def test_fast_reader_finds_bad_values_by_line(tmp_path: Path) -> None:
    """Records Arrow parses but the schema rejects: reported without the line-by-line
    fallback, with the same wording."""
    records = good_records(5)
    records[1]["copy_config"] = "mt_x"
    records[3]["timestamp"] = "2025-01-03 17:00:00"
    records[4]["cell_id"] = None
    path = fx.write_jsonl(tmp_path / "samples.jsonl", records)
    samples = load_samples([path], skip_bad=True)
    assert not samples.sources[0].read_line_by_line
    assert [str(record) for record in samples.bad_records] == [
        f"{path}:2: field 'copy_config': 'mt_x' does not match "
        "'^(vanilla|serial|mt_[0-9]+|dma_[0-9]+)$'",
        f"{path}:4: field 'timestamp': '2025-01-03 17:00:00' is not a 'date-time'",
        f"{path}:5: field 'cell_id': None is not of type 'string'",
    ]
    assert list(samples.frame["line"]) == [1, 3]


def test_fast_and_line_by_line_readers_agree(tmp_path: Path) -> None:
    records = [r for records in fx.standard_records().values() for r in records]
    fast = fx.write_jsonl(tmp_path / "fast" / "samples.jsonl", records)
    slow = tmp_path / "slow" / "samples.jsonl"
    slow.parent.mkdir()
    # a blank line between records makes rows and lines differ: the fast reader steps aside
    text = fast.read_text().splitlines()
    slow.write_text("\n".join(text[:5] + [""] + text[5:]) + "\n")
    fast_samples = load_samples([fast])
    slow_samples = load_samples([slow])
    assert not fast_samples.sources[0].read_line_by_line
    assert slow_samples.sources[0].read_line_by_line
    columns = [spec.name for spec in field_specs()]
    left = fast_samples.frame[columns].astype(object)
    right = slow_samples.frame[columns].astype(object)
    pd.testing.assert_frame_equal(left, right)
    assert list(slow_samples.frame["line"])[4:7] == [5, 7, 8]


def test_types_of_the_loaded_frame(tmp_path: Path) -> None:
    path = fx.write_jsonl(tmp_path / "samples.jsonl", good_records(2))
    frame = load_samples([path]).frame
    assert str(frame["host"].dtype) == "category"
    assert frame["page_count"].dtype == "int64"
    assert frame["gbps"].dtype == "float64"
    assert str(frame["threads"].dtype) == "Int64"
    assert str(frame["timestamp"].dtype) == "datetime64[ns, UTC]"
    assert frame["timestamp"].iloc[0] == pd.Timestamp("2025-01-03T17:00:00.123456Z")


def test_directories_are_searched_recursively(tmp_path: Path) -> None:
    fx.write_results(tmp_path)
    files = find_sample_files([tmp_path, tmp_path / "r1" / "grace1" / "samples.jsonl"])
    assert [f.relative_to(tmp_path).as_posix() for f in files] == [
        "r1/grace1/samples.jsonl",
        "r2/epyc1/samples.jsonl",
    ]
    (tmp_path / "empty").mkdir()
    with pytest.raises(ConfigError, match="no samples.jsonl below this directory"):
        find_sample_files([tmp_path / "empty"])
    with pytest.raises(ConfigError, match="no such file or directory"):
        find_sample_files([tmp_path / "missing"])


def test_an_empty_file_is_named_never_an_empty_table(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "samples.jsonl"
    path.write_text("")
    with pytest.raises(CorruptInputError) as raised:
        load_samples([path])
    assert [str(record) for record in raised.value.bad_records] == [
        f"{path}: no records in this file"
    ]
    with pytest.raises(ConfigError, match="no usable records in these files"):
        load_samples([path], skip_bad=True)
    assert main(["check", str(path)]) == 1
    assert f"{path}: no records in this file" in capsys.readouterr().out
    assert main(["table", str(path)]) == 2
    assert "no records in this file" in capsys.readouterr().err


def test_duplicates_are_refused_or_kept_once(tmp_path: Path) -> None:
    """The same cell and rep twice (a slow sample among them) would move the cell's mean."""
    good = fx.samples_at(fx.EPYC, fx.VANILLA, "idle", "vanilla", "base", 32, [2.0, 2.0, 2.0, 2.0])
    slow = fx.samples_at(fx.EPYC, fx.VANILLA, "idle", "vanilla", "base", 32, [0.01])  # rep 0 again
    path = fx.write_jsonl(tmp_path / "samples.jsonl", good + slow)
    with pytest.raises(CorruptInputError) as raised:
        load_samples([path])
    assert [str(r) for r in raised.value.bad_records] == [
        f"{path}:5: duplicate sample (same cell and rep as {path}:1)"
    ]
    samples = load_samples([path], skip_bad=True)
    assert list(samples.frame["line"]) == [1, 2, 3, 4] and len(samples.duplicates) == 1


def test_an_inconsistent_gbps_is_not_used(tmp_path: Path) -> None:
    records = fx.samples_at(fx.EPYC, fx.VANILLA, "idle", "vanilla", "base", 32, [2.0, 2.0, 2.0])
    records[2]["gbps"] = 101.6  # what an amean would believe
    path = fx.write_jsonl(tmp_path / "samples.jsonl", records)
    with pytest.raises(CorruptInputError, match=r":3: gbps 101.6 is not bytes / elapsed_ns"):
        load_samples([path])
    samples = load_samples([path], skip_bad=True)
    assert list(samples.frame["line"]) == [1, 2]
    assert samples.frame["gbps"].max() == pytest.approx(2.0, rel=1e-6)


def test_a_byte_that_is_not_utf8_is_a_bad_line_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = fx.samples_at(fx.EPYC, fx.VANILLA, "idle", "vanilla", "base", 32, [2.0, 2.0, 2.0])
    raw = bytearray("".join(json.dumps(r) + "\n" for r in records).encode())
    second = raw.index(b"\n") + 1
    spot = raw.index(b'"idle"', second) + 2
    raw[spot:spot] = b"\xff"  # inside an otherwise valid record (a string value)
    path = tmp_path / "samples.jsonl"
    path.write_bytes(bytes(raw))
    with pytest.raises(CorruptInputError, match=r"samples.jsonl:2: not valid UTF-8"):
        load_samples([path])
    assert list(load_samples([path], skip_bad=True).frame["line"]) == [1, 3]
    assert main(["table", str(path), "--skip-bad"]) == 0
    assert main(["check", str(path)]) == 1
    assert f"{path}:2: not valid UTF-8" in capsys.readouterr().out


# The three implementations of the schema agree -------------------------------------------


def mutations() -> list[tuple[str, dict[str, Any]]]:
    base = good_records(1)[0]
    cases: list[tuple[str, dict[str, Any]]] = [("valid", base)]

    def changed(name: str, **values: Any) -> None:
        record = copy.deepcopy(base)
        for key, value in values.items():
            if value is _DELETE:
                record.pop(key, None)
            else:
                record[key] = value
        cases.append((name, record))

    for spec in field_specs():
        changed(f"{spec.name}-missing", **{spec.name: _DELETE})
        changed(f"{spec.name}-null", **{spec.name: None})
        wrong = {"string": 7, "integer": "7", "number": "7.5", "boolean": "true"}[spec.kind]
        changed(f"{spec.name}-wrong-type", **{spec.name: wrong})
        if spec.kind == "integer":
            changed(f"{spec.name}-float", **{spec.name: 7.5})
            changed(f"{spec.name}-integral-float", **{spec.name: 7.0})
            changed(f"{spec.name}-bool", **{spec.name: True})
        if spec.minimum is not None:
            changed(f"{spec.name}-below-minimum", **{spec.name: spec.minimum - 1})
        if spec.min_length:
            changed(f"{spec.name}-empty", **{spec.name: ""})
    changed("workqueue-unknown", workqueue="percpu")
    changed("page-kind-bad", page_kind="2MB")
    changed("page-kind-64k", page_kind="64K")
    changed("config-dma", copy_config="dma_4", threads=4)
    changed("config-bad", copy_config="mt-4")
    changed("timestamp-offset", timestamp="2025-01-03T18:00:00+01:00")
    changed("timestamp-nanoseconds", timestamp="2025-01-03T17:00:00.123456789Z")
    changed("timestamp-picoseconds", timestamp="2025-01-03T17:00:00.123456789012Z")
    changed("timestamp-february-30", timestamp="2025-02-30T17:00:00Z")
    changed("timestamp-no-zone", timestamp="2025-01-03T17:00:00")
    changed("gbps-integer", gbps=5)
    changed("extra-field", extra={"workqueue": "nested", "list": [1, 2]})
    changed("schema-other", schema="something/1")
    return cases


class _Delete:
    pass


_DELETE = _Delete()


@pytest.fixture(scope="module")
def mutation_results(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[bool, bool]]:
    """(valid, read line by line) for each mutation as the loader sees it (one file per
    mutation, so one bad record cannot send a neighbour down the line-by-line path)."""
    root = tmp_path_factory.mktemp("mutations")
    results = {}
    for name, record in mutations():
        path = fx.write_jsonl(root / name / "samples.jsonl", [good_records(1)[0], record])
        result = read_file(path)
        results[name] = (not result.bad and result.table.num_rows == 2, result.line_by_line)
    return results


@pytest.fixture(scope="module")
def mutation_verdicts(mutation_results: dict[str, tuple[bool, bool]]) -> dict[str, bool]:
    return {name: valid for name, (valid, _) in mutation_results.items()}


def test_vectorised_checks_judge_what_arrow_can_parse(
    mutation_results: dict[str, tuple[bool, bool]],
) -> None:
    judged_fast = [
        "valid",
        "config-bad",
        "page-kind-bad",
        "workqueue-unknown",
        "gbps-below-minimum",
        "host-empty",
        "host-null",
        "host-missing",
        "workqueue-missing",
        "threads-missing",
        "cell_id-null",
        "cell_id-missing",
        "timestamp-no-zone",
        "schema-other",
        "extra-field",
        "gbps-integer",
    ]
    assert {name: mutation_results[name][1] for name in judged_fast} == dict.fromkeys(
        judged_fast, False
    )


@pytest.mark.parametrize(("name", "record"), mutations(), ids=[name for name, _ in mutations()])
def test_checks_agree_with_jsonschema(
    name: str, record: dict[str, Any], mutation_verdicts: dict[str, bool]
) -> None:
    import jsonschema

    reference = jsonschema.validators.validator_for(sample_schema())(sample_schema())
    schema_valid = reference.is_valid(record) and (
        "timestamp" not in record
        or not isinstance(record["timestamp"], str)
        or is_date_time(record["timestamp"])
    )
    assert (describe_record(record) == []) == schema_valid
    assert record_is_valid(record) == schema_valid
    assert mutation_verdicts[name] == schema_valid


def test_describe_line_names_every_problem() -> None:
    assert describe_line("[1, 2]") == ["not a JSON object (got array)"]
    assert describe_line('{"a": NaN}')[0].startswith("not valid JSON (NaN is not valid JSON")
    record = good_records(1)[0]
    record["schema"] = "miglab.sample/9"
    assert describe_line(json.dumps(record)) == [
        "unknown schema version 'miglab.sample/9' (this miglab reads 'miglab.sample/1' and "
        "'miglab.sample/2')"
    ]
    record["schema"] = SAMPLE_SCHEMA_ID
    record["page_count"] = 2**70
    assert describe_line(json.dumps(record)) == [
        f"field 'page_count': {2**70} does not fit in 64 bits"
    ]


@pytest.mark.parametrize(
    ("text", "valid"),
    [
        ("2025-01-03T17:09:00Z", True),
        ("2025-01-03T17:09:00.5+05:30", True),
        ("2024-02-29T00:00:00Z", True),
        ("2025-02-29T00:00:00Z", False),
        ("2025-01-03 17:09:00Z", False),
        ("2025-01-03T24:00:00Z", False),
        ("2025-01-03", False),
    ],
)
def test_date_time(text: str, valid: bool) -> None:
    assert is_date_time(text) is valid
