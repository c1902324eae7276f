"""The qemu command line a guest topology produces."""

from __future__ import annotations

from pathlib import Path

import pytest
from miglab.errors import ConfigError
from miglab.vlab.qemu import DirectKernel, GuestPaths, check_emulators, guest_command
from miglab.vlab.topology import parse_guests


def option_values(command: list[str], flag: str) -> list[str]:
    return [value for option, value in zip(command, command[1:], strict=False) if option == flag]


def make_command(accel: str = "tcg") -> tuple[list[str], GuestPaths]:
    (guest,) = parse_guests(
        [
            {
                "name": "vnode2",
                "ssh_port": 10023,
                "numa": [{"cpus": 2, "memory_mib": 1536}, {"cpus": 1, "memory_mib": 1024}],
            }
        ]
    )
    paths = GuestPaths.for_guest(Path("/lab/state"), guest.name)
    return guest_command(guest, paths, accel, "/fw/OVMF_CODE_4M.fd"), paths


def test_numa_nodes_get_their_own_memory_backend_and_cpus() -> None:
    command, _ = make_command()
    assert option_values(command, "-smp") == ["3,sockets=3,cores=1,threads=1"]
    assert option_values(command, "-m") == ["2560M"]
    assert option_values(command, "-object") == [
        "memory-backend-ram,id=mem0,size=1536M",
        "memory-backend-ram,id=mem1,size=1024M",
    ]
    assert option_values(command, "-numa") == [
        "node,nodeid=0,cpus=0-1,memdev=mem0",
        "node,nodeid=1,cpus=2,memdev=mem1",
    ]


def test_boots_from_firmware_and_its_own_disk_not_a_kernel() -> None:
    command, paths = make_command()
    assert "-kernel" not in command
    assert option_values(command, "-drive") == [
        "if=pflash,format=raw,unit=0,readonly=on,file=/fw/OVMF_CODE_4M.fd",
        "if=pflash,format=raw,unit=1,file=/lab/state/guests/vnode2/OVMF_VARS.fd",
        "if=virtio,format=qcow2,file=/lab/state/guests/vnode2/disk.qcow2",
        "if=virtio,format=raw,readonly=on,file=/lab/state/guests/vnode2/seed.img",
    ]
    assert paths.efi_vars.parent == paths.disk.parent == Path("/lab/state/guests/vnode2")


def test_qmp_console_ssh_forward_and_pidfile() -> None:
    command, _ = make_command()
    assert option_values(command, "-qmp") == [
        "unix:/lab/state/guests/vnode2/qmp.sock,server=on,wait=off",
        "unix:/lab/state/guests/vnode2/events.sock,server=on,wait=on",
    ]
    assert option_values(command, "-netdev") == ["user,id=net0,hostfwd=tcp:127.0.0.1:10023-:22"]
    assert option_values(command, "-serial") == ["chardev:console"]
    assert "path=/lab/state/guests/vnode2/console.log" in option_values(command, "-chardev")[0]
    assert option_values(command, "-pidfile") == ["/lab/state/guests/vnode2/qemu.pid"]
    # No NIC boot ROM: nothing boots from the network.
    assert option_values(command, "-device") == ["virtio-net-pci,netdev=net0,romfile="]


def test_a_reset_ends_qemu_so_that_its_power_supply_cold_boots_it() -> None:
    command, _ = make_command()
    assert option_values(command, "-action") == ["reboot=shutdown"]
    # In the foreground: the power supply (miglab.vlab.supervisor) waits for it to exit.
    assert "-daemonize" not in command


def test_accelerators(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("platform.machine", lambda: "x86_64")
    tcg, _ = make_command("tcg")
    kvm, _ = make_command("kvm")
    assert option_values(tcg, "-accel") == ["tcg,thread=multi"]
    assert option_values(tcg, "-cpu") == ["max"]
    assert option_values(kvm, "-accel") == ["kvm"]
    assert option_values(kvm, "-cpu") == ["host,-arch-capabilities"]


GRACE = {"name": "vgrace", "ssh_port": 10024, "arch": "aarch64"}


def make_arm_command() -> list[str]:
    (guest,) = parse_guests([{**GRACE, "numa": [{"cpus": 2, "memory_mib": 1024}] * 2}])
    paths = GuestPaths.for_guest(Path("/lab/state"), guest.name)
    kernel = DirectKernel(Path("/cache/img.vmlinuz"), Path("/cache/img.initrd"))
    # kvm asked for (the probe's answer for x86 guests): an arm64 guest still runs under TCG.
    return guest_command(guest, paths, "kvm", "/fw/OVMF_CODE_4M.fd", kernel)


def test_an_aarch64_guest_is_a_virt_machine_under_tcg_without_architected_pauth() -> None:
    command = make_arm_command()
    assert command[0] == "qemu-system-aarch64"
    assert option_values(command, "-machine") == ["virt,gic-version=3"]
    assert option_values(command, "-accel") == ["tcg,thread=multi"]
    assert option_values(command, "-cpu") == ["max,pauth-impdef=on"]
    assert option_values(command, "-numa") == [
        "node,nodeid=0,cpus=0-1,memdev=mem0",
        "node,nodeid=1,cpus=2-3,memdev=mem1",
    ]


def test_an_aarch64_guest_boots_its_image_kernel_directly_with_both_disks() -> None:
    command = make_arm_command()
    assert option_values(command, "-kernel") == ["/cache/img.vmlinuz"]
    assert option_values(command, "-initrd") == ["/cache/img.initrd"]
    assert option_values(command, "-append") == ["root=/dev/vda2 ro console=ttyAMA0"]
    # No firmware: the power-on kernel is the known-good one.
    assert option_values(command, "-drive") == [
        "if=virtio,format=qcow2,file=/lab/state/guests/vgrace/disk.qcow2",
        "if=virtio,format=raw,readonly=on,file=/lab/state/guests/vgrace/seed.img",
    ]
    assert option_values(command, "-qmp") == [
        "unix:/lab/state/guests/vgrace/qmp.sock,server=on,wait=off",
        "unix:/lab/state/guests/vgrace/events.sock,server=on,wait=on",
    ]
    assert option_values(command, "-action") == ["reboot=shutdown"]
    assert option_values(command, "-serial") == ["chardev:console"]


def test_an_aarch64_guest_without_its_kernel_is_refused() -> None:
    (guest,) = parse_guests([{**GRACE, "numa": [{"cpus": 1, "memory_mib": 512}] * 2}])
    with pytest.raises(ValueError, match="vgrace"):
        guest_command(guest, GuestPaths.for_guest(Path("/s"), "vgrace"), "tcg")


def test_a_guest_whose_emulator_is_missing_names_its_arch(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guests = parse_guests(
        [
            {"name": "vnode1", "ssh_port": 10022, "numa": [{"cpus": 1, "memory_mib": 512}]},
            {**GRACE, "numa": [{"cpus": 1, "memory_mib": 512}]},
        ]
    )
    monkeypatch.setenv("PATH", str(tmp_path))
    x86 = tmp_path / "qemu-system-x86_64"
    x86.write_text("#!/bin/sh\n")
    x86.chmod(0o755)
    with pytest.raises(ConfigError) as error:
        check_emulators(guests)
    assert error.value.key == "vlab_guests[1].arch"
    assert "qemu-system-aarch64" in str(error.value)
    assert "qemu-system-arm" in str(error.value)
    arm = tmp_path / "qemu-system-aarch64"
    arm.write_text("#!/bin/sh\n")
    arm.chmod(0o755)
    check_emulators(guests)
