"""What a lab run is doing, from its Ansible events (ansible-runner's event dicts).

`RunProgress.feed(event)` keeps, per host, the kernel variant it is on, the stage (from the
role of the task: provision, build, boot, sweep, collect, restore), the sweep's cells done /
total and ETA (the sweep runner's status JSON, which the sweep role's polling task prints
and which each `runner_retry` event carries), and the failures; and, lab-wide, every kernel
build that finished with its duration (the build tool's JSON answer). It only reads the
structure of the results, never Ansible's human-readable output.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

# The first play of every entry point (playbooks/check.yml): a failure there is bad input,
# found before any lab host was contacted.
CHECK_PLAY = "Check the lab's definition on the controller (no lab host is contacted)"

# Stage of a task, by the role it belongs to (kernel_boot's restore files: "restore").
# The stage a role's tasks show. Roles that serve several stages (host_package, shipped by
# provisioning, the sweep and collect; lab_variant, the loop itself) leave it as it is.
ROLE_STAGES = {
    "vlab": "vlab",
    "lab_host": "provision",
    "kernel_build": "build",
    "kernel_boot": "boot",
    "migbench": "sweep",
    "sweep": "sweep",
    "collect": "collect",
}
RESTORE_TASK_FILES = ("/roles/kernel_boot/tasks/restore.yml", "/roles/kernel_boot/tasks/return.yml")
RESULT_EVENTS = {
    "runner_on_ok",
    "runner_on_failed",
    "runner_on_unreachable",
    "runner_retry",
    "runner_item_on_ok",
    "runner_item_on_failed",
}
FAILED_EVENTS = {"runner_on_failed", "runner_on_unreachable", "runner_item_on_failed"}


@dataclass
class SweepProgress:
    done: int
    total: int
    failed: int
    state: str
    eta_seconds: float | None
    current_cell: str | None

    @property
    def fraction(self) -> float:
        return self.done / self.total if self.total else 0.0


@dataclass
class HostState:
    name: str
    variant: str = ""
    stage: str = ""
    task: str = ""
    sweep: SweepProgress | None = None
    variants_done: list[str] = field(default_factory=list)
    failures: list[str] = field(default_factory=list)
    last_error: str = ""
    unreachable: bool = False


@dataclass(frozen=True)
class BuildDone:
    variant: str
    arch: str
    kernel_release: str
    seconds: float
    how: str  # built, hash (found by its build hash), memo (inputs unchanged)

    def line(self) -> str:
        if self.how == "built":
            return f"build: {self.variant} ({self.arch}) {self.kernel_release} built in {self.seconds:.0f} s"
        return f"build: {self.variant} ({self.arch}) {self.kernel_release} cached ({self.seconds:.1f} s)"


def _json_line(text: Any) -> dict[str, Any] | None:
    """The last line of a command's stdout that is a JSON object, or None."""
    if not isinstance(text, str):
        return None
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                value = json.loads(line)
            except ValueError:
                return None
            return value if isinstance(value, dict) else None
    return None


def stage_of(event_data: dict[str, Any]) -> str:
    path = str(event_data.get("task_path") or "")
    if any(marker in path for marker in RESTORE_TASK_FILES):
        return "restore"
    role = str(event_data.get("role") or "")
    return ROLE_STAGES.get(role, "")


class RunProgress:
    """The state of a run, event by event. `changes` lists what the last event changed."""

    def __init__(self) -> None:
        self.hosts: dict[str, HostState] = {}
        self.builds: list[BuildDone] = []
        self.run_id: str | None = None
        self.check_errors: list[str] = []
        self.changes: list[str] = []

    def host(self, name: str) -> HostState:
        if name not in self.hosts:
            self.hosts[name] = HostState(name)
        return self.hosts[name]

    def feed(self, event: dict[str, Any]) -> list[str]:
        """Take one event; return the hosts (or "build") whose state it changed."""
        self.changes = []
        kind = str(event.get("event", ""))
        data = event.get("event_data") or {}
        if kind not in RESULT_EVENTS and kind != "runner_on_start":
            return self.changes
        if str(data.get("task_action", "")).endswith("validate_argument_spec"):
            return self.changes  # role argument checks run (on the controller) for every role
        host_name = data.get("host")
        if not host_name or data.get("play") == CHECK_PLAY:
            # the check play runs on the controller for every host: no host's stage
            if kind in RESULT_EVENTS:
                self._result(None, kind, data)
            return self.changes
        host = self.host(str(host_name))
        stage = stage_of(data)
        if kind == "runner_on_start":
            if stage and stage != host.stage:
                host.stage = stage
                self.changes.append(host.name)
            host.task = str(data.get("task") or "")
            return self.changes
        self._result(host, kind, data)
        return self.changes

    def _result(self, host: HostState | None, kind: str, data: dict[str, Any]) -> None:
        res = data.get("res") or {}
        if not isinstance(res, dict):
            return
        facts = res.get("ansible_facts") or {}
        plan = facts.get("sweep__plan") if isinstance(facts, dict) else None
        if isinstance(plan, dict) and plan.get("run_id") and not self.run_id:
            self.run_id = str(plan["run_id"])
        answer = _json_line(res.get("stdout"))
        if answer and {"build_hash", "kernel_release", "seconds"} <= set(answer):
            build = BuildDone(
                str(answer.get("variant", "?")),
                str(answer.get("arch", "?")),
                str(answer["kernel_release"]),
                float(answer["seconds"]),
                str(answer.get("how", "built" if answer.get("built") else "hash")),
            )
            if build not in self.builds:
                self.builds.append(build)
                self.changes.append("build")
        if data.get("play") == CHECK_PLAY and kind in FAILED_EVENTS:
            errors = res.get("errors")
            if not (isinstance(errors, list) and errors):
                text = str(res.get("msg") or res.get("stderr") or "failed").strip()
                errors = text.splitlines()  # the check's verdict: one problem a line
            for message in map(str, errors):
                if message not in self.check_errors:
                    self.check_errors.append(message)
            return
        if host is None:
            return
        current = facts.get("lab_variant_current") if isinstance(facts, dict) else None
        if isinstance(current, dict) and current.get("name"):
            if host.variant and host.variant != current["name"]:
                host.variants_done.append(host.variant)
            host.variant = str(current["name"])
            host.sweep = None
            self.changes.append(host.name)
        failures = facts.get("lab_variant_failures") if isinstance(facts, dict) else None
        if isinstance(failures, list) and len(failures) > len(host.failures):
            host.failures = [f"{f.get('variant')}: {f.get('message')}" for f in failures]
            self.changes.append(host.name)
        if answer and {"done", "total", "state"} <= set(answer) and "run_dir" in answer:
            if answer.get("variant") and host.variant and answer["variant"] != host.variant:
                return  # an earlier variant's runner, seen before the new one started
            if not answer["total"] and answer["state"] == "absent":
                return  # asked before this variant's runner has started: nothing to show
            sweep = SweepProgress(
                int(answer["done"]),
                int(answer["total"]),
                int(answer.get("failed") or 0),
                str(answer["state"]),
                answer.get("eta_seconds"),
                answer.get("current_cell"),
            )
            if sweep != host.sweep:
                host.sweep = sweep
                self.changes.append(host.name)
        if kind == "runner_on_unreachable":
            host.unreachable = True
            host.last_error = str(res.get("msg") or "unreachable")[:300]
            self.changes.append(host.name)
        elif kind in FAILED_EVENTS and not data.get("ignore_errors"):
            # shown as it happens; whether the host failed (or a rescue took it) is the recap's
            host.last_error = str(res.get("msg") or res.get("stderr") or "failed").strip()[:300]
            self.changes.append(host.name)
