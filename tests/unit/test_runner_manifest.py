"""The run's manifest and its one-archive trip home (miglab_host manifest): the archive is
rewritten only when the run changed, with the same bytes for the same files; unpacking
writes only what differs at home, refuses members that would land anywhere else, and
verifies the result against SHA256SUMS."""

from __future__ import annotations

import io
import json
import os
import tarfile
from pathlib import Path

import miglab_runner_testlib  # noqa: F401 (puts the host package on sys.path)
import pytest
from miglab_host import manifest


def a_run(root: Path) -> Path:
    run = root / "run-1"
    (run / "variants" / "vanilla").mkdir(parents=True)
    (run / "samples.jsonl").write_text('{"rep": 0}\n{"rep": 1}\n')
    (run / "variants" / "vanilla" / "plan.json").write_text('{"cells": []}\n')
    return run


def test_the_archive_holds_the_manifest_first_and_is_rewritten_only_when_the_run_changed(
    tmp_path: Path,
) -> None:
    run = a_run(tmp_path)
    archive = tmp_path / ".collect" / "run-1.tar"
    code, first = manifest.write(str(run), None, False, str(archive))
    assert code == 0 and first["changed"] and first["files"] == 2
    with tarfile.open(archive) as tar:
        names = tar.getnames()
        assert {m.uid for m in tar.getmembers()} == {0}
    assert names == ["SHA256SUMS", "samples.jsonl", "variants/vanilla/plan.json"]
    data = archive.read_bytes()
    os.utime(archive, (0, 0))
    code, again = manifest.write(str(run), None, False, str(archive))
    assert code == 0 and not again["changed"]
    assert archive.read_bytes() == data and archive.stat().st_mtime == 0  # not rewritten
    # An archive left behind by an older manifest (a crash between the two) is rewritten.
    (run / "samples.jsonl").write_text('{"rep": 0}\n')
    code, changed = manifest.write(str(run), None, False, str(archive))
    assert code == 0 and changed["changed"]
    assert manifest.archived_manifest(str(archive)) == (run / "SHA256SUMS").read_text()


def test_unpacking_writes_only_what_differs_and_verifies(tmp_path: Path) -> None:
    run = a_run(tmp_path / "host")
    archive = tmp_path / "run-1.tar"
    manifest.write(str(run), None, False, str(archive))
    home = tmp_path / "home" / "vnode1"
    code, first = manifest.unpack(str(archive), str(home))
    assert code == 0 and first["ok"], first
    assert sorted(first["written"]) == ["SHA256SUMS", "samples.jsonl", "variants/vanilla/plan.json"]
    assert (home / "samples.jsonl").read_bytes() == (run / "samples.jsonl").read_bytes()
    code, second = manifest.unpack(str(archive), str(home))
    assert code == 0 and second["written"] == []
    # A corrupted copy at home is written again; a file the host never had is reported.
    (home / "samples.jsonl").write_text("garbage\n")
    (home / "stray.txt").write_text("?")
    code, third = manifest.unpack(str(archive), str(home))
    assert third["written"] == ["samples.jsonl"]
    assert code == 1 and third["unlisted"] == ["stray.txt"] and third["differ"] == []


def hostile_archive(path: Path, member: tarfile.TarInfo, data: bytes = b"x") -> None:
    with tarfile.open(path, "w") as tar:
        member.size = len(data) if member.isfile() else 0
        tar.addfile(member, io.BytesIO(data) if member.isfile() else None)


@pytest.mark.parametrize(
    "name, kind",
    [
        ("../escaped", tarfile.REGTYPE),
        ("/tmp/absolute", tarfile.REGTYPE),
        ("a/../../escaped", tarfile.REGTYPE),
        ("link", tarfile.SYMTYPE),
        ("device", tarfile.CHRTYPE),
    ],
)
def test_a_member_that_would_land_elsewhere_is_refused_and_nothing_is_written(
    tmp_path: Path, name: str, kind: bytes
) -> None:
    member = tarfile.TarInfo(name)
    member.type = kind
    member.linkname = "/etc/passwd" if kind == tarfile.SYMTYPE else ""
    archive = tmp_path / "evil.tar"
    hostile_archive(archive, member)
    home = tmp_path / "home" / "vnode1"
    code, answer = manifest.unpack(str(archive), str(home))
    assert code == 1 and repr(name) in answer["error"] and str(archive) in answer["error"]
    assert not (tmp_path / "home").exists() and not (tmp_path / "escaped").exists()


def test_a_home_directory_that_links_elsewhere_is_refused(tmp_path: Path) -> None:
    run = a_run(tmp_path / "host")
    archive = tmp_path / "run-1.tar"
    manifest.write(str(run), None, False, str(archive))
    home = tmp_path / "home"
    home.mkdir()
    (home / "variants").symlink_to(tmp_path / "elsewhere", target_is_directory=True)
    (tmp_path / "elsewhere").mkdir()
    code, answer = manifest.unpack(str(archive), str(home))
    assert code == 1 and "'variants/vanilla/plan.json' leaves" in answer["error"]
    assert list((tmp_path / "elsewhere").iterdir()) == []


def test_the_cli_prints_one_json_object(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from miglab_host import cli

    run = a_run(tmp_path / "host")
    archive = tmp_path / "a.tar"
    assert cli.main(["manifest", "--run-dir", str(run), "--archive", str(archive)]) == 0
    assert json.loads(capsys.readouterr().out)["archive"] == str(archive)
    home = tmp_path / "home"
    assert cli.main(["manifest", "--verify", "--dir", str(home), "--unpack", str(archive)]) == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True
