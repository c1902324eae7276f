"""The guest image's cache key: stable for the same inputs, new for any changed one."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from miglab.vlab import image
from miglab.vlab.image import BuiltImage, ImageRecipe


def test_key_is_stable_and_ignores_package_order() -> None:
    recipe = ImageRecipe()
    assert recipe.cache_key() == ImageRecipe().cache_key()
    reordered = ImageRecipe(packages=tuple(reversed(recipe.packages)))
    assert reordered.cache_key() == recipe.cache_key()


@pytest.mark.parametrize(
    "changed",
    [
        ImageRecipe(suite="trixie"),
        ImageRecipe(mirror="http://mirror.example/debian"),
        ImageRecipe(packages=(*image.DEFAULT_PACKAGES, "htop")),
        ImageRecipe(root_size_mib=8192),
        ImageRecipe.for_arch("aarch64"),
    ],
)
def test_key_changes_with_each_recipe_input(changed: ImageRecipe) -> None:
    assert changed.cache_key() != ImageRecipe().cache_key()


def test_key_changes_when_a_file_copied_into_the_guest_changes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    guest_files = tmp_path / "guest"
    shutil.copytree(image.GUEST_FILES, guest_files)
    monkeypatch.setattr(image, "GUEST_FILES", guest_files)
    before = ImageRecipe().cache_key()
    seed_script = guest_files / "miglab-seed"
    seed_script.write_text(seed_script.read_text() + "\n# one more line\n")
    assert ImageRecipe().cache_key() != before


def test_cached_image_needs_its_metadata(tmp_path: Path) -> None:
    recipe = ImageRecipe()
    built = BuiltImage.in_cache(tmp_path, recipe)
    assert built.disk.name == f"bookworm-amd64-{recipe.cache_key()[:16]}.qcow2"
    built.disk.write_bytes(b"qcow")
    built.kernel.write_bytes(b"kernel")
    built.initrd.write_bytes(b"initrd")
    # An interrupted build leaves no metadata: it is not an image to reuse.
    assert not built.exists()
    built.metadata.write_text("{}")
    assert built.exists()


def test_the_x86_recipe_is_the_default_one() -> None:
    assert ImageRecipe.for_arch("x86_64") == ImageRecipe()


def test_an_aarch64_image_is_bookworm_arm64_with_the_16k_kernel_from_backports() -> None:
    recipe = ImageRecipe.for_arch("aarch64", ("htop",), suite="bookworm")
    assert recipe.debian_arch == "arm64"
    assert recipe.extra_suites == ("bookworm-backports",)
    assert "linux-image-arm64-16k" in recipe.packages
    assert "kexec-tools" in recipe.packages
    # Booted directly, not by GRUB: no x86 package comes along.
    assert not {"linux-image-cloud-amd64", "grub-efi-amd64"} & set(recipe.packages)
    assert recipe.packages[-1] == "htop"
    # mkinitramfs under qemu-user copies only what mounts the root, not MODULES=most.
    assert recipe.initramfs_modules == ("virtio_blk", "ext4")
    assert ImageRecipe().initramfs_modules == ()
    assert recipe.image_name().startswith("bookworm-arm64-")


def test_an_image_of_an_unknown_arch_is_refused() -> None:
    with pytest.raises(image.MiglabError, match="riscv64"):
        ImageRecipe.for_arch("riscv64")


def test_a_guest_finds_its_image_kernel_beside_the_disk(tmp_path: Path) -> None:
    built = BuiltImage.in_cache(tmp_path, ImageRecipe.for_arch("aarch64"))
    assert BuiltImage.of_disk(built.disk) == built
    assert built.initrd == built.disk.with_suffix(".initrd")


@pytest.mark.parametrize(("arch", "debian_arch"), [("x86_64", "amd64"), ("aarch64", "arm64")])
def test_the_role_module_names_each_architecture_its_own_image(
    tmp_path: Path, arch: str, debian_arch: str
) -> None:
    """roles/vlab/library/vlab_image.py, run by ansible (check mode: nothing is built)."""
    import json
    import os
    import subprocess
    import sys

    repo = Path(__file__).parents[2]
    args = json.dumps({"cache_dir": str(tmp_path), "arch": arch})
    done = subprocess.run(
        [
            str(Path(sys.executable).parent / "ansible"),
            "localhost",
            "--check",
            "-M",
            "roles/vlab/library",
            "-m",
            "vlab_image",
            "-a",
            args,
            "--one-line",
        ],
        cwd=repo,
        env={**os.environ, "ANSIBLE_CALLBACK_RESULT_FORMAT": "json"},
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    # "localhost | CHANGED => {...}"
    result = json.loads(done.stdout.split("=>", 1)[1])
    expected = BuiltImage.in_cache(tmp_path, ImageRecipe.for_arch(arch))
    assert result["changed"] is True
    assert result["disk"] == str(expected.disk)
    assert Path(result["disk"]).name.startswith(f"bookworm-{debian_arch}-")
    assert result["initrd"] == str(expected.initrd)
    assert not expected.disk.exists()
