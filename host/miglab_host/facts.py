"""What a lab host is: its lab facts (schema "miglab.labfacts/1") and, for a sweep, its
run facts (the lab facts plus kernel identity and what the records need for provenance).

Standard library only: the lab_host role installs a small executable custom fact that calls
``python3 -m miglab_host facts``, so Ansible runs it on every fact gathering and publishes
the output as ansible_local.miglab; the sweep runner writes ``run_facts`` to each variant's
``host.json``. One reader each for CPU lists, NUMA nodes, THP sizes and the CPU model, so
the facts file and the run records never disagree.

Every reader takes a root directory (default "/") so that the parsing can be tested against
a fake /sys and /proc tree. Facts the kernel does not offer come out as null (or an empty
list); only a missing /proc/cpuinfo or /proc/meminfo would be a real error.
"""

from __future__ import annotations

import glob
import gzip
import hashlib
import json
import os
import platform
import re
import subprocess
import sys
from typing import Any

SCHEMA = "miglab.labfacts/1"

# The kernel's ARCH for a machine name (`uname -m`): what the kernel build cross-compiles for.
MACHINE_TO_ARCH = {
    "x86_64": "x86",
    "amd64": "x86",
    "aarch64": "arm64",
    "arm64": "arm64",
    "ppc64le": "powerpc",
    "s390x": "s390",
    "riscv64": "riscv",
}

# Kernel options recorded with every run (host.json), when the config is readable.
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


def kernel_arch(machine: str) -> str:
    """The kernel's ARCH for a machine name (x86_64 -> x86, aarch64 -> arm64)."""
    return MACHINE_TO_ARCH.get(machine, machine)


def parse_cpulist(text: str) -> list[int]:
    """Expand a kernel CPU or node list such as "0-3,8,10-11" (empty for a CPU-less node)."""
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


def parse_zoneinfo_present(text: str) -> dict[int, int]:
    """Pages present in each node's zones, from /proc/zoneinfo ("Node 0, zone   Normal" then
    "        present  262144"): the node's physical memory, the same on every boot."""
    present: dict[int, int] = {}
    node = None
    for line in text.splitlines():
        header = re.match(r"Node\s+(\d+),\s+zone\s+\S+", line)
        if header:
            node = int(header.group(1))
            present.setdefault(node, 0)
            continue
        field = re.match(r"\s+present\s+(\d+)\s*$", line)
        if field and node is not None:
            present[node] += int(field.group(1))
    return present


def numa_nodes(root: str = "/", page_size: int | None = None) -> list[dict]:
    """One entry per /sys/devices/system/node/nodeN: its CPUs and its memory in bytes.

    The memory is what the node has (its zones' present pages, /proc/zoneinfo), not the
    node's MemTotal: MemTotal leaves out what the kernel reserved at boot, which moves
    between nodes from one boot to the next (a lab host's facts would change with every
    reboot). MemTotal only where /proc/zoneinfo cannot be read."""
    nodes = []
    zoneinfo = _read(root, "/proc/zoneinfo")
    present = parse_zoneinfo_present(zoneinfo) if zoneinfo is not None else {}
    page = page_size or os.sysconf("SC_PAGESIZE")
    base = _path(root, "/sys/devices/system/node")
    for d in glob.glob(os.path.join(base, "node[0-9]*")):
        name = os.path.basename(d)
        if not re.fullmatch(r"node\d+", name):
            continue
        rel = "/sys/devices/system/node/" + name
        cpulist = _read(root, rel + "/cpulist")
        meminfo = _read(root, rel + "/meminfo")
        number = int(name[4:])
        if present:
            memory = present.get(number, 0) * page
        else:
            memory = parse_node_meminfo(meminfo) if meminfo is not None else 0
        nodes.append(
            {
                "node": number,
                "cpus": parse_cpulist(cpulist) if cpulist is not None else [],
                "memory_bytes": memory,
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
    nodes = numa_nodes(root, page_size)
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


def nodes_with_memory(root: str = "/") -> list[int]:
    """Nodes the kernel lists as having memory; [0] on a kernel without NUMA."""
    text = _read(root, "/sys/devices/system/node/has_memory")
    return parse_cpulist(text) if text is not None else [0]


def node_memory_bytes(root: str, node: int) -> int | None:
    text = _read(root, f"/sys/devices/system/node/node{node}/meminfo")
    try:
        return parse_node_meminfo(text) if text is not None else None
    except ValueError:
        return None


def node_cpus(root: str, node: int) -> list[int]:
    text = _read(root, f"/sys/devices/system/node/node{node}/cpulist")
    return parse_cpulist(text) if text is not None else []


def kernel_config_identity() -> dict[str, Any]:
    """The running kernel's config: where it was read, its sha256 and CONFIG_OPTIONS."""
    release = os.uname().release
    for path in (f"/boot/config-{release}", "/proc/config.gz"):
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


def migbench_identity(migbench: str, build_file: str | None) -> dict[str, Any]:
    """The benchmark binary that made a run's samples: its version line, sha256, build."""
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
        info["build"] = json.loads(_read("/", build_file) or "null")
    return info


def run_facts(root: str = "/") -> dict[str, Any]:
    """What a sweep records beside its samples (variants/<v>/host.json): the lab facts and
    the kernel's identity (version banner, config, boot id), the OS and the folio sizes."""
    # Imported here: tuning imports knobs, which the fact script does not need.
    from miglab_host.knobs import SysTree
    from miglab_host.tuning import offered_sizes

    facts = gather(root)
    thp = {}
    for name in ("enabled", "defrag", "hpage_pmd_size"):
        text = _read(root, f"/sys/kernel/mm/transparent_hugepage/{name}")
        if text is not None:
            thp[name] = text.strip()
    facts.update(
        {
            "kernel_version": os.uname().version,
            "kernel_config": kernel_config_identity(),
            "boot_id": (_read(root, "/proc/sys/kernel/random/boot_id") or "").strip(),
            "os_release": _read("/", "/etc/os-release") or "",
            "online_cpus": os.sysconf("SC_NPROCESSORS_ONLN"),
            "nodes_with_memory": nodes_with_memory(root),
            "thp": thp,
            "offered_folio_sizes": sorted(offered_sizes(SysTree(root))),
            "python": sys.version,
            "platform": platform.platform(),
        }
    )
    return facts
