"""Processes and CPU accounting from /proc (stdlib only)."""

from __future__ import annotations

import ctypes
import os
import signal
import time
from collections.abc import Iterable

PR_SET_PDEATHSIG = 1
CLK_TCK = os.sysconf("SC_CLK_TCK")


RUNNER_NICE = -5


def raise_runner_priority() -> None:
    """The runner's own bookkeeping must not starve under a busy load (root only)."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, RUNNER_NICE)
    except OSError:
        pass


def die_with_parent() -> None:
    """preexec_fn: the child gets SIGKILL when the runner dies, even by SIGKILL, and runs at
    normal priority (nice 0) whatever the runner's own priority."""
    try:
        os.setpriority(os.PRIO_PROCESS, 0, 0)
    except OSError:
        pass
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    except (OSError, AttributeError):
        pass


def stat(pid: int) -> dict | None:
    """Fields of /proc/<pid>/stat; None if the process is gone."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            data = f.read()
    except OSError:
        return None
    lpar, rpar = data.find("("), data.rfind(")")
    fields = data[rpar + 2 :].split()
    return {
        "pid": pid,
        "comm": data[lpar + 1 : rpar],
        "state": fields[0],
        "ppid": int(fields[1]),
        "pgrp": int(fields[2]),
        "session": int(fields[3]),
        "utime": int(fields[11]),
        "stime": int(fields[12]),
        "starttime": int(fields[19]),
    }


def all_pids() -> list[int]:
    return [int(d) for d in os.listdir("/proc") if d.isdigit()]


def processes() -> Iterable[dict]:
    for pid in all_pids():
        st = stat(pid)
        if st is not None and st["state"] != "Z":
            yield st


def session_members(sid: int) -> list[dict]:
    return [p for p in processes() if p["session"] == sid]


def descendants(pid: int) -> list[dict] | None:
    """Children, grandchildren, ... of a process from /proc/<pid>/task/*/children (cheap);
    None when the kernel does not offer those files (then scan by session)."""
    out: list[dict] = []
    todo = [pid]
    while todo:
        parent = todo.pop()
        try:
            tasks = os.listdir(f"/proc/{parent}/task")
        except OSError:
            continue
        for tid in tasks:
            try:
                with open(f"/proc/{parent}/task/{tid}/children", encoding="utf-8") as f:
                    kids = [int(x) for x in f.read().split()]
            except FileNotFoundError:
                if parent == pid and tid == str(pid):
                    return None
                continue
            except OSError:
                continue
            for kid in kids:
                st = stat(kid)
                if st is not None and st["state"] != "Z":
                    out.append(st)
                    todo.append(kid)
    return out


def find_by_comm(prefix: str) -> list[dict]:
    return [p for p in processes() if p["comm"].startswith(prefix)]


def find_by_exe(path: str) -> list[dict]:
    real = os.path.realpath(path)
    out = []
    for p in processes():
        try:
            if os.path.realpath(f"/proc/{p['pid']}/exe") == real:
                out.append(p)
        except OSError:
            continue
    return out


def cpu_ns(procs: Iterable[dict]) -> int:
    return sum(p["utime"] + p["stime"] for p in procs) * (1_000_000_000 // CLK_TCK)


def same_process(pid: int, starttime: int) -> bool:
    st = stat(pid)
    return st is not None and st["starttime"] == starttime and st["state"] != "Z"


def kill_and_verify(targets: list[tuple[int, int]], timeout: float = 5.0) -> list[int]:
    """SIGKILL (pid, starttime) pairs that are still the same processes; return survivors."""
    for pid, start in targets:
        if same_process(pid, start):
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
    deadline = time.monotonic() + timeout
    while True:
        alive = [pid for pid, start in targets if same_process(pid, start)]
        if not alive or time.monotonic() > deadline:
            return alive
        time.sleep(0.05)


def system_cpu() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    with open("/proc/stat", encoding="utf-8") as f:
        fields = [int(x) for x in f.readline().split()[1:]]
    fields += [0] * (8 - len(fields))
    user, nice, system, idle, iowait, irq, softirq, steal = fields[:8]
    busy = user + nice + system + irq + softirq + steal
    return busy, busy + idle + iowait


def busy_fraction(seconds: float) -> float:
    b0, t0 = system_cpu()
    time.sleep(seconds)
    b1, t1 = system_cpu()
    return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0


def top_consumers(seconds: float, limit: int = 5) -> list[dict]:
    """Processes that used the most CPU over a short window (for 'host not quiet' messages)."""
    before = {p["pid"]: p for p in processes()}
    time.sleep(seconds)
    rows = []
    for p in processes():
        b = before.get(p["pid"])
        if b is not None and b["starttime"] == p["starttime"]:
            used = (p["utime"] + p["stime"]) - (b["utime"] + b["stime"])
            if used > 0:
                rows.append(
                    {
                        "pid": p["pid"],
                        "comm": p["comm"],
                        "cpu_percent": round(100.0 * used / CLK_TCK / seconds, 1),
                    }
                )
    rows.sort(key=lambda r: -r["cpu_percent"])
    return rows[:limit]


def online_cpus() -> int:
    return os.sysconf("SC_NPROCESSORS_ONLN")


MIGBENCH_CGROUP = "miglab-migbench"


def cgroup2_mount(mounts_file: str = "/proc/self/mounts") -> str | None:
    """Where the cgroup v2 hierarchy is mounted (/sys/fs/cgroup, or .../unified on a hybrid
    host); None without one."""
    try:
        with open(mounts_file, encoding="utf-8") as f:
            for line in f:
                fields = line.split()
                if len(fields) > 2 and fields[2] == "cgroup2":
                    return fields[1]
    except OSError:
        pass
    return None


def migbench_cgroup(mount: str | None) -> str | None:
    """A cgroup of migbench's own under the cgroup v2 mount, so that the CPU time charged to
    it is migbench's alone (stress-ng, the load, stays in the runner's cgroup);
    None when there is no cgroup v2 or it cannot be made."""
    if mount is None:
        return None
    path = os.path.join(mount, MIGBENCH_CGROUP)
    try:
        os.makedirs(path, exist_ok=True)
    except OSError:
        return None
    return path if os.path.exists(os.path.join(path, "cpu.stat")) else None


def remove_cgroup(path: str | None) -> None:
    """An empty cgroup goes with rmdir; one that still has a process stays (harmless)."""
    if path is None:
        return
    try:
        os.rmdir(path)
    except OSError:
        pass
