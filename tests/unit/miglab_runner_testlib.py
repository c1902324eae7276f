"""Helpers for the miglab_host / migbench unit tests (not a test module itself).

Puts host/ on sys.path (the host package runs on the hosts from plain files, with their own
python3; the venv has it installed too), builds fake knob trees, compiles migbench, and provides a *fake* migbench
for the resume/duplicate tests (see FAKE_MIGBENCH: the real binary cannot migrate on this
one-node machine; the real check of the same logic is a virtual-lab test).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
RUNNER_DIR = REPO / "host"
MIGBENCH_SRC = REPO / "roles" / "migbench" / "files" / "migbench.c"
SCHEMA_PATH = RUNNER_DIR / "miglab_host" / "results-schema.json"

# no __pycache__ inside host/: tests run the package from there, as a host does
sys.dont_write_bytecode = True
if str(RUNNER_DIR) not in sys.path:
    sys.path.insert(0, str(RUNNER_DIR))


def schema() -> dict:
    return json.loads(SCHEMA_PATH.read_text())


def validator():
    import jsonschema

    cls = jsonschema.validators.validator_for(schema())
    return cls(schema(), format_checker=cls.FORMAT_CHECKER)


def write(root: Path, rel: str, text: str) -> None:
    p = root / rel
    p.parent.mkdir(parents=True, exist_ok=True)
    p.write_text(text if text.endswith("\n") else text + "\n")


def read(root: Path, rel: str) -> str:
    return (root / rel).read_text().strip()


def fake_host_tree(
    root: Path, nodes: int = 2, mthp: tuple[str, ...] = (), pmd_size: int = 2 << 20
) -> Path:
    """A fake /sys + /proc/sys: NUMA nodes, THP (PMD 2M unless given, optional mTHP sizes
    such as "64kB"), numa_balancing."""
    thp = "sys/kernel/mm/transparent_hugepage"
    write(root, f"{thp}/enabled", "always [madvise] never")
    write(root, f"{thp}/defrag", "always defer defer+madvise [madvise] never")
    write(root, f"{thp}/hpage_pmd_size", str(pmd_size))
    for size in mthp:
        write(root, f"{thp}/hugepages-{size}/enabled", "always inherit madvise [never]")
    write(root, "proc/sys/kernel/numa_balancing", "1")
    write(root, "proc/cmdline", "BOOT_IMAGE=/boot/vmlinuz-fake root=/dev/fake ro")
    write(root, "proc/sys/vm/compact_memory", "")
    write(root, "sys/devices/system/node/has_memory", "0" if nodes == 1 else f"0-{nodes - 1}")
    for n in range(nodes):
        write(
            root, f"sys/devices/system/node/node{n}/meminfo", f"Node {n} MemTotal:       4194304 kB"
        )
        write(root, f"sys/devices/system/node/node{n}/cpulist", str(n))
    return root


def add_profile_knobs(root: Path, profile: str) -> None:
    """Knob files of a profile's generation with their kernel defaults."""
    if profile == "mt_sysctl_v1":
        write(root, "proc/sys/vm/use_mt_copy", "0")
        write(root, "proc/sys/vm/limit_mt_num", "4")
        write(root, "proc/sys/vm/push_0_pull_1", "0")
    elif profile == "cpu_mt_v2":
        write(root, "sys/kernel/cpu_mt/offloading", "0")
        write(root, "sys/kernel/cpu_mt/threads", "4")
        write(root, "sys/kernel/cpu_mt/cpuselect", "0")
        write(root, "sys/kernel/dcbm/offloading", "0")
        write(root, "sys/kernel/dcbm/nr_dma_chan", "1")
    elif profile == "dcbm_sysfs_v4":
        for name, value in (
            ("offloading", "0"),
            ("nr_dma_chan", "1"),
            ("folios_migrated", "0"),
            ("folios_failures", "0"),
        ):
            write(root, f"sys/kernel/dcbm/{name}", value)
    elif profile == "dcbm_module_v6":
        for name, value in (
            ("offloading", "N"),
            ("nr_dma_chan", "1"),
            ("reason_mask", "0"),
            ("folios_migrated", "0"),
            ("folios_failures", "0"),
        ):
            write(root, f"sys/module/dcbm/parameters/{name}", value)
    else:
        raise ValueError(profile)


def definition(**over) -> dict:
    d = {
        "run_id": "unit",
        "loads": ["idle"],
        "folio_kinds": ["base", "2M"],
        "page_counts": {"base": [32, 256], "2M": [1, 4]},
        "repetitions": 4,
        "warmup": 1,
        # this machine is shared (other test runs may run stress-ng): never refuse as busy
        "idle": {
            "max_busy_percent": 100,
            "sample_seconds": 0.1,
            "wait_seconds": 0,
            "refuse_stress_ng": False,
        },
        "stress": {"settle_seconds": 0.5, "baseline_seconds": 0, "min_busy_percent": 0},
    }
    d.update(over)
    return d


def compile_migbench(out_dir: Path) -> Path:
    """gcc -O2 the real migbench (as the migbench role does)."""
    gcc = shutil.which("gcc")
    if gcc is None or not Path("/usr/include/numaif.h").exists():
        import pytest

        pytest.skip("gcc or libnuma-dev (numaif.h) not installed")
    out = out_dir / "migbench"
    subprocess.run(
        [
            gcc,
            "-O2",
            "-Wall",
            "-Wextra",
            "-Werror",
            "-pthread",
            '-DMIGBENCH_SOURCE_SHA256="test"',
            "-o",
            str(out),
            str(MIGBENCH_SRC),
            "-lnuma",
        ],
        check=True,
    )
    return out


# A stand-in for the migbench binary, used ONLY by the resume/duplicate/abort tests: on this
# one-node machine the real binary refuses to run (that refusal is tested in
# test_migbench.py). It prints migbench's JSON lines for the requested cell and obeys a
# control file: {"kill_parent_at": <seed>, "signal": "SIGKILL"|"SIGTERM",
# "fail_at": <seed>, "fail": "backing"|"crash", "sleep": <seconds>,
# "mt_counters": "honest"|"ignores_knobs" (report the multi-threaded copy's vmstat counters as
# a kernel with them does, or as one that ignored the knobs), "node_cpus": <CPUs a copy may
# use>, "kernel_log": [<file>, <line appended to it, /dev/kmsg format>]}.
FAKE_MIGBENCH = r"""
import json, os, signal, sys, time

args = sys.argv[1:]
if "--version" in args:
    print(json.dumps({"type": "version", "migbench_version": "fake", "source_sha256": "fake"}))
    sys.exit(0)
opt = {args[i][2:]: args[i + 1] for i in range(0, len(args) - 1) if args[i].startswith("--")
       and not args[i + 1].startswith("--")}
ctl_path = os.environ.get("MIGLAB_FAKE_CONTROL", "")
ctl = json.load(open(ctl_path)) if ctl_path and os.path.exists(ctl_path) else {}
if "--ceiling" in args:
    if ctl.get("ceiling") == "fail":
        print("migbench: ceiling: 3 of 8 pages of the node 1 buffer are not on node 1",
              file=sys.stderr)
        sys.exit(3)
    for t in opt["threads"].split(","):
        for direction in ("push", "pull"):
            for rep in range(int(opt["reps"])):
                print(json.dumps({"type": "ceiling", "direction": direction, "threads": int(t),
                                  "cpus": int(t), "rep": rep, "src_node": int(opt["src"]),
                                  "dst_node": int(opt["dst"]), "bytes": 1 << 20,
                                  "elapsed_ns": 100000 // int(t), "gbps": 10.0 * int(t),
                                  "placement_ok": True, "loopback": False}))
    sys.exit(0)
seed = int(opt["seed"])
kind, count, reps = opt["kind"], int(opt["count"]), int(opt["reps"])
size = 4096 if kind == "base" else int(kind[:-1]) << {"K": 10, "M": 20, "G": 30}[kind[-1]]
knobs = {name: open(os.path.join(ctl.get("sys_root", "/"), "proc/sys/vm", name)).read().strip()
         for name in ("use_mt_copy", "limit_mt_num") if ctl.get("mt_counters")}
mt = knobs.get("use_mt_copy") == "1" and ctl.get("mt_counters") == "honest"
threads = min(int(knobs.get("limit_mt_num", 1)), int(ctl.get("node_cpus", 64)))
if ctl.get("kernel_log"):
    with open(ctl["kernel_log"][0], "a") as log:
        log.write(ctl["kernel_log"][1] + "\n")
src, dst = int(opt["src"]), int(opt["dst"])
time.sleep(float(ctl.get("sleep", 0)))
fail = ctl.get("fail") if ctl.get("fail_at") == seed else None
if fail == "crash":
    print("migbench: simulated crash", file=sys.stderr)
    sys.exit(4)
for rep in range(1 if fail == "backing" else reps):
    ok = fail != "backing"
    moved = count * (size if ok else 4096)
    print(json.dumps({"type": "sample", "rep": rep, "src_node": src, "dst_node": dst,
                      "page_kind": kind, "folio_size": size if ok else 4096,
                      "page_count": count, "bytes": moved, "elapsed_ns": 1000 + rep,
                      "gbps": moved / (1000 + rep), "failed_pages": 0, "backing_ok": ok,
                      "caller_cpu_ns": 500, "system_cpu_ns": 0,
                      "system_cpu_resolution_ns": 10000000, "pgmigrate_success": count,
                      "pgmigrate_fail": 0, "base_page_size": 4096, "warmup_moves": 1,
                      "timestamp": "2026-01-01T00:00:00.000000Z",
                      **({"pgmigrate_mt_batches": int(mt), "pgmigrate_mt_folios": count * mt,
                          "pgmigrate_mt_works": threads * mt, "pgmigrate_mt_fallbacks": 0}
                         if ctl.get("mt_counters") else {})}))
    src, dst = dst, src
sys.stdout.flush()
if ctl.get("kill_parent_at") == seed:
    os.kill(os.getppid(), getattr(signal, ctl.get("signal", "SIGKILL")))
    time.sleep(5)
print(json.dumps({"type": "summary", "ok": fail is None, "pattern_ok": True, "bad_pages": 0}))
sys.exit(3 if fail else 0)
"""


def fake_migbench(dir_: Path) -> Path:
    path = dir_ / "fake-migbench"
    path.write_text(f"#!{sys.executable}\n" + FAKE_MIGBENCH)
    path.chmod(0o755)
    return path


def run_runner(
    plan_path: Path,
    results: Path,
    migbench: Path,
    sys_root: Path,
    control: Path | None = None,
    extra: tuple[str, ...] = (),
    timeout: float = 120,
) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(RUNNER_DIR), PYTHONDONTWRITEBYTECODE="1")
    if control is not None:
        env["MIGLAB_FAKE_CONTROL"] = str(control)
    argv = [
        sys.executable,
        "-m",
        "miglab_host",
        "run",
        "--plan",
        str(plan_path),
        "--results-root",
        str(results),
        "--host",
        "unit-host",
        "--migbench",
        str(migbench),
        "--sys-root",
        str(sys_root),
        "--no-root-check",
        *extra,
    ]
    return subprocess.run(
        argv, capture_output=True, text=True, env=env, timeout=timeout, check=False
    )


def read_jsonl(path: Path) -> list[dict]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
