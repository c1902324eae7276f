"""The records say what really ran: the multi-threaded copy's vmstat counters per sample, the
copy threads the kernel really used, a cell whose counters contradict its configuration
fails, and a sweep whose kernel log shows a WARN/BUG/oops/bad page fails (the runner, with
a fake migbench that reports counters as a kernel with them would)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import miglab_runner_testlib  # noqa: F401 (puts the host package on sys.path: import it first)
import pytest
from miglab_host.kernel_log import KernelLog, classify, parse_records
from miglab_host.plan import expand
from miglab_host.records import copy_path_problem, threads_effective
from miglab_runner_testlib import (
    add_profile_knobs,
    definition,
    fake_host_tree,
    fake_migbench,
    read,
    read_jsonl,
    run_runner,
)

MT = [
    {
        "name": "mt",
        "knob_profile": "mt_sysctl_v1",
        "workqueue": "unbound",
        "copy_configs": ["serial", "mt_1", "mt_2", "mt_4"],
    }
]


def sample(rep: int = 0, **counters: int | None) -> dict:
    return {"rep": rep, **counters}


@pytest.mark.parametrize(
    "config, samples, wanted",
    [
        ("mt_4", [sample(pgmigrate_mt_batches=1, pgmigrate_mt_folios=32)], None),
        (
            "mt_4",
            [sample(1, pgmigrate_mt_batches=0, pgmigrate_mt_folios=0)],
            "mt_4: move 1 copied no batch",
        ),
        ("serial", [sample(pgmigrate_mt_batches=0, pgmigrate_mt_folios=0)], None),
        (
            "serial",
            [sample(2, pgmigrate_mt_batches=3, pgmigrate_mt_folios=3)],
            "serial: move 2 went through",
        ),
        (
            "vanilla",
            [sample(pgmigrate_mt_batches=1, pgmigrate_mt_folios=8)],
            "vanilla: move 0 went through",
        ),
        # A kernel without the counters (the thread's own series): nothing to prove.
        ("mt_4", [sample(pgmigrate_mt_batches=None, pgmigrate_mt_folios=None)], None),
        ("mt_4", [sample()], None),
    ],
)
def test_counters_that_contradict_the_configuration_are_a_problem(
    config: str, samples: list[dict], wanted: str | None
) -> None:
    problem = copy_path_problem(config, samples)
    if wanted is None:
        assert problem is None
    else:
        assert problem is not None and problem.startswith(wanted), problem


def test_effective_threads_are_works_per_batch() -> None:
    assert threads_effective({"pgmigrate_mt_batches": 8, "pgmigrate_mt_works": 16}) == 2.0
    assert threads_effective({"pgmigrate_mt_batches": 3, "pgmigrate_mt_works": 4}) == 1.333
    assert threads_effective({"pgmigrate_mt_batches": 0, "pgmigrate_mt_works": 0}) is None
    assert threads_effective({"pgmigrate_mt_batches": None, "pgmigrate_mt_works": None}) is None


def test_kernel_log_lines_are_classified() -> None:
    lines = parse_records(
        b"4,871,5123456,-;WARNING: CPU: 1 PID: 77 at mm/migrate.c:1234 migrate_folio+0x1\n"
        b" SUBSYSTEM=cpu\n"
        b"3,872,5200000,-;BUG: Bad page state in process migbench  pfn:4a2f1\n"
        b"6,873,5300000,-;stress-ng: info: dispatching hogs\n"
        b"0,874,5400000,-;watchdog: BUG: soft lockup - CPU#1 stuck for 23s! [kworker/1:2:99]\n"
    )
    assert (
        lines[0] == "[     5.123456] WARNING: CPU: 1 PID: 77 at mm/migrate.c:1234 migrate_folio+0x1"
    )
    problems, notes = classify(lines)
    assert [p.split("] ", 1)[1][:12] for p in problems] == ["WARNING: CPU", "BUG: Bad pag"]
    assert len(notes) == 1 and "soft lockup" in notes[0]


@pytest.mark.skipif(not os.access("/dev/kmsg", os.W_OK), reason="writing the kernel log needs root")
def test_the_real_kernel_log_is_read_from_where_the_sweep_started() -> None:
    log = KernelLog("/dev/kmsg")
    log.open()
    marker = f"miglab-unit-test {os.getpid()}: WARNING: this line was written by a test"
    with open("/dev/kmsg", "w") as kmsg:
        kmsg.write(marker + "\n")
    report = log.read()
    assert report.available and not report.error
    assert any(marker in line for line in report.problems), report.lines[-5:]


@pytest.fixture
def lab(tmp_path: Path) -> dict:
    root = fake_host_tree(tmp_path / "root", nodes=2)
    add_profile_knobs(root, "mt_sysctl_v1")
    d = definition(
        kernel_variants=MT,
        kernel_variant="mt",
        folio_kinds=["base"],
        page_counts={"base": [32]},
        repetitions=2,
    )
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(expand(d)))
    kernel_log = tmp_path / "kmsg"
    kernel_log.write_text("6,1,1000000,-;booted\n")
    return {
        "root": root,
        "plan_path": plan_path,
        "results": tmp_path / "results",
        "migbench": fake_migbench(tmp_path),
        "control": tmp_path / "control.json",
        "run_dir": tmp_path / "results" / "unit",
        "kernel_log": kernel_log,
    }


def run(lab: dict, **settings: object):
    lab["control"].write_text(json.dumps({"sys_root": str(lab["root"]), **settings}))
    return run_runner(
        lab["plan_path"],
        lab["results"],
        lab["migbench"],
        lab["root"],
        control=lab["control"],
        extra=("--kernel-log", str(lab["kernel_log"])),
    )


def test_records_carry_the_counters_and_the_threads_really_used(lab: dict) -> None:
    r = run(lab, mt_counters="honest", node_cpus=2)
    assert r.returncode == 0, r.stderr
    records = read_jsonl(lab["run_dir"] / "samples.jsonl")
    by_config = {}
    for rec in records:
        by_config.setdefault(rec["copy_config"], []).append(rec)
    assert [r["threads_effective"] for r in by_config["mt_1"]] == [1.0, 1.0]
    assert [r["threads_effective"] for r in by_config["mt_2"]] == [2.0, 2.0]
    # mt_4 on nodes of 2 CPUs: the record says 2 threads ran, not 4
    assert [(r["threads"], r["threads_effective"]) for r in by_config["mt_4"]] == [(4, 2.0)] * 2
    assert all(
        r["pgmigrate_mt_batches"] == 0 and r["threads_effective"] is None
        for r in by_config["serial"]
    )
    log = json.loads((lab["run_dir"] / "variants" / "mt" / "kernel-log.json").read_text())
    assert log["available"] and log["problems"] == [] and log["lines"] == []
    assert read(lab["root"], "proc/sys/vm/use_mt_copy") == "0"  # knobs back
    assert read(lab["root"], "proc/sys/vm/limit_mt_num") == "4"
    # ... and the record says so: read after the restore, equal to what the sweep found
    knobs = json.loads((lab["run_dir"] / "variants" / "mt" / "knobs.json").read_text())
    assert (
        knobs["after"]
        == knobs["originals"]
        == {
            "proc/sys/vm/use_mt_copy": "0",
            "proc/sys/vm/limit_mt_num": "4",
        }
    )
    assert all(knobs["before"][rel] == value for rel, value in knobs["after"].items())


def test_mt_cells_of_a_kernel_that_ignored_the_knobs_fail(lab: dict) -> None:
    r = run(lab, mt_counters="ignores_knobs")
    assert r.returncode == 3
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    failed = {c["cell_id"].split(":")[2]: c["error"] for c in summary["failed_cells"]}
    assert set(failed) == {"mt_1", "mt_2", "mt_4"}
    assert "copied no batch through the multi-threaded path" in failed["mt_2"]


def test_a_warning_in_the_kernel_log_fails_the_sweep(lab: dict) -> None:
    warning = "4,900,9000000,-;WARNING: CPU: 0 PID: 12 at mm/migrate.c:99 copy_folio_mt+0x3c"
    r = run(lab, mt_counters="honest", kernel_log=[str(lab["kernel_log"]), warning])
    assert r.returncode == 3, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert "the kernel log has" in summary["message"] and "copy_folio_mt" in summary["message"]
    log = json.loads((lab["run_dir"] / "variants" / "mt" / "kernel-log.json").read_text())
    assert log["problems"] and all("copy_folio_mt" in p for p in log["problems"])
    assert "booted" not in " ".join(log["lines"])  # only what came during the sweep
    assert read(lab["root"], "proc/sys/vm/use_mt_copy") == "0"


def test_the_ceiling_is_measured_once_per_variant_and_load(lab: dict) -> None:
    """migbench --ceiling under each load before its cells, at 1 thread and every N of the
    variant's mt_N; a rerun keeps a good ceiling and measures a failed one again."""
    r = run(lab, mt_counters="honest", node_cpus=2)
    assert r.returncode == 0, r.stderr
    path = lab["run_dir"] / "variants" / "mt" / "ceiling-idle.json"
    ceiling = json.loads(path.read_text())
    assert ceiling["ok"] is True and ceiling["error"] is None
    assert ceiling["threads"] == [1, 2, 4]
    assert ceiling["load"] == "idle" and ceiling["kernel_variant"] == "mt"
    assert {(m["direction"], m["threads"]) for m in ceiling["measurements"]} == {
        (d, t) for d in ("push", "pull") for t in (1, 2, 4)
    }
    assert "--ceiling" in ceiling["migbench_argv"]
    measured_at = ceiling["measured_at"]
    again = run(lab, mt_counters="honest", node_cpus=2)
    assert again.returncode == 0, again.stderr
    assert json.loads(path.read_text())["measured_at"] == measured_at


def test_a_failed_ceiling_is_recorded_and_the_cells_still_run(lab: dict) -> None:
    r = run(lab, mt_counters="honest", ceiling="fail")
    assert r.returncode == 0, r.stderr
    ceiling = json.loads((lab["run_dir"] / "variants" / "mt" / "ceiling-idle.json").read_text())
    assert ceiling["ok"] is False and "not on node 1" in ceiling["error"]
    assert len(read_jsonl(lab["run_dir"] / "samples.jsonl")) == 4 * 2  # every cell ran
