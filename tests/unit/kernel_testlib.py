"""Helpers for the kernel_build / kernel_boot unit tests: load the role's Python files, and a
tiny fake kernel tree whose Makefile mimics the targets the build tool uses."""

from __future__ import annotations

import difflib
import importlib.util
import sys
import tarfile
from pathlib import Path
from types import ModuleType

REPO = Path(__file__).resolve().parents[2]
# The host package's directory: the build tool runs as `python3 -m miglab_host kbuild` there.
HOST_DIR = REPO / "host"
FILTERS = REPO / "roles" / "kernel_build" / "filter_plugins" / "kernel_build.py"
GRUB_MODULE = REPO / "roles" / "kernel_boot" / "library" / "kernel_grub.py"


def load(path: Path, name: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location(name, path)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# A stand-in for a kernel tree: enough of kbuild's interface for the tool (O=, defconfig,
# *.config targets, olddefconfig, syncconfig, kernelrelease, bindeb-pkg). Its olddefconfig
# drops CONFIG_ARM64_64K_PAGES (as a real x86 tree would) so required options can go missing.
FAKE_MAKEFILE = r"""
CONFIG := $(O)/.config
RELEASE = 6.12.0$(shell sed -n 's/^CONFIG_LOCALVERSION="\(.*\)"/\1/p' $(CONFIG))

%defconfig:
	@mkdir -p $(O)
	@cp $(CURDIR)/base.config $(CONFIG)

%.config:
	@cat $(CURDIR)/kernel/configs/$@ >> $(CONFIG)

olddefconfig:
	@grep -v '^CONFIG_ARM64_64K_PAGES=' $(CONFIG) > $(CONFIG).new || true
	@mv $(CONFIG).new $(CONFIG)

syncconfig:
	@true

kernelrelease:
	@echo $(RELEASE)

bindeb-pkg:
	@cat $(CURDIR)/mm/migrate.c > /dev/null
	@echo build >> $(O)/../compiles
	@echo $(KBUILD_BUILD_HOST) > $(O)/../linux-image-$(RELEASE)_$(KDEB_PKGVERSION)_amd64.deb
"""

BASE_CONFIG = """CONFIG_CC_VERSION_TEXT="gcc (fake) 12"
CONFIG_LOCALVERSION=""
CONFIG_LOCALVERSION_AUTO=y
CONFIG_NUMA=y
CONFIG_MIGRATION=y
CONFIG_TRANSPARENT_HUGEPAGE=y
# CONFIG_EFI is not set
"""

MIGRATE_C = "".join(f"line {n} of mm/migrate.c\n" for n in range(1, 41))


def make_source_tarball(directory: Path) -> Path:
    """A tarball of a fake kernel tree (top-level directory, as kernel tarballs have)."""
    tree = directory / "linux-fake"
    (tree / "mm").mkdir(parents=True)
    (tree / "kernel" / "configs").mkdir(parents=True)
    (tree / "Makefile").write_text(FAKE_MAKEFILE)
    (tree / "base.config").write_text(BASE_CONFIG)
    (tree / "kernel" / "configs" / "kvm_guest.config").write_text("CONFIG_VIRTIO=y\n")
    (tree / "mm" / "migrate.c").write_text(MIGRATE_C)
    (tree / "mm" / "util.c").write_text("util\n")
    tarball = directory / "linux-fake.tar.gz"
    with tarfile.open(tarball, "w:gz") as archive:
        archive.add(tree, arcname="linux-fake")
    return tarball


def diff(path: str, old: str, new: str) -> str:
    """A -p1 unified diff of one file (git apply takes it)."""
    lines = difflib.unified_diff(
        old.splitlines(keepends=True), new.splitlines(keepends=True), f"a/{path}", f"b/{path}"
    )
    return f"diff --git a/{path} b/{path}\n" + "".join(lines)


def mail(subject: str, body_diff: str) -> str:
    """The patch as git format-patch writes it (applied with git am)."""
    return (
        "From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001\n"
        "From: Tester <tester@example.org>\n"
        "Date: Fri, 10 Jan 2025 12:00:00 +0000\n"
        f"Subject: [PATCH] {subject}\n\n{subject}\n---\n{body_diff}--\n2.39.5\n\n"
    )
