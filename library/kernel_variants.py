#!/usr/bin/python
"""Validate and normalise the inventory's kernel variants on the controller (the logic is
miglab.lab.variants, in the controller's virtualenv)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_variants
short_description: Validate and normalise kernel variants (runs on the controller)
description:
  - Checks every entry of kernel_variants (merged over kernel_variant_defaults) before any
    host is touched, and names the offending key, e.g. kernel_variants[2].patches[0].
  - Resolves relative patch, mbox, fragment and base-config paths against base_dir, checks
    that those files exist, reads the fragments, and returns the normalised variants.
  - The sweep's keys of a record (knob_profile, workqueue, copy_configs, knob_params) are
    checked by the sweep planner's own code (miglab_host.plan, the knob profiles of
    profiles.json), so a copy configuration the profile cannot do is refused here already.
  - Changes nothing. Runs with the controller's Python (miglab_host installed).
options:
  variants: {description: The kernel_variants list., type: list, elements: raw, required: true}
  defaults: {description: kernel_variant_defaults, merged under every variant., type: dict, default: {}}
  base_dir: {description: Directory relative paths are resolved against (the inventory's)., type: path, required: true}
  select: {description: Only these variant names (empty = all)., type: list, elements: str, default: []}
  groups: {description: The inventory's group names (group_options keys must be among them)., type: list,
           elements: str, default: []}
  hosts: {description: The inventory's host names (a variant's hosts must be among them)., type: list,
          elements: str, default: []}
  host_groups: {description: host -> its groups; the result then says which variants each host gets (for_host).,
                type: dict, default: {}}
  host_arch: {description: "host -> its architecture (lab_arch: x86_64, aarch64) where known; an option named
              after another architecture (CONFIG_ARM64_*, CONFIG_X86_*) asked of it is an error.", type: dict, default: {}}
  host_options: {description: host -> its lab_arch_kernel_options (checked the same way)., type: dict, default: {}}
"""

def main() -> None:
    from ansible.module_utils.basic import AnsibleModule
    from ansible.module_utils.miglab_controller import lab_errors

    module = AnsibleModule(
        argument_spec={
            "variants": {"type": "list", "elements": "raw", "required": True},
            "defaults": {"type": "dict", "default": {}},
            "base_dir": {"type": "path", "required": True},
            "select": {"type": "list", "elements": "str", "default": []},
            "groups": {"type": "list", "elements": "str", "default": []},
            "hosts": {"type": "list", "elements": "str", "default": []},
            "host_groups": {"type": "dict", "default": {}},
            "host_arch": {"type": "dict", "default": {}},
            "host_options": {"type": "dict", "default": {}},
        },
        supports_check_mode=True,
    )
    params = module.params
    with lab_errors(module):
        from miglab.lab.variants import (
            architecture_mismatches,
            validate_variants,
            variants_by_host,
        )

        variants, errors = validate_variants(
            params["variants"],
            params["defaults"],
            params["base_dir"],
            params["select"],
            params["groups"],
            params["hosts"],
        )
        raw_names = [
            str(v.get("name", "")) if isinstance(v, dict) else "" for v in params["variants"]
        ]
        errors += architecture_mismatches(
            variants, raw_names, params["host_groups"], params["host_arch"], params["host_options"]
        )
    if errors:
        module.fail_json(msg="invalid kernel variants: " + "; ".join(errors), errors=errors)
    module.exit_json(
        changed=False,
        variants=variants,
        names=[v["name"] for v in variants],
        for_host=variants_by_host(variants, params["host_groups"]),
    )


if __name__ == "__main__":
    main()
