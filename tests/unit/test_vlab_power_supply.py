"""A guest's power supply (miglab.vlab.supervisor) with a real qemu that has no machine:
a reset or the power-cycle button gives a new qemu process with the same command line (a
cold boot); QMP quit, a poweroff from inside, and the power switch end it for good."""

from __future__ import annotations

import contextlib
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from miglab.errors import MiglabError
from miglab.vlab import guests
from miglab.vlab.qemu import GuestPaths


def qemu_argv(paths: GuestPaths) -> list[str]:
    return [
        "qemu-system-x86_64", "-machine", "none", "-nodefaults", "-display", "none",
        "-monitor", "none", "-name", "miglab-unit-test", "-action", "reboot=shutdown",
        "-qmp", f"unix:{paths.qmp_socket},server=on,wait=off",
        "-qmp", f"unix:{paths.events_socket},server=on,wait=on",
        "-pidfile", str(paths.pidfile),
    ]  # fmt: skip


def cmdline(pid: int) -> list[str]:
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")[:-1]


def gone(pid: int) -> bool:
    """Exited: no such process, or a zombie its parent has not reaped yet."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except FileNotFoundError:
        return True


def wait_until(condition: Callable[[], bool], timeout: float = 20.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


@pytest.fixture
def paths(tmp_path: Path) -> Iterator[GuestPaths]:
    paths = GuestPaths.for_guest(tmp_path, "vnode1")
    paths.directory.mkdir(parents=True)
    yield paths
    guests.stop(paths)


def test_a_reset_becomes_a_new_qemu_with_the_same_command_line(paths: GuestPaths) -> None:
    first = guests.launch(qemu_argv(paths), paths)
    supply = guests.power_supply_pid(paths)
    assert supply is not None and cmdline(first) == qemu_argv(paths)
    guests.reset(paths)  # QMP system_reset: what a reboot inside the guest does
    assert wait_until(lambda: guests.running_pid(paths, restart_wait=0) not in (None, first)), (
        paths.power_log.read_text()
    )
    second = guests.running_pid(paths)
    assert second is not None and gone(first)
    assert cmdline(second) == qemu_argv(paths)
    assert guests.power_supply_pid(paths) == supply  # the same power supply
    log = paths.power_log.read_text()
    assert "shutdown reason: host-qmp-system-reset" in log
    assert "the machine was reset: starting qemu again (a cold boot)" in log


def test_the_power_cycle_button_starts_a_new_qemu(paths: GuestPaths) -> None:
    first = guests.launch(qemu_argv(paths), paths)
    second = guests.power_cycle(paths)
    assert second != first and gone(first)
    assert guests.running_pid(paths) == second and cmdline(second) == qemu_argv(paths)
    assert "power cycle requested: starting qemu again" in paths.power_log.read_text()


def test_quit_ends_the_guest_for_good(paths: GuestPaths) -> None:
    first = guests.launch(qemu_argv(paths), paths)
    supply = guests.power_supply_pid(paths)
    assert supply is not None
    with contextlib.suppress(MiglabError):  # qemu may close the socket before it replies
        guests.qmp(paths, "quit")
    assert wait_until(lambda: gone(supply)), paths.power_log.read_text()
    assert gone(first) and guests.running_pid(paths) is None
    assert "shutdown reason: host-qmp-quit" in paths.power_log.read_text()
    assert not paths.power_pidfile.exists() and not paths.events_socket.exists()


def test_stop_switches_off_and_cleans_up(paths: GuestPaths) -> None:
    first = guests.launch(qemu_argv(paths), paths)
    supply = guests.power_supply_pid(paths)
    assert guests.stop(paths) is True
    assert supply is not None and gone(supply) and gone(first)
    for leftover in (paths.pidfile, paths.power_pidfile, paths.qmp_socket, paths.events_socket):
        assert not leftover.exists(), leftover
    assert guests.stop(paths) is False
    with pytest.raises(MiglabError, match="cannot power-cycle vnode1: it is not running"):
        guests.power_cycle(paths)


def test_a_qemu_that_cannot_start_is_an_error_with_its_message(paths: GuestPaths) -> None:
    with pytest.raises(MiglabError, match=r"(?s)qemu did not start.*no-such-option"):
        guests.launch([*qemu_argv(paths), "-no-such-option"], paths)
    assert guests.power_supply_pid(paths) is None


def test_the_switch_kills_a_qemu_that_ignores_sigterm(tmp_path: Path) -> None:
    """A SIGTERM that reaches qemu while it is still starting can be lost (seen: a qemu
    waiting for its event socket said "terminating on signal 15" and lived on). The power
    switch then kills it after its grace period instead of waiting forever."""
    events = tmp_path / "events.sock"
    pidfile = tmp_path / "power.pid"
    deaf = [sys.executable, "-c", "import signal, time\n"
            "signal.signal(signal.SIGTERM, signal.SIG_IGN)\ntime.sleep(600)"]  # fmt: skip
    supply = subprocess.Popen(
        [sys.executable, "-m", "miglab.vlab.supervisor", "--pidfile", str(pidfile),
         "--events", str(events), "--stop-grace", "1", "--", *deaf],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
    )  # fmt: skip
    assert wait_until(pidfile.exists)
    time.sleep(0.5)  # the deaf "qemu" is up
    supply.send_signal(signal.SIGTERM)
    output, _ = supply.communicate(timeout=20)
    assert supply.returncode == 0, output
    assert "ignored SIGTERM while starting: killing it" in output
    (started,) = [line for line in output.splitlines() if "started" in line]
    assert gone(int(started.split("qemu ")[1].split()[0]))
