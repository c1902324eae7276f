"""The virtual lab itself: up, reachable with host keys checked, idempotent, rebootable."""

from __future__ import annotations

import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from miglab.errors import MiglabError
from miglab.lab.ansible import PlaybookRun, run_playbook
from miglab.vlab import guests as guest_control
from miglab.vlab.qemu import GuestPaths

from .conftest import (
    INVENTORY,
    REPO,
    STATE_DIR,
    ansible,
    host_command,
    playbook,
    read_host_file,
    report,
)


def test_every_guest_runs_and_booted_through_firmware_and_grub(
    vlab_up: PlaybookRun, guests: list[dict[str, Any]]
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


def known_hosts_with_another_key(tmp_path: Path, port: int) -> Path:
    """A known_hosts that names the guest's address with a key that is not the guest's."""
    other_key = tmp_path / "other"
    subprocess.run(
        ["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(other_key)], check=True
    )
    path = tmp_path / "known_hosts"
    public = other_key.with_suffix(".pub").read_text().split()[:2]
    path.write_text(f"[127.0.0.1]:{port} {' '.join(public)}\n")
    return path


def test_a_wrong_host_key_is_refused(guests: list[dict[str, Any]], tmp_path: Path) -> None:
    """Host key checking really is on: a known_hosts with another key fails the connection."""
    guest = guests[0]
    wrong_known_hosts = known_hosts_with_another_key(tmp_path, guest["ssh_port"])
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


def test_a_wrong_host_key_is_refused_through_miglab_run_too(
    guests: list[dict[str, Any]], tmp_path: Path
) -> None:
    """The same through ansible-runner, which `miglab run` and the tests use (ansible-runner
    on its own would switch host key checking off)."""
    guest = guests[0]
    wrong_known_hosts = known_hosts_with_another_key(tmp_path, guest["ssh_port"])
    ping = tmp_path / "ping.yml"
    ping.write_text(
        f"- name: Ping\n  hosts: {guest['name']}\n  gather_facts: false\n"
        "  tasks:\n    - name: Ping\n      ansible.builtin.ping:\n"
    )
    run = run_playbook(
        ping,
        [
            "-e",
            f"ansible_ssh_common_args='-o UserKnownHostsFile={wrong_known_hosts}'",
        ],
        project_dir=REPO,
        inventory=INVENTORY,
        env={"ANSIBLE_SSH_CONTROL_PATH_DIR": str(tmp_path / "cp")},
        timeout=300,
    )
    assert run.rc != 0, run.report()
    assert run.recap[guest["name"]]["unreachable"] == 1, run.report()
    assert "host key verification failed" in run.stdout().lower(), run.report()


def test_up_again_changes_nothing(vlab_up: PlaybookRun) -> None:
    again = playbook("playbooks/vlab.yml")
    assert again.returncode == 0, report(again)
    assert again.host("localhost")["changed"] == 0, again.changed_tasks()


def test_status_reports_each_guest(guests: list[dict[str, Any]]) -> None:
    run = playbook("playbooks/vlab.yml", "-e", "vlab_state=status")
    assert run.returncode == 0, report(run)
    queried = {
        e["event_data"]["res"]["name"]: e["event_data"]["res"]
        for e in run.results(task="Query each guest")
        if e["event"] == "runner_item_on_ok"
    }
    shown = [
        e["event_data"]["res"]["msg"]
        for e in run.results(task="Show the lab")
        if e["event"] == "runner_item_on_ok"
    ]
    for guest in guests:
        state = queried[guest["name"]]
        assert state["running"] is True and state["ssh_port"] == guest["ssh_port"], state
        assert state["accel"] in ("tcg", "kvm"), state
        assert any(
            f"{guest['name']}: running, ssh 127.0.0.1:{guest['ssh_port']}" in m for m in shown
        )


def test_a_reboot_inside_the_guest_is_a_cold_boot(guests: list[dict[str, Any]]) -> None:
    guest = guests[-1]
    name = guest["name"]

    def boot_id() -> str:
        return read_host_file(name, "/proc/sys/kernel/random/boot_id").decode().strip()

    before = boot_id()
    paths = GuestPaths.for_guest(STATE_DIR, name)
    pid_before = guest_control.running_pid(paths)
    supply = guest_control.power_supply_pid(paths)
    assert supply is not None
    # What the kernel pipeline does to boot a variant: a reboot from inside the guest.
    reboot = ansible(
        "ansible", name, "-m", "ansible.builtin.reboot",
        "-a", "reboot_timeout=600 reboot_command='systemctl reboot'",
    )  # fmt: skip
    assert reboot.returncode == 0, reboot.output
    assert boot_id() != before
    # The guest's power supply saw the reset and started a new qemu: the firmware cold-booted.
    assert guest_control.running_pid(paths) not in (None, pid_before)
    assert guest_control.power_supply_pid(paths) == supply
    assert "shutdown reason: guest-reset" in paths.power_log.read_text()


def test_up_power_cycles_a_guest_whose_kernel_hung(guests: list[dict[str, Any]]) -> None:
    guest = guests[0]
    name = guest["name"]
    paths = GuestPaths.for_guest(STATE_DIR, name)
    before = read_host_file(name, "/proc/sys/kernel/random/boot_id").decode().strip()
    pid_before = guest_control.running_pid(paths)
    assert host_command(name, "cat /proc/sys/kernel/panic") == "0"  # a panic stops the guest
    console_before = paths.console_log.stat().st_size
    # A real hang: the guest kernel panics (sysrq crash) two seconds after this returns
    # (fire and forget, so the dying SSH connection does not hold the test).
    crash = ansible(
        "ansible", name, "-B", "30", "-P", "0", "-m", "ansible.builtin.shell",
        "-a", "sleep 2; echo c > /proc/sysrq-trigger",
    )  # fmt: skip
    assert crash.returncode == 0, crash.output
    deadline = time.monotonic() + 60
    while b"Kernel panic" not in paths.console_log.read_bytes()[console_before:]:
        assert time.monotonic() < deadline, "the guest did not panic"
        time.sleep(1)
    with pytest.raises(MiglabError):
        guest_control.wait_for_ssh_banner(guest["ssh_port"], timeout=5)

    up = playbook("playbooks/vlab.yml", "-e", "vlab_hung_timeout=20")
    assert up.returncode == 0, report(up)
    power_cycled = [
        e["event_data"]["res"]["name"]
        for e in up.results(host="localhost")
        if e["event"] == "runner_item_on_ok" and e["event_data"]["res"].get("changed")
    ]
    assert power_cycled == [name], report(up)
    assert up.host("localhost")["changed"] == 1, up.changed_tasks()
    # Power-cycled: a new qemu process (a cold boot), a new boot of the guest.
    assert guest_control.running_pid(paths) not in (None, pid_before)
    after = read_host_file(name, "/proc/sys/kernel/random/boot_id").decode().strip()
    assert after != before


def test_up_fails_with_the_console_when_told_not_to_reset(guests: list[dict[str, Any]]) -> None:
    guest = guests[0]
    paths = GuestPaths.for_guest(STATE_DIR, guest["name"])
    # A paused guest (QMP stop) is silent on SSH, as a hung one is, and costs no reboot.
    guest_control.qmp(paths, "stop")
    try:
        up = playbook(
            "playbooks/vlab.yml", "-e", "vlab_hung_timeout=5", "-e", "vlab_reset_hung=false"
        )
    finally:
        guest_control.qmp(paths, "cont")
    assert up.returncode != 0
    (failure,) = [line for line in up.failures() if not line.startswith("(ignored)")]
    assert f"guest {guest['name']}: no SSH banner" in failure, report(up)
    assert "console tail:" in failure, report(up)
    guest_control.wait_for_ssh_banner(guest["ssh_port"], timeout=60)
