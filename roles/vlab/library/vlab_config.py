#!/usr/bin/python
"""Validate the virtual lab's definition before any qemu starts."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vlab_config
short_description: Validate the virtual lab definition (topology, ports, firmware, emulators)
description:
  - Checks every guest's NUMA shape, names and ports, that each port is free (unless that
    guest already runs), and that the firmware files exist. Errors name the offending key.
  - Changes nothing; returns the normalised guest list.
options:
  guests: {description: The vlab_guests list., type: list, elements: dict, required: true}
  state_dir: {description: The lab's state directory., type: path, required: true}
  files: {description: Map of variable name to a file that must exist., type: dict, default: {}}
  check_emulators: {description: "Also check that each guest's qemu-system-<arch> is installed.", type: bool, default: false}
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.miglab_controller import lab_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "guests": {"type": "list", "elements": "dict", "required": True},
            "state_dir": {"type": "path", "required": True},
            "files": {"type": "dict", "default": {}},
            "check_emulators": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    with lab_errors(module):
        from miglab.vlab.guests import running_pid
        from miglab.vlab.qemu import GuestPaths, check_emulators
        from miglab.vlab.topology import check_files_exist, check_ports_free, parse_guests

        guests = parse_guests(module.params["guests"])
        state_dir = Path(module.params["state_dir"])
        running = {g.name for g in guests if running_pid(GuestPaths.for_guest(state_dir, g.name))}
        check_ports_free(guests, running)
        check_files_exist(module.params["files"])
        if module.params["check_emulators"]:
            check_emulators(guests)
    module.exit_json(changed=False, guests=[g.to_dict() for g in guests], running=sorted(running))


if __name__ == "__main__":
    main()
