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
    # An interrupted build leaves no metadata: it is not an image to reuse.
    assert not built.exists()
    built.metadata.write_text("{}")
    assert built.exists()
