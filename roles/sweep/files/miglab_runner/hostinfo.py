"""What the host is (recorded next to the samples) and whether it can run a plan (preflight).

Preflight only reads; it runs before anything on the host is changed, and every problem
names the inventory key it comes from.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import platform
import re
import shutil
import subprocess
import sys
from typing import Any

from miglab_runner import plan as planmod
from miglab_runner.knobs import KnobError, KnobSession, Restorer, SysTree, detect_profile
from miglab_runner.tuning import THP, offered_sizes

CONFIG_OPTIONS = (
    "CONFIG_NUMA",
    "CONFIG_MIGRATION",
    "CONFIG_TRANSPARENT_HUGEPAGE",
    "CONFIG_TRANSPARENT_HUGEPAGE_MADVISE",
    "CONFIG_NUMA_BALANCING",
    "CONFIG_ARM64_64K_PAGES",
    "CONFIG_OFFC_MIGRATION",
    "CONFIG_MTCOPY_CPU",
    "CONFIG_DCBM_DMA",
    "CONFIG_MIGRATION_COPY_OFFLOAD",
    "CONFIG_PREEMPT",
    "CONFIG_PREEMPT_DYNAMIC",
    "CONFIG_HZ",
)


class PreflightError(RuntimeError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key


def _read(path: str, default: str = "") -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as f:
            return f.read()
    except OSError:
        return default


def parse_nodelist(text: str) -> list[int]:
    nodes: list[int] = []
    for part in text.strip().split(","):
        if not part:
            continue
        if "-" in part:
            a, b = part.split("-", 1)
            nodes.extend(range(int(a), int(b) + 1))
        else:
            nodes.append(int(part))
    return nodes


def nodes_with_memory(tree: SysTree) -> list[int]:
    rel = "sys/devices/system/node/has_memory"
    return parse_nodelist(tree.read(rel)) if tree.exists(rel) else [0]


def node_mem_total(tree: SysTree, node: int) -> int | None:
    rel = f"sys/devices/system/node/node{node}/meminfo"
    if not tree.exists(rel):
        return None
    m = re.search(r"MemTotal:\s+([0-9]+) kB", tree.read(rel))
    return int(m.group(1)) * 1024 if m else None


def format_bytes(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n / (1 << 30):.2f}G" if n >= (1 << 30) else f"{n}B"


def kernel_config_identity() -> dict:
    release = os.uname().release
    candidates = [f"/boot/config-{release}", "/proc/config.gz"]
    for path in candidates:
        try:
            with open(path, "rb") as f:
                data = f.read()
        except OSError:
            continue
        if path.endswith(".gz"):
            data = gzip.decompress(data)
        text = data.decode("utf-8", "replace")
        options = {}
        for opt in CONFIG_OPTIONS:
            m = re.search(rf"^{opt}=(.*)$", text, re.M)
            options[opt] = m.group(1) if m else None
        return {"path": path, "sha256": hashlib.sha256(data).hexdigest(), "options": options}
    return {"path": None, "sha256": None, "options": {}}


def lab_facts() -> dict:
    """The lab facts the lab_host role left on the host (miglab.labfacts/1), if any."""
    out = {}
    paths = glob.glob("/var/lib/miglab/*.json") + [
        p for p in glob.glob("/etc/ansible/facts.d/*.fact") if not os.access(p, os.X_OK)
    ]
    for path in sorted(paths):
        text = _read(path)
        try:
            out[path] = json.loads(text)
        except ValueError:
            out[path] = text
    return out


def migbench_identity(migbench: str, build_file: str | None) -> dict:
    info: dict[str, Any] = {"path": os.path.realpath(migbench)}
    try:
        r = subprocess.run(
            [migbench, "--version"], capture_output=True, text=True, timeout=30, check=False
        )
        info["version"] = json.loads(r.stdout.strip().splitlines()[-1])
    except (OSError, ValueError, IndexError, subprocess.TimeoutExpired) as err:
        info["version_error"] = str(err)
    try:
        with open(migbench, "rb") as f:
            info["binary_sha256"] = hashlib.sha256(f.read()).hexdigest()
    except OSError as err:
        info["binary_error"] = str(err)
    if build_file:
        info["build"] = json.loads(_read(build_file, "null") or "null")
    return info


def host_facts(tree: SysTree) -> dict:
    u = os.uname()
    cpu_model = None
    for line in _read("/proc/cpuinfo").splitlines():
        if line.lower().startswith(("model name", "cpu model")):
            cpu_model = line.split(":", 1)[1].strip()
            break
    nodes = {}
    for node in nodes_with_memory(tree):
        nodes[str(node)] = {
            "cpulist": tree.read(f"sys/devices/system/node/node{node}/cpulist").strip()
            if tree.exists(f"sys/devices/system/node/node{node}/cpulist")
            else None,
            "mem_total": node_mem_total(tree, node),
        }
    thp = {}
    for rel in (f"{THP}/enabled", f"{THP}/defrag", f"{THP}/hpage_pmd_size"):
        if tree.exists(rel):
            thp[rel] = tree.read(rel).strip()
    return {
        "hostname": u.nodename,
        "arch": u.machine,
        "kernel_release": u.release,
        "kernel_version": u.version,
        "kernel_cmdline": _read("/proc/cmdline").strip(),
        "kernel_config": kernel_config_identity(),
        "boot_id": _read("/proc/sys/kernel/random/boot_id").strip(),
        "os_release": _read("/etc/os-release"),
        "cpu_model": cpu_model,
        "online_cpus": os.sysconf("SC_NPROCESSORS_ONLN"),
        "base_page_size": os.sysconf("SC_PAGESIZE"),
        "nodes_with_memory": nodes,
        "thp": thp,
        "offered_folio_sizes": {format_bytes(s): rel for s, rel in offered_sizes(tree).items()},
        "python": sys.version,
        "platform": platform.platform(),
        "lab_facts": lab_facts(),
    }


def preflight(
    plan: dict,
    tree: SysTree,
    stress_ng: str = "stress-ng",
    require_root: bool = True,
    loopback: bool = False,
) -> dict:
    """Read-only checks of a plan against this host. Raises PreflightError naming the key."""
    d = plan["definition"]
    variant = plan["variant_definition"]
    key = planmod.KEY_PREFIX
    report: dict[str, Any] = {"variant": plan["variant"]}

    if require_root and os.geteuid() != 0:
        raise PreflightError(
            "", "the runner must run as root (PFNs, knobs, THP settings; use become: true)"
        )
    nodes = nodes_with_memory(tree)
    report["nodes_with_memory"] = nodes
    if not loopback:
        if len(nodes) < 2:
            raise PreflightError(
                "",
                f"this host has {len(nodes)} NUMA node with memory "
                f"({', '.join(map(str, nodes))}); the sweep needs two",
            )
        for name in ("src_node", "dst_node"):
            if d[name] not in nodes:
                raise PreflightError(
                    key + name,
                    f"node {d[name]} has no memory on this host (nodes with memory: {nodes})",
                )

    page_size = os.sysconf("SC_PAGESIZE")
    offered = offered_sizes(tree)
    report["base_page_size"] = page_size
    report["offered_folio_sizes"] = sorted(format_bytes(s) for s in offered)
    mem = [node_mem_total(tree, d["src_node"]), node_mem_total(tree, d["dst_node"])]
    usable = min(m for m in mem if m) if any(mem) else None
    for i, kind in enumerate(d["folio_kinds"]):
        size = planmod.kind_bytes(kind)
        if size is not None:
            if size == page_size:
                raise PreflightError(
                    f"{key}folio_kinds[{i}]",
                    f"{kind} is the base page size of this host: use 'base'",
                )
            if size not in offered:
                raise PreflightError(
                    f"{key}folio_kinds[{i}]",
                    f"folio size {kind} is not offered by this kernel (offered: "
                    f"{', '.join(report['offered_folio_sizes']) or 'none'})",
                )
        folio = size or page_size
        for j, count in enumerate(d["page_counts"][kind]):
            if usable and count * folio > 0.8 * usable:
                raise PreflightError(
                    f"{key}page_counts.{kind}[{j}]",
                    f"{count} x {format_bytes(folio)} does not fit comfortably "
                    f"into a node of this host ({format_bytes(usable)})",
                )

    restorer = Restorer(tree)  # never written to: preflight only reads
    try:
        session = KnobSession.open(tree, variant["profile"], restorer, variant["knob_params"])
    except KnobError as err:
        raise PreflightError(f"{key}variants.{plan['variant']}.profile", str(err)) from None
    report["knob_profile"] = session.name
    report["knob_profile_requested"] = variant["profile"]
    report["knob_profile_matches"] = detect_profile(tree)[1]
    for i, cfg in enumerate(variant["copy_configs"]):
        try:
            session.check(cfg)
        except KnobError as err:
            raise PreflightError(
                f"{key}variants.{plan['variant']}.copy_configs[{i}]", str(err)
            ) from None
    for i, load in enumerate(d["loads"]):
        if load != "idle" and not shutil.which(stress_ng):
            raise PreflightError(
                f"{key}loads[{i}]",
                f"load {load!r} needs stress-ng, which is not installed ({stress_ng})",
            )
    report["ok"] = True
    return report
