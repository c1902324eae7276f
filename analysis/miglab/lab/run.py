"""`miglab run`: the lab's main job (playbooks/site.yml, or one stage of it) through
ansible-runner, with a live view, the run's Ansible events kept with its results, and the
run's tables and report at the end.

Exit codes: 0 every host completed; 1 a host failed or was unreachable; 2 bad input (found
by check.yml or here, before any lab host was contacted).
"""

from __future__ import annotations

import json
import shutil
import signal
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO

from miglab.errors import ConfigError, MiglabError
from miglab.lab.ansible import render_recap, run_playbook
from miglab.lab.progress import RunProgress

# A stage is site.yml with these tags (check.yml always runs). Boot and sweep are the same
# loop: each host boots a variant, then sweeps it, then the next.
STAGE_TAGS: dict[str, tuple[str, ...]] = {
    "provision": ("vlab", "provision"),
    "build": ("vlab", "build"),
    "boot": ("vlab", "boot"),
    "sweep": ("vlab", "sweep"),
    "collect": ("vlab", "collect"),
    "summary": ("summary",),
}
STAGES = tuple(STAGE_TAGS)
SITE_PLAYBOOK = Path("playbooks") / "site.yml"
EXIT_OK, EXIT_HOST_FAILED, EXIT_BAD_INPUT = 0, 1, 2


class View(Protocol):
    progress: RunProgress

    def handle(self, event: Mapping[str, Any]) -> None: ...

    def close(self) -> None: ...


@dataclass
class RunOptions:
    project_dir: Path
    stage: str | None = None
    limit: str | None = None
    inventory: Path | None = None
    extra_vars: list[str] = field(default_factory=list)

    def check(self) -> None:
        """Bad input, named before anything runs."""
        if self.stage is not None and self.stage not in STAGE_TAGS:
            raise ConfigError("--stage", f"{self.stage!r} is not one of {', '.join(STAGES)}")
        if not (self.project_dir / SITE_PLAYBOOK).is_file():
            raise ConfigError(
                "--project-dir", f"{self.project_dir} has no {SITE_PLAYBOOK} (a miglab checkout)"
            )
        if self.inventory is not None and not self.inventory.exists():
            raise ConfigError("-i/--inventory", f"{self.inventory} does not exist")
        for value in self.extra_vars:
            if value.startswith("@") and not Path(value[1:]).is_file():
                raise ConfigError("-e", f"{value[1:]} does not exist")

    def argv(self) -> list[str]:
        """ansible-playbook's options. miglab makes the summary itself, after the run."""
        out: list[str] = []
        if self.stage is not None:
            out += ["--tags", ",".join(STAGE_TAGS[self.stage])]
        out += ["--skip-tags", "summary"]
        for value in self.extra_vars:
            out += ["-e", value]
        return out


@dataclass
class RunOutcome:
    exit_code: int
    rc: int
    stats: dict[str, dict[str, int]]
    run_id: str | None
    results_dir: Path | None
    events_file: Path | None
    check_errors: list[str]
    seconds: float


def find_project_dir(start: Path | None = None) -> Path:
    """The miglab checkout: the current directory (or a parent) with playbooks/site.yml,
    else the tree this package was installed from (pip install -e)."""
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / SITE_PLAYBOOK).is_file():
            return candidate
    return Path(__file__).resolve().parents[3]


def run_lab(options: RunOptions, view: View, results_root: Path | None = None) -> RunOutcome:
    """Run the job; every event goes to `view` and into results/<run_id>/ansible/. Ctrl-C
    stops ansible-playbook (what the sweeps left is restored by the hosts' runners)."""
    options.check()
    project = options.project_dir
    results_root = results_root or project / "results"
    started = time.monotonic()
    stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
    spool = Path(tempfile.mkdtemp(prefix="miglab-run-"))
    events_path = spool / "events.jsonl"
    cancelled: dict[str, int | None] = {"signal": None}

    def on_signal(signum: int, _frame: Any) -> None:
        cancelled["signal"] = signum  # ansible-runner stops ansible-playbook at its next check

    previous = signal.signal(signal.SIGINT, on_signal)
    try:
        with events_path.open("w", encoding="utf-8") as events:

            def handle(event: dict[str, Any]) -> None:
                events.write(json.dumps(event, sort_keys=True, default=str) + "\n")
                view.handle(event)

            result = run_playbook(
                SITE_PLAYBOOK,
                options.argv(),
                project_dir=project,
                inventory=options.inventory,
                limit=options.limit,
                on_event=handle,
                keep_events=False,
                cancel=lambda: cancelled["signal"] is not None,
            )
    finally:
        signal.signal(signal.SIGINT, previous)
        view.close()
    progress = view.progress
    run_id = progress.run_id
    results_dir = results_root / run_id if run_id else None
    events_file = None
    if results_dir is not None:
        keep = results_dir / "ansible"
        keep.mkdir(parents=True, exist_ok=True)
        events_file = keep / f"events-{stamp}.jsonl"
        shutil.move(str(events_path), events_file)
        summary = {"rc": result.rc, "status": result.status, "recap": result.recap}
        (keep / f"recap-{stamp}.json").write_text(json.dumps(summary, indent=2) + "\n")
    shutil.rmtree(spool, ignore_errors=True)
    if progress.check_errors:
        code = EXIT_BAD_INPUT
    elif result.rc != 0 or any(c["failed"] or c["unreachable"] for c in result.recap.values()):
        code = EXIT_HOST_FAILED
    else:
        code = EXIT_OK
    return RunOutcome(
        code,
        result.rc,
        result.recap,
        run_id,
        results_dir,
        events_file,
        list(progress.check_errors),
        time.monotonic() - started,
    )


def finish(outcome: RunOutcome, options: RunOptions, out: TextIO) -> int:
    """The end of `miglab run`: the recap, where the results are, the tables and the report
    (its path last)."""
    from miglab.results.commands import summarise

    if outcome.check_errors:
        out.write("miglab run: the run's definition is invalid (no lab host was contacted):\n")
        for error in outcome.check_errors:
            out.write(f"  {error}\n")
        return outcome.exit_code
    out.write(render_recap(outcome.stats) + "\n")
    out.write(f"ansible exit code {outcome.rc}, {outcome.seconds:.0f} s")
    out.write(f"; events in {outcome.events_file}\n" if outcome.events_file else "\n")
    wants_summary = options.stage in (None, "summary")
    has_samples = outcome.results_dir is not None and any(
        outcome.results_dir.glob("*/samples.jsonl")
    )
    if wants_summary and has_samples and outcome.results_dir is not None:
        try:
            out.write("\n" + summarise(outcome.results_dir, skip_bad=True))
        except MiglabError as error:
            out.write(f"miglab run: no summary: {error}\n")
    elif outcome.results_dir is not None:
        out.write(f"results: {outcome.results_dir}\n")
    return outcome.exit_code
