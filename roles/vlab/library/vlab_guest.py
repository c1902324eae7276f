#!/usr/bin/python
"""Manage one virtual-lab guest: prepared, running, stopped, reset or queried."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vlab_guest
short_description: Start, stop, reset or query a virtual lab guest
description:
  - C(running) makes the guest's copy-on-write disk, firmware variables and seed disk (host
    key, authorized key, hostname) when missing, then starts qemu (UEFI + GRUB from the disk)
    unless it runs. C(stopped) powers it off over QMP and removes its pid file and socket.
    C(reset) presses the reset button over QMP. C(answering) waits for the running guest's
    sshd and, with I(reset_hung), power-cycles (cold boot) a guest that stays silent for
    I(hung_timeout) seconds (a hung kernel or reboot) once, then waits again. C(query) reports.
options:
  guest: {description: One normalised vlab_guests entry., type: dict, required: true}
  state: {description: Wanted state., type: str, choices: [running, stopped, reset, answering, query], default: running}
  state_dir: {description: The lab's state directory., type: path, required: true}
  image: {description: Base image (qcow2)., type: path}
  accel: {description: kvm or tcg., type: str, choices: [kvm, tcg], default: tcg}
  ovmf_code: {description: Firmware code file., type: path, default: /usr/share/OVMF/OVMF_CODE_4M.fd}
  ovmf_vars: {description: Firmware variables template., type: path, default: /usr/share/OVMF/OVMF_VARS_4M.fd}
  authorized_key: {description: Public key the lab user accepts., type: str}
  timeout: {description: Seconds to wait for sshd (C(answering))., type: int, default: 300}
  reset_hung: {description: Power-cycle a silent guest once (C(answering))., type: bool, default: true}
  hung_timeout: {description: Seconds of silence before the power cycle (C(answering)); default I(timeout)., type: int}
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.miglab_controller import lab_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "guest": {"type": "dict", "required": True},
            "state": {
                "type": "str",
                "choices": ["running", "stopped", "reset", "answering", "query"],
                "default": "running",
            },
            "state_dir": {"type": "path", "required": True},
            "image": {"type": "path"},
            "accel": {"type": "str", "choices": ["kvm", "tcg"], "default": "tcg"},
            "ovmf_code": {"type": "path", "default": "/usr/share/OVMF/OVMF_CODE_4M.fd"},
            "ovmf_vars": {"type": "path", "default": "/usr/share/OVMF/OVMF_VARS_4M.fd"},
            "authorized_key": {"type": "str", "no_log": False},
            "timeout": {"type": "int", "default": 300},
            "reset_hung": {"type": "bool", "default": True},
            "hung_timeout": {"type": "int"},
        },
        required_if=[("state", "running", ("image", "authorized_key"))],
        supports_check_mode=True,
    )
    with lab_errors(module):
        from miglab.errors import MiglabError
        from miglab.vlab import guests
        from miglab.vlab.qemu import GuestPaths
        from miglab.vlab.topology import parse_guest

    params = module.params
    with lab_errors(module):
        guest = parse_guest(params["guest"], "guest")
        paths = GuestPaths.for_guest(Path(params["state_dir"]), guest.name)
        state = params["state"]
        changes: list[str] = []
        if state == "running":
            if not module.check_mode:
                changes += guests.prepare_disks(
                    guest, paths, Path(params["image"]), params["ovmf_vars"]
                )
                if guests.write_seed(guest, paths, params["authorized_key"]):
                    changes.append("seed")
                    # A running guest reads its seed at boot: restart it to apply a new one.
                    if guests.stop(paths):
                        changes.append("stopped for the new seed")
                if guests.start(
                    guest, paths, params["accel"], params["ovmf_code"], Path(params["image"])
                ):
                    changes.append("started")
            elif guests.running_pid(paths) is None:
                changes.append("started")
        elif state == "stopped":
            if guests.running_pid(paths) is not None:
                changes.append("stopped")
                if not module.check_mode:
                    guests.stop(paths)
            elif not module.check_mode:
                guests.stop(paths)  # clears a stale pid file or socket left by a crash
        elif state == "reset":
            changes.append("reset")
            if not module.check_mode:
                guests.reset(paths)
        elif state == "answering" and not module.check_mode:
            if guests.running_pid(paths) is None:
                raise MiglabError(f"guest {guest.name} is not running")
            if guests.ensure_answering(
                guest, paths, params["timeout"], params["reset_hung"], params["hung_timeout"]
            ):
                changes.append("power-cycled: sshd was silent")
        current = guests.status(guest, paths)
    module.exit_json(
        changed=bool(changes),
        changes=changes,
        name=current.name,
        running=current.running,
        pid=current.pid,
        ssh_port=current.ssh_port,
        qmp_state=current.qmp_state,
        accel=current.accel,
        console_log=str(paths.console_log),
        qmp_socket=str(paths.qmp_socket),
        host_public_key=paths.host_key.with_suffix(".pub").read_text().strip()
        if paths.host_key.with_suffix(".pub").exists()
        else None,
    )


if __name__ == "__main__":
    main()
