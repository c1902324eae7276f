"""The host package archive the host_package role ships: reproducible, root-owned,
content-dated."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

import pytest
from miglab_host import pack as pack_runner

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "host"


@pytest.fixture
def package(tmp_path: Path) -> Path:
    copy = tmp_path / "miglab_host"
    shutil.copytree(FILES / "miglab_host", copy, ignore=shutil.ignore_patterns("__pycache__"))
    (copy / "__pycache__").mkdir()
    (copy / "__pycache__" / "cli.cpython-311.pyc").write_bytes(b"stale")
    return copy


def members(archive: bytes, tmp_path: Path) -> dict[str, tarfile.TarInfo]:
    path = tmp_path / "a.tar"
    path.write_bytes(archive)
    with tarfile.open(path) as tar:
        return {m.name: m for m in tar.getmembers()}


def test_the_archive_is_reproducible_and_holds_only_the_package(
    package: Path, tmp_path: Path
) -> None:
    first = pack_runner.pack(package)
    (package / "cli.py").touch()  # a new mtime alone changes nothing
    assert pack_runner.pack(package) == first
    found = members(first, tmp_path)
    expected = {"miglab_host"} | {
        f"miglab_host/{p.name}" for p in package.iterdir() if p.suffix in (".py", ".json")
    }
    assert set(found) == expected
    assert "miglab_host/profiles.json" in found
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" for m in found.values())
    assert found["miglab_host/cli.py"].mode == 0o644


def test_a_changed_file_gets_another_mtime(package: Path, tmp_path: Path) -> None:
    before = members(pack_runner.pack(package), tmp_path)
    cli = package / "cli.py"
    cli.write_text(cli.read_text() + "\n# changed\n")
    after = members(pack_runner.pack(package), tmp_path)
    assert after["miglab_host/cli.py"].mtime != before["miglab_host/cli.py"].mtime
    assert after["miglab_host/plan.py"].mtime == before["miglab_host/plan.py"].mtime


def test_the_archive_is_written_into_the_cache_once(
    package: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    written = pack_runner.archive_path(package)
    assert written.parent == tmp_path / "cache" / "miglab" / "host-package"
    assert written.read_bytes() == pack_runner.pack(package)
    assert pack_runner.archive_path(package) == written
    assert list(written.parent.iterdir()) == [written]


def test_the_installed_package_packs_itself() -> None:
    """`python -m miglab_host.pack` (what the role runs) packs this checkout's host/."""
    assert pack_runner.PACKAGE == FILES / "miglab_host"


def test_the_host_package_needs_the_standard_library_only() -> None:
    """Hosts run it with their own python3: no module outside the standard library."""
    import ast
    import sys

    for path in sorted((FILES / "miglab_host").glob("*.py")):
        tree = ast.parse(path.read_text())
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names = [node.module]
            else:
                continue
            for name in names:
                top = name.split(".")[0]
                assert top in sys.stdlib_module_names or top == "miglab_host", (path.name, name)
