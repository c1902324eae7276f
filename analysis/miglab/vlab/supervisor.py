"""A guest's power supply: runs its qemu and turns every reset into a power cycle.

qemu runs with `-action reboot=shutdown`: a reboot from inside the guest (or a QMP
`system_reset`) makes it exit instead of resetting the machine, and this process starts it
again with the same command line, so the firmware always cold-boots. Why: warm resets of
our OVMF guests under TCG occasionally hung in the firmware right after "reboot: Restarting
system" (twice in CI, on a loaded machine), while cold boots came up; see docs/vlab.md.

It learns why qemu stopped from the SHUTDOWN event on a QMP socket of its own. SIGUSR1 is
the power-cycle button, SIGTERM the power switch. Run by `guests.launch`, as
`python -m miglab.vlab.supervisor --pidfile P --events S -- qemu-system-x86_64 ...`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from types import FrameType

from qemu.qmp import EventListener, Message, QMPClient
from qemu.qmp.protocol import ConnectError

# SHUTDOWN reasons that mean "the machine was reset" rather than "switched off".
RESET_REASONS = frozenset({"guest-reset", "host-qmp-system-reset"})
# How long qemu may take to open its event socket after it starts.
CONNECT_TIMEOUT = 30.0
# How long qemu may take to exit after SIGTERM before it is killed.
STOP_GRACE = 10.0


def log(message: str) -> None:
    stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    print(f"{stamp} power[{os.getpid()}]: {message}", flush=True)


def _reason(event: Message) -> str:
    data = event.get("data")
    return str(data.get("reason")) if isinstance(data, dict) else "unknown"


async def shutdown_reason(
    events_socket: Path, qemu: subprocess.Popen[bytes], overdue: Callable[[], bool]
) -> str | None:
    """Follow qemu's events until it exits; the reason of its last SHUTDOWN event, if any.
    qemu waits for this connection before it starts the machine (`wait=on`). A qemu still
    there when `overdue()` says so is killed: a SIGTERM that lands while qemu is still
    starting can be lost, and the switch must switch off whatever qemu does."""
    client = QMPClient("miglab-power")
    listener = EventListener("SHUTDOWN")
    client.register_listener(listener)  # before connecting: no event can slip past
    deadline = time.monotonic() + CONNECT_TIMEOUT
    while True:
        try:
            await client.connect(str(events_socket))
            break
        except ConnectError:
            if qemu.poll() is not None:
                return None
            if overdue():
                log(f"qemu {qemu.pid} ignored SIGTERM while starting: killing it")
                qemu.kill()
            if time.monotonic() > deadline:
                log(f"no connection to {events_socket}: stopping qemu {qemu.pid}")
                qemu.terminate()
                return None
            await asyncio.sleep(0.1)
    reason: str | None = None
    while qemu.poll() is None:
        if overdue():
            log(f"qemu {qemu.pid} ignored SIGTERM: killing it")
            qemu.kill()
        try:
            reason = _reason(await asyncio.wait_for(listener.get(), 0.5))
        except TimeoutError:
            continue
    while not listener.empty():
        reason = _reason(await listener.get())
    # qemu closed the socket first: the client reports that EOF here; nothing is lost.
    with contextlib.suppress(EOFError, OSError):
        await client.disconnect()
    return reason


class PowerSupply:
    def __init__(
        self, qemu_argv: list[str], events_socket: Path, stop_grace: float = STOP_GRACE
    ) -> None:
        self.qemu_argv = qemu_argv
        self.stop_grace = stop_grace
        self.events_socket = events_socket
        self.qemu: subprocess.Popen[bytes] | None = None
        self.cycle_requested = False
        self.switched_off = False
        self.stop_sent: float | None = None  # when the current qemu was sent SIGTERM

    def press_power_cycle(self, _signum: int, _frame: FrameType | None) -> None:
        self.cycle_requested = True
        self._stop_qemu()

    def switch_off(self, _signum: int, _frame: FrameType | None) -> None:
        self.switched_off = True
        self._stop_qemu()

    def _stop_qemu(self) -> None:
        if self.qemu is not None and self.qemu.poll() is None:
            self.qemu.terminate()
            if self.stop_sent is None:
                self.stop_sent = time.monotonic()

    def stop_overdue(self) -> bool:
        return self.stop_sent is not None and time.monotonic() - self.stop_sent > self.stop_grace

    def run(self) -> int:
        signal.signal(signal.SIGUSR1, self.press_power_cycle)
        signal.signal(signal.SIGTERM, self.switch_off)
        while True:
            self.events_socket.unlink(missing_ok=True)
            self.cycle_requested = False
            self.stop_sent = None
            if self.switched_off:
                return 0
            self.qemu = subprocess.Popen(self.qemu_argv, stdin=subprocess.DEVNULL)
            log(f"qemu {self.qemu.pid} started")
            if self.switched_off:  # switched off while qemu was starting
                self._stop_qemu()
            reason = asyncio.run(shutdown_reason(self.events_socket, self.qemu, self.stop_overdue))
            code = self.qemu.wait()
            log(f"qemu {self.qemu.pid} exited with {code} (shutdown reason: {reason})")
            if self.switched_off:
                return 0
            if self.cycle_requested:
                log("power cycle requested: starting qemu again")
            elif reason in RESET_REASONS:
                log("the machine was reset: starting qemu again (a cold boot)")
            else:
                return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m miglab.vlab.supervisor")
    parser.add_argument("--pidfile", type=Path, required=True, help="where this process's pid goes")
    parser.add_argument("--events", type=Path, required=True, help="qemu's QMP socket for events")
    parser.add_argument(
        "--stop-grace",
        type=float,
        default=STOP_GRACE,
        help="seconds qemu may take to exit after SIGTERM before it is killed",
    )
    parser.add_argument("qemu", nargs=argparse.REMAINDER, help="-- and the qemu command line")
    args = parser.parse_args(argv)
    qemu_argv = args.qemu[1:] if args.qemu[:1] == ["--"] else args.qemu
    if not qemu_argv:
        parser.error("no qemu command line after --")
    staged = args.pidfile.with_suffix(".tmp")
    staged.write_text(f"{os.getpid()}\n")
    staged.replace(args.pidfile)
    try:
        return PowerSupply(qemu_argv, args.events, args.stop_grace).run()
    finally:
        args.pidfile.unlink(missing_ok=True)
        args.events.unlink(missing_ok=True)


if __name__ == "__main__":
    sys.exit(main())
