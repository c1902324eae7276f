"""Sample records against the schema miglab.sample/2 (jsonschema), including records the
runner writes from the REAL migbench (``--test-loopback``: src = dst on this one-node
machine, so nothing migrates, but allocation, backing verification and output are real)."""

from __future__ import annotations

import copy
import json
import os

import jsonschema
import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
from miglab_host import SAMPLE_SCHEMA
from miglab_host.plan import expand
from miglab_host.records import REQUIRED, build_record, problems
from miglab_runner_testlib import (
    compile_migbench,
    definition,
    fake_host_tree,
    read_jsonl,
    run_runner,
    schema,
    validator,
)

SAMPLE = {
    "type": "sample",
    "rep": 3,
    "src_node": 1,
    "dst_node": 0,
    "page_kind": "2M",
    "folio_size": 2097152,
    "page_count": 16,
    "bytes": 33554432,
    "elapsed_ns": 4000000,
    "gbps": 8.388608,
    "failed_pages": 0,
    "backing_ok": True,
    "caller_cpu_ns": 3900000,
    "system_cpu_ns": 10000000,
    "system_cpu_resolution_ns": 10000000,
    "system_cpu_ns_schedstat": None,
    "pgmigrate_success": 16,
    "pgmigrate_fail": 0,
    "thp_migration_success": 16,
    "thp_migration_fail": 0,
    "thp_migration_split": 0,
    "move_pages_ret": 0,
    "status_errors": 0,
    "warmup_moves": 2,
    "base_page_size": 4096,
    "loopback": False,
    "timestamp": "2026-03-01T12:00:00.123456Z",
}
CONTEXT = {
    "run_id": "r1",
    "host": "vnode1",
    "arch": "x86_64",
    "kernel_release": "6.1.0-31-cloud-amd64",
    "kernel_variant": "mt-unbound",
    "kernel_build_hash": "abc123",
    "workqueue": "unbound",
    "knob_profile": "mt_sysctl_v1",
    "migbench_sha256": "f" * 64,
    "sweep_name": "s",
    "base_page_size": 4096,
}
CELL = {
    "index": 7,
    "cell_id": "mt-unbound:busy:mt_8:2M:16",
    "load": "busy",
    "copy_config": "mt_8",
    "threads": 8,
    "page_kind": "2M",
    "page_count": 16,
}


def record(**over):
    rec = build_record(SAMPLE, CONTEXT, CELL, "ok", True)
    rec.update(over)
    return rec


def test_required_fields_match_the_schema():
    assert set(REQUIRED) == set(schema()["required"])


def test_built_record_is_valid():
    rec = record()
    validator().validate(rec)
    assert rec["schema"] == SAMPLE_SCHEMA
    assert rec["threads"] == 8 and rec["copy_config"] == "mt_8"
    assert "type" not in rec
    assert problems(rec) == []


@pytest.mark.parametrize("field", sorted(REQUIRED))
def test_missing_required_field_is_invalid(field):
    rec = record()
    del rec[field]
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(rec)


@pytest.mark.parametrize(
    "over",
    [
        {"copy_config": "mt-8"},
        {"page_kind": "2MB"},
        {"page_count": 0},
        {"bytes": 0},
        {"elapsed_ns": 0},
        {"gbps": -1.0},
        {"backing_ok": "yes"},
        {"workqueue": "normal"},
        {"schema": "miglab.sample/3"},
        {"threads": 0},
        {"folio_size": 1024},
        {"rep": -1},
    ],
)
def test_bad_values_are_invalid(over):
    with pytest.raises(jsonschema.ValidationError):
        validator().validate(record(**over))


def test_vanilla_record_has_null_threads_and_workqueue():
    cell = dict(CELL, copy_config="vanilla", threads=None, cell_id="vanilla:idle:vanilla:2M:16")
    rec = build_record(
        SAMPLE, dict(CONTEXT, workqueue=None, kernel_build_hash=None), cell, "ok", True
    )
    validator().validate(rec)


def test_failure_records_are_still_schema_valid():
    bad = copy.deepcopy(SAMPLE)
    bad.update(
        backing_ok=False,
        folio_size=4096,
        bytes=16 * 4096,
        backing_detail="0 of 16 folios have the requested size 2M",
    )
    rec = build_record(bad, CONTEXT, CELL, "failed", True)
    validator().validate(rec)
    assert rec["cell_status"] == "failed" and rec["backing_ok"] is False


@pytest.mark.skipif(os.geteuid() != 0, reason="PFNs in pagemap need CAP_SYS_ADMIN")
def test_runner_records_from_the_real_migbench_are_valid(tmp_path):
    migbench = compile_migbench(tmp_path)
    root = fake_host_tree(tmp_path / "root", nodes=1)
    d = definition(
        folio_kinds=["base"],
        page_counts={"base": [16, 64]},
        repetitions=3,
        ceiling={"enabled": True, "size_mib": 4, "repetitions": 1},
    )
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(expand(d)))
    r = run_runner(plan_path, tmp_path / "results", migbench, root, extra=("--test-loopback",))
    assert r.returncode == 0, r.stderr
    recs = read_jsonl(tmp_path / "results" / "unit" / "samples.jsonl")
    assert len(recs) == 2 * 3
    v = validator()
    for rec in recs:
        v.validate(rec)
        assert rec["backing_ok"] is True and rec["loopback"] is True
        assert rec["migbench_sha256"] == "test"
        assert rec["bytes"] == rec["page_count"] * os.sysconf("SC_PAGESIZE")
    meta = tmp_path / "results" / "unit" / "variants" / "vanilla"
    host = json.loads((meta / "host.json").read_text())
    assert host["kernel_cmdline"] and host["kernel_release"] == os.uname().release
    assert json.loads((meta / "migbench.json").read_text())["version"]["source_sha256"] == "test"
    # the real migbench --ceiling, through the runner: 1 thread (vanilla), both directions
    ceiling = json.loads((meta / "ceiling-idle.json").read_text())
    assert ceiling["ok"] is True, ceiling["error"]
    assert {(m["direction"], m["threads"]) for m in ceiling["measurements"]} == {
        ("push", 1),
        ("pull", 1),
    }
    assert all(m["placement_ok"] and m["loopback"] for m in ceiling["measurements"])
