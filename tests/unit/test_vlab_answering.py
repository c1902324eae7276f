"""Waiting for a guest's sshd: a banner ends the wait, silence is an error that shows the
guest's console (real sockets on localhost stand in for the guest's forwarded port)."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from miglab.errors import MiglabError
from miglab.vlab import guests
from miglab.vlab.qemu import GuestPaths
from miglab.vlab.topology import Guest, parse_guests


def listening_port(banner: bytes | None) -> Iterator[int]:
    """A localhost port that accepts like qemu's forward does, and sends `banner` if any."""
    server = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def serve() -> None:
        server.settimeout(0.2)
        held = []
        while not stop.is_set():
            try:
                connection, _ = server.accept()
            except TimeoutError:
                continue
            if banner is not None:
                connection.sendall(banner)
            held.append(connection)  # kept open: a silent guest never closes either
        for connection in held:
            connection.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield server.getsockname()[1]
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def sshd_port() -> Iterator[int]:
    yield from listening_port(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n")


@pytest.fixture
def silent_port() -> Iterator[int]:
    yield from listening_port(None)


def guest_on(port: int) -> Guest:
    (guest,) = parse_guests(
        [{"name": "vnode1", "ssh_port": port, "numa": [{"cpus": 1, "memory_mib": 512}] * 2}]
    )
    return guest


def paths_with_console(tmp_path: Path, text: str) -> GuestPaths:
    paths = GuestPaths.for_guest(tmp_path, "vnode1")
    paths.directory.mkdir(parents=True)
    paths.console_log.write_text(text)
    return paths


def test_a_guest_whose_sshd_answers_is_left_alone(sshd_port: int, tmp_path: Path) -> None:
    paths = paths_with_console(tmp_path, "vnode1 login:\n")
    # No qemu runs here: a power cycle would fail, so answering without one is the only way to pass.
    assert guests.ensure_answering(guest_on(sshd_port), paths, timeout=10, reset_hung=True) is False


def test_a_silent_guest_is_an_error_with_its_console(silent_port: int, tmp_path: Path) -> None:
    console = "\x1b[0m[  12.3] Kernel panic - not syncing: sysrq triggered crash\n\n"
    paths = paths_with_console(tmp_path, "booting\n" + console)
    with pytest.raises(MiglabError) as error:
        guests.ensure_answering(guest_on(silent_port), paths, timeout=2, reset_hung=False)
    message = str(error.value)
    assert message.startswith("guest vnode1: no SSH banner on 127.0.0.1:")
    assert "console tail:" in message and "Kernel panic - not syncing" in message
    assert "\x1b" not in message  # colour codes stripped


def test_a_silent_guest_that_cannot_be_reset_says_so(silent_port: int, tmp_path: Path) -> None:
    paths = paths_with_console(tmp_path, "hung\n")
    with pytest.raises(MiglabError, match="cannot power-cycle vnode1: it is not running"):
        guests.ensure_answering(
            guest_on(silent_port), paths, timeout=30, reset_hung=True, hung_after=1
        )


def test_console_tail_keeps_the_last_non_blank_lines(tmp_path: Path) -> None:
    paths = paths_with_console(tmp_path, "".join(f"line {n}\n\n" for n in range(50)))
    assert guests.console_tail(paths, 3) == "line 47\nline 48\nline 49"
    assert guests.console_tail(GuestPaths.for_guest(tmp_path, "nobody")) == "(no console log)"


def hanging_up_monitor(path: Path) -> threading.Thread:
    """A QMP monitor that negotiates and then hangs up at once, as a qemu going down in a
    power cycle does (qemu.qmp then fails an assertion inside connect)."""
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(path))
    server.listen(1)

    def serve() -> None:
        connection, _ = server.accept()
        greeting = {"QMP": {"version": {"qemu": {"micro": 0, "minor": 2, "major": 7}, "package": ""},
                            "capabilities": []}}  # fmt: skip
        connection.sendall(json.dumps(greeting).encode() + b"\r\n")
        connection.recv(4096)  # qmp_capabilities
        connection.sendall(b'{"return": {}}\r\n')
        connection.close()
        server.close()

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    return thread


def test_a_monitor_that_hangs_up_while_connecting_is_not_answering(tmp_path: Path) -> None:
    paths = GuestPaths(tmp_path)
    paths.pidfile.write_text(f"{os.getpid()}\n")
    served = hanging_up_monitor(paths.qmp_socket)
    with pytest.raises(MiglabError, match="hung up while connecting"):
        guests.qmp(paths, "query-status")
    served.join(5)
    hanging_up_monitor(paths.qmp_socket.with_name("again.sock"))
    paths.qmp_socket.unlink()
    paths.qmp_socket.with_name("again.sock").rename(paths.qmp_socket)
    assert guests._answering_pid(paths) is None  # not ready yet: asked again later
    # The old qemu of a power cycle is not asked at all.
    assert guests._answering_pid(paths, not_pid=os.getpid()) is None
