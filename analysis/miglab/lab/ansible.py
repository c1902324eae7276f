"""One ansible-playbook run through ansible-runner, read as structured events and stats.

`miglab run` and the tests use it: what happened is read from the events (the task, the
host, the result as JSON) and from the final stats, never from Ansible's text output.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
import tempfile
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import ansible_runner

EventHandler = Callable[[dict[str, Any]], None]
FAILED_EVENTS = ("runner_on_failed", "runner_item_on_failed", "runner_on_unreachable")
# ansible-runner's stats keys -> the names of Ansible's PLAY RECAP
RECAP_NAMES = {
    "ok": "ok",
    "changed": "changed",
    "dark": "unreachable",
    "failures": "failed",
    "skipped": "skipped",
    "rescued": "rescued",
    "ignored": "ignored",
}


def recap(stats: Mapping[str, Mapping[str, int]]) -> dict[str, dict[str, int]]:
    """The stats of a `playbook_on_stats` event as a PLAY RECAP: host -> counts."""
    hosts = sorted(
        {host for key in RECAP_NAMES for host in stats.get(key, {}) or {}}
        | set(stats.get("processed", {}) or {})
    )
    return {
        host: {
            label: int((stats.get(key) or {}).get(host, 0)) for key, label in RECAP_NAMES.items()
        }
        for host in hosts
    }


def render_recap(table: Mapping[str, Mapping[str, int]]) -> str:
    lines = ["recap:"]
    width = max((len(host) for host in table), default=4)
    for host, counts in table.items():
        lines.append(
            f"  {host.ljust(width)}  "
            + "  ".join(f"{key}={value}" for key, value in counts.items())
        )
    return "\n".join(lines)


@dataclass
class PlaybookRun:
    """What a playbook run did: ansible-playbook's exit code, the recap and the events."""

    rc: int
    status: str
    recap: dict[str, dict[str, int]] = field(default_factory=dict)
    events: list[dict[str, Any]] = field(default_factory=list)

    @property
    def returncode(self) -> int:
        return self.rc

    def host(self, name: str) -> dict[str, int]:
        assert name in self.recap, f"{name} not in the recap {sorted(self.recap)}:\n{self.report()}"
        return self.recap[name]

    def results(self, task: str | None = None, host: str | None = None) -> list[dict[str, Any]]:
        """Result events (runner_on_ok/failed/skipped/unreachable, items, retries), in order;
        only of a task of this name and of this host, when given."""
        out = []
        for event in self.events:
            if not str(event.get("event", "")).startswith("runner_"):
                continue
            data = event.get("event_data") or {}
            if "res" not in data and event.get("event") != "runner_on_skipped":
                continue
            if task is not None and data.get("task") != task:
                continue
            if host is not None and data.get("host") != host:
                continue
            out.append(event)
        return out

    def changed_tasks(self, host: str | None = None) -> list[str]:
        return [
            str(e["event_data"].get("task"))
            for e in self.results(host=host)
            if e["event"] in ("runner_on_ok", "runner_item_on_ok")
            and (e["event_data"].get("res") or {}).get("changed")
        ]

    def failures(self) -> list[str]:
        """Each failed or unreachable task result: host, task and message (ignored ones
        marked, after the others); a failed loop is the items that failed."""
        found: list[str] = []
        ignored: list[str] = []
        for event in self.events:
            if event.get("event") not in FAILED_EVENTS:
                continue
            data = event.get("event_data") or {}
            res = data.get("res") or {}
            if event.get("event") == "runner_on_failed" and isinstance(res.get("results"), list):
                continue  # a loop's "One or more items failed": its failed items are listed
            message = str(res.get("msg") or res.get("stderr") or res.get("reason") or "").strip()
            line = f"{data.get('host')}: {data.get('task')}: {message[:1500]}"
            (ignored if data.get("ignore_errors") else found).append(line)
        return found + [f"(ignored) {line}" for line in ignored]

    def stdout(self) -> str:
        """Ansible's own text, as it would have printed it (for people, not for checks)."""
        return "\n".join(str(e["stdout"]) for e in self.events if e.get("stdout"))

    def report(self, limit: int = 6) -> str:
        """What the reader of a failed run needs first: the exit code, the failed tasks and
        the recap."""
        failures = self.failures()
        lines = [f"ansible-playbook exit code {self.rc} ({self.status}); {len(failures)} failed"]
        lines += failures[:limit]
        lines.append(render_recap(self.recap))
        return "\n".join(lines)


def run_playbook(
    playbook: Path,
    args: Sequence[str] = (),
    *,
    project_dir: Path,
    inventory: Path | None = None,
    limit: str | None = None,
    env: Mapping[str, str] | None = None,
    on_event: EventHandler | None = None,
    keep_events: bool = True,
    cancel: Callable[[], bool] | None = None,
    timeout: int | None = None,
) -> PlaybookRun:
    """ansible-playbook PLAYBOOK ARGS... in `project_dir` (its ansible.cfg), through
    ansible-runner; values in `args` stay argv elements (quoted for ansible-runner)."""
    private = Path(tempfile.mkdtemp(prefix="miglab-ansible-"))
    run = PlaybookRun(rc=-1, status="unknown")

    def handle(event: dict[str, Any]) -> bool:
        if event.get("event") == "playbook_on_stats":
            data = event.get("event_data") or {}
            run.recap = recap({k: v for k, v in data.items() if isinstance(v, dict)})
        if keep_events:
            run.events.append(event)
        if on_event is not None:
            on_event(event)
        return False  # the caller keeps what it wants; no file per event in the temp dir

    envvars = {
        "ANSIBLE_CONFIG": str(project_dir / "ansible.cfg"),
        "ANSIBLE_NOCOLOR": "1",
        "ANSIBLE_FORCE_COLOR": "0",
        # ansible-runner turns host key checking off unless told otherwise (it sets
        # ANSIBLE_HOST_KEY_CHECKING=False, and Ansible then puts StrictHostKeyChecking=no
        # before the inventory's own ssh options, where ssh takes the first value): on.
        "ANSIBLE_HOST_KEY_CHECKING": "True",
        # this virtualenv's ansible-playbook (ansible-runner looks it up on PATH)
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
        **(env or {}),
    }
    try:
        result = ansible_runner.run(
            private_data_dir=str(private),
            project_dir=str(project_dir),
            playbook=str(playbook if playbook.is_absolute() else project_dir / playbook),
            inventory=str(inventory.resolve()) if inventory else None,
            limit=limit,
            cmdline=shlex.join(args) if args else None,
            envvars=envvars,
            event_handler=handle,
            cancel_callback=cancel or (lambda: False),
            timeout=timeout,
            quiet=True,
        )
        run.rc = int(result.rc) if result.rc is not None else -1
        run.status = str(result.status)
    finally:
        shutil.rmtree(private, ignore_errors=True)
    return run
