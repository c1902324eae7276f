"""The qemu command line of a guest, and the probe that picks KVM or TCG."""

from __future__ import annotations

import os
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from miglab.vlab.topology import Guest

QEMU = "qemu-system-x86_64"
DEFAULT_OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
DEFAULT_OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"


@dataclass(frozen=True)
class GuestPaths:
    """Everything a guest keeps under the lab's state directory."""

    directory: Path

    @classmethod
    def for_guest(cls, state_dir: Path, name: str) -> GuestPaths:
        # Absolute: qemu's command line must hold whatever directory it is started from.
        return cls(state_dir.absolute() / "guests" / name)

    @property
    def disk(self) -> Path:
        return self.directory / "disk.qcow2"

    @property
    def efi_vars(self) -> Path:
        return self.directory / "OVMF_VARS.fd"

    @property
    def seed(self) -> Path:
        return self.directory / "seed.img"

    @property
    def qmp_socket(self) -> Path:
        return self.directory / "qmp.sock"

    @property
    def console_log(self) -> Path:
        return self.directory / "console.log"

    @property
    def pidfile(self) -> Path:
        return self.directory / "qemu.pid"

    @property
    def events_socket(self) -> Path:
        """The QMP socket the guest's power supply (supervisor) reads events from."""
        return self.directory / "events.sock"

    @property
    def power_pidfile(self) -> Path:
        return self.directory / "power.pid"

    @property
    def power_log(self) -> Path:
        """What the power supply did (starts, resets turned into power cycles) and qemu's stderr."""
        return self.directory / "power.log"

    @property
    def runtime_files(self) -> tuple[Path, ...]:
        """What a running guest holds: removed before a start and after a stop."""
        return (self.qmp_socket, self.events_socket, self.pidfile, self.power_pidfile)

    @property
    def host_key(self) -> Path:
        return self.directory / "ssh_host_ed25519_key"


def accel_options(accel: str) -> list[str]:
    if accel == "kvm":
        # `-cpu host` alone fails on some hosts ("failed to set MSR 0x10a").
        return ["-accel", "kvm", "-cpu", "host,-arch-capabilities"]
    if accel == "tcg":
        return ["-accel", "tcg,thread=multi", "-cpu", "max"]
    raise ValueError(f"unknown accelerator {accel!r}")


def numa_options(guest: Guest) -> list[str]:
    """One RAM backend and one `-numa node` per node, vCPUs numbered node by node."""
    options: list[str] = []
    for index, (node, (first, last)) in enumerate(zip(guest.numa, guest.cpu_ranges(), strict=True)):
        cpus = str(first) if first == last else f"{first}-{last}"
        options += [
            "-object",
            f"memory-backend-ram,id=mem{index},size={node.memory_mib}M",
            "-numa",
            f"node,nodeid={index},cpus={cpus},memdev=mem{index}",
        ]
    return options


def smp_option(guest: Guest) -> str:
    """Every vCPU its own socket: with QEMU's default (one socket, one LLC) the CPUs of
    different NUMA nodes share a cache and the guest kernel warns at boot (topology_sane:
    llc-sibling not on the same node), a WARNING in every kernel log the sweep checks."""
    return f"{guest.vcpus},sockets={guest.vcpus},cores=1,threads=1"


def guest_command(
    guest: Guest,
    paths: GuestPaths,
    accel: str,
    ovmf_code: str = DEFAULT_OVMF_CODE,
) -> list[str]:
    """The full qemu command line: UEFI firmware, GRUB from the guest's own disk. It runs
    under the guest's power supply (miglab.vlab.supervisor), which restarts it after a reset."""
    command = [
        QEMU,
        "-name",
        f"miglab-{guest.name},process=miglab-{guest.name}",
        "-machine",
        "q35",
        *accel_options(accel),
        "-smp",
        smp_option(guest),
        "-m",
        f"{guest.memory_mib}M",
        *numa_options(guest),
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf_code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={paths.efi_vars}",
        "-drive",
        f"if=virtio,format=qcow2,file={paths.disk}",
        "-drive",
        f"if=virtio,format=raw,readonly=on,file={paths.seed}",
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{guest.ssh_port}-:22",
        "-device",
        "virtio-net-pci,netdev=net0",
        "-qmp",
        f"unix:{paths.qmp_socket},server=on,wait=off",
        # wait=on: the machine starts only once the power supply listens, so no reset is missed.
        "-qmp",
        f"unix:{paths.events_socket},server=on,wait=on",
        # A reset ends qemu; the power supply starts it again: every boot is a cold boot.
        "-action",
        "reboot=shutdown",
        "-chardev",
        f"file,id=console,path={paths.console_log},append=on",
        "-serial",
        "chardev:console",
        "-display",
        "none",
        "-monitor",
        "none",
        "-pidfile",
        str(paths.pidfile),
    ]
    return command


def probe_kvm(kernel: Path, timeout: float = 20.0) -> tuple[str, str]:
    """Boot `kernel` under KVM with no root disk: it must print its banner and panic
    (panic=-1 reboots, -no-reboot exits qemu) within `timeout`. Returns (accel, why).

    Nested KVM on some CI machines hangs right after the firmware, so KVM is used only
    when this short boot really completes.
    """
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg", "/dev/kvm is missing or not accessible"
    command = [
        QEMU,
        *accel_options("kvm"),
        "-m",
        "256M",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        "stdio",
        "-kernel",
        str(kernel),
        "-append",
        "console=ttyS0 panic=-1 root=/dev/nonexistent",
    ]
    start = time.monotonic()
    try:
        result = subprocess.run(
            command, capture_output=True, text=True, timeout=timeout, check=False
        )
    except subprocess.TimeoutExpired:
        return "tcg", f"a KVM probe boot did not finish within {timeout:.0f} s"
    if "Linux version" not in result.stdout:
        return (
            "tcg",
            f"a KVM probe boot failed (qemu exit {result.returncode}): {result.stderr.strip()[:200]}",
        )
    return "kvm", f"a KVM probe boot finished in {time.monotonic() - start:.1f} s"
