"""The virtual lab itself: up, reachable with host keys checked, idempotent, resettable."""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from miglab.vlab import guests as guest_control
from miglab.vlab.qemu import GuestPaths

from .conftest import STATE_DIR, AnsibleRun, ansible, playbook, read_host_file


def test_every_guest_runs_and_booted_through_firmware_and_grub(
    vlab_up: AnsibleRun, guests: list[dict[str, Any]]
) -> None:
    for guest in guests:
        paths = GuestPaths.for_guest(STATE_DIR, guest["name"])
        assert guest_control.running_pid(paths) is not None, guest["name"]
        console = paths.console_log.read_text(errors="replace")
        # OVMF's boot manager, then GRUB from the guest's own disk, then its kernel.
        assert "BdsDxe: starting" in console
        assert "GNU GRUB" in console
        assert "Linux version" in console


def test_ansible_reaches_every_guest_with_host_keys_checked(guests: list[dict[str, Any]]) -> None:
    run = ansible("ansible", "lab", "-m", "ansible.builtin.ping")
    assert run.returncode == 0, run.output
    for guest in guests:
        assert f"{guest['name']} | SUCCESS" in run.output


def test_a_wrong_host_key_is_refused(guests: list[dict[str, Any]], tmp_path: Path) -> None:
    """Host key checking really is on: a known_hosts with another key fails the connection."""
    guest = guests[0]
    other_key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    wrong_known_hosts = tmp_path / "known_hosts"
    public = other_key.with_suffix(".pub").read_text().split()[:2]
    wrong_known_hosts.write_text(f"[127.0.0.1]:{guest['ssh_port']} {' '.join(public)}\n")
    run = ansible(
        "ansible",
        guest["name"],
        "-m",
        "ansible.builtin.ping",
        "-e",
        f"ansible_ssh_common_args='-o UserKnownHostsFile={wrong_known_hosts} -o StrictHostKeyChecking=yes'",
        # A fresh control socket: a persistent connection from an earlier test would skip the check.
        env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")},
    )
    assert run.returncode != 0
    assert "UNREACHABLE" in run.output
    assert "host key" in run.output.lower() or "Host key verification failed" in run.output


def test_up_again_changes_nothing(vlab_up: AnsibleRun) -> None:
    again = playbook("playbooks/vlab.yml")
    assert again.returncode == 0, again.report()
    assert again.recap("localhost")["changed"] == 0, again.report()


def test_status_reports_each_guest(guests: list[dict[str, Any]]) -> None:
    run = playbook("playbooks/vlab.yml", "-e", "vlab_state=status")
    assert run.returncode == 0, run.report()
    for guest in guests:
        assert f"{guest['name']}: running, ssh 127.0.0.1:{guest['ssh_port']}" in run.output
        assert "accel tcg" in run.output or "accel kvm" in run.output


def test_hard_reset_over_qmp_comes_back(guests: list[dict[str, Any]]) -> None:
    guest = guests[-1]
    name = guest["name"]

    def boot_id() -> str:
        return read_host_file(name, "/proc/sys/kernel/random/boot_id").decode().strip()

    before = boot_id()
    paths = GuestPaths.for_guest(STATE_DIR, name)
    pid_before = guest_control.running_pid(paths)
    guest_control.reset(paths)
    guest_control.wait_for_ssh_banner(guest["ssh_port"], timeout=300)
    reconnect = ansible(
        "ansible", name, "-m", "ansible.builtin.wait_for_connection", "-a", "timeout=300"
    )
    assert reconnect.returncode == 0, reconnect.output
    assert boot_id() != before
    # Reset is the machine's reset button: the same qemu process, a new boot.
    assert guest_control.running_pid(paths) == pid_before
