"""The virtual-lab suite: real qemu guests, real SSH, real Ansible runs.

Every test here is marked `vlab`. The session brings the lab up once (reusing a cached
image when its inputs did not change); `test_zz_down.py` powers it off last.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
INVENTORY = REPO / "inventory" / "vlab"
STATE_DIR = REPO / ".vlab"


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vlab)


@dataclass
class AnsibleRun:
    returncode: int
    output: str

    def recap(self, host: str) -> dict[str, int]:
        match = re.search(rf"^{re.escape(host)}\s*:\s*(.*)$", self.output, re.MULTILINE)
        assert match, f"no PLAY RECAP line for {host}:\n{self.output[-3000:]}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}


def ansible(
    tool: str, *arguments: str, timeout: float = 1800, env: dict[str, str] | None = None
) -> AnsibleRun:
    """Run an Ansible command-line tool from the project's venv, in the repo (ansible.cfg)."""
    environment = {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(env or {})}
    result = subprocess.run(
        [str(VENV_BIN / tool), *arguments],
        cwd=REPO,
        env=environment,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return AnsibleRun(result.returncode, result.stdout + result.stderr)


def playbook(*arguments: str, **kwargs: Any) -> AnsibleRun:
    return ansible("ansible-playbook", *arguments, **kwargs)


def lab_guests() -> list[dict[str, Any]]:
    data = yaml.safe_load((INVENTORY / "group_vars" / "all" / "vlab.yml").read_text())
    return list(data["vlab_guests"])


@pytest.fixture(scope="session")
def vlab_up() -> AnsibleRun:
    """The lab, up: the real playbook, as a user runs it."""
    run = playbook("playbooks/vlab.yml")
    assert run.returncode == 0, run.output[-5000:]
    return run


@pytest.fixture(scope="session")
def guests(vlab_up: AnsibleRun) -> list[dict[str, Any]]:
    return lab_guests()


def host_json(host: str, command: str) -> Any:
    """Run a command on a lab host through Ansible and parse its stdout as JSON."""
    run = ansible("ansible", host, "-m", "ansible.builtin.command", "-a", command, "-o")
    assert run.returncode == 0, run.output
    # `-o` prints: host | CHANGED | rc=0 | (stdout) {...}
    return json.loads(run.output.split("(stdout)", 1)[1].strip().encode().decode("unicode_escape"))
