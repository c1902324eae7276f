#!/usr/bin/python
"""Read a host's GRUB menu: entries by kernel release, and the saved and next entry; with
it, on request, the running kernel's banner and the known-good kernel's record (one module
call instead of three: each costs seconds on an emulated guest)."""

from __future__ import annotations

DOCUMENTATION = r"""
module: kernel_grub
short_description: Read the GRUB menu (entries by kernel release, saved and next entry)
description:
  - Parses grub.cfg (Debian's 10_linux menu entries, with submenus) and, where GRUB reads
    Boot Loader Specification snippets (RHEL family), /boot/loader/entries/*.conf.
  - Returns every entry with the path grub-reboot and grub-set-default take
    ("submenu id>entry id", or a BLS id), entries by kernel release (recovery entries left
    out), whether GRUB_DEFAULT=saved is in effect, and saved_entry/next_entry from grubenv.
  - With I(state_file), also the JSON record there (C(record), null when there is none);
    with I(running), the running kernel's banner (/proc/version) and its release.
  - Changes nothing.
options:
  grub_cfg: {description: grub.cfg (default the first of /boot/grub/grub.cfg, /boot/grub2/grub.cfg)., type: path}
  grubenv: {description: The GRUB environment block (default next to grub.cfg)., type: path}
  bls_dir: {description: BLS entries directory., type: path, default: /boot/loader/entries}
  state_file: {description: A JSON record to read too (the known-good kernel)., type: path}
  running: {description: Also read the running kernel's banner., type: bool, default: false}
  missing_ok:
    description:
      - A host without GRUB is not an error (one whose firmware or BMC boots a fixed kernel,
        test kernels started by kexec): C(grub) is false and the menu is empty.
    type: bool
    default: false
"""

import json
import os
import re
from typing import Any

ENTRY = re.compile(r"^\s*(menuentry|submenu)\s+(['\"])(.*?)\2(.*)\{\s*$")
ENTRY_ID = re.compile(r"(?:\$menuentry_id_option|--id)\s+['\"]?([^'\"\s]+)['\"]?")
LINUX = re.compile(r"^\s*linux(?:efi|16)?\s+(\S*/)?vmlinuz-(\S+)")


def parse_grub_cfg(text: str) -> tuple[list[dict[str, Any]], bool]:
    """(entries, default_is_saved). Each entry: title, id, path, release, recovery, submenu."""
    entries: list[dict[str, Any]] = []
    stack: list[dict[str, Any]] = []  # open menuentry/submenu blocks, with their brace depth
    depth = 0
    default_is_saved = False
    for line in text.splitlines():
        stripped = line.strip()
        if re.match(r'^set default="?\$\{saved_entry\}"?', stripped):
            default_is_saved = True
        match = ENTRY.match(line)
        if match:
            kind, title, rest = match.group(1), match.group(3), match.group(4)
            found = ENTRY_ID.search(rest)
            submenus = [block for block in stack if block["kind"] == "submenu"]
            block = {
                "kind": kind,
                "title": title,
                "id": found.group(1) if found else title,
                "depth": depth,
                "release": None,
                "submenu": submenus[-1]["id"] if submenus else None,
            }
            stack.append(block)
            depth += 1
            continue
        if stack and stack[-1]["kind"] == "menuentry":
            linux = LINUX.match(line)
            if linux:
                stack[-1]["release"] = linux.group(2)
        depth += stripped.count("{") - stripped.count("}") if not stripped.startswith("#") else 0
        while stack and depth <= stack[-1]["depth"]:
            block = stack.pop()
            if block["kind"] == "menuentry":
                path = f"{block['submenu']}>{block['id']}" if block["submenu"] else block["id"]
                entries.append(
                    {
                        "title": block["title"],
                        "id": block["id"],
                        "path": path,
                        "release": block["release"],
                        "recovery": "recovery" in block["title"].lower()
                        or "recovery" in block["id"],
                        "submenu": block["submenu"],
                    }
                )
    return entries, default_is_saved


def parse_bls(directory: str) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    if not os.path.isdir(directory):
        return entries
    for name in sorted(os.listdir(directory)):
        if not name.endswith(".conf"):
            continue
        fields: dict[str, str] = {}
        with open(os.path.join(directory, name), errors="replace") as handle:
            for line in handle:
                key, _, value = line.strip().partition(" ")
                if key:
                    fields.setdefault(key, value.strip())
        release = fields.get("version")
        linux = re.search(r"vmlinuz-(\S+)", fields.get("linux", ""))
        if linux:
            release = linux.group(1)
        stem = name[: -len(".conf")]
        title = fields.get("title", stem)
        entries.append(
            {
                "title": title,
                "id": stem,
                "path": stem,
                "release": release,
                "recovery": "rescue" in stem or "recovery" in title.lower(),
                "submenu": None,
            }
        )
    return entries


def parse_grubenv(text: str) -> dict[str, str]:
    values = {}
    for line in text.splitlines():
        if line.startswith("#") or "=" not in line:
            continue
        key, _, value = line.partition("=")
        values[key] = value
    return values


def menu(
    grub_cfg_text: str, grubenv_text: str, bls_entries: list[dict[str, Any]]
) -> dict[str, Any]:
    entries, default_is_saved = parse_grub_cfg(grub_cfg_text)
    if "blscfg" in grub_cfg_text:
        entries += bls_entries
    by_release: dict[str, str] = {}
    for entry in entries:
        if entry["release"] and not entry["recovery"]:
            # Prefer the per-kernel entry (in the submenu) over the top "newest kernel" entry.
            if entry["release"] not in by_release or entry["submenu"]:
                by_release[entry["release"]] = entry["path"]
    env = parse_grubenv(grubenv_text)
    return {
        "entries": entries,
        "by_release": by_release,
        "default_is_saved": default_is_saved or "blscfg" in grub_cfg_text,
        "saved_entry": env.get("saved_entry", ""),
        "next_entry": env.get("next_entry", ""),
    }


def running_kernel(banner: str) -> dict[str, str]:
    """/proc/version: 'Linux version <release> (<builder>) ...'."""
    words = banner.split()
    return {"banner": banner.strip(), "release": words[2] if len(words) > 2 else ""}


def read_record(path: str) -> dict[str, Any] | None:
    """The JSON object at path, None when the file does not exist."""
    try:
        with open(path) as handle:
            record = json.load(handle)
    except FileNotFoundError:
        return None
    if not isinstance(record, dict):
        raise ValueError(f"{path}: not a JSON object")
    return record


def main() -> None:
    from ansible.module_utils.basic import AnsibleModule

    module = AnsibleModule(
        argument_spec={
            "grub_cfg": {"type": "path"},
            "grubenv": {"type": "path"},
            "bls_dir": {"type": "path", "default": "/boot/loader/entries"},
            "state_file": {"type": "path"},
            "running": {"type": "bool", "default": False},
            "missing_ok": {"type": "bool", "default": False},
        },
        supports_check_mode=True,
    )
    grub_cfg = module.params["grub_cfg"]
    if not grub_cfg:
        candidates = ["/boot/grub/grub.cfg", "/boot/grub2/grub.cfg"]
        grub_cfg = next((c for c in candidates if os.path.exists(c)), None)
        if grub_cfg is None and not module.params["missing_ok"]:
            module.fail_json(
                msg="no GRUB configuration ("
                + ", ".join(candidates)
                + "): is this host booted by GRUB? (A host without GRUB boots test kernels"
                " with kernel_boot_method: kexec.)"
            )
    grubenv = None
    if grub_cfg is None:
        result = {**menu("", "", []), "grub": False}
    else:
        try:
            with open(grub_cfg, errors="replace") as handle:
                cfg_text = handle.read()
        except OSError as error:
            module.fail_json(msg=f"cannot read {grub_cfg}: {error}")
        grubenv = module.params["grubenv"] or os.path.join(os.path.dirname(grub_cfg), "grubenv")
        env_text = ""
        if os.path.exists(grubenv):
            with open(grubenv, errors="replace") as handle:
                env_text = handle.read()
        result = {**menu(cfg_text, env_text, parse_bls(module.params["bls_dir"])), "grub": True}
    if module.params["state_file"]:
        try:
            result["record"] = read_record(module.params["state_file"])
        except (OSError, ValueError) as error:
            module.fail_json(msg=f"cannot read {module.params['state_file']}: {error}")
    if module.params["running"]:
        with open("/proc/version") as handle:
            result["running"] = running_kernel(handle.read())
    module.exit_json(changed=False, grub_cfg=grub_cfg, grubenv=grubenv, **result)


if __name__ == "__main__":
    main()
