#!/usr/bin/env python3
"""Samples per minute: the thread author's protocol vs miglab's, same cells, same host.

- author: one process per run, one move_pages() sample per process (fresh allocation,
  node 0 -> node 1), `sleep 5` after every run; each cell `--reps` times.
- miglab: the sweep runner, one migbench process per cell (warm-up moves, then `--reps`
  samples moving back and forth), with its idle check, knobs, tuning and journal.

Both use the host's migbench (built by the migbench role, with its backing checks, so the
comparison is of the protocols, not of the checks) and the runner shipped by the sweep role
(`ansible-playbook playbooks/sweep.yml` once makes both available). The measurement runs on
the host itself (a stdlib payload sent over the transport), so SSH/Ansible latency is not
part of the figures. Transports:

    .venv/bin/python bench/bench_protocols.py --ansible vnode1 [-i inventory/vlab/hosts.yml]
    .venv/bin/python bench/bench_protocols.py --ssh "ssh -p 10022 -i .vlab/id_ed25519 miglab@127.0.0.1"
    .venv/bin/python bench/bench_protocols.py --local --loopback --sleep 0.5   # this machine

Cells: --cells "base:32,256;2M:1,8" (default), --reps 10, --sleep 5 (the author's).
--local --loopback uses the repo's migbench (compiled to a temp dir), the repo's runner, a
fake knob tree and migbench --loopback-test (this machine has one NUMA node): a check of the
script itself, not a result.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

PAYLOAD = r"""
import argparse, json, os, subprocess, sys, tempfile, time

p = argparse.ArgumentParser()
p.add_argument("--migbench", required=True)
p.add_argument("--runner-dir", required=True)
p.add_argument("--cells", required=True)
p.add_argument("--reps", type=int, default=10)
p.add_argument("--warmup", type=int, default=2)
p.add_argument("--sleep", type=float, default=5.0)
p.add_argument("--src", type=int, default=0)
p.add_argument("--dst", type=int, default=1)
p.add_argument("--sys-root", default="/")
p.add_argument("--idle-max", type=float, default=25.0)
p.add_argument("--loopback", action="store_true")
p.add_argument("--only", choices=["author", "miglab"])
a = p.parse_args()

cells = []
for part in a.cells.split(";"):
    kind, counts = part.split(":")
    cells += [(kind, int(n)) for n in counts.split(",")]
loop = ["--loopback-test"] if a.loopback else []
result = {"cells": len(cells), "reps": a.reps, "sleep": a.sleep, "host": os.uname().nodename,
          "kernel": os.uname().release}

def author():
    good = bad = 0
    t0 = time.monotonic()
    for kind, count in cells:
        for _ in range(a.reps):
            r = subprocess.run([a.migbench, "--kind", kind, "--count", str(count), "--src",
                                str(a.src), "--dst", str(a.dst), "--reps", "1", "--warmup", "0"]
                               + loop, capture_output=True, text=True)
            for line in r.stdout.splitlines():
                s = json.loads(line)
                if s.get("type") == "sample":
                    ok = r.returncode == 0 and s["backing_ok"] and not s["failed_pages"]
                    good, bad = good + ok, bad + (not ok)
            time.sleep(a.sleep)
    wall = time.monotonic() - t0
    return {"samples": good, "bad_samples": bad, "wall_s": round(wall, 2),
            "processes": len(cells) * a.reps, "samples_per_min": round(60 * good / wall, 2)}

def miglab():
    sys.path.insert(0, a.runner_dir)
    from miglab_host.plan import expand
    kinds = []
    for kind, _ in cells:
        if kind not in kinds:
            kinds.append(kind)
    d = {"run_id": "bench-protocols-%d" % int(time.time()), "loads": ["idle"],
         "folio_kinds": kinds,
         "page_counts": {k: [n for kk, n in cells if kk == k] for k in kinds},
         "repetitions": a.reps, "warmup": a.warmup, "src_node": a.src, "dst_node": a.dst,
         "idle": {"max_busy_percent": a.idle_max, "sample_seconds": 1, "wait_seconds": 120}}
    with tempfile.TemporaryDirectory(prefix="miglab-bench-") as tmp:
        plan = expand(d)
        with open(os.path.join(tmp, "plan.json"), "w") as f:
            json.dump(plan, f)
        argv = [sys.executable, "-m", "miglab_host", "run", "--plan",
                os.path.join(tmp, "plan.json"), "--results-root", tmp, "--host", "bench",
                "--migbench", a.migbench, "--sys-root", a.sys_root] + (
                    ["--test-loopback"] if a.loopback else [])
        t0 = time.monotonic()
        r = subprocess.run(argv, cwd=a.runner_dir, capture_output=True, text=True)
        wall = time.monotonic() - t0
        path = os.path.join(tmp, plan["run_id"], "samples.jsonl")
        recs = [json.loads(x) for x in open(path)] if os.path.exists(path) else []
    good = sum(1 for x in recs if x["cell_status"] == "ok")
    return {"samples": good, "bad_samples": len(recs) - good, "wall_s": round(wall, 2),
            "processes": len(cells), "exit_code": r.returncode,
            "samples_per_min": round(60 * good / wall, 2),
            "stderr_tail": r.stderr[-500:] if r.returncode else ""}

if a.only != "miglab":
    result["author"] = author()
if a.only != "author":
    result["miglab"] = miglab()
print(json.dumps(result))
"""


def payload_args(args: argparse.Namespace, migbench: str, runner_dir: str, sys_root: str) -> list:
    out = [
        "--migbench",
        migbench,
        "--runner-dir",
        runner_dir,
        "--cells",
        args.cells,
        "--reps",
        str(args.reps),
        "--warmup",
        str(args.warmup),
        "--sleep",
        str(args.sleep),
        "--sys-root",
        sys_root,
        "--idle-max",
        str(args.idle_max),
    ]
    if args.loopback:
        out.append("--loopback")
    if args.only:
        out += ["--only", args.only]
    return out


def run_ssh(args: argparse.Namespace) -> str:
    remote = ["python3", "-", *payload_args(args, args.migbench, args.runner_dir, "/")]
    if args.sudo:
        remote = ["sudo", "-n", *remote]
    cmd = shlex.split(args.ssh) + [" ".join(shlex.quote(x) for x in remote)]
    r = subprocess.run(cmd, input=PAYLOAD, capture_output=True, text=True, check=False)
    if r.returncode != 0:
        raise SystemExit(f"ssh payload failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def run_ansible(args: argparse.Namespace) -> str:
    """`ansible HOST -m ansible.builtin.script`; the result comes back through the tree
    callback (one JSON file per host), the only machine-readable one in ansible.builtin."""
    with tempfile.TemporaryDirectory(prefix="miglab-protocols-") as tmp:
        script = os.path.join(tmp, "payload.py")
        Path(script).write_text(PAYLOAD)
        cmd = " ".join(
            shlex.quote(x)
            for x in [script, *payload_args(args, args.migbench, args.runner_dir, "/")]
        )
        tree = os.path.join(tmp, "tree")
        env = dict(
            os.environ,
            ANSIBLE_LOAD_CALLBACK_PLUGINS="1",
            ANSIBLE_CALLBACKS_ENABLED="ansible.builtin.tree",
            ANSIBLE_CALLBACK_TREE_DIR=tree,
        )
        r = subprocess.run(
            [
                str(REPO / ".venv/bin/ansible"),
                args.ansible,
                "-i",
                args.inventory,
                "-b",
                "-m",
                "ansible.builtin.script",
                "-a",
                json.dumps({"cmd": cmd, "executable": args.python}),
            ],
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            check=False,
        )
        try:
            host = json.loads(Path(tree, args.ansible).read_text())
        except (OSError, ValueError):
            raise SystemExit(
                f"ansible failed ({r.returncode}): {r.stdout[-2000:]}{r.stderr[-2000:]}"
            ) from None
    if host.get("rc", 1) != 0:
        why = host.get("stderr") or host.get("msg") or host.get("stdout") or json.dumps(host)
        raise SystemExit(f"payload failed on {args.ansible}: {why[-2000:]}")
    return host["stdout"]


def run_local(args: argparse.Namespace) -> str:
    with tempfile.TemporaryDirectory(prefix="miglab-protocols-") as tmp:
        migbench = args.migbench
        sys_root = "/"
        runner_dir = args.runner_dir
        if args.loopback:
            migbench = os.path.join(tmp, "migbench")
            subprocess.run(
                [
                    "gcc",
                    "-O2",
                    "-o",
                    migbench,
                    str(REPO / "roles/migbench/files/migbench.c"),
                    "-lnuma",
                ],
                check=True,
            )
            runner_dir = str(REPO / "host")
            sys_root = os.path.join(tmp, "root")
            for rel, text in (
                ("sys/kernel/mm/transparent_hugepage/enabled", "always [madvise] never"),
                ("sys/kernel/mm/transparent_hugepage/defrag", "always defer [madvise] never"),
                ("sys/kernel/mm/transparent_hugepage/hpage_pmd_size", "2097152"),
                ("proc/sys/kernel/numa_balancing", "1"),
                ("sys/devices/system/node/has_memory", "0"),
                ("sys/devices/system/node/node0/meminfo", "Node 0 MemTotal: 4194304 kB"),
            ):
                path = Path(sys_root) / rel
                path.parent.mkdir(parents=True, exist_ok=True)
                path.write_text(text + "\n")
        env = dict(os.environ, PYTHONDONTWRITEBYTECODE="1")
        r = subprocess.run(
            ["/usr/bin/python3", "-", *payload_args(args, migbench, runner_dir, sys_root)],
            input=PAYLOAD,
            capture_output=True,
            text=True,
            env=env,
            check=False,
        )
    if r.returncode != 0:
        raise SystemExit(f"payload failed ({r.returncode}): {r.stderr[-2000:]}")
    return r.stdout


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    how = p.add_mutually_exclusive_group(required=True)
    how.add_argument("--ansible", metavar="HOST", help="inventory host, via `ansible -m script`")
    how.add_argument("--ssh", metavar="CMD", help="ssh command line reaching the host")
    how.add_argument("--local", action="store_true", help="this machine")
    p.add_argument("-i", "--inventory", default="inventory/vlab/hosts.yml")
    p.add_argument("--cells", default="base:32,256;2M:1,8", help="kind:counts;kind:counts")
    p.add_argument("--reps", type=int, default=10)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--sleep", type=float, default=5.0, help="the author's pause between runs")
    p.add_argument("--idle-max", type=float, default=25.0, help="miglab's idle check limit (%%)")
    p.add_argument("--only", choices=["author", "miglab"])
    p.add_argument("--migbench", default="/opt/miglab/migbench/bin/migbench")
    p.add_argument("--runner-dir", default="/opt/miglab/host", help="the host package dir")
    p.add_argument("--python", default="/usr/bin/python3", help="python3 on the host")
    p.add_argument("--no-sudo", dest="sudo", action="store_false", help="ssh as root already")
    p.add_argument(
        "--loopback",
        action="store_true",
        help="TEST ONLY: migbench --loopback-test (one-node machine, no migration)",
    )
    p.add_argument("--json", action="store_true")
    args = p.parse_args()
    out = run_ansible(args) if args.ansible else run_ssh(args) if args.ssh else run_local(args)
    result = json.loads(out.strip().splitlines()[-1])
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(
        f"host {result['host']} ({result['kernel']}): {result['cells']} cells x "
        f"{result['reps']} samples; author's sleep {result['sleep']} s"
    )
    print(
        f"  {'protocol':10} {'samples':>8} {'bad':>5} {'processes':>9} {'wall s':>9} "
        f"{'samples/min':>12}"
    )
    for name in ("author", "miglab"):
        if name in result:
            r = result[name]
            print(
                f"  {name:10} {r['samples']:>8} {r['bad_samples']:>5} {r['processes']:>9} "
                f"{r['wall_s']:>9.1f} {r['samples_per_min']:>12.1f}"
            )
    if "author" in result and "miglab" in result and result["author"]["samples_per_min"]:
        ratio = result["miglab"]["samples_per_min"] / result["author"]["samples_per_min"]
        print(f"  miglab collects {ratio:.1f}x the samples per minute")
    if result.get("miglab", {}).get("exit_code"):
        print(
            f"  miglab runner exit {result['miglab']['exit_code']}: "
            f"{result['miglab']['stderr_tail']}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
