"""The virtual-lab suite: real qemu guests, real SSH, real Ansible runs.

Every test here is marked `vlab` (tests/conftest.py). The session brings the lab up once (reusing a cached
image when its inputs did not change); `test_zz_down.py` powers it off last.
"""

from __future__ import annotations

import base64
import json
import os
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from miglab.lab.ansible import PlaybookRun, run_playbook
from miglab.vlab import guests as guest_control
from miglab.vlab.qemu import GuestPaths
from miglab.vlab.topology import parse_guest

REPO = Path(__file__).resolve().parents[2]
VENV_BIN = REPO / ".venv" / "bin"
INVENTORY = REPO / "inventory" / "vlab"
STATE_DIR = REPO / ".vlab"


def console_tails(state_dir: Path, lines: int) -> str:
    """The last lines of every guest's serial console log and of its power supply's log."""
    tails = []
    for log in sorted((state_dir / "guests").glob("*/console.log")):
        paths = GuestPaths(log.parent)
        tails.append(
            f"--- console of {log.parent.name} ---\n" + guest_control.console_tail(paths, lines)
        )
        if paths.power_log.exists():
            tails.append(
                f"--- power supply of {log.parent.name} ---\n"
                + guest_control.power_log_tail(paths, 6)
            )
    return "\n".join(tails) or f"(no console logs in {state_dir}/guests)"


def ansible_environment(extra: dict[str, str] | None = None) -> dict[str, str]:
    """The environment the tests run Ansible with: this one, with plain (uncoloured) output."""
    return {**os.environ, "ANSIBLE_NOCOLOR": "1", "ANSIBLE_FORCE_COLOR": "0", **(extra or {})}


@dataclass
class CommandRun:
    """An ad-hoc `ansible` command (its output is for the assertion message only)."""

    returncode: int
    output: str


def ansible(
    tool: str,
    *arguments: str,
    timeout: float = 1800,
    env: dict[str, str] | None = None,
    give_up: Callable[[], bool] | None = None,
) -> CommandRun:
    """Run an Ansible command-line tool from the project's venv, in the repo (ansible.cfg).
    Stopped (non-zero exit) after `timeout` seconds, or as soon as `give_up()` says so."""
    with subprocess.Popen(
        [str(VENV_BIN / tool), *arguments],
        cwd=REPO,
        env=ansible_environment(env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    ) as process:
        deadline = time.monotonic() + timeout
        while True:
            try:
                output, _ = process.communicate(timeout=1)
                return CommandRun(process.returncode, output)
            except subprocess.TimeoutExpired:
                if time.monotonic() > deadline or (give_up is not None and give_up()):
                    process.kill()
                    output, _ = process.communicate()
                    return CommandRun(process.returncode, f"{output}\n(stopped by the test)")


def playbook(
    path: str, *arguments: str, timeout: int = 1800, env: dict[str, str] | None = None
) -> PlaybookRun:
    """ansible-playbook PATH ARGUMENTS... through ansible-runner: the events and the recap."""
    return run_playbook(Path(path), arguments, project_dir=REPO, env=env, timeout=timeout)


def report(run: PlaybookRun, state_dir: Path | None = None, console_lines: int = 25) -> str:
    """A failed run for its reader (CI shows only part of a long message): the failed tasks,
    the recap, then each guest's serial console and power supply tails."""
    return run.report() + "\n\n" + console_tails(state_dir or STATE_DIR, console_lines)


def lab_guests() -> list[dict[str, Any]]:
    data = yaml.safe_load((INVENTORY / "group_vars" / "all" / "vlab.yml").read_text())
    return list(data["vlab_guests"])


@pytest.fixture(scope="session")
def vlab_up() -> PlaybookRun:
    """The lab, up: the real playbook, as a user runs it."""
    run = playbook("playbooks/vlab.yml")
    assert run.returncode == 0, report(run)
    return run


@pytest.fixture(scope="session")
def guests(vlab_up: PlaybookRun) -> list[dict[str, Any]]:
    return lab_guests()


@pytest.fixture(scope="module", autouse=True)
def lab_answers_after_each_module() -> Iterator[None]:
    """A guest a module left hung (a failed test kernel, a stuck reboot) is power-cycled before the
    next module, so one failure stays in its own module instead of failing every later one.
    The module that hung it has failed already; the power cycle is printed, not hidden."""
    yield
    for data in lab_guests():
        guest = parse_guest(data, "vlab_guests")
        paths = GuestPaths.for_guest(STATE_DIR, guest.name)
        if guest_control.running_pid(paths) is None:
            continue
        if guest_control.ensure_answering(
            guest, paths, timeout=300, reset_hung=True, hung_after=60
        ):
            print(f"lab: {guest.name} did not answer after this module and was power-cycled")


def ad_hoc(host: str, module: str, arguments: str = "") -> dict[str, Any]:
    """Run one module on one lab host through Ansible; return that host's result
    (the builtin `tree` callback writes it as JSON)."""
    with tempfile.TemporaryDirectory() as tree:
        run = ansible("ansible", host, "-m", module, "-a", arguments, "--tree", tree)
        assert run.returncode == 0, run.output
        return dict(json.loads((Path(tree) / host).read_text()))


def read_host_file(host: str, path: str) -> bytes:
    return base64.b64decode(ad_hoc(host, "ansible.builtin.slurp", f"src={path}")["content"])


def host_command(host: str, command: str) -> str:
    return str(ad_hoc(host, "ansible.builtin.command", command)["stdout"])
