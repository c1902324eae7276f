"""Loads: the idle check and a real (small: one worker, a few seconds) stress-ng load that
is verified running, measured, stopped and verified gone, also when the runner dies."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time

import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
from miglab_host import procs
from miglab_host.loads import IdleLoad, LoadError, StressLoad, parse_stress_yaml
from miglab_host.plan import expand
from miglab_runner_testlib import RUNNER_DIR, definition, fake_host_tree, fake_migbench

STRESS_NG = shutil.which("stress-ng")
needs_stress_ng = pytest.mark.skipif(STRESS_NG is None, reason="stress-ng not installed")
QUICK = {"settle_seconds": 0.5, "baseline_seconds": 0.5, "min_busy_percent": 0}

YAML = """---
system-info:
      stress-ng-version: 0.15.06
      cpus: 2

metrics:
    - stressor: cpu
      bogo-ops: 544
      bogo-ops-per-second-real-time: 156.017706
      wall-clock-time: 3.486784
    - stressor: vm
      bogo-ops: 10
...
"""


def test_parse_stress_yaml():
    m = parse_stress_yaml(YAML)
    assert m == [
        {
            "stressor": "cpu",
            "bogo-ops": 544,
            "bogo-ops-per-second-real-time": 156.017706,
            "wall-clock-time": 3.486784,
        },
        {"stressor": "vm", "bogo-ops": 10},
    ]


# The other tests' stress-ng (another pytest worker) must not decide these: the CPU check only.
def test_idle_check_refuses_a_busy_host():
    load = IdleLoad(
        "idle",
        {
            "max_busy_percent": -1,
            "sample_seconds": 0.1,
            "wait_seconds": 0,
            "refuse_stress_ng": False,
        },
        lambda m: None,
    )
    with pytest.raises(LoadError, match="not quiet"):
        load.start()


def test_idle_check_accepts_within_the_limit():
    load = IdleLoad(
        "idle",
        {
            "max_busy_percent": 100,
            "sample_seconds": 0.1,
            "wait_seconds": 0,
            "refuse_stress_ng": False,
        },
        lambda m: None,
    )
    ev = load.start()
    assert ev["busy_percent_samples"] and ev["max_busy_percent"] == 100


def test_stress_argv():
    load = StressLoad(
        "busy",
        [
            {"stressor": "cpu", "workers": 0, "options": {"cpu-method": "matrixprod"}},
            {"stressor": "vm", "workers": 1, "options": {}},
        ],
        QUICK,
        "/usr/bin/stress-ng",
        "/tmp",
        print,
    )
    assert load.argv()[:7] == [
        "/usr/bin/stress-ng",
        "--cpu",
        "0",
        "--cpu-method",
        "matrixprod",
        "--vm",
        "1",
    ]
    assert "--yaml" in load.argv() and load.argv()[load.argv().index("--timeout") + 1] == "0"
    assert load.expected_workers == procs.online_cpus() + 1


@needs_stress_ng
def test_stress_load_runs_is_measured_and_is_gone_after_stop(tmp_path):
    logs = []
    load = StressLoad(
        "busy",
        [{"stressor": "cpu", "workers": 1, "options": {}}],
        QUICK,
        STRESS_NG,
        str(tmp_path),
        logs.append,
    )
    try:
        ev = load.start()
        assert ev["workers_running"] == 1
        assert ev["baseline"]["load_cpu_ns"] > 0
        sid = load.sid
        load.check()
        load.begin_cell()
        time.sleep(0.3)
        metrics = load.end_cell()
        assert metrics["load_wall_ns"] > 0 and 0 <= metrics["load_cpu_share"] <= 1
        ev = load.stop()
    finally:
        if load.proc is not None:
            load.proc.kill()
    assert ev["stopped_verified"] is True
    assert not procs.session_members(sid)
    assert ev["metrics"] and ev["metrics"][0]["stressor"] == "cpu"
    with pytest.raises(LoadError, match="no longer running"):
        load.check()


@needs_stress_ng
def test_no_stress_ng_left_after_the_runner_is_killed(tmp_path):
    """SIGKILL of the runner mid-load: PR_SET_PDEATHSIG takes stress-ng down with it."""
    root = fake_host_tree(tmp_path / "root", nodes=2)
    d = definition(
        loads=["busy"],
        folio_kinds=["base"],
        page_counts={"base": [32, 64, 128]},
        stress_loads={"busy": [{"stressor": "cpu", "workers": 1}]},
        stress=QUICK,
    )
    plan = expand(d)
    (tmp_path / "plan.json").write_text(json.dumps(plan))
    (tmp_path / "control.json").write_text(
        json.dumps({"kill_parent_at": plan["cells"][1]["index"] + 1, "signal": "SIGKILL"})
    )
    env = dict(
        os.environ,
        PYTHONDONTWRITEBYTECODE="1",
        PYTHONPATH=str(RUNNER_DIR),
        MIGLAB_FAKE_CONTROL=str(tmp_path / "control.json"),
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "miglab_host",
            "run",
            "--plan",
            str(tmp_path / "plan.json"),
            "--results-root",
            str(tmp_path / "res"),
            "--host",
            "h",
            "--migbench",
            str(fake_migbench(tmp_path)),
            "--sys-root",
            str(root),
            "--no-root-check",
            "--stress-ng",
            STRESS_NG,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == -signal.SIGKILL, r.stderr
    state = json.loads((tmp_path / "res" / "unit" / "state.json").read_text())
    pids = [p for p in state["pids"] if p["what"] == "stress-ng"]
    assert pids
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        left = [p for p in procs.processes() if p["session"] == pids[0]["pid"]]
        if not left:
            break
        time.sleep(0.2)
    assert not left, f"stress-ng processes left: {left}"


@needs_stress_ng
def test_busy_sweep_records_load_metrics_and_stops_stress_ng(tmp_path):
    root = fake_host_tree(tmp_path / "root", nodes=2)
    d = definition(
        loads=["idle", "busy"],
        folio_kinds=["base"],
        page_counts={"base": [32]},
        stress_loads={"busy": [{"stressor": "cpu", "workers": 1}]},
        stress=QUICK,
    )
    (tmp_path / "plan.json").write_text(json.dumps(expand(d)))
    env = dict(
        os.environ, PYTHONDONTWRITEBYTECODE="1", PYTHONPATH=str(RUNNER_DIR), MIGLAB_FAKE_CONTROL=""
    )
    r = subprocess.run(
        [
            sys.executable,
            "-m",
            "miglab_host",
            "run",
            "--plan",
            str(tmp_path / "plan.json"),
            "--results-root",
            str(tmp_path / "res"),
            "--host",
            "h",
            "--migbench",
            str(fake_migbench(tmp_path)),
            "--sys-root",
            str(root),
            "--no-root-check",
            "--stress-ng",
            STRESS_NG,
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert r.returncode == 0, r.stderr
    run_dir = tmp_path / "res" / "unit"
    loads = json.loads((run_dir / "variants" / "vanilla" / "loads.json").read_text())
    assert loads["busy"]["stopped_verified"] is True
    assert loads["busy"]["argv"][:3] == [STRESS_NG, "--cpu", "1"]
    assert loads["idle"]["kind"] == "idle"
    cells = [json.loads(x) for x in (run_dir / "cells.jsonl").read_text().splitlines()]
    busy = [c for c in cells if c["load"] == "busy"][0]
    assert busy["load_metrics"]["load_cpu_ns"] >= 0
    recs = [json.loads(x) for x in (run_dir / "samples.jsonl").read_text().splitlines()]
    assert all(r["load_cpu_share"] is not None for r in recs if r["load"] == "busy")
    assert all(r["load_cpu_share"] is None for r in recs if r["load"] == "idle")
    meta = json.loads((run_dir / "run-meta.json").read_text())
    assert meta["variants"]["vanilla"]["stress_ng"]["busy"]["argv"][0] == STRESS_NG
    assert not [p for p in procs.find_by_comm("stress-ng") if p["pid"] == loads["busy"]["pid"]]


@pytest.mark.skipif(os.geteuid() != 0, reason="raising the priority needs root")
def test_children_run_at_normal_priority_while_the_runner_is_raised():
    code = (
        "import os, subprocess, sys\n"
        f"sys.path.insert(0, {str(RUNNER_DIR)!r})\n"
        "from miglab_host import procs\n"
        "procs.raise_runner_priority()\n"
        "child = subprocess.run([sys.executable, '-c', 'import os; print(os.nice(0))'],\n"
        "                       capture_output=True, text=True, preexec_fn=procs.die_with_parent)\n"
        "print(os.nice(0), child.stdout.strip())\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == [str(procs.RUNNER_NICE), "0"]


def test_idle_check_refuses_a_host_running_stress_ng():
    """Someone's stress-ng (or one left by a killed run) means the host is not idle."""
    stray = subprocess.Popen(["stress-ng", "--cpu", "1", "--timeout", "20", "--quiet"])
    try:
        deadline = time.monotonic() + 10
        while not procs.find_by_comm("stress-ng") and time.monotonic() < deadline:
            time.sleep(0.05)
        load = IdleLoad(
            "idle", {"max_busy_percent": 100, "sample_seconds": 0.1, "wait_seconds": 0},
            lambda m: None,
        )  # fmt: skip
        with pytest.raises(LoadError, match=rf"stress-ng is running \(pids [0-9, ]*{stray.pid}"):
            load.start()
    finally:
        stray.kill()
        stray.wait()
