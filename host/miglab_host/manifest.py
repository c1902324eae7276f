#!/usr/bin/env python3
"""SHA256SUMS of a run directory: written on the host, verified at home (stdlib only).

  python3 -m miglab_host manifest --run-dir DIR [--lab-facts FILE] [--allow-running]  # host
  python3 -m miglab_host manifest --verify --dir DIR                                  # home

Writing holds the run's lock (runner.lock), so no runner writes while the files are hashed;
a running runner is an error unless --allow-running. The lab facts file, if given and
present, is copied into the run directory first (lab-facts.json) so the manifest covers it.
Verifying checks every listed file and reports files that are missing, differ, or are not
listed. Both print one JSON object; exit 0 ok, 1 mismatch, 3 a runner is running.
"""

from __future__ import annotations

import errno
import fcntl
import hashlib
import os
import shutil
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


def write(run_dir: str, lab_facts: str | None, allow_running: bool) -> tuple[int, dict[str, Any]]:
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
        return 0, {"changed": old != text, "files": len(lines), "samples": n}
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
