"""Host tuning for a sweep: NUMA balancing, THP and per-size mTHP modes, compaction.

Everything is written through a Restorer (originals saved before the first write, read back
after every write, restored at the end and on abort).
"""

from __future__ import annotations

import re
import time

from miglab_host.knobs import Restorer, SysTree

THP = "sys/kernel/mm/transparent_hugepage"
NUMA_BALANCING = "proc/sys/kernel/numa_balancing"
COMPACT = "proc/sys/vm/compact_memory"
_SIZE_DIR = re.compile(r"^hugepages-([0-9]+)kB$")


def pmd_size(tree: SysTree) -> int | None:
    rel = f"{THP}/hpage_pmd_size"
    if not tree.exists(rel):
        return None
    try:
        return int(tree.read(rel).strip())
    except ValueError:
        return None


def mthp_controls(tree: SysTree) -> dict[int, str]:
    """Folio size in bytes -> its per-size 'enabled' file (kernels with mTHP, 6.8+)."""
    out = {}
    for name in tree.listdir(THP):
        m = _SIZE_DIR.match(name)
        if m and tree.exists(f"{THP}/{name}/enabled"):
            out[int(m.group(1)) * 1024] = f"{THP}/{name}/enabled"
    return out


def offered_sizes(tree: SysTree) -> dict[int, str]:
    """Folio sizes this kernel can give anonymous memory -> the file that enables each."""
    sizes = {}
    pmd = pmd_size(tree)
    if pmd and tree.exists(f"{THP}/enabled"):
        sizes[pmd] = f"{THP}/enabled"
    sizes.update(mthp_controls(tree))
    return sizes


class HostTuning:
    def __init__(self, tree: SysTree, restorer: Restorer, settings: dict) -> None:
        self.tree = tree
        self.restorer = restorer
        self.settings = settings

    def apply_global(self) -> dict[str, str]:
        """NUMA balancing off (it would move the pages back), THP modes for the sweep."""
        applied = {}
        wanted = [
            (NUMA_BALANCING, self.settings.get("numa_balancing")),
            (f"{THP}/enabled", self.settings.get("thp_enabled")),
            (f"{THP}/defrag", self.settings.get("thp_defrag")),
        ]
        for rel, value in wanted:
            if value is None or not self.tree.exists(rel):
                continue
            self.restorer.write(rel, value, only_if_different=True)
            applied[rel] = self.tree.read_value(rel)
        return applied

    def prepare_kind(self, folio_bytes: int | None) -> dict[str, str]:
        """Per-size mTHP modes so that exactly the requested size can be allocated.

        With several sizes enabled the kernel takes the largest that fits and falls back to
        smaller ones, which would mix folio sizes; so the requested size is 'madvise' and every
        other size 'never'. Base pages need nothing (migbench uses MADV_NOHUGEPAGE).
        """
        if folio_bytes is None:
            return {}
        applied = {}
        for size, rel in sorted(mthp_controls(self.tree).items()):
            value = "madvise" if size == folio_bytes else "never"
            self.restorer.write(rel, value, only_if_different=True)
            applied[rel] = value
        return applied

    def compact(self) -> int:
        """Trigger compaction (before THP cells, if configured); returns nanoseconds spent."""
        if not self.tree.exists(COMPACT):
            return 0
        t0 = time.monotonic_ns()
        self.tree.write(COMPACT, "1")
        return time.monotonic_ns() - t0

    def snapshot(self) -> dict[str, str | None]:
        rels = [NUMA_BALANCING, f"{THP}/enabled", f"{THP}/defrag"]
        rels += [rel for _, rel in sorted(mthp_controls(self.tree).items())]
        return {rel: self.tree.read_value(rel) if self.tree.exists(rel) else None for rel in rels}
