"""The qemu command line of a guest, and the probe that picks KVM or TCG."""

from __future__ import annotations

import os
import platform
import shutil
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

from miglab.errors import ConfigError
from miglab.vlab.topology import Guest

# The emulator of each guest architecture, and the Debian package that has it.
QEMU_BINARIES = {"x86_64": "qemu-system-x86_64", "aarch64": "qemu-system-aarch64"}
QEMU_PACKAGES = {"x86_64": "qemu-system-x86", "aarch64": "qemu-system-arm"}
QEMU = QEMU_BINARIES["x86_64"]
DEFAULT_OVMF_CODE = "/usr/share/OVMF/OVMF_CODE_4M.fd"
DEFAULT_OVMF_VARS = "/usr/share/OVMF/OVMF_VARS_4M.fd"
# The root file system of every guest image (GPT: ESP, root); the lab's own kernels have no
# initramfs, so the root is named by device, not by label.
ROOT_DEVICE = "/dev/vda2"


@dataclass(frozen=True)
class DirectKernel:
    """What an aarch64 guest boots on power-on (`-kernel`): its image's distribution kernel,
    the known-good one. Through the UEFI firmware, Debian's 6.12 arm64 kernel loses the second
    NUMA node (docs/vlab.md); test kernels are started from it with kexec, as on a server."""

    kernel: Path
    initrd: Path

    def append(self) -> str:
        return f"root={ROOT_DEVICE} ro console=ttyAMA0"


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


def check_emulators(guests: list[Guest], key: str = "vlab_guests") -> None:
    """Every guest's emulator is installed (before any qemu starts)."""
    for index, guest in enumerate(guests):
        binary = QEMU_BINARIES[guest.arch]
        if shutil.which(binary) is None:
            raise ConfigError(
                f"{key}[{index}].arch",
                f"{guest.name} is {guest.arch}, which needs {binary} (Debian package "
                f"{QEMU_PACKAGES[guest.arch]}); it is not installed",
            )


def guest_accel(guest: Guest, accel: str) -> str:
    """KVM runs guests of the controller's own architecture only; any other guest is TCG."""
    return accel if guest.arch == platform.machine() else "tcg"


def accel_options(accel: str, arch: str = "x86_64") -> list[str]:
    if arch == "aarch64":
        if accel != "tcg":
            raise ValueError(f"an aarch64 guest runs under tcg here, not {accel!r}")
        # The architected pointer authentication makes TCG boots ~2.5x slower
        # (docs/vlab.md); QEMU's own algorithm is as good for a lab guest.
        return ["-accel", "tcg,thread=multi", "-cpu", "max,pauth-impdef=on"]
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


def boot_options(
    guest: Guest, paths: GuestPaths, ovmf_code: str, direct_kernel: DirectKernel | None
) -> list[str]:
    """x86_64: UEFI firmware and GRUB from the guest's own disk. aarch64: `-kernel`."""
    if guest.arch == "aarch64":
        if direct_kernel is None:
            raise ValueError(f"guest {guest.name} (aarch64) needs its image's kernel")
        return [
            "-kernel",
            str(direct_kernel.kernel),
            "-initrd",
            str(direct_kernel.initrd),
            "-append",
            direct_kernel.append(),
        ]
    return [
        "-drive",
        f"if=pflash,format=raw,unit=0,readonly=on,file={ovmf_code}",
        "-drive",
        f"if=pflash,format=raw,unit=1,file={paths.efi_vars}",
    ]


def guest_command(
    guest: Guest,
    paths: GuestPaths,
    accel: str,
    ovmf_code: str = DEFAULT_OVMF_CODE,
    direct_kernel: DirectKernel | None = None,
) -> list[str]:
    """The full qemu command line (boot_options: firmware or kernel). It runs under the
    guest's power supply (miglab.vlab.supervisor), which restarts it after a reset."""
    command = [
        QEMU_BINARIES[guest.arch],
        "-name",
        f"miglab-{guest.name},process=miglab-{guest.name}",
        "-machine",
        # virt's GICv2 stops at 8 CPUs; v3 has no such limit.
        "virt,gic-version=3" if guest.arch == "aarch64" else "q35",
        *accel_options(guest_accel(guest, accel), guest.arch),
        "-smp",
        smp_option(guest),
        "-m",
        f"{guest.memory_mib}M",
        *numa_options(guest),
        *boot_options(guest, paths, ovmf_code, direct_kernel),
        "-drive",
        f"if=virtio,format=qcow2,file={paths.disk}",
        "-drive",
        f"if=virtio,format=raw,readonly=on,file={paths.seed}",
        "-netdev",
        f"user,id=net0,hostfwd=tcp:127.0.0.1:{guest.ssh_port}-:22",
        "-device",
        # No boot ROM: GRUB or `-kernel` boots the guest, never the network.
        "virtio-net-pci,netdev=net0,romfile=",
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
