"""One run of a lab at a time: the check play takes the lab's lock for the whole
ansible-playbook run, so a second site.yml (or stage playbook) on the same lab is refused,
naming the run that holds it, before it contacts any host.

    python -m miglab.lab.lock --lock FILE --run-id RUN [--owner-pid PID]

The lock is an flock on FILE held by a small detached process that lives as long as its
owner (the ansible-playbook process, found among this process's ancestors when not given)
and exits with it, whatever way the run ends. Taking a lock the same run already holds is a
no-op (every stage playbook of site.yml starts with the check). Exit 0 held, 2 refused.
"""

from __future__ import annotations

import argparse
import errno
import fcntl
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

# Seconds to wait for the keeper of a run that has just ended to let go of the lock.
KEEPER_GRACE = 5.0


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def _parent(pid: int) -> int:
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return 0
    return int(fields[1])


def playbook_pid(start: int | None = None) -> int | None:
    """The ansible-playbook process this one runs under: the topmost ancestor whose command
    line is ansible-playbook (its task workers are forks with the same command line)."""
    found = None
    pid = _parent(start or os.getpid())
    while pid > 1:
        if any(Path(arg).name == "ansible-playbook" for arg in _cmdline(pid)[:2]):
            found = pid
        pid = _parent(pid)
    return found


def _alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def holder(lock: Path) -> dict:
    """What the lock file says about its holder ({} if nothing readable)."""
    try:
        return dict(json.loads(lock.read_text() or "{}"))
    except (OSError, ValueError):
        return {}


def acquire(lock: Path, run_id: str, owner: int) -> tuple[bool, str]:
    """Hold `lock` for `owner`'s lifetime (a detached child keeps it). (held, message)."""
    lock.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    deadline = time.monotonic() + KEEPER_GRACE
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as error:
            if error.errno not in (errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise
        info = holder(lock)
        owner_gone = not _alive(int(info.get("owner_pid") or 0))
        if owner_gone and time.monotonic() < deadline:
            time.sleep(0.2)  # the run ended; its keeper lets go within a second
            continue
        os.close(fd)
        if info.get("owner_pid") == owner:
            return True, f"this run ({run_id}) holds {lock} already"
        return False, (
            f"another run holds the lab: run {info.get('run_id', '?')}, ansible-playbook pid "
            f"{info.get('owner_pid', '?')}, since {info.get('since', '?')} ({lock}); wait for it "
            "to end (or stop it), then run again"
        )
    info = {
        "run_id": run_id,
        "owner_pid": owner,
        "since": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }
    os.ftruncate(fd, 0)
    os.write(fd, (json.dumps(info) + "\n").encode())
    if os.fork() == 0:  # the keeper: holds the lock while the owner lives
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for stream in (0, 1, 2):
            os.dup2(devnull, stream)
        try:
            while _alive(owner):
                time.sleep(1)
        finally:
            os._exit(0)
    os.close(fd)  # the keeper's copy of the descriptor keeps the lock
    return True, f"run {run_id} holds {lock} while ansible-playbook pid {owner} runs"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--lock", type=Path, required=True, help="the lab's lock file")
    parser.add_argument("--run-id", required=True, help="named to a run that is refused")
    parser.add_argument("--owner-pid", type=int, help="default: the ansible-playbook process")
    args = parser.parse_args(argv)
    owner = args.owner_pid or playbook_pid()
    if owner is None:
        print(json.dumps({"held": False, "message": "no ansible-playbook process above this one"}))
        return 2
    held, message = acquire(args.lock, args.run_id, owner)
    print(json.dumps({"held": held, "message": message, "owner_pid": owner}))
    return 0 if held else 2


if __name__ == "__main__":
    sys.exit(main())
