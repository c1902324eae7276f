"""What `miglab run` shows while the lab works: per host its variant, stage and sweep progress
(a bar of cells done / total with an ETA), a line per finished kernel build, and the recap.

`LiveView` redraws a table in a terminal (rich); `LogView` prints a line whenever a host's
state changes, for logs and pipes (and the unit tests, which replay a recorded stream).
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from typing import Any, TextIO

from rich.console import Console, Group
from rich.live import Live
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from miglab.lab.progress import HostState, RunProgress


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "?"
    seconds = int(round(seconds))
    if seconds < 60:
        return f"{seconds}s"
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes}m{seconds:02d}s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m"


def host_line(host: HostState) -> str:
    """One line of a host's state, as the log view prints it."""
    parts = [host.name + ":"]
    if host.variant:
        parts.append(f"variant {host.variant}")
    if host.stage:
        parts.append(host.stage)
    sweep = host.sweep
    if sweep is not None and host.stage == "sweep":
        parts.append(f"{sweep.done}/{sweep.total} cells")
        if sweep.failed:
            parts.append(f"{sweep.failed} failed")
        if sweep.state == "running" and sweep.eta_seconds is not None:
            parts.append(f"ETA {duration(sweep.eta_seconds)}")
        elif sweep.state != "running":
            parts.append(sweep.state)
    if host.unreachable:
        parts.append("UNREACHABLE")
    if host.failures:
        parts.append(f"{len(host.failures)} variant(s) failed")
    return " ".join(parts)


class LogView:
    """Prints what changed, a line at a time; sweep progress about every 5% of a variant."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream
        self.progress = RunProgress()
        self._shown_builds = 0
        self._last: dict[str, str] = {}
        self._last_done: dict[str, tuple[str, int]] = {}

    def handle(self, event: Mapping[str, Any]) -> None:
        for name in self.progress.feed(dict(event)):
            if name == "build":
                for build in self.progress.builds[self._shown_builds :]:
                    self._print(build.line())
                self._shown_builds = len(self.progress.builds)
                continue
            host = self.progress.hosts[name]
            if not self._worth_a_line(host):
                continue
            line = host_line(host)
            if self._last.get(name) != line:
                self._last[name] = line
                self._print(line)

    def _worth_a_line(self, host: HostState) -> bool:
        sweep = host.sweep
        if sweep is None or host.stage != "sweep" or sweep.state != "running":
            return True
        step = max(1, sweep.total // 20)
        last_variant, last_done = self._last_done.get(host.name, ("", -step))
        if last_variant == host.variant and sweep.done - last_done < step and sweep.done != 0:
            return False
        self._last_done[host.name] = (host.variant, sweep.done)
        return True

    def _print(self, line: str) -> None:
        self.stream.write(line + "\n")
        self.stream.flush()

    def close(self) -> None:
        return None


def status_table(progress: RunProgress, started: float) -> Group:
    """The live view: builds so far, then one row per host with a progress bar."""
    rows: list[Any] = [Text(build.line()) for build in progress.builds]
    table = Table(box=None, show_header=True, header_style="bold", pad_edge=False)
    for column in ("host", "variant", "stage", "sweep", "cells", "status"):
        table.add_column(column)
    for host in progress.hosts.values():
        sweep = host.sweep if host.stage == "sweep" else None
        bar: Any = (
            ProgressBar(total=max(sweep.total, 1), completed=sweep.done, width=24) if sweep else ""
        )
        cells = f"{sweep.done}/{sweep.total}" if sweep else ""
        if host.unreachable:
            status = "UNREACHABLE"
        elif sweep and sweep.state == "running":
            status = f"ETA {duration(sweep.eta_seconds)}"
        elif sweep:
            status = sweep.state
        else:
            status = host.task[:48]
        if host.failures:
            status = f"{status}  ({len(host.failures)} variant(s) failed)"
        table.add_row(host.name, host.variant, host.stage, bar, cells, status)
    rows.append(table)
    rows.append(Text(f"elapsed {duration(time.monotonic() - started)}", style="dim"))
    return Group(*rows)


class LiveView:
    """A table redrawn in place while the run goes on (a terminal)."""

    def __init__(self, console: Console) -> None:
        self.progress = RunProgress()
        self.started = time.monotonic()
        self.live = Live(
            status_table(self.progress, self.started), console=console, refresh_per_second=2
        )
        self.live.start()

    def handle(self, event: Mapping[str, Any]) -> None:
        if self.progress.feed(dict(event)):
            self.live.update(status_table(self.progress, self.started))

    def close(self) -> None:
        self.live.update(status_table(self.progress, self.started))
        self.live.stop()


def replay(events: Iterable[Mapping[str, Any]], stream: TextIO) -> RunProgress:
    """Feed a recorded event stream to a LogView (what the unit tests check)."""
    view = LogView(stream)
    for event in events:
        view.handle(event)
    return view.progress
