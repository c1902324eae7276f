"""The repository's lint gates, run as real subprocesses from .venv/bin: ansible-lint (the
production profile, offline, from .ansible-lint), yamllint (.yamllint) and
`ansible-playbook --syntax-check` on every playbook in playbooks/."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PLAYBOOKS = sorted((REPO / "playbooks").glob("*.yml"))
DEFAULT_INVENTORY = REPO / "inventory" / "vlab" / "hosts.yml"


def tool(name: str) -> str:
    path = BIN / name
    if not path.exists():
        # a virtualenv elsewhere (the one running pytest)
        path = Path(sys.executable).parent / name
    assert path.exists(), f"{name} not found in {BIN}: run `bash .ci/setup --dev`"
    return str(path)


def run(*argv: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(
        os.environ, NO_COLOR="1", ANSIBLE_NOCOLOR="1", ANSIBLE_FORCE_COLOR="0", PY_COLORS="0"
    )
    env["PATH"] = f"{Path(argv[0]).parent}{os.pathsep}{env.get('PATH', '')}"
    return subprocess.run(
        list(argv),
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def output(proc: subprocess.CompletedProcess) -> str:
    return f"exit {proc.returncode}\n--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"


def test_ansible_lint_production_profile() -> None:
    # The profile, offline mode and excludes come from .ansible-lint; checking that they
    # are there keeps this test from passing on a weaker configuration.
    config = (REPO / ".ansible-lint").read_text()
    assert "profile: production" in config and "offline: true" in config
    proc = run(tool("ansible-lint"))
    assert proc.returncode == 0, output(proc)


def test_yamllint() -> None:
    proc = run(tool("yamllint"), ".")
    assert proc.returncode == 0, output(proc)


def test_there_are_playbooks() -> None:
    assert PLAYBOOKS, "no playbooks in playbooks/"


def test_playbook_syntax() -> None:
    # Every playbook in one ansible-playbook (it takes several): one start-up, not one each.
    # The default inventory (ansible.cfg) once the virtual lab's exists, so group and host
    # variables are loaded as in real runs; before that an inline one.
    inventory = [] if DEFAULT_INVENTORY.exists() else ["-i", "localhost,"]
    proc = run(
        tool("ansible-playbook"),
        "--syntax-check",
        *inventory,
        *(str(playbook.relative_to(REPO)) for playbook in PLAYBOOKS),
    )
    assert proc.returncode == 0, output(proc)
    # each of them was read
    for playbook in PLAYBOOKS:
        assert f"playbook: {playbook.relative_to(REPO)}" in proc.stdout, proc.stdout
