"""The sweep runner: loads x cells of a plan, one migbench process per cell, resumable."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass
from itertools import groupby
from typing import Any, TextIO

from miglab_host import __version__, procs
from miglab_host import facts as factsmod
from miglab_host import plan as planmod
from miglab_host import preflight as preflightmod
from miglab_host.journal import RunDir, append_jsonl, read_json, utc_now, write_json_atomic
from miglab_host.kernel_log import KernelLog
from miglab_host.knobs import KnobError, KnobSession, Restorer, SysTree
from miglab_host.loads import IdleLoad, LoadError, StressLoad
from miglab_host.records import build_record, copy_path_problem, problems
from miglab_host.tuning import HostTuning

EXIT_OK = 0
EXIT_CONFIG = 2  # plan or preflight refused, nothing changed on the host
EXIT_CELLS_FAILED = 3  # some cells failed (or a load could not be kept); rerun redoes them
EXIT_ABORTED = 4  # signal or unexpected error; settings restored, rerun resumes
EXIT_DEADLINE = 5  # stopped cleanly at --deadline-seconds; rerun resumes


class Aborted(Exception):
    pass


@dataclass
class Session:
    """What a run sets up once and cleans up at the end: the records' context, the
    restorers holding the originals, and the reports written beside the samples."""

    context: dict
    knob_restorer: Restorer
    tuning_restorer: Restorer
    knobs_report: dict[str, Any]
    tuning_report: dict[str, Any]
    loads_report: dict[str, Any]
    kernel_log: KernelLog


class DeadlineReached(Exception):
    pass


def boot_id() -> str:
    try:
        with open("/proc/sys/kernel/random/boot_id", encoding="utf-8") as f:
            return f.read().strip()
    except OSError:
        return ""


def restore_from_state(rundir: RunDir, tree: SysTree, log) -> dict:
    """Undo what a runner that died without cleaning up left behind (state.json dirty)."""
    state = read_json(rundir.state)
    report: dict[str, Any] = {"needed": False}
    if not state or not state.get("dirty"):
        return report
    report["needed"] = True
    if state.get("boot_id") != boot_id():
        report["note"] = "host rebooted since: sysctl/sysfs values are back to boot defaults"
    else:
        for group in ("knobs", "tuning"):
            originals = state.get("originals", {}).get(group, {})
            if originals:
                report[group] = Restorer(tree, originals=originals).restore()
        targets = [(p["pid"], p["starttime"]) for p in state.get("pids", [])]
        report["survivors"] = procs.kill_and_verify(targets) if targets else []
    failed = [
        rel
        for group in ("knobs", "tuning")
        for rel, e in report.get(group, {}).items()
        if not e.get("restored")
    ]
    state["dirty"] = bool(failed or report.get("survivors"))
    state["restored_at"] = utc_now()
    state["restore_report"] = report
    write_json_atomic(rundir.state, state)
    log(f"restored what a previous runner left: {json.dumps(report, sort_keys=True)}")
    return report


class Runner:
    def __init__(
        self,
        plan: dict,
        results_root: str,
        host: str,
        migbench: str,
        sys_root: str = "/",
        stress_ng: str = "stress-ng",
        migbench_build: str | None = None,
        deadline_seconds: float | None = None,
        loopback: bool = False,
        retry_failed: bool = True,
        log_stream: TextIO | None = sys.stderr,
        require_root: bool = True,
        token: str | None = None,
        kernel_log: str = "/dev/kmsg",
    ) -> None:
        self.plan = plan
        self.d = plan["definition"]
        self.variant = plan["variant"]
        self.vdef = plan["variant_definition"]
        self.host = host
        self.migbench = migbench
        self.migbench_cgroup: str | None = None  # cgroup v2 directory migbench joins
        self.migbench_build = migbench_build
        self.tree = SysTree(sys_root)
        self.stress_ng = stress_ng
        self.loopback = loopback
        self.retry_failed = retry_failed
        self.require_root = require_root
        self.token = token
        self.kernel_log_path = kernel_log
        self.kernel_log_summary: dict[str, Any] = {}
        self.log_stream = log_stream
        self.rundir = RunDir(results_root, plan["run_id"])
        self.t_start = time.monotonic()
        self.deadline = self.t_start + deadline_seconds if deadline_seconds else None
        self.child: subprocess.Popen | None = None
        self.load: IdleLoad | StressLoad | None = None
        self.stopping = False
        self.state: dict = {}
        self.progress: dict = {}
        self.failed_cells: list[dict] = []
        self.invocation = ""
        self.vdir = ""
        self.totals = {
            "migbench_wall_ns": 0,
            "settle_ns": 0,
            "compact_ns": 0,
            "load_start_ns": 0,
            "load_stop_ns": 0,
            "load_wait_ns": 0,
            "cells_run": 0,
        }

    # -- small helpers -------------------------------------------------------------------
    def log(self, msg: str) -> None:
        line = f"{utc_now()} [{os.getpid()}] {msg}\n"
        try:
            with open(self.rundir.log_path, "a", encoding="utf-8") as f:
                f.write(line)
        except OSError:
            pass
        if self.log_stream:
            self.log_stream.write(line)
            self.log_stream.flush()

    def set_progress(self, **kw: Any) -> None:
        self.progress.update(kw)
        self.progress["seq"] = self.progress.get("seq", 0) + 1
        self.progress["updated_at"] = utc_now()
        self.progress["elapsed_seconds"] = round(time.monotonic() - self.t_start, 1)
        done_now = self.progress.get("cells_run", 0)
        remaining = self.progress.get("total", 0) - self.progress.get("done", 0)
        if done_now and remaining > 0:
            per_cell = (time.monotonic() - self.t_start) / done_now
            self.progress["eta_seconds"] = round(per_cell * remaining)
        else:
            self.progress["eta_seconds"] = None
        # progress is for display only (resume reads the journal): no fsync
        write_json_atomic(self.rundir.progress, self.progress, durable=False)

    def save_state(self) -> None:
        write_json_atomic(self.rundir.state, self.state)

    def _originals_saver(self, group: str):
        def save(originals: dict) -> None:
            self.state.setdefault("originals", {})[group] = originals
            self.state["dirty"] = True
            self.save_state()

        return save

    def _register_pid(self, pid: int, starttime: int, what: str) -> None:
        self.state.setdefault("pids", []).append({"pid": pid, "starttime": starttime, "what": what})
        self.save_state()

    def _on_signal(self, signum: int, _frame: Any) -> None:
        if self.stopping:
            return
        self.stopping = True
        raise Aborted(signal.Signals(signum).name)

    # -- entry point ---------------------------------------------------------------------
    def run(self) -> int:
        self.rundir.create()
        procs.raise_runner_priority()
        for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGHUP):
            signal.signal(sig, self._on_signal)
        try:
            self.rundir.lock(
                on_wait=lambda: self.log(
                    f"another runner (pid {self.rundir.lock_holder()}) holds {self.rundir.path}; "
                    f"waiting for it to finish, then resuming"
                )
            )
        except Aborted:
            return EXIT_ABORTED
        try:
            code, summary = self._run_locked()
        finally:
            self.rundir.unlock()
        print(json.dumps(summary, sort_keys=True), flush=True)
        return code

    def _summary(self, state: str, code: int, message: str = "") -> dict:
        return {
            "state": state,
            "exit_code": code,
            "message": message,
            "run_dir": self.rundir.path,
            "host": self.host,
            "variant": self.variant,
            "done": self.progress.get("done"),
            "total": self.progress.get("total"),
            "failed": len(self.failed_cells),
            "failed_cells": self.failed_cells[:50],
        }

    def _run_locked(self) -> tuple[int, dict]:
        """The run, holding the run directory's lock: resume, set up, the cells, clean up."""
        started_at = self._begin()
        refusal = self._refuse_another_definition()
        if refusal is not None:
            return refusal
        todo = self._resume()
        if not todo:
            self.set_progress(state="finished", message="all cells complete")
            self._record_invocation(started_at, "finished", EXIT_OK)
            return EXIT_OK, self._summary("finished", EXIT_OK, "all cells complete")
        try:
            session = self._set_up()
        except preflightmod.PreflightError as err:
            msg = f"preflight: {err}"
            self.log(msg)
            self.set_progress(state="failed", message=msg)
            self._record_invocation(started_at, "failed", EXIT_CONFIG)
            return EXIT_CONFIG, self._summary("failed", EXIT_CONFIG, msg)
        try:
            state, code, message = self._run_cells(todo, session)
        finally:
            self.stopping = True  # a second signal must not interrupt the cleanup
            cleanup_problems = self._cleanup(session)
        if cleanup_problems:
            message = (message + "; " if message else "") + "; ".join(cleanup_problems)
            if code == EXIT_OK:
                state, code = "incomplete", EXIT_CELLS_FAILED
        self.log(f"{state}: {message or 'all cells complete'}")
        self.set_progress(state=state, message=message, current_cell=None)
        self._record_invocation(started_at, state, code)
        return code, self._summary(state, code, message)

    # -- the steps of a run ----------------------------------------------------------------
    def _begin(self) -> str:
        started_at = utc_now()
        self.invocation = f"{started_at}/{os.getpid()}"
        self.vdir = self.rundir.variant_dir(self.variant)
        self.progress = {
            "run_id": self.plan["run_id"],
            "host": self.host,
            "variant": self.variant,
            "pid": os.getpid(),
            "state": "starting",
            "total": len(self.plan["cells"]),
            "done": 0,
            "failed": 0,
            "cells_run": 0,
            "started_at": started_at,
            "invocation": self.invocation,
            "current_cell": None,
            "message": "",
            "token": self.token,
            "plan_hash": self.plan["plan_hash"],
        }
        return started_at

    def _refuse_another_definition(self) -> tuple[int, dict] | None:
        """Resume only the same definition: a run id and variant started with another plan
        is refused (use a new run id)."""
        plan_path = os.path.join(self.vdir, "plan.json")
        existing = read_json(plan_path)
        if existing and existing.get("plan_hash") != self.plan["plan_hash"]:
            msg = (
                f"{planmod.KEY_PREFIX}run_id: run {self.plan['run_id']!r} of variant "
                f"{self.variant!r} on this host was started with a different sweep "
                f"definition (plan {existing.get('plan_hash', '?')[:12]} vs "
                f"{self.plan['plan_hash'][:12]}); use a new run id"
            )
            self.log(msg)
            self.set_progress(state="failed", message=msg)
            return EXIT_CONFIG, self._summary("failed", EXIT_CONFIG, msg)
        write_json_atomic(plan_path, self.plan)
        return None

    def _resume(self) -> list[dict]:
        """Restore what a killed runner left, then the cells still to run (a rerun resumes:
        done cells are skipped, records of cells about to run are set aside)."""
        cells = self.plan["cells"]
        self.state = read_json(self.rundir.state) or {}
        restore_from_state(self.rundir, self.tree, self.log)
        self.state = read_json(self.rundir.state) or {}
        stray = procs.find_by_exe(self.migbench) if os.path.exists(self.migbench) else []
        if stray:
            left = procs.kill_and_verify([(p["pid"], p["starttime"]) for p in stray])
            self.log(f"killed stray migbench processes {[p['pid'] for p in stray]}; left: {left}")
        states = self.rundir.cell_states()
        todo = []
        for c in cells:
            status = states.get(c["cell_id"], {}).get("status")
            if status == "done" or (status == "failed" and not self.retry_failed):
                continue
            todo.append(c)
        recovery = self.rundir.recover({c["cell_id"] for c in todo}, self.log)
        done = len(cells) - len(todo)
        self.set_progress(done=done, state="preflight", recovery=recovery, skipped_at_start=done)
        self.log(
            f"run {self.plan['run_id']} variant {self.variant}: {len(cells)} cells, "
            f"{done} complete, {len(todo)} to run (runner {__version__})"
        )
        return todo

    def _set_up(self) -> Session:
        """Preflight (read-only; PreflightError if the host cannot run the plan), then what
        the records say about the host, and the restorers that save originals first."""
        pre = preflightmod.preflight(
            self.plan,
            self.tree,
            self.stress_ng,
            require_root=self.require_root,
            loopback=self.loopback,
        )
        write_json_atomic(os.path.join(self.vdir, "preflight.json"), pre)
        facts = factsmod.run_facts(self.tree.root)
        write_json_atomic(os.path.join(self.vdir, "host.json"), facts)
        identity = factsmod.migbench_identity(self.migbench, self.migbench_build)
        write_json_atomic(os.path.join(self.vdir, "migbench.json"), identity)
        context = {
            "run_id": self.plan["run_id"],
            "host": self.host,
            "arch": facts["arch"],
            "kernel_release": facts["kernel_release"],
            "kernel_variant": self.variant,
            "kernel_build_hash": self.d["kernel_build_hash"],
            "workqueue": self.vdef["workqueue"],
            "knob_profile": pre["knob_profile"],
            "migbench_sha256": identity.get("version", {}).get("source_sha256"),
            "sweep_name": self.d["name"],
            "base_page_size": facts["base_page_size"],
        }
        self.state.update(
            {
                "boot_id": boot_id(),
                "dirty": True,
                "runner_pid": os.getpid(),
                "sys_root": self.tree.root,
                "pids": [],
                "originals": {"knobs": {}, "tuning": {}},
            }
        )
        self.save_state()
        # Only on the real host: a fake tree (tests) has no cgroups to give migbench.
        if self.tree.root == "/":
            self.migbench_cgroup = procs.migbench_cgroup(procs.cgroup2_mount())
        kernel_log = KernelLog(self.kernel_log_path)
        kernel_log.open()  # from here on: what the kernel prints during this variant's sweep
        return Session(
            context=context,
            knob_restorer=Restorer(self.tree, self._originals_saver("knobs")),
            tuning_restorer=Restorer(self.tree, self._originals_saver("tuning")),
            knobs_report={
                "profile": pre["knob_profile"],
                "requested": self.vdef["profile"],
                "matches": pre["knob_profile_matches"],
                "params": self.vdef["knob_params"],
            },
            tuning_report={"settings": self.d["tuning"]},
            loads_report=read_json(os.path.join(self.vdir, "loads.json"), {}) or {},
            kernel_log=kernel_log,
        )

    def _run_cells(self, todo: list[dict], session: Session) -> tuple[str, int, str]:
        """Tuning and knobs applied, then load by load, cell by cell; (state, code, message)."""
        state, code, message = "finished", EXIT_OK, ""
        self.set_progress(state="running")
        try:
            tuning = HostTuning(self.tree, session.tuning_restorer, self.d["tuning"])
            session.tuning_report["before"] = tuning.snapshot()
            session.tuning_report["applied"] = tuning.apply_global()
            knobs = KnobSession.open(
                self.tree, self.vdef["profile"], session.knob_restorer, self.vdef["knob_params"]
            )
            session.knobs_report["before"] = knobs.snapshot()
            for load_name, group in groupby(todo, key=lambda c: c["load"]):
                self._check_deadline()
                self.load = self._make_load(load_name, self.vdir)
                t0 = time.monotonic_ns()
                evidence = self.load.start()
                self.totals["load_start_ns"] += time.monotonic_ns() - t0
                self.totals["load_wait_ns"] += evidence.get("configured_wait_ns", 0)
                session.loads_report[load_name] = evidence
                self._measure_ceiling(load_name, session.context)
                for cell in group:
                    self._check_deadline()
                    self._run_cell(cell, knobs, tuning, session.context)
                t0 = time.monotonic_ns()
                session.loads_report[load_name] = self.load.stop()
                self.totals["load_stop_ns"] += time.monotonic_ns() - t0
                self.load = None
            if self.failed_cells:
                state, code = "incomplete", EXIT_CELLS_FAILED
                message = f"{len(self.failed_cells)} cells failed; a rerun redoes them"
        except DeadlineReached:
            state, code, message = "deadline", EXIT_DEADLINE, "deadline reached; rerun resumes"
        except Aborted as err:
            state, code, message = "aborted", EXIT_ABORTED, f"aborted by {err}; rerun resumes"
        except LoadError as err:
            state, code, message = "incomplete", EXIT_CELLS_FAILED, str(err)
        except KnobError as err:
            state, code, message = "failed", EXIT_CONFIG, f"knobs: {err}"
        except Exception as err:  # noqa: BLE001 - reported, then settings restored
            state, code = "aborted", EXIT_ABORTED
            message = f"unexpected error: {type(err).__name__}: {err}"
        return state, code, message

    # -- pieces ----------------------------------------------------------------------------
    def _measure_ceiling(self, load: str, context: dict) -> None:
        """The user-space copy ceiling under this load, once per variant and load (a rerun
        keeps a good one): variants/<v>/ceiling-<load>.json. A failure is recorded there and
        logged; the cells still run."""
        settings = self.d["ceiling"]
        path = os.path.join(self.vdir, f"ceiling-{load}.json")
        if not settings["enabled"] or (read_json(path, {}) or {}).get("ok"):
            return
        threads = planmod.ceiling_threads(self.vdef["copy_configs"])
        argv = [
            self.migbench,
            "--ceiling",
            "--src",
            str(self.d["src_node"]),
            "--dst",
            str(self.d["dst_node"]),
            "--threads",
            ",".join(str(t) for t in threads),
            "--size-mib",
            str(settings["size_mib"]),
            "--reps",
            str(settings["repetitions"]),
        ]
        if self.loopback:
            argv.append("--loopback-test")
        t0 = time.monotonic_ns()
        result = subprocess.run(
            argv,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=self.d["cell_timeout_seconds"],
            preexec_fn=procs.die_with_parent,
            check=False,
        )
        measurements = []
        for line in result.stdout.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                continue
            if isinstance(obj, dict) and obj.get("type") == "ceiling":
                measurements.append(obj)
        ok = result.returncode == 0 and bool(measurements)
        report = {
            "schema": "miglab.ceiling/1",
            **{k: context.get(k) for k in ("run_id", "host", "kernel_variant", "kernel_release")},
            "load": load,
            "ok": ok,
            "error": None if ok else (result.stderr.strip() or f"exit {result.returncode}"),
            "threads": threads,
            "size_mib": settings["size_mib"],
            "measured_at": utc_now(),
            "wall_ns": time.monotonic_ns() - t0,
            "migbench_argv": argv,
            "measurements": measurements,
        }
        write_json_atomic(path, report)
        best = max((m["gbps"] for m in measurements), default=0.0)
        self.log(
            f"ceiling under {load}: {len(measurements)} measurements, best {best:.2f} GB/s"
            if ok
            else f"ceiling under {load} failed: {report['error']}"
        )

    def _check_deadline(self) -> None:
        if self.deadline and time.monotonic() >= self.deadline:
            raise DeadlineReached()

    def _make_load(self, name: str, vdir: str) -> IdleLoad | StressLoad:
        if name == "idle":
            return IdleLoad(name, self.d["idle"], self.log)
        return StressLoad(
            name,
            self.d["stress_loads"][name],
            self.d["stress"],
            self.stress_ng,
            vdir,
            self.log,
            self._register_pid,
        )

    def _cleanup(self, session: Session) -> list[str]:
        """Stop migbench and the load, restore knobs and tuning, write the variant's reports;
        the problems found (an empty list when all is back)."""
        vdir = self.vdir
        knob_restorer, tuning_restorer = session.knob_restorer, session.tuning_restorer
        knobs_report, tuning_report = session.knobs_report, session.tuning_report
        loads_report = session.loads_report
        out = []
        if self.child is not None:
            self.child.kill()
            try:
                self.child.wait(timeout=30)
            except subprocess.TimeoutExpired:
                out.append(f"migbench pid {self.child.pid} did not die")
            self.child = None
        if self.load is not None:
            try:
                loads_report[self.load.name] = self.load.stop()
            except LoadError as err:
                out.append(str(err))
            self.load = None
        procs.remove_cgroup(self.migbench_cgroup)
        knobs_report["restore"] = knob_restorer.restore()
        tuning_report["restore"] = tuning_restorer.restore()
        for group, report in (
            ("knob", knobs_report["restore"]),
            ("tuning", tuning_report["restore"]),
        ):
            for rel, entry in report.items():
                if not entry.get("restored"):
                    out.append(f"{group} /{rel} not restored: {entry.get('error')}")
        log_report = session.kernel_log.read()
        write_json_atomic(os.path.join(vdir, "kernel-log.json"), log_report.to_dict())
        self.kernel_log_summary = {
            "problems": len(log_report.problems),
            "notes": len(log_report.notes),
            "available": log_report.available,
        }
        if log_report.problems:
            self.log(f"kernel log problems: {log_report.problems[:5]}")
            out.append(
                f"the kernel log has {len(log_report.problems)} problem line(s) during the sweep "
                f"(variants/{self.variant}/kernel-log.json), e.g. {log_report.problems[0]!r}"
            )
        knobs_report["originals"] = dict(knob_restorer.originals)
        tuning_report["originals"] = dict(tuning_restorer.originals)
        # Read once more after the restore, so the record shows the values the host was left with.
        for report, restorer in ((knobs_report, knob_restorer), (tuning_report, tuning_restorer)):
            report["after"] = {
                rel: self.tree.read_value(rel) if self.tree.exists(rel) else None
                for rel in restorer.originals
            }
        write_json_atomic(os.path.join(vdir, "knobs.json"), knobs_report)
        write_json_atomic(os.path.join(vdir, "tuning.json"), tuning_report)
        write_json_atomic(os.path.join(vdir, "loads.json"), loads_report)
        self._write_run_meta(knobs_report, tuning_report, loads_report, vdir)
        survivors = procs.kill_and_verify(
            [(p["pid"], p["starttime"]) for p in self.state.get("pids", [])]
        )
        if survivors:
            out.append(f"processes survive SIGKILL: {survivors}")
        self.state["dirty"] = bool(out)
        self.state["cleaned_at"] = utc_now()
        self.save_state()
        return out

    def _write_run_meta(
        self, knobs_report: dict, tuning_report: dict, loads_report: dict, vdir: str
    ) -> None:
        """run-meta.json beside samples.jsonl: what the analysis report shows per variant."""
        path = os.path.join(self.rundir.path, "run-meta.json")
        meta = read_json(path, {}) or {}
        host = read_json(os.path.join(vdir, "host.json"), {}) or {}
        migbench = read_json(os.path.join(vdir, "migbench.json"), {}) or {}
        meta.setdefault("run_id", self.plan["run_id"])
        meta.setdefault("host", self.host)
        meta.setdefault("variants", {})[self.variant] = {
            "kernel_release": host.get("kernel_release"),
            "kernel_cmdline": host.get("kernel_cmdline"),
            "kernel_config_sha256": (host.get("kernel_config") or {}).get("sha256"),
            "workqueue": self.vdef["workqueue"],
            "kernel_build_hash": self.d["kernel_build_hash"],
            "knob_profile": knobs_report.get("profile"),
            "knob_params": knobs_report.get("params"),
            "knobs_before": knobs_report.get("before"),
            "tuning_applied": tuning_report.get("applied"),
            "stress_ng": {
                name: {k: ev.get(k) for k in ("argv", "version", "busy_percent_at_start")}
                for name, ev in loads_report.items()
                if isinstance(ev, dict) and ev.get("kind") == "stress"
            },
            "migbench": {
                "source_sha256": (migbench.get("version") or {}).get("source_sha256"),
                "binary_sha256": migbench.get("binary_sha256"),
                "compiler": (migbench.get("build") or {}).get("compiler"),
            },
            "plan_hash": self.plan["plan_hash"],
            "seed": self.plan["seed"],
            "kernel_log": self.kernel_log_summary,
        }
        write_json_atomic(path, meta)

    def _record_invocation(self, started_at: str, state: str, code: int) -> None:
        append_jsonl(
            self.rundir.runs,
            [
                {
                    "invocation": self.invocation,
                    "pid": os.getpid(),
                    "variant": self.variant,
                    "host": self.host,
                    "started_at": started_at,
                    "ended_at": utc_now(),
                    "wall_ns": int((time.monotonic() - self.t_start) * 1e9),
                    "state": state,
                    "exit_code": code,
                    "cells_failed": len(self.failed_cells),
                    **self.totals,
                    "configured_settle_seconds": self.d["settle_seconds"],
                }
            ],
        )

    def _migbench_argv(self, cell: dict) -> list[str]:
        argv = [
            self.migbench,
            "--kind",
            cell["page_kind"],
            "--count",
            str(cell["page_count"]),
            "--src",
            str(self.d["src_node"]),
            "--dst",
            str(self.d["dst_node"]),
            "--reps",
            str(self.d["repetitions"]),
            "--warmup",
            str(self.d["warmup"]),
            "--seed",
            str(cell["index"] + 1),
        ]
        if self.migbench_cgroup:
            argv += ["--cgroup", self.migbench_cgroup]
        if self.loopback:
            argv.append("--loopback-test")
        return argv

    def _run_migbench(self, cell: dict) -> dict:
        argv = self._migbench_argv(cell)
        t0 = time.monotonic_ns()
        self.child = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=procs.die_with_parent,
        )
        timed_out = False
        try:
            out, err = self.child.communicate(timeout=self.d["cell_timeout_seconds"])
        except subprocess.TimeoutExpired:
            self.child.kill()
            out, err = self.child.communicate()
            timed_out = True
        wall = time.monotonic_ns() - t0
        rc = self.child.returncode
        self.child = None
        samples, errors, summary, garbage = [], [], None, 0
        for line in out.splitlines():
            try:
                obj = json.loads(line)
            except ValueError:
                garbage += 1
                continue
            kind = obj.get("type") if isinstance(obj, dict) else None
            if kind == "sample":
                samples.append(obj)
            elif kind == "summary":
                summary = obj
            elif kind == "error":
                errors.append(obj)
            else:
                garbage += 1
        return {
            "argv": argv,
            "rc": rc,
            "wall_ns": wall,
            "timed_out": timed_out,
            "samples": samples,
            "summary": summary,
            "errors": errors,
            "garbage_lines": garbage,
            "stderr": err[-2000:],
        }

    def _evaluate(self, res: dict, cell: dict) -> str | None:
        """Why a cell failed (None if it did not): the most specific reason first."""
        reps = self.d["repetitions"]
        if res["timed_out"]:
            return f"migbench timed out after {self.d['cell_timeout_seconds']} s"
        for s in res["samples"]:
            if not s.get("backing_ok"):
                return f"backing check failed: {s.get('backing_detail')}"
            if s.get("failed_pages"):
                return f"{s['failed_pages']} folios not on node {s.get('dst_node')}"
        if res["rc"] != 0:
            why = (
                res["errors"][0]["message"]
                if res["errors"]
                else res["stderr"].strip()[-300:] or "no message"
            )
            return f"migbench exit {res['rc']}: {why}"
        if res["summary"] is None:
            return "migbench printed no summary"
        if not res["summary"].get("pattern_ok", False):
            return f"pattern check failed in {res['summary'].get('bad_pages')} pages"
        if len(res["samples"]) != reps:
            return f"migbench printed {len(res['samples'])} samples, expected {reps}"
        if res["garbage_lines"]:
            return f"{res['garbage_lines']} unparseable lines from migbench"
        return copy_path_problem(cell["copy_config"], res["samples"])

    def _run_cell(self, cell: dict, knobs: KnobSession, tuning: HostTuning, context: dict) -> None:
        t_cell = time.monotonic_ns()
        self.set_progress(current_cell=cell["cell_id"])
        entry: dict[str, Any] = {
            "cell_id": cell["cell_id"],
            "index": cell["index"],
            "invocation": self.invocation,
            "variant": self.variant,
            "load": cell["load"],
            "copy_config": cell["copy_config"],
            "page_kind": cell["page_kind"],
            "page_count": cell["page_count"],
            "started_at": utc_now(),
        }
        timing = {"knob_ns": 0, "compact_ns": 0, "settle_ns": 0, "migbench_wall_ns": 0}
        error = None
        res: dict[str, Any] = {"samples": [], "summary": None}
        assert self.load is not None
        self.load.check()  # a dead stress-ng aborts the load (LoadError)
        t0 = time.monotonic_ns()
        try:
            entry["thp"] = tuning.prepare_kind(planmod.kind_bytes(cell["page_kind"]))
            entry["knobs"] = knobs.apply(cell["copy_config"])
        except KnobError as err:
            error = f"knobs: {err}"
        timing["knob_ns"] = time.monotonic_ns() - t0
        load_error = None
        if error is None:
            if self.d["tuning"]["compact_before_cell"] and cell["page_kind"] != "base":
                timing["compact_ns"] = tuning.compact()
            if self.d["settle_seconds"]:
                t0 = time.monotonic_ns()
                time.sleep(self.d["settle_seconds"])
                timing["settle_ns"] = time.monotonic_ns() - t0
            entry["counters_before"] = knobs.counters()
            cpu0 = procs.system_cpu()
            self.load.begin_cell()
            res = self._run_migbench(cell)
            entry["load_metrics"] = self.load.end_cell()
            cpu1 = procs.system_cpu()
            entry["counters_after"] = knobs.counters()
            entry["cpu_busy_fraction"] = (
                round((cpu1[0] - cpu0[0]) / (cpu1[1] - cpu0[1]), 4) if cpu1[1] > cpu0[1] else None
            )
            timing["migbench_wall_ns"] = res["wall_ns"]
            entry.update(
                {
                    "migbench_rc": res["rc"],
                    "migbench_argv": res["argv"],
                    "migbench_summary": res["summary"],
                    "migbench_errors": res["errors"],
                    "migbench_stderr": res["stderr"],
                }
            )
            error = self._evaluate(res, cell)
            try:
                self.load.check()
            except LoadError as err:
                load_error = err
                error = error or f"load changed during the cell: {err}"
        status = "done" if error is None else "failed"
        pattern_ok = (res["summary"] or {}).get("pattern_ok")
        records = [
            build_record(s, context, cell, "ok" if status == "done" else "failed", pattern_ok)
            for s in res["samples"]
        ]
        # the load's cost of this cell (the application's CPU share), on every record
        share = (entry.get("load_metrics") or {}).get("load_cpu_share")
        baseline = (getattr(self.load, "evidence", {}).get("baseline") or {}).get("load_cpu_share")
        for rec in records:
            rec["load_cpu_share"] = share
            rec["load_cpu_share_baseline"] = baseline
        for rec in records:
            bad = problems(rec)
            if bad and error is None:
                status, error = "failed", f"record invalid: {', '.join(bad)}"
        if status == "failed":
            for rec in records:
                rec["cell_status"] = "failed"
        entry.update(
            {
                "status": status,
                "error": error,
                "samples": len(records),
                **timing,
                "ended_at": utc_now(),
                "cell_wall_ns": time.monotonic_ns() - t_cell,
            }
        )
        self.rundir.commit_cell(records, entry)
        for k in ("migbench_wall_ns", "settle_ns", "compact_ns"):
            self.totals[k] += timing[k]
        self.totals["cells_run"] += 1
        if status == "failed":
            self.failed_cells.append({"cell_id": cell["cell_id"], "error": error})
            self.log(f"cell {cell['cell_id']} FAILED: {error}")
        self.set_progress(
            done=self.progress["done"] + (status == "done"),
            failed=len(self.failed_cells),
            cells_run=self.totals["cells_run"],
            current_cell=None,
        )
        if load_error is not None:
            raise load_error
