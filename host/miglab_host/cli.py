"""Command line: ``python3 -m miglab_host {facts,plan,preflight,run,status,stop,restore,
manifest,kbuild,pack}``.

Exit codes of the sweep commands: 0 ok, 2 refused (bad definition/plan, host cannot run it;
nothing changed), 3 cells failed, 4 aborted, 5 deadline reached (see runner.py). manifest:
0 ok, 1 mismatch, 3 a runner is running. kbuild: 0 built or cached, 2 build error, 3 bug.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from collections.abc import Sequence

from miglab_host import __version__, kbuild, manifest, names, pack
from miglab_host import facts as factsmod
from miglab_host import plan as planmod
from miglab_host import preflight as preflightmod
from miglab_host.journal import RunDir, read_json
from miglab_host.knobs import SysTree
from miglab_host.runner import EXIT_CONFIG, Aborted, Runner, restore_from_state


def _read_json_arg(path: str) -> object:
    text = sys.stdin.read() if path == "-" else open(path, encoding="utf-8").read()
    try:
        return json.loads(text)
    except ValueError as err:
        raise planmod.PlanError(
            f"{planmod.KEY_PREFIX}definition", f"not valid JSON: {err}"
        ) from None


def cmd_facts(args: argparse.Namespace) -> int:
    json.dump(factsmod.gather(args.root), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


def cmd_names(args: argparse.Namespace) -> int:
    """Check KEY=VALUE pairs against the name patterns; every problem, each naming its key."""
    errors = []
    for pair, is_message_id in [(p, False) for p in args.names] + [
        (p, True) for p in args.message_ids
    ]:
        key, sep, value = pair.partition("=")
        if not sep:
            raise planmod.PlanError(pair, "expected KEY=VALUE")
        what = key.rsplit(".", 1)[-1].replace("_", " ")
        problem = (
            names.message_id_problem(value) if is_message_id else names.name_problem(value, what)
        )
        if problem:
            errors.append(f"{key}: {problem}")
    print(json.dumps({"ok": not errors, "errors": errors}))
    for error in errors:
        print(f"miglab_host: {error}", file=sys.stderr)
    return EXIT_CONFIG if errors else 0


def cmd_manifest(args: argparse.Namespace) -> int:
    if args.verify:
        if not args.dir:
            raise planmod.PlanError("--dir", "manifest --verify needs --dir")
        if args.unpack:
            code, answer = manifest.unpack(args.unpack, args.dir)
        else:
            code, answer = manifest.verify(args.dir)
    else:
        if not args.run_dir:
            raise planmod.PlanError("--run-dir", "manifest needs --run-dir (or --verify --dir)")
        code, answer = manifest.write(
            args.run_dir, args.lab_facts, args.allow_running, args.archive
        )
    print(json.dumps(answer, sort_keys=True))
    return code


def cmd_pack(_args: argparse.Namespace) -> int:
    print(pack.archive_path())
    return 0


def cmd_plan(args: argparse.Namespace) -> int:
    plan = planmod.expand(_read_json_arg(args.definition))
    text = json.dumps(plan, sort_keys=True, indent=None if args.compact else 2)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    else:
        print(text)
    loads = plan["definition"]["loads"]
    print(
        f"plan: run {plan['run_id']} variant {plan['variant']}: {len(plan['cells'])} cells "
        f"({len(loads)} loads), {plan['definition']['repetitions']} samples each, "
        f"order {plan['definition']['order']} seed {plan['seed']}",
        file=sys.stderr,
    )
    return 0


def cmd_preflight(args: argparse.Namespace) -> int:
    plan = planmod.load_plan(_read_json_arg(args.plan))
    report = preflightmod.preflight(
        plan,
        SysTree(args.sys_root),
        args.stress_ng,
        require_root=not args.no_root_check,
        loopback=args.test_loopback,
    )
    if args.run_dir:
        # what `status` says, in the same call: the role decides from it whether to start
        report["run"] = status_of(_rundir(args))
    print(json.dumps(report, sort_keys=True))
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    plan = planmod.load_plan(_read_json_arg(args.plan))
    runner = Runner(
        plan,
        args.results_root,
        args.host,
        args.migbench,
        sys_root=args.sys_root,
        stress_ng=args.stress_ng,
        migbench_build=args.migbench_build,
        deadline_seconds=args.deadline_seconds,
        loopback=args.test_loopback,
        retry_failed=not args.no_retry_failed,
        require_root=not args.no_root_check,
        token=args.token,
        kernel_log=args.kernel_log,
    )
    return runner.run()


def _rundir(args: argparse.Namespace) -> RunDir:
    return RunDir.at(args.run_dir)


def job_finished(results_file: str | None) -> bool | None:
    """Whether an Ansible async job has finished, from its results file (None: unknown)."""
    if not results_file:
        return None
    try:
        with open(results_file, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return False  # being written
    return "started" not in data or bool(data.get("finished"))


def plan_status(rundir: RunDir, plan_path: str) -> dict:
    """How much of one plan (one variant's cells) the run's journal has done; a variant
    whose plan is complete needs neither a boot nor a runner."""
    plan = _read_json_arg(plan_path) if plan_path == "-" else read_json(plan_path)
    if not isinstance(plan, dict) or not isinstance(plan.get("cells"), list):
        raise planmod.PlanError("--plan", f"{plan_path} is not a plan")
    states = rundir.cell_states() if os.path.isdir(rundir.path) else {}
    cells = [c["cell_id"] for c in plan["cells"]]
    done = sum(1 for c in cells if states.get(c, {}).get("status") == "done")
    return {
        "plan_variant": plan.get("variant"),
        "plan_done": done,
        "plan_total": len(cells),
        "plan_complete": done == len(cells),
    }


def status_of(rundir: RunDir, results_file: str | None = None) -> dict:
    progress = read_json(rundir.progress)
    alive = rundir.runner_alive()
    finished = job_finished(results_file)
    if progress is None:
        return {
            "state": "waiting" if alive else "absent",
            "done": 0,
            "total": 0,
            "failed": 0,
            "runner_alive": alive,
            "run_dir": rundir.path,
            "token": None,
            "job_finished": finished,
        }
    out = dict(progress)
    out.setdefault("token", None)
    out["job_finished"] = finished
    out["runner_alive"] = alive
    if not alive and out.get("state") in ("starting", "preflight", "running"):
        out["state"] = "dead"
        out["message"] = f"runner pid {out.get('pid')} is gone without finishing; rerun to resume"
    out["run_dir"] = rundir.path
    return out


def cmd_status(args: argparse.Namespace) -> int:
    rundir = _rundir(args)
    status = status_of(rundir, args.job_file)
    if args.plan:
        status.update(plan_status(rundir, args.plan))
    print(json.dumps(status, sort_keys=True))
    return 0


def cmd_stop(args: argparse.Namespace) -> int:
    rundir = _rundir(args)
    if not os.path.isdir(rundir.path):
        print(json.dumps({"was_running": False, "dirty": False, "run_dir": rundir.path}))
        return 0
    result = {"was_running": rundir.runner_alive(), "run_dir": rundir.path}
    if result["was_running"]:
        pid = rundir.lock_holder()
        result["pid"] = pid
        if pid:
            os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + args.timeout
        while rundir.runner_alive() and time.monotonic() < deadline:
            time.sleep(0.5)
        result["stopped"] = not rundir.runner_alive()
    if not rundir.runner_alive():
        rundir.lock()
        try:
            result["restore"] = restore_from_state(
                rundir, SysTree(args.sys_root), lambda m: print(m, file=sys.stderr)
            )
        finally:
            rundir.unlock()
    state = read_json(rundir.state) or {}
    result["dirty"] = bool(state.get("dirty"))
    print(json.dumps(result, sort_keys=True))
    return 0 if not result["dirty"] and result.get("stopped", True) else 1


def cmd_restore(args: argparse.Namespace) -> int:
    rundir = _rundir(args)
    if not os.path.isdir(rundir.path):
        print(json.dumps({"restore": {"needed": False}, "dirty": False}))
        return 0
    if rundir.runner_alive():
        print(
            f"miglab_host: a runner (pid {rundir.lock_holder()}) is running in "
            f"{rundir.path}; use 'stop'",
            file=sys.stderr,
        )
        return 1
    rundir.lock()
    try:
        report = restore_from_state(
            rundir, SysTree(args.sys_root), lambda m: print(m, file=sys.stderr)
        )
    finally:
        rundir.unlock()
    state = read_json(rundir.state) or {}
    print(json.dumps({"restore": report, "dirty": bool(state.get("dirty"))}, sort_keys=True))
    return 1 if state.get("dirty") else 0


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python3 -m miglab_host", description="miglab sweep runner (stdlib only)"
    )
    p.add_argument("--version", action="version", version=f"miglab_host {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("facts", help="print this host's lab facts (miglab.labfacts/1 JSON)")
    s.add_argument("root", nargs="?", default="/", help="root of /sys and /proc (tests)")
    s.set_defaults(func=cmd_facts)

    s = sub.add_parser("names", help="check names that become paths or arguments (KEY=VALUE)")
    s.add_argument("names", nargs="*", metavar="KEY=VALUE", help="path-component names")
    s.add_argument("--message-id", dest="message_ids", action="append", default=[],
                   metavar="KEY=VALUE", help="a Message-ID")  # fmt: skip
    s.set_defaults(func=cmd_names)

    s = sub.add_parser("manifest", help="write (on the host) or verify (at home) SHA256SUMS")
    s.add_argument("--run-dir", help="the run directory to write SHA256SUMS of")
    s.add_argument("--lab-facts", help="copy this lab facts file into the run first")
    s.add_argument("--allow-running", action="store_true", help="even while a runner writes")
    s.add_argument("--verify", action="store_true", help="verify a fetched run (with --dir)")
    s.add_argument("--archive", help="also write the run as this tar (one transfer home)")
    s.add_argument("--dir", help="the fetched run directory to verify")
    s.add_argument("--unpack", metavar="ARCHIVE", help="first write the archive's files in --dir")
    s.set_defaults(func=cmd_manifest)

    s = sub.add_parser("kbuild", help="build (or plan) one kernel build spec")
    kbuild.add_arguments(s)
    s.set_defaults(func=kbuild.command)

    s = sub.add_parser("pack", help="pack this package into a reproducible tar (controller)")
    s.set_defaults(func=cmd_pack)

    s = sub.add_parser("plan", help="validate a sweep definition and expand it into a plan")
    s.add_argument("--definition", default="-", help="JSON file, '-' for stdin")
    s.add_argument("--out", help="write the plan here instead of stdout")
    s.add_argument("--compact", action="store_true")
    s.set_defaults(func=cmd_plan)

    def host_opts(s: argparse.ArgumentParser) -> None:
        s.add_argument("--sys-root", default="/", help="root of /proc/sys and /sys (tests)")
        s.add_argument("--stress-ng", default="stress-ng")
        s.add_argument("--no-root-check", action="store_true", help=argparse.SUPPRESS)
        s.add_argument(
            "--test-loopback",
            action="store_true",
            help="TEST ONLY: migbench --loopback-test on a one-node machine",
        )

    s = sub.add_parser("preflight", help="read-only checks of a plan against this host")
    s.add_argument("--plan", required=True)
    s.add_argument("--run-dir", help="also report this run's status (as `status` does)")
    host_opts(s)
    s.set_defaults(func=cmd_preflight)

    s = sub.add_parser("run", help="run (or resume) a plan on this host")
    s.add_argument("--plan", required=True)
    s.add_argument("--results-root", required=True)
    s.add_argument("--host", required=True, help="inventory hostname for the records")
    s.add_argument("--migbench", required=True)
    s.add_argument("--migbench-build", help="build identity JSON written by the migbench role")
    s.add_argument(
        "--deadline-seconds", type=float, help="stop cleanly (settings restored) after this long"
    )
    s.add_argument(
        "--no-retry-failed",
        action="store_true",
        help="skip cells that failed before instead of redoing them",
    )
    s.add_argument("--token", help="identifies this invocation in progress.json (Ansible)")
    s.add_argument(
        "--kernel-log", default="/dev/kmsg", help="the kernel log checked after the sweep"
    )
    host_opts(s)
    s.set_defaults(func=cmd_run)

    for name, func, text in (
        ("status", cmd_status, "progress of a run (JSON)"),
        ("stop", cmd_stop, "stop a running runner and restore settings"),
        ("restore", cmd_restore, "restore what a killed runner left"),
    ):
        s = sub.add_parser(name, help=text)
        s.add_argument("--run-dir", required=True)
        if name == "status":
            s.add_argument("--job-file", help="results file of the Ansible async job")
            s.add_argument("--plan", help="also say how much of this plan is done")
        else:
            s.add_argument("--sys-root", default="/")
        if name == "stop":
            s.add_argument("--timeout", type=float, default=120)
        s.set_defaults(func=func)
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except (planmod.PlanError, preflightmod.PreflightError) as err:
        print(f"miglab_host: {err}", file=sys.stderr)
        return EXIT_CONFIG
    except Aborted as err:
        print(f"miglab_host: aborted by {err}", file=sys.stderr)
        return 4
    except OSError as err:
        print(f"miglab_host: {err}", file=sys.stderr)
        return 1
