"""Guest lifecycle: prepare disks and seed, start, stop, reset, power-cycle, query.

Each guest's qemu runs under its own power supply (miglab.vlab.supervisor), which starts it
again after a reset, so every boot is a cold boot. A guest is "running" when its pid file
names a live qemu process (or its power supply is starting the next one); everything it
leaves behind (sockets, pid files) is removed by `stop`, so `down` leaves nothing held.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from qemu.qmp import QMPError
from qemu.qmp.legacy import QEMUMonitorProtocol

from miglab.errors import MiglabError
from miglab.vlab.image import BuiltImage
from miglab.vlab.qemu import DirectKernel, GuestPaths, guest_command
from miglab.vlab.topology import Guest


@dataclass(frozen=True)
class GuestStatus:
    name: str
    running: bool
    pid: int | None
    ssh_port: int
    qmp_state: str | None
    accel: str | None


def _process_alive(pid: int, marker: bytes) -> bool:
    """`pid` is a live process (not a zombie) whose command line contains `marker`."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie or a recycled pid that is not our process does not count.
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z" and marker in cmdline


def _pid_alive(pid: int) -> bool:
    return _process_alive(pid, b"qemu-system")


def _supply_alive(pid: int) -> bool:
    return _process_alive(pid, b"miglab.vlab.supervisor")


def _read_pid(pidfile: Path) -> int | None:
    try:
        return int(pidfile.read_text().strip())
    except (OSError, ValueError):
        return None


def power_supply_pid(paths: GuestPaths) -> int | None:
    """The pid of the guest's power supply (miglab.vlab.supervisor), if it runs."""
    pid = _read_pid(paths.power_pidfile)
    return pid if pid is not None and _supply_alive(pid) else None


def running_pid(paths: GuestPaths, restart_wait: float = 15.0) -> int | None:
    """The guest's qemu pid. While its power supply restarts qemu (a reboot), waits for the
    new one (up to `restart_wait` seconds)."""
    deadline = time.monotonic() + restart_wait
    while True:
        pid = _read_pid(paths.pidfile)
        if pid is not None and _pid_alive(pid):
            return pid
        if power_supply_pid(paths) is None or time.monotonic() > deadline:
            return None
        time.sleep(0.1)


def qmp(paths: GuestPaths, command: str, **arguments: object) -> object:
    """One QMP command on the guest's monitor socket (the lab's power button)."""
    monitor = QEMUMonitorProtocol(str(paths.qmp_socket))
    try:
        try:
            monitor.connect()
        except AssertionError as error:
            # qemu.qmp asserts that a negotiated session is still running: a monitor that
            # hangs up right after the greeting (a qemu going down during a power cycle)
            # fails that assertion instead of raising a connection error.
            raise ConnectionError("the monitor hung up while connecting") from error
        return monitor.cmd(command, **arguments)
    except (OSError, ConnectionError, EOFError, QMPError) as error:
        # EOFError: qemu closed the socket first (a `quit` may go before its reply).
        raise MiglabError(f"QMP {command} on {paths.qmp_socket}: {error!r}") from error
    finally:
        # After `quit`, qemu may close the socket before the client does: nothing to close.
        with contextlib.suppress(OSError, ConnectionError, EOFError):
            monitor.close()


def base_image_identity(base_image: Path) -> str:
    """What names a base image's bytes: its path and when it was built. An overlay reads
    every cluster it has not written from its base, so an overlay made on an earlier build
    of the same image (same inputs, same file name: mmdebstrap is not bit-reproducible) reads
    another file system's blocks. Seen here: GRUB failing on its modules' ELF magic after
    the image cache was rebuilt under a running lab's guests."""
    try:
        built_at = json.loads(base_image.with_suffix(".json").read_text())["built_at"]
    except (OSError, ValueError, KeyError, TypeError):
        stat = base_image.stat()  # no metadata: the file itself
        built_at = f"size {stat.st_size} mtime_ns {stat.st_mtime_ns}"
    return f"{base_image}\nbuilt {built_at}\n"


def prepare_disks(guest: Guest, paths: GuestPaths, base_image: Path, ovmf_vars: str) -> list[str]:
    """Overlay disk and firmware variables, made once and kept across up/down. Returns what changed."""
    changed = []
    paths.directory.mkdir(parents=True, exist_ok=True)
    backing_file = paths.directory / "base-image"
    identity_file = paths.directory / "base-image.id"
    identity = base_image_identity(base_image)
    recorded = identity_file.read_text() if identity_file.exists() else None
    if not paths.disk.exists() or recorded != identity:
        # A new base image (or a rebuild of it) means a new overlay: an overlay on another
        # base is garbage.
        for stale in (paths.disk, paths.efi_vars, backing_file, identity_file):
            stale.unlink(missing_ok=True)
        subprocess.run(
            [
                "qemu-img",
                "create",
                "-q",
                "-f",
                "qcow2",
                "-F",
                "qcow2",
                "-b",
                str(base_image),
                str(paths.disk),
            ],
            check=True,
        )
        backing_file.symlink_to(base_image)  # for a person looking at the lab's state
        identity_file.write_text(identity)
        changed.append("disk")
    if guest.arch == "x86_64" and not paths.efi_vars.exists():
        shutil.copyfile(ovmf_vars, paths.efi_vars)
        changed.append("efi_vars")
    return changed


def write_seed(guest: Guest, paths: GuestPaths, authorized_key: str) -> bool:
    """The guest's seed disk: its host key (made here, so known_hosts can be written before
    it boots), the lab's authorized key and its hostname. Returns True when (re)written."""
    if not paths.host_key.exists():
        subprocess.run(
            [
                "ssh-keygen",
                "-q",
                "-t",
                "ed25519",
                "-N",
                "",
                "-C",
                f"miglab-{guest.name}",
                "-f",
                str(paths.host_key),
            ],
            check=True,
        )
    wanted = {
        "ssh_host_ed25519_key": paths.host_key.read_text(),
        "ssh_host_ed25519_key.pub": paths.host_key.with_suffix(".pub").read_text(),
        "authorized_keys": authorized_key.strip() + "\n",
        "hostname": guest.name + "\n",
    }
    stamp = paths.directory / "seed.contents"
    fingerprint = repr(sorted(wanted.items()))
    if paths.seed.exists() and stamp.exists() and stamp.read_text() == fingerprint:
        return False
    with tempfile.TemporaryDirectory() as scratch:
        for name, content in wanted.items():
            target = Path(scratch) / name
            target.write_text(content)
            target.chmod(0o600)
        paths.seed.unlink(missing_ok=True)
        subprocess.run(
            ["mkfs.ext4", "-q", "-L", "MIGLAB-SEED", "-d", scratch, str(paths.seed), "8M"],
            check=True,
        )
    stamp.write_text(fingerprint)
    return True


def _answering_pid(paths: GuestPaths, not_pid: int | None = None) -> int | None:
    """qemu's pid once it runs and its QMP monitor answers (it writes the pid file before it
    opens its sockets, and a socket file exists a moment before it accepts). `not_pid`: a
    qemu going away (a power cycle's old one) is not asked: its monitor may still accept."""
    pid = _read_pid(paths.pidfile)
    if pid is None or pid == not_pid or not _pid_alive(pid) or not paths.qmp_socket.exists():
        return None
    try:
        qmp(paths, "query-status")
    except MiglabError:
        return None
    return pid


def power_log_tail(paths: GuestPaths, lines: int = 10) -> str:
    """The end of what the power supply and qemu said (for error messages)."""
    said = paths.power_log.read_text(errors="replace").splitlines()[-lines:]
    return f"{paths.power_log}:\n" + "\n".join(said)


def launch(argv: list[str], paths: GuestPaths, timeout: float = 30.0) -> int:
    """Start qemu (`argv`, which must write `paths.pidfile` and serve `paths.events_socket`)
    under a new power supply, detached from the caller. Returns qemu's pid once it runs."""
    for stale in paths.runtime_files:
        stale.unlink(missing_ok=True)
    with paths.power_log.open("ab") as power_log:
        supply = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "miglab.vlab.supervisor",
                "--pidfile",
                str(paths.power_pidfile),
                "--events",
                str(paths.events_socket),
                "--",
                *argv,
            ],
            stdin=subprocess.DEVNULL,
            stdout=power_log,
            stderr=subprocess.STDOUT,
            cwd=paths.directory,
            start_new_session=True,  # outlives the caller (an Ansible module, a test)
        )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        pid = _answering_pid(paths)
        if pid is not None:
            return pid
        if supply.poll() is not None:
            break
        time.sleep(0.1)
    if supply.poll() is None:
        supply.terminate()
    supply.wait()
    raise MiglabError(f"guest {paths.directory.name}: qemu did not start; {power_log_tail(paths)}")


def start(guest: Guest, paths: GuestPaths, accel: str, ovmf_code: str, base_image: Path) -> bool:
    """Start the guest unless it runs already. Returns True when it was started. An aarch64
    guest boots its base image's kernel directly (DirectKernel)."""
    if power_supply_pid(paths) is not None or running_pid(paths) is not None:
        return False
    image = BuiltImage.of_disk(base_image)
    direct = DirectKernel(image.kernel, image.initrd) if guest.arch == "aarch64" else None
    launch(guest_command(guest, paths, accel, ovmf_code, direct), paths)
    return True


def _wait_gone(pid: int | None, alive: Callable[[int], bool], timeout: float) -> None:
    """Wait for `pid` to exit; SIGKILL it after `timeout` seconds."""
    if pid is None:
        return
    deadline = time.monotonic() + timeout
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        while alive(pid):
            time.sleep(0.1)


def stop(paths: GuestPaths, timeout: float = 15.0) -> bool:
    """Power the guest off (its power supply's switch; QMP quit for a qemu without one;
    SIGKILL what does not go) and clean up. True if it ran."""
    supply = power_supply_pid(paths)
    pid = running_pid(paths, restart_wait=0)
    if supply is not None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(supply, signal.SIGTERM)
    elif pid is not None:
        # A qemu without a power supply (started by an older miglab): QMP quit.
        try:
            qmp(paths, "quit")
        except MiglabError:
            # No reply: qemu may be exiting already; make sure it does.
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
    _wait_gone(pid, _pid_alive, timeout)
    _wait_gone(supply, _supply_alive, timeout)
    for leftover in paths.runtime_files:
        leftover.unlink(missing_ok=True)
    return pid is not None or supply is not None


def reset(paths: GuestPaths) -> None:
    """The reset button (QMP system_reset). The power supply turns it into a cold boot."""
    if running_pid(paths) is None:
        raise MiglabError(f"cannot reset {paths.directory.name}: it is not running")
    qmp(paths, "system_reset")


def power_cycle(paths: GuestPaths, timeout: float = 30.0) -> int:
    """Power off and on again, like a BMC's `chassis power cycle`: the power supply stops
    qemu and starts it again with the same command line, so the firmware cold-boots.
    Returns the new qemu's pid."""
    pid = running_pid(paths)
    supply = power_supply_pid(paths)
    if pid is None or supply is None:
        raise MiglabError(
            f"cannot power-cycle {paths.directory.name}: it is not running"
            + ("" if pid is None else " under miglab's power supply (run vlab down, then up)")
        )
    os.kill(supply, signal.SIGUSR1)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        new_pid = _answering_pid(paths, not_pid=pid)
        if new_pid is not None:
            return new_pid
        if power_supply_pid(paths) is None:
            break
        time.sleep(0.1)
    raise MiglabError(f"{paths.directory.name}: qemu did not start again; {power_log_tail(paths)}")


def running_accel(pid: int) -> str | None:
    """The accelerator a running qemu was started with, read from its command line."""
    try:
        arguments = Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")
    except OSError:
        return None
    for flag, value in zip(arguments, arguments[1:], strict=False):
        if flag == "-accel":
            return value.split(",")[0]
    return None


def status(guest: Guest, paths: GuestPaths) -> GuestStatus:
    pid = running_pid(paths)
    state = None
    accel = None
    if pid is not None:
        accel = running_accel(pid)
        try:
            answer = qmp(paths, "query-status")
            state = str(answer.get("status")) if isinstance(answer, dict) else None
        except MiglabError:
            state = "unreachable"
    return GuestStatus(guest.name, pid is not None, pid, guest.ssh_port, state, accel)


def wait_for_ssh_banner(port: int, timeout: float, host: str = "127.0.0.1") -> float:
    """Wait until sshd answers with its banner (a forwarded port accepts before that)."""
    start_time = time.monotonic()
    deadline = start_time + timeout
    while time.monotonic() < deadline:
        # never wait past the deadline for an accepted connection that stays silent
        left = max(0.1, deadline - time.monotonic())
        try:
            with socket.create_connection((host, port), timeout=min(3, left)) as connection:
                connection.settimeout(min(5, left))
                if connection.recv(64).startswith(b"SSH-"):
                    return time.monotonic() - start_time
        except OSError:
            pass
        time.sleep(1)
    raise MiglabError(f"no SSH banner on {host}:{port} within {timeout:.0f} s")


def console_tail(paths: GuestPaths, lines: int = 20) -> str:
    """The last lines of the guest's serial console log (for error messages)."""
    try:
        text = paths.console_log.read_bytes()[-32 * 1024 :].decode(errors="replace")
    except OSError:
        return "(no console log)"
    # Firmware and systemd colour their output: keep the text only.
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]|[\x00-\x08\x0b-\x1f\x7f]", "", text)
    kept = [line.rstrip() for line in text.splitlines() if line.strip()]
    return "\n".join(kept[-lines:])


def ensure_answering(
    guest: Guest,
    paths: GuestPaths,
    timeout: float,
    reset_hung: bool,
    hung_after: float | None = None,
) -> bool:
    """Wait for the running guest's sshd. A guest silent for `hung_after` seconds (default:
    `timeout`; a hung test kernel, a stuck reboot) is power-cycled once (a cold boot), then
    has `timeout` seconds to boot. Returns True when it was power-cycled."""
    try:
        wait_for_ssh_banner(guest.ssh_port, timeout if hung_after is None else hung_after)
        return False
    except MiglabError as silent:
        if not reset_hung:
            raise MiglabError(
                f"guest {guest.name}: {silent}; console tail:\n{console_tail(paths)}"
            ) from silent
    power_cycle(paths)
    try:
        wait_for_ssh_banner(guest.ssh_port, timeout)
    except MiglabError as error:
        raise MiglabError(
            f"guest {guest.name}: still silent after a power cycle: {error}; console tail:\n"
            f"{console_tail(paths)}"
        ) from error
    return True
