"""The sweep, migbench and collect roles through ansible-playbook, on this machine.

The "lab host" is this machine over the local connection, with every path under tmp_path,
knobs and tuning on a fake tree, and migbench in --loopback-test mode (this machine has one
NUMA node, so nothing migrates). What runs is real: argument specs, the controller planner,
the async runner with progress polling, resume (second run changed=0), the manifest and the
checksum-verified fetch. The same playbooks against the QEMU guests are virtual-lab tests.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
import yaml
from miglab.lab.ansible import PlaybookRun, run_playbook
from miglab_runner_testlib import REPO, fake_host_tree, read_jsonl, validator

PLAYBOOK = str(REPO / ".venv" / "bin" / "ansible-playbook")
PYTHON3 = "/usr/bin/python3"

# Real ansible-playbook runs: the slow suite (marker vlab), not the quick one.
pytestmark = [
    pytest.mark.vlab,
    pytest.mark.skipif(not os.path.exists(PLAYBOOK), reason="no .venv/bin/ansible-playbook"),
]


def inventory(tmp_path: Path, **over) -> Path:
    host = tmp_path / "host"
    lab_vars = {
        "sweep_run_id": "ansible-unit",
        "sweep_plan_dir": str(host / "sweep" / "plans"),
        "host_package_dir": str(host / "package"),
        "sweep_results_root": str(host / "results"),
        "sweep_migbench": str(host / "migbench" / "bin" / "migbench"),
        "sweep_migbench_build": str(host / "migbench" / "build.json"),
        "migbench_dir": str(host / "migbench"),
        "migbench_install_packages": False,
        "sweep_install_packages": False,
        "sweep_sys_root": str(fake_host_tree(tmp_path / "root", nodes=1)),
        "sweep_test_loopback": True,
        "sweep_loads": ["idle"],
        "sweep_folio_kinds": ["base"],
        "sweep_page_counts": {"base": [16, 32]},
        "sweep_repetitions": 3,
        "sweep_warmup": 1,
        "sweep_idle": {
            "max_busy_percent": 100,
            "sample_seconds": 0.2,
            "wait_seconds": 0,
            "refuse_stress_ng": False,
        },
        "sweep_poll_interval": 1,
        "collect_dest": str(tmp_path / "home"),
    }
    lab_vars.update(over)
    inv = {
        "all": {
            "children": {
                "lab": {
                    "hosts": {
                        "local1": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": PYTHON3,
                        }
                    },
                    "vars": lab_vars,
                }
            }
        }
    }
    path = tmp_path / "hosts.yml"
    path.write_text(yaml.safe_dump(inv))
    return path


def playbook(inv: Path, name: str, *extra: str, path: Path | None = None) -> PlaybookRun:
    """A playbook through ansible-runner (events and recap, never Ansible's text)."""
    return run_playbook(
        path or Path("playbooks") / name,
        extra,
        project_dir=REPO,
        inventory=inv,
        env={"PYTHONDONTWRITEBYTECODE": "1"},
        timeout=900,
    )


def said(run: PlaybookRun) -> str:
    """What the run's debug tasks and failures said, one line each."""
    lines = [
        str(e["event_data"]["res"]["msg"])
        for e in run.results()
        if "msg" in e["event_data"].get("res", {})
    ]
    return "\n".join(lines + run.failures())


@pytest.mark.parametrize(
    "extra, message",
    [
        ('{"sweep_page_counts": {"base": [0]}}', "sweep_page_counts.base[0]: page count must be a"),
        ('{"sweep_name": "x;reboot"}', "sweep_name: value 'x;reboot' contains shell metachar"),
        ('{"sweep_folio_kinds": ["base", "2M"]}', "sweep_page_counts.2M: missing"),
        ('{"sweep_order": "random"}', "sweep_order"),
    ],
)
def test_invalid_definition_stops_before_any_host_is_touched(tmp_path, extra, message):
    inv = inventory(tmp_path)
    r = playbook(inv, "sweep.yml", "-e", extra)
    assert r.returncode != 0
    assert message in said(r), r.report()
    assert not (tmp_path / "host").exists()  # nothing was built, shipped or started


def test_sweep_resume_and_collect(tmp_path):
    inv = inventory(tmp_path)
    r = playbook(inv, "sweep.yml")
    assert r.returncode == 0, r.report()
    assert "local1: 2/2 cells done" in said(r)
    assert "local1: finished, 2/2 cells complete" in said(r)
    run_dir = tmp_path / "host" / "results" / "ansible-unit"
    recs = read_jsonl(run_dir / "samples.jsonl")
    assert len(recs) == 2 * 3
    # the fake tree's tuning was applied during the sweep and restored
    assert (tmp_path / "root/proc/sys/kernel/numa_balancing").read_text().strip() == "1"

    r = playbook(inv, "sweep.yml")  # complete: nothing to do, nothing changed
    assert r.returncode == 0
    assert r.host("local1")["changed"] == 0, r.changed_tasks()
    assert "are complete" in said(r)

    r = playbook(inv, "collect.yml")
    assert r.returncode == 0, r.report()
    home = tmp_path / "home" / "ansible-unit" / "local1"
    assert (home / "SHA256SUMS").exists()
    assert (home / "variants/vanilla/host.json").exists()
    assert (home / "variants/vanilla/migbench.json").exists()
    v = validator()
    for rec in read_jsonl(home / "samples.jsonl"):
        v.validate(rec)
    build = json.loads((tmp_path / "host/migbench/build.json").read_text())
    assert build["source_sha256"] == recs[0]["migbench_sha256"]
    r = playbook(inv, "collect.yml")
    assert r.returncode == 0 and r.host("local1")["changed"] == 0, r.changed_tasks()


def test_polling_survives_then_gives_up_on_an_unreachable_host(tmp_path):
    """One host answers (its runner's job is finished), one never does (ssh to a closed
    port): the unreachable one is polled again up to sweep_poll_unreachable_max, then given
    up alone; the other finishes normally."""
    job = tmp_path / "job"
    job.write_text('{"finished": true, "rc": 0}')
    inv = {
        "all": {
            "children": {
                "lab": {
                    "hosts": {
                        "ghost": {
                            "ansible_connection": "ssh",
                            "ansible_host": "127.0.0.1",
                            "ansible_port": 1,
                        },
                        "local1": {"ansible_connection": "local"},
                    },
                    "vars": {"ansible_python_interpreter": PYTHON3},
                }
            }
        }
    }
    (tmp_path / "hosts.yml").write_text(yaml.safe_dump(inv))
    play = [
        {
            "name": "Poll",
            "hosts": "lab",
            "gather_facts": False,
            "vars": {
                "sweep_poll_interval": 1,
                "sweep_poll_unreachable_max": 2,
                "host_package_dir": str(REPO / "host"),
                "sweep_results_root": str(tmp_path / "results"),
            },
            "tasks": [
                {
                    "name": "Set the job facts",
                    "ansible.builtin.set_fact": {
                        "sweep__job": {"results_file": str(job)},
                        "sweep__token": "t1",
                        "sweep__next_report": 0,
                        "sweep__unreachable_polls": 0,
                    },
                },
                {
                    "name": "Poll",
                    "ansible.builtin.include_role": {"name": "sweep", "tasks_from": "poll"},
                },
            ],
        }
    ]
    (tmp_path / "poll.yml").write_text(yaml.safe_dump(play, sort_keys=False))
    r = playbook(tmp_path / "hosts.yml", "poll", path=tmp_path / "poll.yml")
    assert "Lost contact with ghost for 3 polls" in said(r), r.report()
    unreachable = [e for e in r.events if e["event"] == "runner_on_unreachable"]
    assert [e["event_data"]["host"] for e in unreachable] == ["ghost"] * 3
    assert r.host("local1")["failed"] == 0 and r.host("ghost")["failed"] == 1


def test_check_mode_works_and_changes_nothing(tmp_path):
    """`--check` on sweep.yml and collect.yml: the plan is made, nothing runs or lands on the
    host (no runner, no results, no package) and nothing comes home."""
    inv = inventory(tmp_path)
    for name in ("sweep.yml", "collect.yml"):
        r = playbook(inv, name, "--check")
        if name == "collect.yml":
            # no run on the host yet: collect says so, even in check mode
            assert r.rc != 0 and "has no run ansible-unit" in said(r), r.report()
            continue
        assert r.rc == 0, r.report()
        assert "check mode; would run the 2 cells of run ansible-unit" in said(r)
    assert not (tmp_path / "host").exists()
    assert not (tmp_path / "home").exists()
