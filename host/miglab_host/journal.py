"""The run directory on a host: append-only, fsynced files that make a rerun resume exactly.

Layout of ``<results_root>/<run_id>/``:

  samples.jsonl      the records (miglab.sample/2), all variants; the analysis input
  cells.jsonl        journal + timing log: one line per finished cell (status done|failed)
  runs.jsonl         one line per runner invocation (wall time, cells run)
  superseded.jsonl   records moved out of samples.jsonl because their cell is redone
  progress.json      live progress (atomic rewrite), read by ``status``
  state.json         what to restore (original knob/tuning values, child pids) while dirty
  runner.log         human-readable log
  runner.lock        flock held by the running runner
  variants/<name>/   plan.json, preflight.json, host.json, knobs.json, tuning.json,
                     loads.json, migbench.json, stress-ng-<load>.{yaml,log}

Write order for a cell: its records (fsync), then its journal line (fsync). A cell counts as
complete only with a 'done' journal line; on restart, records of any other cell that is about
to run are moved to superseded.jsonl, and torn lines are dropped. So a kill at any point
leaves no duplicate and loses nothing.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import time
from collections.abc import Callable, Iterable
from typing import Any


def utc_now() -> str:
    t = time.time()
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t)) + f".{int(t % 1 * 1e6):06d}Z"


def fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_json_atomic(path: str, obj: Any, durable: bool = True) -> None:
    """Replace a JSON file atomically; ``durable`` also fsyncs (not needed for progress)."""
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
        f.write("\n")
        if durable:
            f.flush()
            os.fsync(f.fileno())
    os.replace(tmp, path)
    if durable:
        fsync_dir(os.path.dirname(path) or ".")


def read_json(path: str, default: Any = None) -> Any:
    try:
        with open(path, encoding="utf-8") as f:
            return json.load(f)
    except (OSError, ValueError):
        return default


def read_jsonl(path: str) -> tuple[list[dict], int]:
    """Complete JSON-object lines of a file, and how many lines were torn or invalid."""
    good: list[dict] = []
    bad = 0
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            data = f.read()
    except FileNotFoundError:
        return good, 0
    lines = data.split("\n")
    if lines and lines[-1] == "":
        lines.pop()
    elif lines:
        lines.pop()  # no trailing newline: the last line was torn by a kill
        bad += 1
    for line in lines:
        try:
            obj = json.loads(line)
        except ValueError:
            bad += 1
            continue
        if isinstance(obj, dict):
            good.append(obj)
        else:
            bad += 1
    return good, bad


def append_jsonl(path: str, objs: Iterable[dict]) -> None:
    data = "".join(json.dumps(o, sort_keys=True, separators=(",", ":")) + "\n" for o in objs)
    if not data:
        return
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        view = memoryview(data.encode("utf-8"))
        while view:
            n = os.write(fd, view)
            view = view[n:]
        os.fsync(fd)
    finally:
        os.close(fd)


def rewrite_jsonl(path: str, objs: Iterable[dict]) -> None:
    tmp = f"{path}.tmp.{os.getpid()}"
    with open(tmp, "w", encoding="utf-8") as f:
        for o in objs:
            f.write(json.dumps(o, sort_keys=True, separators=(",", ":")) + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)
    fsync_dir(os.path.dirname(path) or ".")


class RunDir:
    def __init__(self, root: str, run_id: str) -> None:
        self.root = root
        self.run_id = run_id
        self.path = os.path.join(root, run_id)
        self.samples = os.path.join(self.path, "samples.jsonl")
        self.cells = os.path.join(self.path, "cells.jsonl")
        self.runs = os.path.join(self.path, "runs.jsonl")
        self.superseded = os.path.join(self.path, "superseded.jsonl")
        self.progress = os.path.join(self.path, "progress.json")
        self.state = os.path.join(self.path, "state.json")
        self.log_path = os.path.join(self.path, "runner.log")
        self.lock_path = os.path.join(self.path, "runner.lock")
        self._lock_fd: int | None = None

    @classmethod
    def at(cls, path: str) -> RunDir:
        path = os.path.abspath(path)
        return cls(os.path.dirname(path), os.path.basename(path))

    def variant_dir(self, variant: str) -> str:
        d = os.path.join(self.path, "variants", variant)
        os.makedirs(d, exist_ok=True)
        return d

    def create(self) -> None:
        os.makedirs(self.path, exist_ok=True)

    # -- locking -----------------------------------------------------------------------
    def lock(self, on_wait: Callable[[], None] | None = None) -> None:
        """Hold the run's lock; if another runner holds it, wait for it to finish."""
        fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError as err:
            if err.errno not in (errno.EAGAIN, errno.EACCES):
                raise
            if on_wait:
                on_wait()
            fcntl.flock(fd, fcntl.LOCK_EX)
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._lock_fd = fd

    def unlock(self) -> None:
        if self._lock_fd is not None:
            fcntl.flock(self._lock_fd, fcntl.LOCK_UN)
            os.close(self._lock_fd)
            self._lock_fd = None

    def runner_alive(self) -> bool:
        """True while some process holds the run's lock."""
        try:
            fd = os.open(self.lock_path, os.O_RDWR)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return True
        else:
            fcntl.flock(fd, fcntl.LOCK_UN)
            return False
        finally:
            os.close(fd)

    def lock_holder(self) -> int | None:
        try:
            with open(self.lock_path, encoding="utf-8") as f:
                return int(f.read().strip() or 0) or None
        except (OSError, ValueError):
            return None

    # -- journal -------------------------------------------------------------------------
    def cell_states(self) -> dict[str, dict]:
        """Last journal entry of every cell."""
        entries, _ = read_jsonl(self.cells)
        states: dict[str, dict] = {}
        for e in entries:
            if "cell_id" in e:
                states[e["cell_id"]] = e
        return states

    def done_cells(self) -> set[str]:
        return {cid for cid, e in self.cell_states().items() if e.get("status") == "done"}

    def recover(self, redo: set[str], log: Callable[[str], None]) -> dict:
        """Make the files consistent before cells in ``redo`` run (again).

        Torn lines are dropped; records of cells in ``redo`` and records of cells that never
        got a journal line (a kill between the two writes) go to superseded.jsonl; duplicate
        (cell_id, rep) records of a completed cell are reduced to the first.
        """
        report = {
            "torn_journal_lines": 0,
            "torn_sample_lines": 0,
            "superseded": 0,
            "duplicates_dropped": 0,
        }
        journal, bad_j = read_jsonl(self.cells)
        if bad_j:
            rewrite_jsonl(self.cells, journal)
            report["torn_journal_lines"] = bad_j
        states = self.cell_states()
        samples, bad_s = read_jsonl(self.samples)
        keep, move, seen = [], [], set()
        for rec in samples:
            cid = str(rec.get("cell_id"))
            state = states.get(cid, {}).get("status")
            key = (cid, rec.get("rep"), rec.get("kernel_variant"))
            if cid in redo or state is None:
                move.append(rec)
            elif key in seen:
                report["duplicates_dropped"] += 1
            else:
                seen.add(key)
                keep.append(rec)
        if move:
            stamp = utc_now()
            append_jsonl(self.superseded, [dict(r, superseded_at=stamp) for r in move])
            report["superseded"] = len(move)
        if bad_s or move or report["duplicates_dropped"]:
            rewrite_jsonl(self.samples, keep)
            report["torn_sample_lines"] = bad_s
        if any(report.values()):
            log(f"recovered run directory: {report}")
        return report

    def commit_cell(self, records: list[dict], entry: dict) -> None:
        append_jsonl(self.samples, records)
        append_jsonl(self.cells, [entry])
