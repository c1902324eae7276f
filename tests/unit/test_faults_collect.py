"""Faults while results come home (docs/faults.md), for real: collect.yml through
ansible-playbook on this machine (the "host" is this machine over the local connection,
its run a directory under tmp_path). Nothing measured is lost, nothing is duplicated, the
message says what went wrong, and a rerun completes.

Real ansible-playbook runs: part of the slow suite (marker vlab), as the issue asks of them.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
from pathlib import Path

import pytest
import yaml
from miglab.lab.ansible import PlaybookRun, run_playbook

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "faults-1"

pytestmark = [
    pytest.mark.vlab,
    pytest.mark.skipif(os.geteuid() != 0, reason="mounts a small tmpfs (root)"),
]


def host_run(root: Path, samples: int = 400) -> Path:
    """A finished run directory as the runner leaves one: samples, journal, metadata."""
    run = root / "results" / RUN_ID
    (run / "variants" / "vanilla").mkdir(parents=True)
    record = {"schema": "miglab.sample/1", "cell_id": "vanilla:idle:vanilla:base:32"}
    (run / "samples.jsonl").write_text(
        "".join(json.dumps({**record, "rep": n, "pad": "x" * 200}) + "\n" for n in range(samples))
    )
    (run / "cells.jsonl").write_text(
        '{"cell_id": "vanilla:idle:vanilla:base:32", "status": "done"}\n'
    )
    (run / "variants" / "vanilla" / "plan.json").write_text('{"cells": []}\n')
    return run


def inventory(tmp_path: Path, dest: Path, hosts: dict[str, dict]) -> Path:
    lab_vars = {
        "sweep_run_id": RUN_ID,
        "sweep_results_root": str(tmp_path / "host" / "results"),
        "host_package_dir": str(tmp_path / "host" / "package"),
        "collect_dest": str(dest),
        "collect_lab_facts": str(tmp_path / "host" / "no-facts.json"),
        "ansible_python_interpreter": "/usr/bin/python3",
    }
    path = tmp_path / "hosts.yml"
    path.write_text(
        yaml.safe_dump({"all": {"children": {"lab": {"hosts": hosts, "vars": lab_vars}}}})
    )
    return path


def collect(inventory_path: Path) -> PlaybookRun:
    return run_playbook(
        Path("playbooks/collect.yml"), project_dir=REPO, inventory=inventory_path, timeout=300
    )


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


LOCAL = {"local1": {"ansible_connection": "local"}}


def test_a_full_disk_at_home_loses_nothing_and_a_rerun_completes(tmp_path: Path) -> None:
    run = host_run(tmp_path / "host")
    before = {p.name: digest(p) for p in run.rglob("*") if p.is_file()}
    full = tmp_path / "full"
    full.mkdir()
    subprocess.run(["mount", "-t", "tmpfs", "-o", "size=32k", "tmpfs", str(full)], check=True)
    try:
        failed = collect(inventory(tmp_path, full, LOCAL))
    finally:
        subprocess.run(["umount", str(full)], check=True)
    assert failed.rc != 0 and failed.host("local1")["failed"] == 1
    assert any("No space left on device" in line for line in failed.failures()), failed.report()
    # On the host, the run is as it was (plus its manifest): nothing measured is lost.
    after = {
        p.name: digest(p)
        for p in run.rglob("*")
        if p.is_file() and p.name not in ("SHA256SUMS", "runner.lock")
    }
    assert after == before
    home = tmp_path / "home"
    again = collect(inventory(tmp_path, home, LOCAL))
    assert again.rc == 0, again.report()
    fetched = home / RUN_ID / "local1"
    assert digest(fetched / "samples.jsonl") == before["samples.jsonl"]


def test_a_corrupted_copy_at_home_is_found_and_fetched_again(tmp_path: Path) -> None:
    host_run(tmp_path / "host")
    home = tmp_path / "home"
    inv = inventory(tmp_path, home, LOCAL)
    assert collect(inv).rc == 0
    fetched = home / RUN_ID / "local1"
    good = (fetched / "samples.jsonl").read_bytes()
    # A byte flipped at home: the verification names the file.
    (fetched / "samples.jsonl").write_bytes(good.replace(b'"rep": 3', b'"rep": 8', 1))
    verify = subprocess.run(
        [
            str(REPO / ".venv/bin/python"),
            "-m",
            "miglab_host",
            "manifest",
            "--verify",
            "--dir",
            str(fetched),
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    assert verify.returncode == 1 and json.loads(verify.stdout)["differ"] == ["samples.jsonl"]
    # A corrupted SHA256SUMS at home too: a rerun fetches both again and verifies them.
    (fetched / "SHA256SUMS").write_text("0" * 64 + "  samples.jsonl\n")
    again = collect(inv)
    assert again.rc == 0, again.report()
    assert (fetched / "samples.jsonl").read_bytes() == good


def test_an_unreachable_host_fails_alone(tmp_path: Path) -> None:
    host_run(tmp_path / "host")
    home = tmp_path / "home"
    hosts = {
        **LOCAL,
        "ghost": {"ansible_host": "127.0.0.1", "ansible_port": 1, "ansible_connection": "ssh"},
    }
    result = collect(inventory(tmp_path, home, hosts))
    assert result.rc != 0
    assert result.host("ghost")["unreachable"] == 1
    assert result.host("local1")["failed"] == 0 and result.host("local1")["unreachable"] == 0
    assert (home / RUN_ID / "local1" / "samples.jsonl").is_file()


@pytest.mark.parametrize(
    "extra, key",
    [
        ({"collect_run_id": "../secret"}, "collect_run_id"),
        ({"sweep_run_id": "../../escaped"}, "sweep_run_id"),
    ],
)
def test_a_name_that_would_escape_results_is_refused_before_any_host(
    tmp_path: Path, extra: dict[str, str], key: str
) -> None:
    host_run(tmp_path / "host")
    home = tmp_path / "home"
    result = run_playbook(
        Path("playbooks/collect.yml"),
        ["-e", json.dumps(extra)],
        project_dir=REPO,
        inventory=inventory(tmp_path, home, LOCAL),
        timeout=300,
    )
    assert result.rc != 0
    assert any(f"{key}: '" in line for line in result.failures()), result.report()
    assert not home.exists() and not (tmp_path / "secret").exists()
    assert not (tmp_path / "host" / "results" / RUN_ID / "SHA256SUMS").exists()  # host untouched
