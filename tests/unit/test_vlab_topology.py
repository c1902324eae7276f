"""The virtual lab's definition: every bad input names its key."""

from __future__ import annotations

import socket
from pathlib import Path

import pytest
from miglab.errors import ConfigError
from miglab.vlab.topology import (
    MAX_VCPUS_PER_GUEST,
    check_files_exist,
    check_ports_free,
    parse_guests,
)


def guest(name: str = "vnode1", port: int = 10022, numa: object = None) -> dict[str, object]:
    return {
        "name": name,
        "ssh_port": port,
        "numa": numa if numa is not None else [{"cpus": 1, "memory_mib": 1024}] * 2,
    }


def test_valid_guests_parse_with_their_shapes() -> None:
    guests = parse_guests(
        [
            guest(),
            guest(
                "vnode2", 10023, [{"cpus": 2, "memory_mib": 1536}, {"cpus": 1, "memory_mib": 1024}]
            ),
        ]
    )
    assert [g.name for g in guests] == ["vnode1", "vnode2"]
    assert guests[1].vcpus == 3
    assert guests[1].memory_mib == 2560
    assert guests[1].cpu_ranges() == [(0, 1), (2, 2)]
    assert guests[0].arch == "x86_64"


def test_an_aarch64_guest_keeps_its_arch() -> None:
    (arm,) = parse_guests([{**guest("vgrace", 10024), "arch": "aarch64"}])
    assert arm.arch == "aarch64"
    assert arm.to_dict()["arch"] == "aarch64"


@pytest.mark.parametrize(
    ("guests", "key", "words"),
    [
        ([], "vlab_guests", "at least one guest"),
        ([guest(numa=[])], "vlab_guests[0].numa", "at least one NUMA node"),
        (
            [guest(numa=[{"cpus": 1, "memory_mib": 1024}, {"cpus": 1, "memory_mib": 0}])],
            "vlab_guests[0].numa[1].memory_mib",
            "every node needs memory",
        ),
        (
            [guest(numa=[{"cpus": 1}])],
            "vlab_guests[0].numa[0].memory_mib",
            "every node needs memory",
        ),
        (
            [guest(numa=[{"cpus": MAX_VCPUS_PER_GUEST + 1, "memory_mib": 1024}])],
            "vlab_guests[0].numa[0].cpus",
            "at most",
        ),
        (
            [guest(numa=[{"cpus": 40, "memory_mib": 1024}, {"cpus": 40, "memory_mib": 1024}])],
            "vlab_guests[0].numa",
            "vCPUs in all",
        ),
        (
            [guest(numa=[{"cpus": 0, "memory_mib": 1024}])],
            "vlab_guests[0].numa[0].cpus",
            "at least 1",
        ),
        (
            [guest(numa=[{"cpus": True, "memory_mib": 1024}])],
            "vlab_guests[0].numa[0].cpus",
            "integer",
        ),
        (
            [guest(numa=[{"cpus": 1, "memory_mib": 1024, "gpus": 1}])],
            "vlab_guests[0].numa[0].gpus",
            "unknown key",
        ),
        ([{**guest(), "arch": "riscv64"}], "vlab_guests[0].arch", "x86_64, aarch64"),
        ([{**guest(), "arch": "arm64"}], "vlab_guests[0].arch", "got 'arm64'"),
        ([guest(port=80)], "vlab_guests[0].ssh_port", "at least 1024"),
        ([guest(name="Bad_Name")], "vlab_guests[0].name", "hostname"),
        ([guest(), guest()], "vlab_guests[1].name", "also guest 0"),
        ([guest(), guest("vnode2")], "vlab_guests[1].ssh_port", "also used by guest 0"),
    ],
)
def test_bad_topology_names_the_key(guests: list[object], key: str, words: str) -> None:
    with pytest.raises(ConfigError) as raised:
        parse_guests(guests)
    assert raised.value.key == key
    assert words in str(raised.value)
    assert str(raised.value).startswith(key + ":")


def test_port_in_use_names_the_key() -> None:
    with socket.socket() as free, socket.socket() as holder:
        free.bind(("127.0.0.1", 0))
        free_port = free.getsockname()[1]
        free.close()
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        guests = parse_guests([guest(port=free_port), guest("vnode2", port)])
        with pytest.raises(ConfigError) as raised:
            check_ports_free(guests, running=set())
        assert raised.value.key == "vlab_guests[1].ssh_port"
        # The guest's own running qemu holding its port is not a conflict.
        check_ports_free(guests, running={"vnode2"})


def test_missing_firmware_names_the_key(tmp_path: Path) -> None:
    present = tmp_path / "OVMF_CODE_4M.fd"
    present.write_bytes(b"\0")
    check_files_exist({"vlab_ovmf_code": str(present)})
    with pytest.raises(ConfigError) as raised:
        check_files_exist(
            {"vlab_ovmf_code": str(present), "vlab_ovmf_vars": str(tmp_path / "nope.fd")}
        )
    assert raised.value.key == "vlab_ovmf_vars"
    assert "nope.fd" in str(raised.value)
