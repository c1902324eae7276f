#!/bin/sh
# mmdebstrap customize hook: turns the bootstrapped tree ($1) into a lab guest that boots
# like a server: fstab by label, GRUB on the serial console with a saved default (so
# `grub-reboot` works), DHCP on any wired NIC, a lab user with sudo, and a first-boot
# unit that installs the per-guest seed (host keys, authorized key, hostname).
set -eu
root="$1"
here="$(dirname "$0")"

cat > "$root/etc/fstab" <<'FSTAB'
LABEL=miglab-root  /          ext4  errors=remount-ro  0 1
LABEL=MIGLAB-ESP   /boot/efi  vfat  umask=0077         0 2
FSTAB
mkdir -p "$root/boot/efi"

cat > "$root/etc/default/grub" <<'GRUB'
GRUB_DEFAULT=saved
GRUB_SAVEDEFAULT=false
GRUB_TIMEOUT=1
GRUB_DISTRIBUTOR=Debian
GRUB_CMDLINE_LINUX_DEFAULT=""
GRUB_CMDLINE_LINUX="console=tty0 console=ttyS0,115200n8"
GRUB_TERMINAL="serial console"
GRUB_SERIAL_COMMAND="serial --unit=0 --speed=115200"
GRUB_DISABLE_OS_PROBER=true
# No recovery entries: update-grub (run by every kernel install and removal) spends most of
# its ~25 s under TCG writing entries, two per kernel; the lab never boots a recovery one.
GRUB_DISABLE_RECOVERY=true
GRUB
# No Xen on a lab guest: its menu script probes every kernel again (~1.6 s under TCG).
# (An aarch64 image has no GRUB: its guests boot their kernel directly.)
if [ -e "$root/etc/grub.d/20_linux_xen" ]; then
	chmod -x "$root/etc/grub.d/20_linux_xen"
fi

cat > "$root/etc/systemd/network/20-wired.network" <<'NET'
[Match]
Name=en* eth*

[Network]
DHCP=ipv4
NET
chroot "$root" systemctl enable systemd-networkd.service

# The lab user: key-only SSH, passwordless sudo (Ansible uses become, as on a real lab).
chroot "$root" useradd --create-home --shell /bin/bash miglab
echo 'miglab ALL=(ALL) NOPASSWD:ALL' > "$root/etc/sudoers.d/miglab"
chmod 0440 "$root/etc/sudoers.d/miglab"

# Host keys come from the per-guest seed disk, so the controller knows them in advance.
rm -f "$root"/etc/ssh/ssh_host_*
install -m 0755 "$here/miglab-seed" "$root/usr/local/sbin/miglab-seed"
install -m 0644 "$here/miglab-seed.service" "$root/etc/systemd/system/miglab-seed.service"
chroot "$root" systemctl enable miglab-seed.service
install -m 0755 "$here/miglab-firstboot" "$root/usr/local/sbin/miglab-firstboot"

# Every guest gets its own machine-id on first boot.
: > "$root/etc/machine-id"
rm -f "$root/var/lib/dbus/machine-id"
