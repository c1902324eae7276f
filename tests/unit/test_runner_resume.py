"""Resume, duplicates, aborts and failed cells of the sweep runner.

These tests use a FAKE migbench (a small Python script standing in for the binary, see
miglab_runner_testlib.FAKE_MIGBENCH): this machine has one NUMA node, where the real
migbench refuses to run. The fake prints migbench's JSON lines and can kill the runner or fail
a cell on request. The runner itself (plan, knobs and tuning on a fake two-node tree, journal,
recovery, signals) is the real code. The same scenarios with the real migbench on two real
NUMA nodes are virtual-lab tests.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections import Counter

import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
from miglab_host.journal import RunDir
from miglab_host.plan import expand
from miglab_runner_testlib import (
    RUNNER_DIR,
    add_profile_knobs,
    definition,
    fake_host_tree,
    fake_migbench,
    read,
    read_jsonl,
    run_runner,
    validator,
)

MT = [
    {
        "name": "mt",
        "knob_profile": "mt_sysctl_v1",
        "workqueue": "unbound",
        "copy_configs": ["serial", "mt_2", "mt_4"],
    }
]


@pytest.fixture
def lab(tmp_path):
    root = fake_host_tree(tmp_path / "root", nodes=2)
    add_profile_knobs(root, "mt_sysctl_v1")
    d = definition(
        kernel_variants=MT, kernel_variant="mt", page_counts={"base": [32], "2M": [1, 4]}
    )
    plan = expand(d)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(plan))
    return {
        "root": root,
        "plan": plan,
        "plan_path": plan_path,
        "results": tmp_path / "results",
        "migbench": fake_migbench(tmp_path),
        "control": tmp_path / "control.json",
        "run_dir": tmp_path / "results" / plan["run_id"],
    }


def run(lab, **kw):
    return run_runner(
        lab["plan_path"], lab["results"], lab["migbench"], lab["root"], control=lab["control"], **kw
    )


def control(lab, **settings):
    lab["control"].write_text(json.dumps(settings))


def samples(lab):
    return read_jsonl(lab["run_dir"] / "samples.jsonl")


def assert_exactly_planned(lab):
    recs = samples(lab)
    reps = lab["plan"]["definition"]["repetitions"]
    keys = Counter((r["cell_id"], r["rep"]) for r in recs)
    assert max(keys.values()) == 1, "duplicate samples"
    assert len(recs) == len(lab["plan"]["cells"]) * reps
    assert {r["cell_id"] for r in recs} == {c["cell_id"] for c in lab["plan"]["cells"]}
    v = validator()
    for r in recs:
        v.validate(r)
        assert r["cell_status"] == "ok"


def assert_host_restored(lab):
    root = lab["root"]
    assert read(root, "proc/sys/vm/use_mt_copy") == "0"
    assert read(root, "proc/sys/vm/limit_mt_num") == "4"
    assert read(root, "proc/sys/kernel/numa_balancing") == "1"
    state = json.loads((lab["run_dir"] / "state.json").read_text())
    assert state["dirty"] is False


def test_complete_run_then_rerun_skips_everything(lab):
    r = run(lab)
    assert r.returncode == 0, r.stderr
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["state"] == "finished" and summary["done"] == len(lab["plan"]["cells"])
    assert_exactly_planned(lab)
    assert_host_restored(lab)
    before = (lab["run_dir"] / "samples.jsonl").read_bytes()
    r = run(lab)
    assert r.returncode == 0
    assert "0 to run" in r.stderr
    assert (lab["run_dir"] / "samples.jsonl").read_bytes() == before
    progress = json.loads((lab["run_dir"] / "progress.json").read_text())
    assert progress["state"] == "finished" and progress["done"] == progress["total"]
    # knobs really were set per cell
    journal = read_jsonl(lab["run_dir"] / "cells.jsonl")
    mt4 = [e for e in journal if e["copy_config"] == "mt_4"]
    assert mt4 and all(e["knobs"]["proc/sys/vm/limit_mt_num"] == "4" for e in mt4)
    assert all(e["knobs"]["proc/sys/vm/use_mt_copy"] == "1" for e in mt4)


def test_runner_killed_mid_sweep_then_rerun_has_exact_samples(lab):
    victim = lab["plan"]["cells"][3]
    control(lab, kill_parent_at=victim["index"] + 1, signal="SIGKILL")
    r = run(lab)
    assert r.returncode == -signal.SIGKILL
    state = json.loads((lab["run_dir"] / "state.json").read_text())
    assert state["dirty"] is True  # no chance to clean up
    assert read(lab["root"], "proc/sys/kernel/numa_balancing") == "0"
    done_before = RunDir.at(str(lab["run_dir"])).done_cells()
    assert len(done_before) == 3
    control(lab)  # the next run goes through
    r = run(lab)
    assert r.returncode == 0, r.stderr
    assert "restored what a previous runner left" in r.stderr
    assert "3 complete" in r.stderr
    assert_exactly_planned(lab)
    assert_host_restored(lab)


def test_torn_writes_are_recovered(lab):
    """A kill between a cell's records and its journal line, and a torn last line."""
    assert run(lab).returncode == 0
    run_dir = lab["run_dir"]
    journal = read_jsonl(run_dir / "cells.jsonl")
    recs = samples(lab)
    last = journal[-1]["cell_id"]
    # forget the last cell's journal line (its records stay) and tear the samples file
    (run_dir / "cells.jsonl").write_text(
        "".join(json.dumps(e) + "\n" for e in journal[:-1]) + '{"cell_id": "torn'
    )
    with open(run_dir / "samples.jsonl", "a") as f:
        f.write(json.dumps(recs[0])[:40])
    r = run(lab)
    assert r.returncode == 0, r.stderr
    assert "1 to run" in r.stderr
    assert_exactly_planned(lab)
    superseded = read_jsonl(run_dir / "superseded.jsonl")
    assert {s["cell_id"] for s in superseded} == {last}  # nothing lost
    assert len(read_jsonl(run_dir / "cells.jsonl")) == len(journal)


def test_failed_cell_is_loud_then_redone_without_duplicates(lab):
    victim = lab["plan"]["cells"][2]
    control(lab, fail_at=victim["index"] + 1, fail="backing")
    r = run(lab)
    assert r.returncode == 3
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["state"] == "incomplete"
    assert summary["failed_cells"][0]["cell_id"] == victim["cell_id"]
    assert "backing check failed" in summary["failed_cells"][0]["error"]
    bad = [s for s in samples(lab) if s["cell_id"] == victim["cell_id"]]
    assert len(bad) == 1 and bad[0]["backing_ok"] is False and bad[0]["cell_status"] == "failed"
    validator().validate(bad[0])  # the failure is in a record
    assert_host_restored(lab)
    control(lab)
    r = run(lab)
    assert r.returncode == 0, r.stderr
    assert_exactly_planned(lab)
    assert [s["cell_id"] for s in read_jsonl(lab["run_dir"] / "superseded.jsonl")] == [
        victim["cell_id"]
    ]


def test_crashing_migbench_fails_the_cell(lab):
    victim = lab["plan"]["cells"][0]
    control(lab, fail_at=victim["index"] + 1, fail="crash")
    r = run(lab)
    assert r.returncode == 3
    journal = read_jsonl(lab["run_dir"] / "cells.jsonl")
    entry = [e for e in journal if e["cell_id"] == victim["cell_id"]][0]
    assert entry["status"] == "failed" and "simulated crash" in entry["error"]
    assert not [s for s in samples(lab) if s["cell_id"] == victim["cell_id"]]


def test_no_retry_failed_keeps_failed_cells(lab):
    control(lab, fail_at=lab["plan"]["cells"][1]["index"] + 1, fail="backing")
    assert run(lab).returncode == 3
    control(lab)
    r = run(lab, extra=("--no-retry-failed",))
    assert r.returncode == 0
    assert "0 to run" in r.stderr


def test_sigterm_aborts_and_restores(lab):
    control(lab, kill_parent_at=lab["plan"]["cells"][1]["index"] + 1, signal="SIGTERM")
    r = run(lab)
    assert r.returncode == 4
    summary = json.loads(r.stdout.strip().splitlines()[-1])
    assert summary["state"] == "aborted" and "SIGTERM" in summary["message"]
    assert_host_restored(lab)
    assert read(lab["root"], "proc/sys/vm/use_mt_copy") == "0"
    assert not [
        p for p in os.listdir("/proc") if p.isdigit() and str(lab["migbench"]) in _cmdline(p)
    ], "a migbench survived"


def _cmdline(pid: str) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read().decode(errors="replace")
    except OSError:
        return ""


def test_a_different_definition_under_the_same_run_id_is_refused(lab, tmp_path):
    assert run(lab).returncode == 0
    other = expand(
        definition(
            kernel_variants=MT,
            kernel_variant="mt",
            repetitions=7,
            page_counts={"base": [32], "2M": [1, 4]},
        )
    )
    lab["plan_path"].write_text(json.dumps(other))
    r = run(lab)
    assert r.returncode == 2
    assert "different sweep definition" in r.stderr


def test_preflight_refuses_before_touching_the_host(lab):
    (lab["root"] / "proc/sys/vm/use_mt_copy").unlink()  # kernel without the series
    r = run(lab)
    assert r.returncode == 2
    assert "kernel_variants[0].knob_profile" in r.stderr
    assert read(lab["root"], "proc/sys/kernel/numa_balancing") == "1"
    assert not (lab["run_dir"] / "samples.jsonl").exists()


def test_one_node_host_is_refused_by_preflight(tmp_path):
    root = fake_host_tree(tmp_path / "root", nodes=1)
    plan_path = tmp_path / "plan.json"
    plan_path.write_text(json.dumps(expand(definition())))
    r = run_runner(plan_path, tmp_path / "results", fake_migbench(tmp_path), root)
    assert r.returncode == 2
    assert "1 NUMA node with memory" in r.stderr


def test_status_reports_progress_and_a_dead_runner(lab):
    env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(RUNNER_DIR))

    def status():
        out = subprocess.run(
            [sys.executable, "-m", "miglab_host", "status", "--run-dir", str(lab["run_dir"])],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        ).stdout
        return json.loads(out)

    assert status()["state"] == "absent"
    control(lab, kill_parent_at=lab["plan"]["cells"][2]["index"] + 1, signal="SIGKILL")
    run(lab)
    st = status()
    assert st["state"] == "dead" and st["runner_alive"] is False and st["done"] == 2
    control(lab)
    run(lab)
    st = status()
    assert st["state"] == "finished" and st["done"] == st["total"] == len(lab["plan"]["cells"])
    # The preflight says the same in its own call (the sweep role starts nothing from it).
    checked = subprocess.run(
        [sys.executable, "-m", "miglab_host", "preflight", "--plan", str(lab["plan_path"]),
         "--run-dir", str(lab["run_dir"]), "--sys-root", str(lab["root"]), "--no-root-check"],
        capture_output=True, text=True, env=env, check=True,
    ).stdout  # fmt: skip
    assert json.loads(checked)["run"] == st


def test_second_runner_waits_for_the_first_then_resumes(lab):
    control(lab, sleep=0.3)
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(RUNNER_DIR),
        MIGLAB_FAKE_CONTROL=str(lab["control"]),
    )
    argv = [
        sys.executable,
        "-m",
        "miglab_host",
        "run",
        "--plan",
        str(lab["plan_path"]),
        "--results-root",
        str(lab["results"]),
        "--host",
        "unit-host",
        "--migbench",
        str(lab["migbench"]),
        "--sys-root",
        str(lab["root"]),
        "--no-root-check",
    ]
    first = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while not (lab["run_dir"] / "progress.json").exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    second = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=120, check=False)
    first.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, second.stderr
    assert "waiting for it to finish" in second.stderr
    assert_exactly_planned(lab)


def test_stop_command_stops_a_running_runner_and_restores(lab):
    control(lab, sleep=1.0)
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(RUNNER_DIR),
        MIGLAB_FAKE_CONTROL=str(lab["control"]),
    )
    argv = [
        sys.executable,
        "-m",
        "miglab_host",
        "run",
        "--plan",
        str(lab["plan_path"]),
        "--results-root",
        str(lab["results"]),
        "--host",
        "unit-host",
        "--migbench",
        str(lab["migbench"]),
        "--sys-root",
        str(lab["root"]),
        "--no-root-check",
    ]
    runner = subprocess.Popen(
        argv, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        progress = lab["run_dir"] / "progress.json"
        if progress.exists() and json.loads(progress.read_text())["state"] == "running":
            break
        time.sleep(0.05)
    stop = subprocess.run(
        [
            sys.executable,
            "-m",
            "miglab_host",
            "stop",
            "--run-dir",
            str(lab["run_dir"]),
            "--sys-root",
            str(lab["root"]),
        ],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
        check=False,
    )
    runner.communicate(timeout=60)
    result = json.loads(stop.stdout)
    assert stop.returncode == 0, stop.stderr
    assert result["was_running"] and result["stopped"] and not result["dirty"]
    assert runner.returncode == 4
    assert_host_restored(lab)
    # stopping again is a no-op
    again = subprocess.run(
        [sys.executable, "-m", "miglab_host", "stop", "--run-dir", str(lab["run_dir"])],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert again.returncode == 0 and json.loads(again.stdout)["was_running"] is False
