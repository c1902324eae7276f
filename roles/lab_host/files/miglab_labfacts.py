#!/usr/bin/env python3
"""Print the lab facts of this host as JSON (schema "miglab.labfacts/1").

Standard library only: the lab_host role installs this file as the executable custom fact
/etc/ansible/facts.d/miglab.fact, so Ansible runs it on every fact gathering and publishes
its output as ansible_local.miglab. It also runs by hand: `python3 miglab_labfacts.py`.

Every reader takes a root directory (default "/") so that the parsing can be tested against
a fake /sys and /proc tree. Facts the kernel does not offer come out as null (or an empty
list); only a missing /proc/cpuinfo or /proc/meminfo would be a real error.
"""

from __future__ import annotations

import glob
import json
import os
import re
import sys

SCHEMA = "miglab.labfacts/1"

# arm64 /proc/cpuinfo has no "model name": the MIDR's implementer and part numbers name the core.
# A small table of the server and common cores; unknown pairs are reported by number.
ARM_IMPLEMENTERS = {
    0x41: "ARM",
    0x42: "Broadcom",
    0x43: "Cavium",
    0x48: "HiSilicon",
    0x4E: "NVIDIA",
    0x50: "APM",
    0x51: "Qualcomm",
    0x61: "Apple",
    0xC0: "Ampere",
}
ARM_PARTS = {
    (0x41, 0xD03): "Cortex-A53",
    (0x41, 0xD05): "Cortex-A55",
    (0x41, 0xD07): "Cortex-A57",
    (0x41, 0xD08): "Cortex-A72",
    (0x41, 0xD0B): "Cortex-A76",
    (0x41, 0xD0C): "Neoverse-N1",
    (0x41, 0xD40): "Neoverse-V1",
    (0x41, 0xD41): "Cortex-A78",
    (0x41, 0xD49): "Neoverse-N2",
    (0x41, 0xD4F): "Neoverse-V2",
    (0x41, 0xD83): "Neoverse-V3AE",
    (0x41, 0xD84): "Neoverse-V3",
    (0x41, 0xD8E): "Neoverse-N3",
    (0x43, 0x0AF): "ThunderX2",
    (0x48, 0xD01): "Kunpeng-920",
    (0x4E, 0x003): "Denver2",
    (0x4E, 0x004): "Carmel",
    (0x50, 0x000): "X-Gene",
    (0xC0, 0xAC3): "AmpereOne",
    (0xC0, 0xAC4): "AmpereOne-A",
    (0xC0, 0xAC5): "AmpereOne-B",
}


def _path(root: str, path: str) -> str:
    return os.path.join(root, path.lstrip("/"))


def _read(root: str, path: str) -> str | None:
    """The text of root/path, or None when the kernel does not offer that file."""
    try:
        with open(_path(root, path), encoding="utf-8", errors="replace") as f:
            return f.read()
    except (FileNotFoundError, NotADirectoryError, PermissionError):
        return None


def _read_int(root: str, path: str) -> int | None:
    text = _read(root, path)
    if text is None:
        return None
    try:
        return int(text.strip())
    except ValueError:
        return None


def parse_cpulist(text: str) -> list[int]:
    """Expand a kernel CPU list such as "0-3,8,10-11" (empty for a CPU-less node)."""
    cpus: list[int] = []
    for part in text.strip().split(","):
        part = part.strip()
        if not part:
            continue
        if "-" in part:
            first, last = part.split("-", 1)
            cpus.extend(range(int(first), int(last) + 1))
        else:
            cpus.append(int(part))
    return sorted(set(cpus))


def parse_node_meminfo(text: str) -> int:
    """Bytes of MemTotal from a node's meminfo ("Node 0 MemTotal:  4810968 kB")."""
    m = re.search(r"MemTotal:\s+(\d+)\s*kB", text)
    if not m:
        raise ValueError("no MemTotal line in node meminfo")
    return int(m.group(1)) * 1024


def numa_nodes(root: str = "/") -> list[dict]:
    """One entry per /sys/devices/system/node/nodeN: its CPUs and its memory in bytes."""
    nodes = []
    base = _path(root, "/sys/devices/system/node")
    for d in glob.glob(os.path.join(base, "node[0-9]*")):
        name = os.path.basename(d)
        if not re.fullmatch(r"node\d+", name):
            continue
        rel = "/sys/devices/system/node/" + name
        cpulist = _read(root, rel + "/cpulist")
        meminfo = _read(root, rel + "/meminfo")
        nodes.append(
            {
                "node": int(name[4:]),
                "cpus": parse_cpulist(cpulist) if cpulist is not None else [],
                "memory_bytes": parse_node_meminfo(meminfo) if meminfo is not None else 0,
            }
        )
    return sorted(nodes, key=lambda n: n["node"])


def thp_facts(root: str = "/") -> dict:
    """PMD THP size, mTHP sizes (bytes) and the THP "enabled" mode; nulls without THP."""
    base = "/sys/kernel/mm/transparent_hugepage"
    mthp = []
    for d in glob.glob(os.path.join(_path(root, base), "hugepages-*kB")):
        m = re.fullmatch(r"hugepages-(\d+)kB", os.path.basename(d))
        if m and os.path.isdir(d):
            mthp.append(int(m.group(1)) * 1024)
    enabled = _read(root, base + "/enabled")
    mode = None
    if enabled is not None:
        m = re.search(r"\[([^\]]+)\]", enabled)
        mode = m.group(1) if m else enabled.strip() or None
    return {
        "pmd_thp_size": _read_int(root, base + "/hpage_pmd_size"),
        "mthp_sizes": sorted(mthp),
        "thp_enabled": mode,
    }


def parse_cpu_model(cpuinfo: str) -> str:
    """x86 and most others: the first "model name"; arm64: implementer/part mapped to a name."""
    fields: dict[str, str] = {}
    for line in cpuinfo.splitlines():
        key, sep, value = line.partition(":")
        key = key.strip()
        if sep and key not in fields:
            fields[key] = value.strip()
    if fields.get("model name"):
        return fields["model name"]
    if "CPU implementer" in fields and "CPU part" in fields:
        try:
            impl = int(fields["CPU implementer"], 0)
            part = int(fields["CPU part"], 0)
        except ValueError:
            return "arm64 implementer {} part {}".format(
                fields["CPU implementer"], fields["CPU part"]
            )
        if (impl, part) in ARM_PARTS:
            return ARM_PARTS[(impl, part)]
        vendor = ARM_IMPLEMENTERS.get(impl, f"implementer 0x{impl:02x}")
        return f"{vendor} part 0x{part:03x}"
    for key in ("cpu model", "cpu", "Processor", "processor"):
        # ppc64 "cpu", mips "cpu model", old arm "Processor"; x86's "processor" is a number
        value = fields.get(key, "")
        if value and not value.isdigit():
            return value
    return "unknown"


def memtotal_bytes(root: str = "/") -> int:
    text = _read(root, "/proc/meminfo") or ""
    m = re.search(r"^MemTotal:\s+(\d+)\s*kB", text, re.MULTILINE)
    return int(m.group(1)) * 1024 if m else 0


def gather(
    root: str = "/",
    machine: str | None = None,
    page_size: int | None = None,
    hostname: str | None = None,
) -> dict:
    """All lab facts. machine, page_size and hostname default to the running system's
    (os.uname, sysconf(SC_PAGESIZE) = `getconf PAGESIZE`, the kernel hostname)."""
    uname = os.uname()
    nodes = numa_nodes(root)
    if nodes:
        cpus = sorted({c for n in nodes for c in n["cpus"]})
        cpu_count = len(cpus)
        memory = sum(n["memory_bytes"] for n in nodes)
    else:
        # a kernel without NUMA support has no node directories
        online = _read(root, "/sys/devices/system/cpu/online")
        cpu_count = len(parse_cpulist(online)) if online else (os.cpu_count() or 0)
        memory = memtotal_bytes(root)
    release = _read(root, "/proc/sys/kernel/osrelease")
    name = _read(root, "/proc/sys/kernel/hostname")
    cmdline = _read(root, "/proc/cmdline")
    facts = {
        "schema": SCHEMA,
        "hostname": hostname or (name.strip() if name else uname.nodename),
        "arch": machine or uname.machine,
        "kernel_release": release.strip() if release else uname.release,
        "kernel_cmdline": cmdline.strip() if cmdline is not None else "",
        "cpu_model": parse_cpu_model(_read(root, "/proc/cpuinfo") or ""),
        "base_page_size": page_size or os.sysconf("SC_PAGESIZE"),
        "numa_balancing": _read_int(root, "/proc/sys/kernel/numa_balancing"),
        "numa_nodes": nodes,
        "cpu_count": cpu_count,
        "memory_bytes": memory,
    }
    facts.update(thp_facts(root))
    return facts


def main(argv: list[str]) -> int:
    root = argv[1] if len(argv) > 1 else "/"
    json.dump(gather(root), sys.stdout, indent=2, sort_keys=True)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
