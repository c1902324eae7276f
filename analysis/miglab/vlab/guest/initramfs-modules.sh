#!/bin/sh
# mmdebstrap essential hook (before the kernel and initramfs-tools are installed): the
# initramfs holds only the modules named here ($2...), not initramfs-tools' default
# MODULES=most. Under qemu-user emulation, copying "most" modules made mkinitramfs the
# slowest step of a foreign-architecture image build.
set -eu
root="$1"
shift
mkdir -p "$root/etc/initramfs-tools/conf.d" "$root/usr/share/initramfs-tools/modules.d"
echo "MODULES=list" > "$root/etc/initramfs-tools/conf.d/miglab-modules"
printf '%s\n' "$@" > "$root/usr/share/initramfs-tools/modules.d/miglab"
