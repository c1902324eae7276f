"""The guest disk image: built once, cached by a hash of everything that defines it.

Build steps (no loop devices or partition nodes needed, see docs/vlab.md):
mmdebstrap a Debian tree (customize hook: fstab, GRUB defaults, network, lab user,
seed unit) -> an ext4 root file made with `mkfs.ext4 -d` and a FAT ESP file -> both
written into a GPT disk made by sfdisk -> one direct-kernel boot of the guest's own
kernel whose init installs GRUB for UEFI and runs update-grub -> qcow2. Every x86_64
guest then boots this image (through a copy-on-write overlay) via OVMF and GRUB.

An aarch64 image is bootstrapped as a foreign architecture (qemu-user-static through
binfmt_misc) with Debian's 16 KiB-page kernel from backports and no GRUB: its guests boot
that kernel directly (miglab.vlab.qemu.DirectKernel), so the build keeps it and its
initramfs beside the disk.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from miglab.errors import MiglabError
from miglab.vlab.qemu import QEMU, accel_options

GUEST_FILES = Path(__file__).parent / "guest"
# Bump when the build procedure changes in a way the inputs below do not capture.
BUILDER_VERSION = 1
MIB = 1024 * 1024
ESP_MIB = 100
FIRST_PARTITION_MIB = 1

# Debian's name of each guest architecture.
DEBIAN_ARCHES = {"x86_64": "amd64", "aarch64": "arm64"}

# What boots the guest, per architecture: x86_64 like a server (distro kernel, GRUB for UEFI);
# aarch64 a Grace-like page size (16 KiB: Debian has no 64 KiB flavour, the lab builds those)
# and kexec-tools, which starts every test kernel (no firmware path keeps its NUMA nodes).
ARCH_PACKAGES = {
    "x86_64": ("linux-image-cloud-amd64", "grub-efi-amd64"),
    "aarch64": ("linux-image-arm64-16k", "kexec-tools"),
}
# Suites added to the recipe's own, per architecture (bookworm's 16k kernel is a backport).
ARCH_EXTRA_SUITES = {"x86_64": (), "aarch64": ("{suite}-backports",)}
# The only modules in a foreign image's initramfs: what mounts the root file system (virtio
# PCI is built into Debian's arm64 kernels, the disk driver and ext4 are modules).
ARCH_INITRAMFS_MODULES = {"x86_64": (), "aarch64": ("virtio_blk", "ext4")}

COMMON_PACKAGES = (
    "initramfs-tools",
    "systemd-sysv",
    "udev",
    "kmod",
    "dosfstools",
    "iproute2",
    "procps",
    # reachable by Ansible
    "openssh-server",
    "python3",
    "sudo",
    "ca-certificates",
    "rsync",
    # the benchmark's needs: build tools, NUMA tools, load generator
    "gcc",
    "make",
    "libc6-dev",
    "libnuma-dev",
    "numactl",
    "stress-ng",
    # what lab_host installs too, so provisioning a fresh guest has nothing slow to do
    "linux-perf",
)


def default_packages(arch: str) -> tuple[str, ...]:
    return ARCH_PACKAGES[arch] + COMMON_PACKAGES


DEFAULT_PACKAGES = default_packages("x86_64")


@dataclass(frozen=True)
class ImageRecipe:
    suite: str = "bookworm"
    mirror: str = "http://deb.debian.org/debian"
    packages: tuple[str, ...] = DEFAULT_PACKAGES
    root_size_mib: int = 6144
    extra: dict[str, str] = field(default_factory=dict)
    arch: str = "x86_64"
    extra_suites: tuple[str, ...] = ()
    # Empty: initramfs-tools' default (MODULES=most).
    initramfs_modules: tuple[str, ...] = ()

    @classmethod
    def for_arch(
        cls,
        arch: str,
        extra_packages: tuple[str, ...] = (),
        suite: str = "bookworm",
        **fields: object,
    ) -> ImageRecipe:
        """The recipe of `arch`'s image: its default packages plus `extra_packages`."""
        if arch not in DEBIAN_ARCHES:
            raise MiglabError(f"no guest image for architecture {arch!r}")
        base = default_packages(arch)
        return cls(
            suite=suite,
            packages=base + tuple(p for p in extra_packages if p not in base),
            arch=arch,
            extra_suites=tuple(s.format(suite=suite) for s in ARCH_EXTRA_SUITES[arch]),
            initramfs_modules=ARCH_INITRAMFS_MODULES[arch],
            **fields,  # type: ignore[arg-type]
        )

    @property
    def debian_arch(self) -> str:
        return DEBIAN_ARCHES[self.arch]

    def cache_key(self) -> str:
        """sha256 over the recipe, the files copied into the guest and the builder itself."""
        digest = hashlib.sha256()
        recipe = asdict(self)
        recipe["packages"] = sorted(self.packages)
        recipe["builder_version"] = BUILDER_VERSION
        digest.update(json.dumps(recipe, sort_keys=True).encode())
        for path in sorted(GUEST_FILES.iterdir()):
            if path.is_file():
                digest.update(path.name.encode() + b"\0" + path.read_bytes() + b"\0")
        digest.update(Path(__file__).read_bytes())
        return digest.hexdigest()

    def image_name(self) -> str:
        return f"{self.suite}-{self.debian_arch}-{self.cache_key()[:16]}"


@dataclass(frozen=True)
class BuiltImage:
    disk: Path
    kernel: Path
    initrd: Path
    metadata: Path

    @classmethod
    def in_cache(cls, cache_dir: Path, recipe: ImageRecipe) -> BuiltImage:
        return cls.of_disk(cache_dir / f"{recipe.image_name()}.qcow2")

    @classmethod
    def of_disk(cls, disk: Path) -> BuiltImage:
        """The image whose disk is `disk` (a guest's start is given the disk only)."""
        return cls(
            disk=disk,
            kernel=disk.with_suffix(".vmlinuz"),
            initrd=disk.with_suffix(".initrd"),
            metadata=disk.with_suffix(".json"),
        )

    def exists(self) -> bool:
        # The metadata is written last: a build interrupted before it is not an image.
        return all(path.is_file() for path in (self.disk, self.kernel, self.initrd, self.metadata))


def _run(command: list[str], step: str, **kwargs: object) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(command, capture_output=True, text=True, check=False, **kwargs)  # type: ignore[call-overload]
    if result.returncode != 0:
        tail = "\n".join((result.stderr or result.stdout).strip().splitlines()[-15:])
        raise MiglabError(f"image build, {step}: `{' '.join(command[:3])} ...` failed:\n{tail}")
    return result


def _only(pattern: str, directory: Path) -> Path:
    matches = sorted(directory.glob(pattern))
    if len(matches) != 1:
        raise MiglabError(f"image build: expected one {directory}/{pattern}, found {len(matches)}")
    return matches[0]


def bootstrap(recipe: ImageRecipe, rootdir: Path) -> None:
    """mmdebstrap the tree; a foreign architecture runs its maintainer scripts under
    qemu-user-static (binfmt_misc must be mounted: the vlab role checks with arch-test)."""
    _run(
        [
            "mmdebstrap",
            "--mode=root",
            "--variant=apt",
            "--format=directory",
            f"--architectures={recipe.debian_arch}",
            "--include=" + ",".join(recipe.packages),
            # Keep the package lists so apt in the guest works like on a fresh server.
            "--skip=cleanup/apt/lists",
            *(
                [
                    f'--essential-hook=sh {GUEST_FILES / "initramfs-modules.sh"} "$1" '
                    + " ".join(recipe.initramfs_modules)
                ]
                if recipe.initramfs_modules
                else []
            ),
            f'--customize-hook=sh {GUEST_FILES / "customize.sh"} "$1"',
            recipe.suite,
            str(rootdir),
            recipe.mirror,
            *(f"deb {recipe.mirror} {suite} main" for suite in recipe.extra_suites),
        ],
        "mmdebstrap",
    )


def assemble_disk(rootdir: Path, workdir: Path, root_size_mib: int) -> Path:
    """A GPT disk (ESP + ext4 root) assembled from filesystem images, without loop devices."""
    esp = workdir / "esp.img"
    root = workdir / "root.img"
    disk = workdir / "disk.raw"
    _run(["mkfs.vfat", "-n", "MIGLAB-ESP", "-C", str(esp), str(ESP_MIB * 1024)], "ESP filesystem")
    _run(
        [
            "mkfs.ext4",
            "-q",
            "-L",
            "miglab-root",
            "-d",
            str(rootdir),
            str(root),
            f"{root_size_mib}M",
        ],
        "root filesystem",
    )
    root_start = FIRST_PARTITION_MIB + ESP_MIB
    with open(disk, "wb") as handle:
        handle.truncate((root_start + root_size_mib + 1) * MIB)
    sectors = MIB // 512
    layout = (
        "label: gpt\n"
        f"start={FIRST_PARTITION_MIB * sectors}, size={ESP_MIB * sectors}, type=U, name=esp\n"
        f"start={root_start * sectors}, size={root_size_mib * sectors}, type=L, name=root\n"
    )
    _run(["sfdisk", "--quiet", str(disk)], "partition table", input=layout)
    for image, start in ((esp, FIRST_PARTITION_MIB), (root, root_start)):
        _run(
            [
                "dd",
                f"if={image}",
                f"of={disk}",
                "bs=1M",
                f"seek={start}",
                "conv=notrunc,sparse",
                "status=none",
            ],
            f"write {image.name} into the disk",
        )
        image.unlink()
    return disk


def install_bootloader(disk: Path, kernel: Path, initrd: Path, accel: str, timeout: float) -> str:
    """Boot the guest's own kernel once with init=miglab-firstboot (GRUB install)."""
    log = disk.with_suffix(".firstboot.log")
    command = [
        QEMU,
        *accel_options(accel),
        "-m",
        "1024M",
        "-smp",
        "2",
        "-nodefaults",
        "-no-reboot",
        "-display",
        "none",
        "-serial",
        f"file:{log}",
        "-kernel",
        str(kernel),
        "-initrd",
        str(initrd),
        "-append",
        "root=/dev/vda2 rw console=ttyS0 init=/usr/local/sbin/miglab-firstboot panic=-1",
        "-drive",
        f"if=virtio,format=raw,file={disk}",
    ]
    try:
        subprocess.run(command, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired as error:
        raise MiglabError(
            f"image build: the GRUB-install boot did not finish in {timeout:.0f} s; see {log}"
        ) from error
    text = log.read_text(errors="replace")
    if "MIGLAB-FIRSTBOOT-OK" not in text:
        tail = "\n".join(text.strip().splitlines()[-20:])
        raise MiglabError(f"image build: the GRUB-install boot failed; console tail:\n{tail}")
    return text


def build_image(
    recipe: ImageRecipe, cache_dir: Path, accel: str, timeout: float = 1200.0
) -> BuiltImage:
    """Build the image into `cache_dir` unless a cached one exists; returns it."""
    image = BuiltImage.in_cache(cache_dir, recipe)
    if image.exists():
        return image
    cache_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    with tempfile.TemporaryDirectory(prefix=".build-", dir=cache_dir) as scratch:
        workdir = Path(scratch)
        rootdir = workdir / "root"
        bootstrap(recipe, rootdir)
        kernel = _only("vmlinuz-*", rootdir / "boot")
        initrd = _only("initrd.img-*", rootdir / "boot")
        shutil.copyfile(kernel, workdir / "vmlinuz")
        shutil.copyfile(initrd, workdir / "initrd")
        kernel_release = kernel.name.removeprefix("vmlinuz-")
        disk = assemble_disk(rootdir, workdir, recipe.root_size_mib)
        shutil.rmtree(rootdir)
        if recipe.arch == "x86_64":
            install_bootloader(disk, workdir / "vmlinuz", workdir / "initrd", accel, timeout)
        qcow2 = workdir / "disk.qcow2"
        _run(["qemu-img", "convert", "-O", "qcow2", str(disk), str(qcow2)], "convert to qcow2")
        os.replace(qcow2, image.disk)
        os.replace(workdir / "vmlinuz", image.kernel)
        os.replace(workdir / "initrd", image.initrd)
        metadata = {
            "schema": "miglab.vlab-image/1",
            "cache_key": recipe.cache_key(),
            "recipe": {**asdict(recipe), "packages": list(recipe.packages)},
            "kernel_release": kernel_release,
            "built_at": datetime.now(UTC).isoformat(timespec="seconds"),
            "build_seconds": round(time.monotonic() - started, 1),
            "accel": accel,
        }
        partial = image.metadata.with_suffix(".json.partial")
        partial.write_text(json.dumps(metadata, indent=2) + "\n")
        os.replace(partial, image.metadata)
    return image
