"""Last: `down` leaves no qemu process, no pid file, no socket, no held port."""

from __future__ import annotations

import subprocess
from typing import Any

from miglab.vlab.qemu import GuestPaths
from miglab.vlab.topology import port_is_free

from .conftest import STATE_DIR, playbook


def test_down_leaves_nothing_running(guests: list[dict[str, Any]]) -> None:
    run = playbook("playbooks/vlab.yml", "-e", "vlab_state=down")
    assert run.returncode == 0, run.output[-3000:]
    for guest in guests:
        paths = GuestPaths.for_guest(STATE_DIR, guest["name"])
        assert not paths.pidfile.exists()
        assert not paths.qmp_socket.exists()
        assert port_is_free(guest["ssh_port"])
        found = subprocess.run(
            ["pgrep", "-f", f"miglab-{guest['name']}"], capture_output=True, check=False
        )
        assert found.returncode == 1, found.stdout
    status = playbook("playbooks/vlab.yml", "-e", "vlab_state=status")
    assert status.returncode == 0
    for guest in guests:
        assert f"{guest['name']}: stopped" in status.output
    again = playbook("playbooks/vlab.yml", "-e", "vlab_state=down")
    assert again.recap("localhost")["changed"] == 0
