"""The virtual-lab suite: real qemu guests, real SSH, real Ansible runs.

Every test here is marked `vlab`. The session brings the lab up once (reusing a cached
image when its inputs did not change); `test_zz_down.py` powers it off last.
"""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from miglab.vlab import guests as guest_control
from miglab.vlab.qemu import GuestPaths
from miglab.vlab.topology import parse_guest

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
        assert match, f"no PLAY RECAP line for {host}:\n{self.report()}"
        return {key: int(value) for key, value in re.findall(r"(\w+)=(\d+)", match.group(1))}

    def report(self, state_dir: Path | None = None, console_lines: int = 25) -> str:
        """What the reader of a failed run needs first (CI shows only part of a long
        message): the failed tasks, the recap, then each guest's serial console tail."""
        lines = self.output.splitlines()
        failures: list[tuple[bool, str]] = []
        task = ""
        for index, line in enumerate(lines):
            if line.startswith("TASK ["):
                task = line
            elif FAILURE_LINE.match(line.lstrip()):
                block = [line]
                for later in lines[index + 1 : index + 20]:
                    if later.startswith(("TASK [", "PLAY ", "RUNNING HANDLER")):
                        break
                    block.append(later)
                ignored = any("...ignoring" in later for later in block)
                failures.append((ignored, "\n".join([task, *block])))
        # Failures that stopped a host first; ignored ones (expected probes) after.
        failures.sort(key=lambda failure: failure[0])
        parts = [f"ansible exit code {self.returncode}; {len(failures)} failed task result(s)"]
        parts += [text for _, text in failures[:4]]
        recap = self.output.rfind("PLAY RECAP")
        parts.append(self.output[recap:].strip() if recap >= 0 else self.output[-3000:])
        parts.append(console_tails(state_dir or STATE_DIR, console_lines))
        return "\n\n".join(parts)


FAILURE_LINE = re.compile(r"^(fatal:|failed:|\[ERROR\]|ERROR!)")


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


def ansible(
    tool: str, *arguments: str, timeout: float = 1800, env: dict[str, str] | None = None
) -> AnsibleRun:
    """Run an Ansible command-line tool from the project's venv, in the repo (ansible.cfg)."""
    result = subprocess.run(
        [str(VENV_BIN / tool), *arguments],
        cwd=REPO,
        env=ansible_environment(env),
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
    assert run.returncode == 0, run.report()
    return run


@pytest.fixture(scope="session")
def guests(vlab_up: AnsibleRun) -> list[dict[str, Any]]:
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
