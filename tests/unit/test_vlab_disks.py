"""A guest's overlay disk follows its base image's bytes, not only its file name."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

from miglab.vlab.guests import prepare_disks
from miglab.vlab.qemu import GuestPaths
from miglab.vlab.topology import parse_guests


def build_base(cache: Path, built_at: str) -> Path:
    """A (tiny) base image in the cache, as the image builder leaves it: qcow2 + metadata."""
    image = cache / "bookworm-amd64-0123456789abcdef.qcow2"
    image.unlink(missing_ok=True)
    subprocess.run(["qemu-img", "create", "-q", "-f", "qcow2", str(image), "64M"], check=True)
    image.with_suffix(".json").write_text(json.dumps({"built_at": built_at}))
    return image


def backing_of(disk: Path) -> str:
    info = subprocess.run(
        ["qemu-img", "info", "--output=json", str(disk)], check=True, capture_output=True
    )
    return str(json.loads(info.stdout)["backing-filename"])


def guest_wrote(disk: Path) -> bool:
    """Whether the overlay holds what `write_as_guest` wrote (qemu-io reads through it)."""
    read = subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "read -P 0xab 0 64k", str(disk)],
        capture_output=True,
        text=True,
    )
    return read.returncode == 0 and "Pattern verification failed" not in read.stdout


def write_as_guest(disk: Path) -> None:
    subprocess.run(
        ["qemu-io", "-f", "qcow2", "-c", "write -P 0xab 0 64k", str(disk)],
        check=True,
        capture_output=True,
    )


def test_a_rebuilt_base_image_of_the_same_name_gets_a_new_overlay(tmp_path: Path) -> None:
    (guest,) = parse_guests(
        [{"name": "vnode1", "ssh_port": 10022, "numa": [{"cpus": 1, "memory_mib": 512}]}]
    )
    paths = GuestPaths.for_guest(tmp_path / "state", guest.name)
    cache = tmp_path / "cache"
    cache.mkdir()
    vars_template = tmp_path / "OVMF_VARS.fd"
    vars_template.write_bytes(b"\0" * 4096)
    base = build_base(cache, "2026-12-01T12:25:00+00:00")

    assert prepare_disks(guest, paths, base, str(vars_template)) == ["disk", "efi_vars"]
    assert backing_of(paths.disk) == str(base)
    write_as_guest(paths.disk)
    assert guest_wrote(paths.disk)
    assert prepare_disks(guest, paths, base, str(vars_template)) == []
    assert guest_wrote(paths.disk)  # kept across up/down

    # until the image is rebuilt under the same name (other bytes): a fresh overlay
    build_base(cache, "2026-12-01T15:55:59+00:00")
    assert prepare_disks(guest, paths, base, str(vars_template)) == ["disk", "efi_vars"]
    assert not guest_wrote(paths.disk)
    assert backing_of(paths.disk) == str(base)
    assert prepare_disks(guest, paths, base, str(vars_template)) == []
