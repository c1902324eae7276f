"""Pack this package (miglab_host) into one tar for the roles to ship (one transfer and one
unarchive per host, instead of one copy per file: each module run costs seconds on a slow
host). Run on the controller; prints the archive's path.

The archive is reproducible: members sorted, owned by root, modes fixed, and each file's
mtime derived from its content. So an unchanged package unpacks to identical files (the
unarchive task reports no change), and a changed file gets another mtime, which also
invalidates Python's bytecode cache on the host (it is keyed by source mtime and size).

    python -m miglab_host.pack            # the controller's virtualenv
"""

from __future__ import annotations

import hashlib
import io
import os
import tarfile
from pathlib import Path

# Content-derived mtimes fall in [EPOCH, EPOCH + SPAN): 2023-11 .. 2026-12, plausible dates.
EPOCH = 1_700_000_000
SPAN = 100_000_000
PACKAGE = Path(__file__).resolve().parent


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(base) / "miglab" / "host-package"


def member(name: str, data: bytes | None) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.uid = info.gid = 0
    info.uname = info.gname = "root"
    if data is None:
        info.type = tarfile.DIRTYPE
        info.mode = 0o755
        info.mtime = EPOCH
    else:
        info.size = len(data)
        info.mode = 0o644
        info.mtime = EPOCH + int(hashlib.sha256(data).hexdigest()[:12], 16) % SPAN
    return info


def pack(package: Path) -> bytes:
    files = sorted(p for p in package.iterdir() if p.is_file() and p.suffix in (".py", ".json"))
    if not files:
        raise SystemExit(f"{package}: no package files to pack")
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.GNU_FORMAT) as tar:
        tar.addfile(member(package.name, None))
        for path in files:
            data = path.read_bytes()
            tar.addfile(member(f"{package.name}/{path.name}", data), io.BytesIO(data))
    return out.getvalue()


def archive_path(package: Path = PACKAGE) -> Path:
    """Pack the package into the cache (once per content) and return the archive's path."""
    archive = pack(package)
    target = cache_dir() / f"{package.name}-{hashlib.sha256(archive).hexdigest()[:16]}.tar"
    if not target.exists():
        target.parent.mkdir(parents=True, exist_ok=True)
        partial = target.with_suffix(f".tmp{os.getpid()}")
        partial.write_bytes(archive)
        partial.replace(target)  # atomic: concurrent plays never ship half an archive
    return target


if __name__ == "__main__":
    print(archive_path())
