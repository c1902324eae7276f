"""The runner archive the sweep role ships: reproducible, root-owned, content-dated."""

from __future__ import annotations

import importlib.util
import shutil
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
FILES = REPO / "roles" / "sweep" / "files"
_spec = importlib.util.spec_from_file_location("pack_runner", FILES / "pack_runner.py")
assert _spec and _spec.loader
pack_runner = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(pack_runner)


@pytest.fixture
def package(tmp_path: Path) -> Path:
    copy = tmp_path / "miglab_runner"
    shutil.copytree(FILES / "miglab_runner", copy, ignore=shutil.ignore_patterns("__pycache__"))
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
    expected = {"miglab_runner"} | {
        f"miglab_runner/{p.name}" for p in package.iterdir() if p.suffix in (".py", ".json")
    }
    assert set(found) == expected
    assert "miglab_runner/profiles.json" in found
    assert all(m.uid == 0 and m.gid == 0 and m.uname == "root" for m in found.values())
    assert found["miglab_runner/cli.py"].mode == 0o644


def test_a_changed_file_gets_another_mtime(package: Path, tmp_path: Path) -> None:
    before = members(pack_runner.pack(package), tmp_path)
    cli = package / "cli.py"
    cli.write_text(cli.read_text().replace("stdlib only", "stdlib only!"))
    after = members(pack_runner.pack(package), tmp_path)
    assert after["miglab_runner/cli.py"].mtime != before["miglab_runner/cli.py"].mtime
    assert after["miglab_runner/plan.py"].mtime == before["miglab_runner/plan.py"].mtime


def test_main_writes_the_archive_into_the_cache(
    package: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    assert pack_runner.main([str(package)]) == 0
    written = Path(capsys.readouterr().out.strip())
    assert written.parent == tmp_path / "cache" / "miglab" / "runner"
    assert written.read_bytes() == pack_runner.pack(package)
    assert pack_runner.main([]) == 2
