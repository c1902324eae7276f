#!/usr/bin/python
"""Pick the accelerator: KVM only when a short probe boot under KVM completes."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vlab_accel
short_description: Choose KVM or TCG for the virtual lab's guests
description:
  - With C(accel=auto), boots a kernel under KVM with no root disk and a timeout; KVM is used
    only when that boot reaches the kernel's panic, otherwise TCG. The verdict is cached in
    C(cache_file) per kernel so C(up) probes once.
options:
  accel: {description: auto, kvm or tcg., type: str, choices: [auto, kvm, tcg], default: auto}
  kernel: {description: Kernel image to probe with., type: path, required: true}
  timeout: {description: Seconds the probe boot may take., type: int, default: 20}
  cache_file: {description: Where the verdict is kept., type: path, required: true}
"""

import json
from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.miglab_controller import lab_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "accel": {"type": "str", "choices": ["auto", "kvm", "tcg"], "default": "auto"},
            "kernel": {"type": "path", "required": True},
            "timeout": {"type": "int", "default": 20},
            "cache_file": {"type": "path", "required": True},
        },
        supports_check_mode=True,
    )
    with lab_errors(module):
        from miglab.vlab.qemu import probe_kvm
    params = module.params
    if params["accel"] != "auto":
        module.exit_json(changed=False, accel=params["accel"], reason="set by vlab_accel")
        return
    cache = Path(params["cache_file"])
    try:
        cached = json.loads(cache.read_text())
        if cached.get("kernel") == params["kernel"]:
            module.exit_json(
                changed=False, accel=cached["accel"], reason=cached["reason"] + " (cached)"
            )
            return
    except (OSError, ValueError):
        pass
    with lab_errors(module):
        accel, reason = probe_kvm(Path(params["kernel"]), float(params["timeout"]))
    if not module.check_mode:
        cache.parent.mkdir(parents=True, exist_ok=True)
        cache.write_text(json.dumps({"kernel": params["kernel"], "accel": accel, "reason": reason}))
    module.exit_json(changed=False, accel=accel, reason=reason)


if __name__ == "__main__":
    main()
