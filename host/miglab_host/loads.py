"""Loads a sweep runs under: 'idle' (verified quiet) or a stress-ng load (verified running,
its own throughput measured per cell, stopped and verified gone)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Callable

from miglab_host import procs


class LoadError(RuntimeError):
    """The load is not what the cell needs (host busy, stress-ng missing or dead)."""


def parse_stress_yaml(text: str) -> list[dict]:
    """The 'metrics:' list of a stress-ng --yaml file (flat 'key: value' items)."""
    metrics: list[dict] = []
    in_metrics = False
    for raw in text.splitlines():
        line = raw.rstrip()
        if not line or line.startswith("---") or line.startswith("..."):
            continue
        if not raw.startswith(" "):
            in_metrics = line.startswith("metrics:")
            continue
        if not in_metrics:
            continue
        item = line.strip()
        if item.startswith("- "):
            metrics.append({})
            item = item[2:]
        if ":" in item and metrics:
            key, value = item.split(":", 1)
            value = value.strip().strip("'\"")
            try:
                metrics[-1][key.strip()] = float(value) if "." in value else int(value)
            except ValueError:
                metrics[-1][key.strip()] = value
    return metrics


class IdleLoad:
    """No load; the host must be quiet before the first cell."""

    kind = "idle"

    def __init__(self, name: str, cfg: dict, log: Callable[[str], None]) -> None:
        self.name = name
        self.cfg = cfg
        self.log = log
        self.evidence: dict = {"load": name, "kind": "idle"}

    def start(self) -> dict:
        t0 = time.monotonic_ns()
        try:
            return self._start()
        finally:
            # sampling windows and waiting for quiet: configured time, not runner overhead
            self.evidence["configured_wait_ns"] = time.monotonic_ns() - t0

    def _start(self) -> dict:
        stray = procs.find_by_comm("stress-ng") if self.cfg.get("refuse_stress_ng", True) else []
        if stray:
            raise LoadError(
                f"load {self.name}: the host is not idle: stress-ng is running "
                f"(pids {', '.join(str(p['pid']) for p in stray)})"
            )
        limit = float(self.cfg["max_busy_percent"])
        window = float(self.cfg["sample_seconds"])
        deadline = time.monotonic() + float(self.cfg["wait_seconds"])
        attempts = []
        while True:
            busy = 100.0 * procs.busy_fraction(window)
            attempts.append(round(busy, 2))
            if busy <= limit:
                break
            if time.monotonic() >= deadline:
                top = procs.top_consumers(min(window, 1.0))
                raise LoadError(
                    f"load {self.name}: the host is not quiet: {busy:.1f}% of all CPUs busy "
                    f"over {window:g} s (limit {limit:g}%, waited {self.cfg['wait_seconds']} s); "
                    f"busiest: "
                    + ", ".join(f"{t['comm']}[{t['pid']}] {t['cpu_percent']}%" for t in top)
                )
            self.log(f"load {self.name}: host {busy:.1f}% busy (limit {limit:g}%), waiting")
            time.sleep(min(window, 5.0))
        self.evidence.update(
            {"busy_percent_samples": attempts, "max_busy_percent": limit, "sample_seconds": window}
        )
        return self.evidence

    def check(self) -> None:
        return None

    def begin_cell(self) -> None:
        return None

    def end_cell(self) -> dict:
        return {}

    def stop(self) -> dict:
        return self.evidence


class StressLoad:
    """stress-ng in its own session, killed with the runner (PR_SET_PDEATHSIG)."""

    kind = "stress"

    def __init__(
        self,
        name: str,
        stressors: list[dict],
        cfg: dict,
        stress_ng: str,
        out_dir: str,
        log: Callable[[str], None],
        register_pid: Callable[[int, int, str], None] | None = None,
    ) -> None:
        self.name = name
        self.stressors = stressors
        self.cfg = cfg
        self.stress_ng = stress_ng
        self.out_dir = out_dir
        self.log = log
        self.register_pid = register_pid
        self.proc: subprocess.Popen | None = None
        self.sid: int | None = None
        self.yaml_path = os.path.join(out_dir, f"stress-ng-{name}.yaml")
        self.log_path = os.path.join(out_dir, f"stress-ng-{name}.log")
        self.expected_workers = sum(s["workers"] or procs.online_cpus() for s in stressors)
        self.evidence: dict = {"load": name, "kind": "stress", "stressors": stressors}
        self._cell: tuple[int, int] | None = None

    def argv(self) -> list[str]:
        argv = [self.stress_ng]
        for s in self.stressors:
            argv += [f"--{s['stressor']}", str(s["workers"])]
            for opt, value in s.get("options", {}).items():
                argv += [f"--{opt}", str(value)]
        # timeout 0 = run until stopped; metrics and YAML for the application's throughput
        argv += ["--timeout", "0", "--metrics-brief", "--yaml", self.yaml_path]
        return argv

    def members(self, full_scan: bool = False) -> list[dict]:
        """stress-ng and its workers: its process tree (cheap, per cell) or, to make sure
        nothing is left, every process of its session (a full /proc scan)."""
        if not self.sid:
            return []
        if not full_scan:
            parent = procs.stat(self.sid)
            kids = procs.descendants(self.sid) if parent is not None else []
            if kids is not None:
                return ([parent] if parent is not None else []) + kids
        return procs.session_members(self.sid)

    def start(self) -> dict:
        try:
            version = subprocess.run(
                [self.stress_ng, "--version"],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
            ).stdout.strip()
        except OSError as err:
            raise LoadError(f"load {self.name}: cannot run {self.stress_ng}: {err}") from None
        if os.path.exists(self.yaml_path):
            os.unlink(self.yaml_path)
        argv = self.argv()
        self.evidence.update(
            {"argv": argv, "version": version, "expected_workers": self.expected_workers}
        )
        self.log(f"load {self.name}: starting {' '.join(argv)}")
        logf = open(self.log_path, "ab")  # noqa: SIM115 (kept open for the child)
        try:
            self.proc = subprocess.Popen(
                argv,
                stdin=subprocess.DEVNULL,
                stdout=logf,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                preexec_fn=procs.die_with_parent,
                cwd=self.out_dir,
            )
        finally:
            logf.close()
        self.sid = self.proc.pid
        st = procs.stat(self.proc.pid)
        if self.register_pid and st:
            self.register_pid(self.proc.pid, st["starttime"], "stress-ng")
        self.evidence["pid"] = self.proc.pid
        # verified running: all workers present and the CPUs busy
        deadline = time.monotonic() + max(float(self.cfg["settle_seconds"]), 0.5) + 20
        waited = time.monotonic_ns()
        time.sleep(float(self.cfg["settle_seconds"]))
        waited = time.monotonic_ns() - waited
        while True:
            if self.proc.poll() is not None:
                raise LoadError(
                    f"load {self.name}: stress-ng exited with {self.proc.returncode} "
                    f"right after start (see {self.log_path})"
                )
            workers = len(self.members()) - 1
            if workers >= self.expected_workers:
                break
            if time.monotonic() > deadline:
                raise LoadError(
                    f"load {self.name}: stress-ng runs {workers} of {self.expected_workers} workers"
                )
            time.sleep(0.2)
        t0 = time.monotonic_ns()
        busy = 100.0 * procs.busy_fraction(1.0)
        waited += time.monotonic_ns() - t0
        self.evidence.update({"workers_running": workers, "busy_percent_at_start": round(busy, 2)})
        if busy < float(self.cfg["min_busy_percent"]):
            raise LoadError(
                f"load {self.name}: only {busy:.1f}% of all CPUs busy with stress-ng "
                f"running (expected >= {self.cfg['min_busy_percent']}%)"
            )
        baseline = float(self.cfg["baseline_seconds"])
        if baseline > 0:
            self.begin_cell()
            t0 = time.monotonic_ns()
            time.sleep(baseline)
            waited += time.monotonic_ns() - t0
            self.evidence["baseline"] = self.end_cell()
        # settle, the busy check and the baseline: configured time, not runner overhead
        self.evidence["configured_wait_ns"] = waited
        self.log(
            f"load {self.name}: stress-ng pid {self.proc.pid} running {workers} workers, "
            f"{busy:.0f}% busy"
        )
        return self.evidence

    def check(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            raise LoadError(f"load {self.name}: stress-ng is no longer running")
        workers = len(self.members()) - 1
        if workers < self.expected_workers:
            raise LoadError(
                f"load {self.name}: only {workers} of {self.expected_workers} "
                f"stress-ng workers left"
            )

    def begin_cell(self) -> None:
        self._cell = (time.monotonic_ns(), procs.cpu_ns(self.members()))

    def end_cell(self) -> dict:
        """CPU time the 'application' got during the cell: its cost of the migrations."""
        if self._cell is None:
            return {}
        wall = time.monotonic_ns() - self._cell[0]
        used = procs.cpu_ns(self.members()) - self._cell[1]
        self._cell = None
        cpus = procs.online_cpus()
        return {
            "load_cpu_ns": used,
            "load_wall_ns": wall,
            "load_cpu_share": round(used / (wall * cpus), 4) if wall > 0 else None,
        }

    def stop(self) -> dict:
        """SIGINT (stress-ng reports its metrics), then make sure nothing is left."""
        if self.proc is None:
            return self.evidence
        if self.proc.poll() is None:
            try:
                os.kill(self.proc.pid, signal.SIGINT)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)
        left = [(p["pid"], p["starttime"]) for p in self.members(full_scan=True)]
        survivors = procs.kill_and_verify(left) if left else []
        if survivors:
            raise LoadError(f"load {self.name}: stress-ng processes survive SIGKILL: {survivors}")
        self.evidence["exit_code"] = self.proc.returncode
        self.evidence["stopped_verified"] = True
        if os.path.exists(self.yaml_path):
            with open(self.yaml_path, encoding="utf-8", errors="replace") as f:
                self.evidence["metrics"] = parse_stress_yaml(f.read())
        self.log(f"load {self.name}: stress-ng stopped, no process left")
        self.proc = None
        return self.evidence
