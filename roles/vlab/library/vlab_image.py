#!/usr/bin/python
"""Build the guest disk image unless an image with the same inputs is cached."""

from __future__ import annotations

DOCUMENTATION = r"""
module: vlab_image
short_description: Build or reuse the virtual lab's guest image
description:
  - The image is named by a hash of its recipe (suite, mirror, packages, root size), the files
    copied into the guest and the builder; an image with that hash in C(cache_dir) is reused.
options:
  cache_dir: {description: Image cache directory., type: path, required: true}
  suite: {description: Debian suite., type: str, default: bookworm}
  mirror: {description: Debian mirror URL., type: str, default: "http://deb.debian.org/debian"}
  extra_packages: {description: Packages added to the default list., type: list, elements: str, default: []}
  root_size_mib: {description: Size of the root filesystem., type: int, default: 6144}
  arch: {description: "The guests' architecture (x86_64 or aarch64, a foreign bootstrap).", type: str, choices: [x86_64, aarch64], default: x86_64}
  accel: {description: Accelerator for the GRUB-install boot., type: str, choices: [kvm, tcg], default: tcg}
  timeout: {description: Seconds the GRUB-install boot may take., type: int, default: 1200}
"""

from pathlib import Path

from ansible.module_utils.basic import AnsibleModule
from ansible.module_utils.miglab_controller import lab_errors


def main() -> None:
    module = AnsibleModule(
        argument_spec={
            "cache_dir": {"type": "path", "required": True},
            "suite": {"type": "str", "default": "bookworm"},
            "mirror": {"type": "str", "default": "http://deb.debian.org/debian"},
            "extra_packages": {"type": "list", "elements": "str", "default": []},
            "root_size_mib": {"type": "int", "default": 6144},
            "arch": {"type": "str", "choices": ["x86_64", "aarch64"], "default": "x86_64"},
            "accel": {"type": "str", "choices": ["kvm", "tcg"], "default": "tcg"},
            "timeout": {"type": "int", "default": 1200},
        },
        supports_check_mode=True,
    )
    with lab_errors(module):
        from miglab.vlab.image import BuiltImage, ImageRecipe, build_image

    params = module.params
    with lab_errors(module):
        recipe = ImageRecipe.for_arch(
            params["arch"],
            tuple(params["extra_packages"]),
            suite=params["suite"],
            mirror=params["mirror"],
            root_size_mib=params["root_size_mib"],
        )
    cache_dir = Path(params["cache_dir"])
    image = BuiltImage.in_cache(cache_dir, recipe)
    result = {
        "cache_key": recipe.cache_key(),
        "disk": str(image.disk),
        "kernel": str(image.kernel),
        "initrd": str(image.initrd),
        "arch": params["arch"],
        "metadata": str(image.metadata),
    }
    if image.exists():
        module.exit_json(changed=False, **result)
        return
    if module.check_mode:
        module.exit_json(changed=True, **result)
        return
    with lab_errors(module):
        build_image(recipe, cache_dir, params["accel"], float(params["timeout"]))
    module.exit_json(changed=True, **result)


if __name__ == "__main__":
    main()
