"""Sweeps on the virtual lab, for real: the inventory's sweep (idle and busy) of base pages
and 2 MiB THP on the guests' own kernel, on both guests through playbooks/sweep.yml. vnode1's
runner is killed with SIGKILL in the middle of its busy load (a runner that cannot clean up
after itself); the play goes on for vnode2, and a rerun with --limit vnode1 resumes. Then:
every collected record is valid and backed by the folios it claims, each guest has exactly
the planned samples and no duplicates, no stress-ng or migbench is left, and the sweep's knobs
and THP settings are back to what they were before it.
"""

from __future__ import annotations

import json
import shlex
import threading
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from miglab.lab.ansible import PlaybookRun, run_playbook
from miglab.results.check import check_results

from .conftest import REPO, ad_hoc, ansible, host_command, playbook, report

KILLED = "vnode1"
RESULTS_ROOT = "/var/lib/miglab/results"
HOST_PACKAGE = "/opt/miglab/host"
MIGBENCH = "/opt/miglab/migbench/bin/migbench"
SCHEMA = json.loads((REPO / "host" / "miglab_host" / "results-schema.json").read_text())
# What the sweep changes (sweep_tuning: numa_balancing 0, THP madvise/madvise), set beforehand
# to other values so that a restore is visible rather than a coincidence.
TUNING_FILES = {
    "numa_balancing": "/proc/sys/kernel/numa_balancing",
    "thp_enabled": "/sys/kernel/mm/transparent_hugepage/enabled",
    "thp_defrag": "/sys/kernel/mm/transparent_hugepage/defrag",
}
BEFORE_SWEEP = {"numa_balancing": "1", "thp_enabled": "always", "thp_defrag": "defer"}
SWEEP_TIMEOUT = 3600
# From the start of the play to vnode1's busy load (build and ship included).
KILL_WAIT_SECONDS = 1800


def shell(host: str, script: str) -> str:
    return str(ad_hoc(host, "ansible.builtin.shell", script)["stdout"])


def tuning_of(host: str) -> dict[str, str]:
    """Current values; a [bracketed] choice of a sysfs list is the one in force."""
    values = {}
    for name, path in TUNING_FILES.items():
        text = shell(host, f"cat {path} 2>/dev/null || echo absent").strip()
        chosen = [word[1:-1] for word in text.split() if word.startswith("[")]
        values[name] = chosen[0] if chosen else text
    return values


def set_tuning(host: str, values: dict[str, str]) -> None:
    for name, value in values.items():
        path = TUNING_FILES[name]
        shell(host, f"if [ -e {path} ]; then echo {value} > {path}; fi")


def leftovers(host: str) -> str:
    """Live stress-ng, migbench or sweep runner processes (pgrep: exit 1 when none)."""
    return shell(host, "pgrep -a -f '[s]tress-ng|[m]igbench|[m]iglab_host run' || true").strip()


def runner_status(host: str, run_id: str) -> dict[str, Any]:
    out = host_command(
        host,
        f"chdir={HOST_PACKAGE} /usr/bin/python3 -m miglab_host status --run-dir {RESULTS_ROOT}/{run_id}",
    )
    return dict(json.loads(out))


@dataclass
class SweepRun:
    run_id: str
    killed: PlaybookRun
    killed_in_cell: str
    status_after_kill: dict[str, Any]
    leftovers_after_kill: str
    tuning_after_kill: dict[str, str]
    resumed: PlaybookRun
    collected: PlaybookRun
    tuning_before: dict[str, dict[str, str]]
    tuning_after: dict[str, dict[str, str]]
    leftovers_after: dict[str, str]
    results: Path


# The killer, run on the guest by python3 with the run's directory as its argument (so that
# the fixture's clean-up finds it by the run id). One process that forks nothing: a shell loop
# of grep and sleep, ten forks a second under TCG, kept a 2-vCPU guest 75% busy, and the
# sweep's idle cells then waited in vain for a quiet host. Reading a small file five times a
# second costs well under 1% of a CPU. The runner names its own pid in progress.json.
KILLER = """
import json, os, signal, sys, time

from miglab_host.procs import find_by_exe

run_dir, seconds, migbench = sys.argv[1:]
deadline = time.monotonic() + float(seconds)
while time.monotonic() < deadline:
    try:
        with open(os.path.join(run_dir, "progress.json")) as f:
            progress = json.load(f)
    except (OSError, ValueError):
        progress = {}
    cell = progress.get("current_cell") or ""
    if ":busy:" in cell and find_by_exe(migbench):
        try:
            os.kill(progress["pid"], signal.SIGKILL)
        except ProcessLookupError:
            sys.exit(3)
        print("current_cell:", cell)
        sys.exit(0)
    time.sleep(0.2)
sys.exit(2)
"""


def killer_command(run_id: str) -> str:
    """As soon as the runner is in a busy cell with migbench running, SIGKILL the runner, which
    leaves it no chance to clean up, and print the cell it was in. A loop on the guest: polling
    through SSH would be too slow (a vlab sweep takes about a minute)."""
    run_dir = f"{RESULTS_ROOT}/{run_id}"
    command = ["/usr/bin/python3", "-c", KILLER, run_dir, str(KILL_WAIT_SECONDS), MIGBENCH]
    return f"chdir={HOST_PACKAGE} {shlex.join(command)}"


@pytest.fixture(scope="module")
def sweep_run(guests: list[dict[str, Any]]) -> SweepRun:
    names = [g["name"] for g in guests]
    run_id = f"vlab-sweeps-{time.strftime('%Y%m%d-%H%M%S')}"
    originals = {name: tuning_of(name) for name in names}
    for name in names:
        set_tuning(name, BEFORE_SWEEP)
    tuning_before = {name: tuning_of(name) for name in names}
    try:
        arguments = [
            "playbooks/sweep.yml",
            "-e",
            f"sweep_run_id={run_id}",
            "-e",
            "sweep_poll_interval=5",
            # The guests' own 6.1 kernel has no mTHP (the inventory's 64K is for the 6.12
            # variants of site.yml).
            "-e",
            '{"sweep_folio_kinds": ["base", "2M"]}',
        ]
        # The sweep in the background (ansible-runner in a thread), the killer meanwhile.
        runs: list[PlaybookRun] = []
        stop = threading.Event()
        sweep = threading.Thread(
            target=lambda: runs.append(
                run_playbook_in_repo(arguments, cancel=stop.is_set, timeout=SWEEP_TIMEOUT)
            )
        )
        sweep.start()
        ended: list[float] = []

        def sweep_is_long_over() -> bool:
            """The sweep ended without the killer finding its moment (it failed early, say):
            give up after a grace time that lets a killer which did kill report the cell."""
            if sweep.is_alive():
                return False
            ended[:] = ended or [time.monotonic()]
            return time.monotonic() - ended[0] > 30

        killer = None
        try:
            killer = ansible(
                "ansible",
                KILLED,
                "-m",
                "ansible.builtin.shell",
                "-a",
                killer_command(run_id),
                timeout=KILL_WAIT_SECONDS + 120,
                give_up=sweep_is_long_over,
            )
        finally:
            if killer is None or killer.returncode != 0:
                stop.set()  # nothing was killed: stop the sweep instead of waiting for it
                sweep.join(SWEEP_TIMEOUT)
                # Neither the killer's loop nor a runner outlives the controller's side of
                # them by itself: stop what mentions this run on the guests, or the next
                # sweep there finds a busy host.
                pattern = f"[{run_id[0]}]{run_id[1:]}"
                ansible("ansible", ",".join(names), "-b", "-m", "ansible.builtin.shell",
                        "-a", f"pkill -f -- '{pattern}'; exit 0", timeout=120)  # fmt: skip
            sweep.join(SWEEP_TIMEOUT)
        assert killer.returncode == 0, (
            f"{KILLED} was not killed in a busy cell: {killer.output}\n"
            + (runs[0].report() if runs else "(the sweep left no result)")
        )
        killed_in_cell = next(line for line in killer.output.splitlines() if "current_cell" in line)
        (killed,) = runs
        status_after_kill = runner_status(KILLED, run_id)
        leftovers_after_kill = leftovers(KILLED)
        tuning_after_kill = tuning_of(KILLED)
        resumed = playbook(*arguments, "--limit", KILLED, timeout=SWEEP_TIMEOUT)
        collected = playbook("playbooks/collect.yml", "-e", f"sweep_run_id={run_id}")
        tuning_after = {name: tuning_of(name) for name in names}
        leftovers_after = {name: leftovers(name) for name in names}
    finally:
        for name in names:
            set_tuning(name, originals[name])
    return SweepRun(
        run_id,
        killed,
        killed_in_cell,
        status_after_kill,
        leftovers_after_kill,
        tuning_after_kill,
        resumed,
        collected,
        tuning_before,
        tuning_after,
        leftovers_after,
        REPO / "results" / run_id,
    )


def run_playbook_in_repo(
    arguments: list[str], cancel: Any = None, timeout: int = SWEEP_TIMEOUT
) -> PlaybookRun:
    return run_playbook(
        Path(arguments[0]), arguments[1:], project_dir=REPO, cancel=cancel, timeout=timeout
    )


def samples_of(run: SweepRun, host: str) -> list[dict[str, Any]]:
    text = (run.results / host / "samples.jsonl").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def plan_of(run: SweepRun, host: str) -> dict[str, Any]:
    return dict(json.loads((run.results / host / "variants" / "vanilla" / "plan.json").read_text()))


def test_the_kill_failed_only_the_killed_host(
    sweep_run: SweepRun, guests: list[dict[str, Any]]
) -> None:
    assert sweep_run.killed.returncode != 0
    assert sweep_run.killed.host(KILLED)["failed"] == 1, report(sweep_run.killed)
    for other in (g["name"] for g in guests if g["name"] != KILLED):
        assert sweep_run.killed.host(other)["failed"] == 0, report(sweep_run.killed)
    status = sweep_run.status_after_kill
    assert status["done"] < status["total"], (
        f"killed in {sweep_run.killed_in_cell} after the last cell"
    )
    assert not status["runner_alive"]


def test_an_abort_leaves_no_load_and_restores_the_settings(sweep_run: SweepRun) -> None:
    assert sweep_run.leftovers_after_kill == ""
    assert sweep_run.tuning_after_kill == sweep_run.tuning_before[KILLED]


def test_the_rerun_resumed_and_everything_was_collected(sweep_run: SweepRun) -> None:
    assert sweep_run.resumed.returncode == 0, report(sweep_run.resumed)
    assert sweep_run.collected.returncode == 0, report(sweep_run.collected)
    # The killed play put back what the dead runner had changed (from its state.json).
    (restored,) = sweep_run.killed.results("Restore what a killed runner left behind", KILLED)
    assert restored["event_data"]["res"]["changed"] is True, restored


def test_each_guest_has_exactly_the_planned_samples_and_no_duplicates(
    sweep_run: SweepRun, guests: list[dict[str, Any]]
) -> None:
    for guest in guests:
        plan = plan_of(sweep_run, guest["name"])
        records = samples_of(sweep_run, guest["name"])
        assert len(records) == len(plan["cells"]) * plan["definition"]["repetitions"], guest["name"]
        keys = [(r["cell_id"], r["rep"]) for r in records]
        assert len(set(keys)) == len(keys), guest["name"]
        assert {r["cell_id"] for r in records} == {c["cell_id"] for c in plan["cells"]}
    report = check_results([sweep_run.results])
    assert report.ok, "\n".join(report.lines())


def test_every_record_is_valid_and_really_backed(
    sweep_run: SweepRun, guests: list[dict[str, Any]]
) -> None:
    for guest in guests:
        records = samples_of(sweep_run, guest["name"])
        for record in records:
            jsonschema.validate(record, SCHEMA)
            assert record["backing_ok"] is True, record
            assert record["failed_pages"] == 0, record
            assert record["run_id"] == sweep_run.run_id
            assert record["host"] == guest["name"]
            expected_folio = 2 << 20 if record["page_kind"] == "2M" else 4096
            assert record["folio_size"] == expected_folio, record
        assert {r["load"] for r in records} == {"idle", "busy"}
        assert {r["page_kind"] for r in records} == {"base", "2M"}
        assert all(
            r["pgmigrate_success"] >= r["page_count"] for r in records if r["page_kind"] == "base"
        )


def test_the_busy_load_was_verified_and_its_cost_recorded(
    sweep_run: SweepRun, guests: list[dict[str, Any]]
) -> None:
    for guest in guests:
        busy = [r for r in samples_of(sweep_run, guest["name"]) if r["load"] == "busy"]
        assert busy and all(r["load_cpu_share"] is not None for r in busy), guest["name"]
        loads_file = sweep_run.results / guest["name"] / "variants" / "vanilla" / "loads.json"
        busy_load = json.loads(loads_file.read_text())["busy"]
        assert busy_load["stopped_verified"] is True
        assert busy_load["metrics"] and busy_load["metrics"][0]["bogo-ops"] > 0


def test_no_stress_ng_or_migbench_is_left_and_settings_are_restored(
    sweep_run: SweepRun, guests: list[dict[str, Any]]
) -> None:
    for guest in guests:
        assert sweep_run.leftovers_after[guest["name"]] == ""
        assert sweep_run.tuning_after[guest["name"]] == sweep_run.tuning_before[guest["name"]]
