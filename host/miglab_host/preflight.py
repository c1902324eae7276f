"""Whether this host can run a plan: read-only checks before anything is changed.

Every problem names the inventory key it comes from. What the host is (its run facts) is
in facts.py.
"""

from __future__ import annotations

import os
import shutil
from typing import Any

from miglab_host import plan as planmod
from miglab_host.facts import node_memory_bytes, nodes_with_memory
from miglab_host.knobs import KnobError, KnobSession, Restorer, SysTree, detect_profile
from miglab_host.tuning import offered_sizes


class PreflightError(RuntimeError):
    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}" if key else problem)
        self.key = key


def format_bytes(n: int) -> str:
    for unit, size in (("G", 1 << 30), ("M", 1 << 20), ("K", 1 << 10)):
        if n >= size and n % size == 0:
            return f"{n // size}{unit}"
    return f"{n / (1 << 30):.2f}G" if n >= (1 << 30) else f"{n}B"


def preflight(
    plan: dict,
    tree: SysTree,
    stress_ng: str = "stress-ng",
    require_root: bool = True,
    loopback: bool = False,
    page_size: int | None = None,
) -> dict:
    """Read-only checks of a plan against this host. Raises PreflightError naming the key.
    `page_size`: the base page size in bytes (default: this kernel's)."""
    d = plan["definition"]
    variant = plan["variant_definition"]
    key = planmod.KEY_PREFIX
    report: dict[str, Any] = {"variant": plan["variant"]}

    if require_root and os.geteuid() != 0:
        raise PreflightError(
            "", "the runner must run as root (PFNs, knobs, THP settings; use become: true)"
        )
    nodes = nodes_with_memory(tree.root)
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

    page_size = page_size or os.sysconf("SC_PAGESIZE")
    offered = offered_sizes(tree)
    report["base_page_size"] = page_size
    report["offered_folio_sizes"] = sorted(format_bytes(s) for s in offered)
    mem = [node_memory_bytes(tree.root, d["src_node"]), node_memory_bytes(tree.root, d["dst_node"])]
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
        raise PreflightError(f"{plan['variant_key']}.knob_profile", str(err)) from None
    report["knob_profile"] = session.name
    report["knob_profile_requested"] = variant["profile"]
    report["knob_profile_matches"] = detect_profile(tree)[1]
    for i, cfg in enumerate(variant["copy_configs"]):
        try:
            session.check(cfg)
        except KnobError as err:
            raise PreflightError(f"{plan['variant_key']}.copy_configs[{i}]", str(err)) from None
    for i, load in enumerate(d["loads"]):
        if load != "idle" and not shutil.which(stress_ng):
            raise PreflightError(
                f"{key}loads[{i}]",
                f"load {load!r} needs stress-ng, which is not installed ({stress_ng})",
            )
    report["ok"] = True
    return report
