"""Last: `down` leaves no qemu or power supply process, no pid file, no socket, no held port."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from miglab.vlab.qemu import GuestPaths
from miglab.vlab.topology import port_is_free

from .conftest import STATE_DIR, playbook


def processes_mentioning(text: str) -> list[str]:
    """Command lines of live processes naming `text`: this lab's qemu names its pid file,
    so another lab on the same machine (other guests' names match) is not counted."""
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            argv = cmdline.read_bytes().split(b"\0")
        except OSError:  # the process ended while we looked
            continue
        line = " ".join(arg.decode(errors="replace") for arg in argv)
        if text in line and cmdline.parent.name != str(os.getpid()):
            found.append(f"{cmdline.parent.name}: {line}")
    return found


def test_down_leaves_nothing_running(guests: list[dict[str, Any]]) -> None:
    run = playbook("playbooks/vlab.yml", "-e", "vlab_state=down")
    assert run.returncode == 0, run.report()
    for guest in guests:
        paths = GuestPaths.for_guest(STATE_DIR, guest["name"])
        for leftover in (paths.pidfile, paths.power_pidfile, paths.qmp_socket, paths.events_socket):
            assert not leftover.exists(), leftover
        assert port_is_free(guest["ssh_port"])
        # Neither qemu nor its power supply (whose command line holds qemu's).
        assert not processes_mentioning(str(paths.pidfile))
    status = playbook("playbooks/vlab.yml", "-e", "vlab_state=status")
    assert status.returncode == 0, status.report()
    queried = [
        event["event_data"]["res"]
        for event in status.results(task="Query each guest")
        if event["event"] == "runner_item_on_ok"
    ]
    running = {result["item"]["name"]: result["running"] for result in queried}
    assert running == {guest["name"]: False for guest in guests}
    again = playbook("playbooks/vlab.yml", "-e", "vlab_state=down")
    assert again.returncode == 0 and again.recap["localhost"]["changed"] == 0, again.report()
