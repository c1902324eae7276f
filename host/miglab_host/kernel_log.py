"""The kernel log of a sweep: what the kernel printed while the runner ran, and whether any of
it says the kernel went wrong (a WARN, a BUG, an oops, a bad page, list corruption).

Read from /dev/kmsg, which hands every reader each record once from where it stands: the
runner opens it before the first cell, at the end of the log, and reads what came since at
the end of the run. A sweep whose kernel warned is not a measurement to trust.
"""

from __future__ import annotations

import errno
import os
import re
from dataclasses import dataclass, field

# What makes a kernel log line a problem (the first line of a splat is enough).
PROBLEM = re.compile(
    r"WARNING: |BUG: |kernel BUG at|Oops|[Bb]ad page|list_(add|del) corruption"
    r"|general protection fault|Unable to handle kernel|UBSAN: |KASAN: |refcount_t: "
)
# Lines of the same classes that emulation alone causes on an overloaded machine (TCG guests
# on two cores): recorded as notes, not failures. A real lab sees them only if something
# really stalls, and then the notes are in the record.
EMULATION_NOISE = re.compile(r"soft lockup|rcu.*(stall|detected stalls)|hung_task|blocked for more")
MAX_LINES = 2000


@dataclass
class KernelLogReport:
    source: str
    available: bool
    lines: list[str] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    truncated: bool = False
    error: str | None = None

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "available": self.available,
            "lines": self.lines,
            "problems": self.problems,
            "notes": self.notes,
            "truncated": self.truncated,
            "error": self.error,
        }


def classify(lines: list[str]) -> tuple[list[str], list[str]]:
    """(problems, notes) among kernel log lines."""
    problems: list[str] = []
    notes: list[str] = []
    for line in lines:
        if PROBLEM.search(line):
            (notes if EMULATION_NOISE.search(line) else problems).append(line)
        elif EMULATION_NOISE.search(line):
            notes.append(line)
    return problems, notes


def parse_records(raw: bytes) -> list[str]:
    """'6,1234,5678901,-;text' -> '[     5.678901] text'. /dev/kmsg returns one record a read,
    its dictionary lines (' KEY=value') after it; those are dropped."""
    out = []
    for text in raw.decode("utf-8", "replace").split("\n"):
        if not text or text.startswith(" "):
            continue
        header, _, message = text.partition(";")
        parts = header.split(",")
        if len(parts) >= 3 and parts[2].isdigit():
            micros = int(parts[2])
            out.append(f"[{micros // 1_000_000:6d}.{micros % 1_000_000:06d}] {message}")
        else:
            out.append(text)
    return out


class KernelLog:
    """New records of /dev/kmsg since open()."""

    def __init__(self, path: str = "/dev/kmsg") -> None:
        self.path = path
        self.fd: int | None = None
        self.error: str | None = None

    def open(self) -> None:
        try:
            self.fd = os.open(self.path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC)
            os.lseek(self.fd, 0, os.SEEK_END)
        except OSError as err:
            self.error = f"{self.path}: {err.strerror or err}"
            if self.fd is not None:
                os.close(self.fd)
            self.fd = None

    def read(self) -> KernelLogReport:
        """Everything printed since open(), classified; then the file is closed."""
        report = KernelLogReport(self.path, self.fd is not None, error=self.error)
        if self.fd is None:
            return report
        try:
            while True:
                try:
                    raw = os.read(self.fd, 8192)
                except OSError as err:
                    if err.errno == errno.EAGAIN:
                        break
                    if err.errno == errno.EPIPE:  # records overwritten before we read them
                        report.truncated = True
                        continue
                    report.error = f"{self.path}: {err.strerror or err}"
                    break
                if not raw:
                    break
                lines = parse_records(raw)
                problems, notes = classify(lines)
                report.problems += problems  # every problem is kept, however long the log
                report.notes += notes
                room = MAX_LINES - len(report.lines)
                report.lines += lines[:room]
                report.truncated = report.truncated or len(lines) > room
        finally:
            os.close(self.fd)
            self.fd = None
        return report
