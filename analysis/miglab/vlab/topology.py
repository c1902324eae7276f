"""The virtual lab's definition: guests, their NUMA shapes and ports, validated.

Every error names the offending key (e.g. `vlab_guests[1].numa[0].memory_mib`) so a bad
inventory fails before any qemu starts.
"""

from __future__ import annotations

import re
import socket
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from miglab.errors import ConfigError

# Sane limits for a laptop or a 2-core CI machine running TCG.
MAX_VCPUS_PER_GUEST = 64
MAX_NODES_PER_GUEST = 16
MIN_NODE_MEMORY_MIB = 128
GUEST_NAME = re.compile(r"^[a-z][a-z0-9-]{0,30}$")
# The guest's CPU architecture, as `uname -m` names it: x86_64 guests are the q35 servers,
# aarch64 guests the Grace-shaped ones (docs/vlab.md).
ARCHES = ("x86_64", "aarch64")


@dataclass(frozen=True)
class NumaNode:
    cpus: int
    memory_mib: int


@dataclass(frozen=True)
class Guest:
    name: str
    ssh_port: int
    numa: tuple[NumaNode, ...]
    arch: str = "x86_64"

    @property
    def vcpus(self) -> int:
        return sum(node.cpus for node in self.numa)

    @property
    def memory_mib(self) -> int:
        return sum(node.memory_mib for node in self.numa)

    def cpu_ranges(self) -> list[tuple[int, int]]:
        """First and last vCPU index of each node, in node order."""
        ranges = []
        first = 0
        for node in self.numa:
            ranges.append((first, first + node.cpus - 1))
            first += node.cpus
        return ranges

    def to_dict(self) -> dict[str, Any]:
        data = asdict(self)
        data["numa"] = [asdict(node) for node in self.numa]
        return data


def _int(value: Any, key: str, minimum: int, maximum: int | None = None) -> int:
    # bool is an int in Python; `cpus: true` is a typo, not 1.
    if isinstance(value, bool) or not isinstance(value, int):
        raise ConfigError(key, f"must be an integer, got {value!r}")
    if value < minimum:
        raise ConfigError(key, f"must be at least {minimum}, got {value}")
    if maximum is not None and value > maximum:
        raise ConfigError(key, f"must be at most {maximum}, got {value}")
    return value


def parse_guest(data: Any, key: str) -> Guest:
    if not isinstance(data, dict):
        raise ConfigError(key, f"must be a mapping with name, ssh_port and numa, got {data!r}")
    unknown = set(data) - {"name", "ssh_port", "numa", "arch"}
    if unknown:
        raise ConfigError(
            f"{key}.{sorted(unknown)[0]}", "unknown key (expected name, ssh_port, numa, arch)"
        )
    arch = data.get("arch", "x86_64")
    if arch not in ARCHES:
        raise ConfigError(f"{key}.arch", f"must be one of {', '.join(ARCHES)}, got {arch!r}")
    name = data.get("name")
    if not isinstance(name, str) or not GUEST_NAME.match(name):
        raise ConfigError(
            f"{key}.name", f"must be a short lower-case hostname ([a-z][a-z0-9-]*), got {name!r}"
        )
    port = _int(data.get("ssh_port"), f"{key}.ssh_port", 1024, 65535)
    numa = data.get("numa")
    if not isinstance(numa, list) or not numa:
        raise ConfigError(f"{key}.numa", "must list at least one NUMA node (cpus, memory_mib)")
    if len(numa) > MAX_NODES_PER_GUEST:
        raise ConfigError(f"{key}.numa", f"at most {MAX_NODES_PER_GUEST} nodes, got {len(numa)}")
    nodes = []
    for index, node in enumerate(numa):
        node_key = f"{key}.numa[{index}]"
        if not isinstance(node, dict):
            raise ConfigError(node_key, f"must be a mapping with cpus and memory_mib, got {node!r}")
        unknown = set(node) - {"cpus", "memory_mib"}
        if unknown:
            raise ConfigError(
                f"{node_key}.{sorted(unknown)[0]}", "unknown key (expected cpus, memory_mib)"
            )
        if node.get("memory_mib") in (None, 0):
            raise ConfigError(
                f"{node_key}.memory_mib",
                "every node needs memory: move_pages() needs a destination with memory",
            )
        nodes.append(
            NumaNode(
                cpus=_int(node.get("cpus"), f"{node_key}.cpus", 1, MAX_VCPUS_PER_GUEST),
                memory_mib=_int(
                    node.get("memory_mib"), f"{node_key}.memory_mib", MIN_NODE_MEMORY_MIB
                ),
            )
        )
    guest = Guest(name=name, ssh_port=port, numa=tuple(nodes), arch=arch)
    if guest.vcpus > MAX_VCPUS_PER_GUEST:
        raise ConfigError(
            f"{key}.numa", f"{guest.vcpus} vCPUs in all; at most {MAX_VCPUS_PER_GUEST}"
        )
    return guest


def parse_guests(data: Any, key: str = "vlab_guests") -> list[Guest]:
    if not isinstance(data, list) or not data:
        raise ConfigError(key, "must list at least one guest")
    guests = [parse_guest(item, f"{key}[{index}]") for index, item in enumerate(data)]
    seen_names: dict[str, int] = {}
    seen_ports: dict[int, int] = {}
    for index, guest in enumerate(guests):
        if guest.name in seen_names:
            raise ConfigError(
                f"{key}[{index}].name", f"{guest.name!r} is also guest {seen_names[guest.name]}"
            )
        if guest.ssh_port in seen_ports:
            raise ConfigError(
                f"{key}[{index}].ssh_port",
                f"port {guest.ssh_port} is also used by guest {seen_ports[guest.ssh_port]}",
            )
        seen_names[guest.name] = index
        seen_ports[guest.ssh_port] = index
    return guests


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((host, port))
        except OSError:
            return False
    return True


def check_ports_free(guests: list[Guest], running: set[str], key: str = "vlab_guests") -> None:
    """A port held by something other than our own running guest is an error."""
    for index, guest in enumerate(guests):
        if guest.name not in running and not port_is_free(guest.ssh_port):
            raise ConfigError(
                f"{key}[{index}].ssh_port",
                f"port {guest.ssh_port} on 127.0.0.1 is already in use by another program",
            )


def check_files_exist(files: dict[str, str]) -> None:
    """`files` maps a key (e.g. vlab_ovmf_code) to a path that must be a readable file."""
    for key, path in files.items():
        if not Path(path).is_file():
            raise ConfigError(key, f"file not found: {path} (is the firmware package installed?)")
