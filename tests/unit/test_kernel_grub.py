"""GRUB menu parsing (roles/kernel_boot/library/kernel_grub.py): the entry paths that
grub-reboot and grub-set-default take, by kernel release."""

from __future__ import annotations

from pathlib import Path

import pytest

from kernel_testlib import GRUB_MODULE, load

grub = load(GRUB_MODULE, "kernel_grub_module")

UUID = "cea55c33-6648-40cf-9e4f-878d9069c921"


def entry(release: str, kind: str = "advanced", indent: str = "\t") -> str:
    title = f"Debian GNU/Linux, with Linux {release}" + (
        " (recovery mode)" if kind == "recovery" else ""
    )
    return (
        f"{indent}menuentry '{title}' --class debian --class gnu-linux $menuentry_id_option "
        f"'gnulinux-{release}-{kind}-{UUID}' {{\n"
        f"{indent}\tload_video\n{indent}\tif [ x$grub_platform = xxen ]; then insmod xzio; fi\n"
        f"{indent}\tlinux\t/boot/vmlinuz-{release} root=UUID={UUID} ro console=ttyS0,115200n8\n"
        f"{indent}\tinitrd\t/boot/initrd.img-{release}\n{indent}}}\n"
    )


GRUB_CFG = (
    'if [ -s $prefix/grubenv ]; then\n  load_env\nfi\nif [ "${next_entry}" ] ; then\n'
    '   set default="${next_entry}"\n   set next_entry=\n   save_env next_entry\nelse\n'
    '   set default="${saved_entry}"\nfi\n'
    'function savedefault {\n  if [ -z "${boot_once}" ]; then\n    saved_entry="${chosen}"\n  fi\n}\n'
    f"menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-{UUID}' {{\n"
    f"\tlinux\t/boot/vmlinuz-6.12.117-vanilla-df0e0679 root=UUID={UUID} ro\n}}\n"
    f"submenu 'Advanced options for Debian GNU/Linux' $menuentry_id_option 'gnulinux-advanced-{UUID}' {{\n"
    + entry("6.12.117-vanilla-df0e0679")
    + entry("6.12.117-vanilla-df0e0679", "recovery")
    + entry("6.1.0-50-cloud-amd64")
    + entry("6.1.0-50-cloud-amd64", "recovery")
    + "}\n"
    "menuentry 'UEFI Firmware Settings' $menuentry_id_option 'uefi-firmware' {\n\tfwsetup\n}\n"
)
GRUBENV = (
    "# GRUB Environment Block\nsaved_entry=gnulinux-advanced-x>gnulinux-6.1.0-50-cloud-amd64-advanced-x\n"
    + "#" * 900
)


def test_entries_by_release_use_submenu_paths_and_skip_recovery() -> None:
    menu = grub.menu(GRUB_CFG, GRUBENV, [])
    assert menu["by_release"] == {
        "6.12.117-vanilla-df0e0679": f"gnulinux-advanced-{UUID}>gnulinux-6.12.117-vanilla-df0e0679-advanced-{UUID}",
        "6.1.0-50-cloud-amd64": f"gnulinux-advanced-{UUID}>gnulinux-6.1.0-50-cloud-amd64-advanced-{UUID}",
    }
    assert menu["default_is_saved"] is True
    assert menu["saved_entry"] == "gnulinux-advanced-x>gnulinux-6.1.0-50-cloud-amd64-advanced-x"
    assert menu["next_entry"] == ""
    paths = [e["path"] for e in menu["entries"]]
    assert paths[0] == f"gnulinux-simple-{UUID}" and paths[-1] == "uefi-firmware"
    assert len(paths) == 6


def test_a_menu_without_saved_default_is_reported() -> None:
    text = GRUB_CFG.replace('set default="${saved_entry}"', 'set default="0"')
    assert grub.menu(text, "", [])["default_is_saved"] is False


def test_bls_entries(tmp_path: Path) -> None:
    (tmp_path / "abc-6.12.0-mt-1234abcd.conf").write_text(
        "title Red Hat (6.12.0-mt-1234abcd)\nversion 6.12.0-mt-1234abcd\nlinux /vmlinuz-6.12.0-mt-1234abcd\n"
    )
    menu = grub.menu(
        "insmod blscfg\nblscfg\n",
        "next_entry=abc-6.12.0-mt-1234abcd\n",
        grub.parse_bls(str(tmp_path)),
    )
    assert menu["by_release"] == {"6.12.0-mt-1234abcd": "abc-6.12.0-mt-1234abcd"}
    assert menu["next_entry"] == "abc-6.12.0-mt-1234abcd"
    assert menu["default_is_saved"] is True


def test_running_kernel_is_read_from_the_banner() -> None:
    banner = (
        "Linux version 6.12.117-vanilla-df0e0679 (miglab@miglab-df0e0679abcd) "
        "(gcc (Debian 12.2.0-14) 12.2.0) #1 SMP\n"
    )
    assert grub.running_kernel(banner) == {
        "banner": banner.strip(),
        "release": "6.12.117-vanilla-df0e0679",
    }


def test_the_known_good_record_is_read_and_a_missing_one_is_none(tmp_path: Path) -> None:
    record = tmp_path / "known-good.json"
    assert grub.read_record(str(record)) is None
    record.write_text('{"kernel_release": "6.1.0-50-cloud-amd64"}\n')
    assert grub.read_record(str(record)) == {"kernel_release": "6.1.0-50-cloud-amd64"}
    record.write_text("[]")
    with pytest.raises(ValueError, match="not a JSON object"):
        grub.read_record(str(record))


def run_module(tmp_path: Path, **args: object) -> dict[str, object]:
    """The module as Ansible runs it: a process reading its arguments from a file."""
    import json
    import subprocess
    import sys

    args_file = tmp_path / "args.json"
    args_file.write_text(json.dumps({"ANSIBLE_MODULE_ARGS": args}))
    done = subprocess.run(
        [sys.executable, str(GRUB_MODULE), str(args_file)],
        capture_output=True,
        text=True,
        check=False,
    )
    return dict(json.loads(done.stdout))


@pytest.mark.skipif(
    any(Path(p).exists() for p in ("/boot/grub/grub.cfg", "/boot/grub2/grub.cfg")),
    reason="this machine boots by GRUB",
)
def test_a_host_without_grub_fails_unless_it_boots_test_kernels_by_kexec(tmp_path: Path) -> None:
    refused = run_module(tmp_path)
    assert refused["failed"]
    assert "kexec" in str(refused["msg"])
    kexec_host = run_module(tmp_path, missing_ok=True, running=True)
    assert not kexec_host.get("failed")
    assert kexec_host["grub"] is False
    assert kexec_host["by_release"] == {}
    assert kexec_host["grub_cfg"] is None
    assert kexec_host["running"]["release"]  # type: ignore[index]


def test_a_host_with_grub_says_so(tmp_path: Path) -> None:
    cfg = tmp_path / "grub.cfg"
    cfg.write_text(
        'set default="${saved_entry}"\n'
        "menuentry 'Debian GNU/Linux' --class debian $menuentry_id_option 'gnulinux-simple-x' {\n"
        "\tlinux /boot/vmlinuz-6.1.0-28-amd64 root=/dev/vda2 ro\n"
        "}\n"
    )
    result = run_module(tmp_path, grub_cfg=str(cfg), missing_ok=True)
    assert result["grub"] is True
    assert "6.1.0-28-amd64" in result["by_release"]  # type: ignore[operator]
