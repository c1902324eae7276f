"""The virtual lab: QEMU guests with emulated NUMA nodes that boot through UEFI and GRUB.

- `topology`: the lab definition (guests, NUMA shapes, ports) and its validation;
- `image`: the cached guest disk image (mmdebstrap + a first boot that installs GRUB);
- `qemu`: the accelerator probe and the qemu command line of a guest;
- `guests`: starting, stopping, resetting and querying guests (pid files, QMP);
- `commands`: the `miglab vlab` sub-commands.
"""
