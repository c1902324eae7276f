#!/usr/bin/env python3
"""SHA256SUMS of a run directory: written on the host, verified at home (stdlib only).

  python3 -m miglab_host manifest --run-dir DIR [--lab-facts FILE] [--allow-running] \
      [--archive FILE]                                                    # host
  python3 -m miglab_host manifest --verify --dir DIR [--unpack FILE]      # home

Writing holds the run's lock (runner.lock), so no runner writes while the files are hashed;
a running runner is an error unless --allow-running. The lab facts file, if given and
present, is copied into the run directory first (lab-facts.json) so the manifest covers it.
With --archive, the run (SHA256SUMS first) is also written as one tar, so that it comes
home in one transfer; the tar is rewritten only when the manifest changed, with the same
bytes for the same files. Verifying checks every listed file and reports files that are
missing, differ, or are not listed; --unpack first writes the archive's files that differ
at home (only plain files, each under --dir). All print one JSON object; exit 0 ok,
1 mismatch (or an archive that cannot be unpacked), 3 a runner is running.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
import tarfile
from typing import Any

MANIFEST = "SHA256SUMS"
SKIP = {MANIFEST, "runner.lock"}


def sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def files_under(root: str) -> list[str]:
    out = []
    for dirpath, dirnames, filenames in os.walk(root):
        dirnames.sort()
        for name in sorted(filenames):
            if name in SKIP or ".tmp." in name:
                continue
            out.append(os.path.relpath(os.path.join(dirpath, name), root))
    return sorted(out)


def archived_manifest(archive: str) -> str | None:
    """The SHA256SUMS an archive of a run was written with (its first member), or None."""
    try:
        with tarfile.open(archive, "r:") as tar:
            first = tar.next()
            if first is None or first.name != MANIFEST or not first.isfile():
                return None
            data = tar.extractfile(first)
            return data.read().decode("utf-8") if data else None
    except (OSError, tarfile.TarError, UnicodeDecodeError):
        return None


def write_archive(run_dir: str, manifest_text: str, archive: str) -> bool:
    """The run as one tar (SHA256SUMS, then the listed files in order), unless the archive
    there was written with the same manifest. Owners and names are normalised, so the same
    files give the same bytes (the fetch then sees nothing new). True when written."""
    if archived_manifest(archive) == manifest_text:
        return False
    os.makedirs(os.path.dirname(archive) or ".", exist_ok=True)
    tmp = f"{archive}.tmp.{os.getpid()}"
    with tarfile.open(tmp, "w:", format=tarfile.PAX_FORMAT) as tar:
        for rel in [MANIFEST, *(line.split("  ", 1)[1] for line in manifest_text.splitlines())]:
            info = tar.gettarinfo(os.path.join(run_dir, rel), arcname=rel)
            info.uid = info.gid = 0
            info.uname = info.gname = ""
            with open(os.path.join(run_dir, rel), "rb") as f:
                tar.addfile(info, f)
    with open(tmp, "rb") as f:
        os.fsync(f.fileno())
    os.replace(tmp, archive)
    return True


def write(
    run_dir: str, lab_facts: str | None, allow_running: bool, archive: str | None = None
) -> tuple[int, dict[str, Any]]:
    lock = os.open(os.path.join(run_dir, "runner.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError as err:
        if err.errno not in (errno.EAGAIN, errno.EACCES):
            raise
        if not allow_running:
            message = (
                f"a sweep runner is still writing {run_dir}; wait for it "
                "or collect with collect_allow_running"
            )
            return 3, {"error": message}
    try:
        if lab_facts and os.path.isfile(lab_facts):
            dest = os.path.join(run_dir, "lab-facts.json")
            if not os.path.exists(dest) or sha256(dest) != sha256(lab_facts):
                shutil.copyfile(lab_facts, dest)
        lines = [f"{sha256(os.path.join(run_dir, rel))}  {rel}\n" for rel in files_under(run_dir)]
        text = "".join(lines)
        path = os.path.join(run_dir, MANIFEST)
        old = open(path, encoding="utf-8").read() if os.path.exists(path) else None
        if old != text:
            tmp = path + ".new"
            with open(tmp, "w", encoding="utf-8") as f:
                f.write(text)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        samples = os.path.join(run_dir, "samples.jsonl")
        n = sum(1 for _ in open(samples, "rb")) if os.path.exists(samples) else 0
        archived = write_archive(run_dir, text, archive) if archive else False
        answer = {"changed": old != text or archived, "files": len(lines), "samples": n}
        return 0, {**answer, **({"archive": archive} if archive else {})}
    finally:
        os.close(lock)


def verify(root: str) -> tuple[int, dict[str, Any]]:
    path = os.path.join(root, MANIFEST)
    listed: dict[str, str] = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            digest, rel = line.rstrip("\n").split("  ", 1)
            listed[rel] = digest
    missing = sorted(rel for rel in listed if not os.path.isfile(os.path.join(root, rel)))
    differ = sorted(
        rel
        for rel in listed
        if rel not in missing and sha256(os.path.join(root, rel)) != listed[rel]
    )
    unlisted = sorted(set(files_under(root)) - set(listed))
    ok = not (missing or differ or unlisted)
    answer = {
        "ok": ok,
        "files": len(listed),
        "missing": missing,
        "differ": differ,
        "unlisted": unlisted,
    }
    return (0 if ok else 1), answer


def member_problem(member: tarfile.TarInfo) -> str | None:
    """Why an archive member may not be written at home, or None: only plain files, each at
    a relative, normalised path (nothing absolute, no `..`, no links or devices)."""
    name = member.name
    if not member.isfile():
        return f"{name!r} is not a plain file"
    if os.path.isabs(name) or os.path.normpath(name) != name or ".." in name.split("/"):
        return f"{name!r} is not a plain relative path"
    return None


def unpack(archive: str, root: str) -> tuple[int, dict[str, Any]]:
    """Write the archive's files under root where they are missing or differ (the others
    are left alone, so a second collect writes nothing); then verify root."""
    written = []
    try:
        with tarfile.open(archive, "r:") as tar:
            members = tar.getmembers()
            problems = [p for p in map(member_problem, members) if p]
            if problems:
                return 1, {"ok": False, "error": f"{archive}: {'; '.join(problems)}"}
            real_root = os.path.realpath(root)
            for member in members:
                dest = os.path.join(root, member.name)
                if os.path.commonpath([real_root, os.path.realpath(dest)]) != real_root:
                    return 1, {"ok": False, "error": f"{archive}: {member.name!r} leaves {root}"}
                data = tar.extractfile(member)
                content = data.read() if data else b""
                if os.path.isfile(dest) and sha256(dest) == hashlib.sha256(content).hexdigest():
                    continue
                os.makedirs(os.path.dirname(dest), exist_ok=True)
                tmp = f"{dest}.tmp.{os.getpid()}"
                with open(tmp, "wb") as f:
                    f.write(content)
                os.utime(tmp, (member.mtime, member.mtime))
                os.replace(tmp, dest)
                written.append(member.name)
    except (OSError, tarfile.TarError) as err:
        return 1, {"ok": False, "error": f"{archive}: {err}", "written": written}
    code, answer = verify(root)
    return code, {**answer, "written": written}
