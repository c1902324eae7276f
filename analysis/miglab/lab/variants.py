"""Kernel variant records (the inventory's kernel_variants): validation, normalisation and
which hosts get which variant. The one description of a variant: how to build it (source,
patches, config) and what the sweep measures on it (its knob profile, workqueue label, copy
configurations and knob parameters, checked by the sweep planner's own code).

Runs on the controller: the kernel_variants module (library/) and the kernel_build role's
filters call it. Every error names the inventory key, e.g. kernel_variants[2].patches[0].
"""

from __future__ import annotations

import copy
import hashlib
import os
import re
from typing import Any

from miglab_host.names import message_id_problem, name_problem
from miglab_host.plan import variant_sweep_problems

# A variant's name goes into the kernel release (-<name>-<hash8>): stricter than a path name.
NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")
# A kernel option line with a value in Kconfig's syntax: y, m, n, a decimal or hex number,
# or a double-quoted string; `CONFIG_X` alone means y. `# CONFIG_X is not set` unsets it.
OPTION = re.compile(r'^(CONFIG_)?[A-Za-z0-9_]+(=(y|m|n|-?[0-9]+|0x[0-9A-Fa-f]+|"([^"\\]|\\.)*"))?$')
UNSET = re.compile(r"^# CONFIG_[A-Za-z0-9_]+ is not set$")
MAKE_TARGET = re.compile(r"^[A-Za-z0-9_.+-]+$")
# What git may fetch from: a URL of these schemes or an absolute path (never an option).
GIT_URL = re.compile(
    r"^(https?|git|ssh|file)://[^\s]+$|^/[^\s]*$|^[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+$"
)
GIT_REF = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._/+-]{0,199}$")
VARIANT_KEYS = {
    "name",
    "description",
    "source",
    "patches",
    "config",
    "group_options",
    "groups",
    "hosts",
    "knob_profile",
    "workqueue",
    "copy_configs",
    "knob_params",
    "boot_timeout",
    "expect_boot_failure",
}
CONFIG_KEYS = {"base", "targets", "fragments", "options"}
PATCH_KINDS = ("file", "mbox", "message_id")
SOURCE_KINDS = ("debian_package", "tarball", "git")


class Problems:
    """Collects errors, each prefixed with the key it is about."""

    def __init__(self) -> None:
        self.errors: list[str] = []

    def add(self, key: str, message: str) -> None:
        self.errors.append(f"{key}: {message}")


def merge(defaults: dict[str, Any], variant: dict[str, Any]) -> dict[str, Any]:
    """A variant over the defaults; `config` and `group_options` are merged one level deep."""
    merged = copy.deepcopy(defaults)
    for key, value in variant.items():
        if (
            key in ("config", "group_options")
            and isinstance(value, dict)
            and isinstance(merged.get(key), dict)
        ):
            merged[key] = {**merged[key], **copy.deepcopy(value)}
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def resolve(base_dir: str, path: str) -> str:
    return os.path.normpath(os.path.join(base_dir, os.path.expanduser(path)))


def option_list(value: Any, key: str, problems: Problems) -> list[str]:
    if value is None:
        return []
    if not isinstance(value, list):
        problems.add(key, "must be a list of options such as CONFIG_NUMA=y")
        return []
    options = []
    for index, item in enumerate(value):
        text = str(item).strip()
        if not (OPTION.match(text) or UNSET.match(text)):
            problems.add(
                f"{key}[{index}]",
                f"{text!r} is not a kernel option line (CONFIG_NAME=y|m|n, a number, a quoted "
                "string, or '# CONFIG_NAME is not set')",
            )
            continue
        options.append(text)
    return options


def check_source(source: Any, key: str, problems: Problems) -> dict[str, Any]:
    if not isinstance(source, dict):
        problems.add(key, f"must be a mapping with exactly one of {', '.join(SOURCE_KINDS)}")
        return {}
    kinds = [kind for kind in SOURCE_KINDS if kind in source]
    unknown = sorted(set(source) - set(SOURCE_KINDS))
    if unknown:
        problems.add(key, f"unknown key(s) {', '.join(unknown)} (use {', '.join(SOURCE_KINDS)})")
    if len(kinds) != 1:
        problems.add(
            key, f"must have exactly one of {', '.join(SOURCE_KINDS)} (got {kinds or 'none'})"
        )
        return {}
    kind = kinds[0]
    value = source[kind]
    if kind == "debian_package":
        if not isinstance(value, str) or not re.match(r"^linux-source-[0-9]+\.[0-9]+$", value):
            problems.add(
                f"{key}.debian_package", f"{value!r} is not a Debian linux-source-X.Y package"
            )
            return {}
        return {"kind": kind, "package": value}
    if kind == "tarball":
        if not isinstance(value, str) or not value.strip():
            problems.add(f"{key}.tarball", "must be the tarball's path on the build host")
            return {}
        return {"kind": kind, "path": value}
    if not isinstance(value, dict) or not value.get("url") or not value.get("ref"):
        problems.add(f"{key}.git", "must be a mapping with url and ref")
        return {}
    extra = sorted(set(value) - {"url", "ref"})
    if extra:
        problems.add(f"{key}.git", f"unknown key(s) {', '.join(extra)} (url, ref)")
    url, ref = str(value["url"]), str(value["ref"])
    if not GIT_URL.match(url):
        problems.add(
            f"{key}.git.url",
            f"{url!r} is not a repository URL (https://, git://, ssh://, file://, user@host:path "
            "or an absolute path)",
        )
    if not GIT_REF.match(ref) or ".." in ref:
        problems.add(f"{key}.git.ref", f"{ref!r} is not a tag, branch or commit name")
    return {"kind": "git", "url": url, "ref": ref}


def check_patches(
    patches: Any, key: str, base_dir: str, problems: Problems
) -> list[dict[str, Any]]:
    if patches is None:
        return []
    if not isinstance(patches, list):
        problems.add(key, "must be a list (in the order they apply)")
        return []
    result = []
    for index, patch in enumerate(patches):
        here = f"{key}[{index}]"
        if isinstance(patch, str):
            patch = {"file": patch}
        if not isinstance(patch, dict):
            problems.add(here, f"must be a mapping with one of {', '.join(PATCH_KINDS)}")
            continue
        kinds = [kind for kind in PATCH_KINDS if kind in patch]
        unknown = sorted(set(patch) - set(PATCH_KINDS) - {"name"})
        if unknown:
            problems.add(
                here, f"unknown key(s) {', '.join(unknown)} (use {', '.join(PATCH_KINDS)}, name)"
            )
        if len(kinds) != 1:
            problems.add(
                here, f"must have exactly one of {', '.join(PATCH_KINDS)} (got {kinds or 'none'})"
            )
            continue
        kind = kinds[0]
        value = str(patch[kind]).strip()
        if kind == "message_id":
            problem = message_id_problem(value)
            if problem:
                problems.add(f"{here}.message_id", problem)
                continue
            message_id = value.strip("<>")
            result.append(
                {
                    "kind": kind,
                    "message_id": message_id,
                    "name": str(patch.get("name") or message_id),
                }
            )
            continue
        path = resolve(base_dir, value)
        # its file name becomes the staged patch's name on the build host
        problem = name_problem(os.path.basename(path), "patch file name")
        if problem:
            problems.add(f"{here}.{kind}", problem)
            continue
        if not os.path.isfile(path):
            problems.add(f"{here}.{kind}", f"{path} does not exist on the controller")
            continue
        with open(path, "rb") as handle:
            data = handle.read()
        if not data.strip():
            problems.add(f"{here}.{kind}", f"{path} is empty")
            continue
        if b"diff --git" not in data and b"\n--- " not in data and not data.startswith(b"--- "):
            problems.add(f"{here}.{kind}", f"{path} contains no diff")
            continue
        result.append(
            {
                "kind": kind,
                "path": path,
                "name": str(patch.get("name") or os.path.basename(path)),
                "sha256": hashlib.sha256(data).hexdigest(),
            }
        )
    return result


def check_config(config: Any, key: str, base_dir: str, problems: Problems) -> dict[str, Any]:
    if config is None:
        config = {}
    if not isinstance(config, dict):
        problems.add(key, "must be a mapping (base, targets, fragments, options)")
        return {}
    unknown = sorted(set(config) - CONFIG_KEYS)
    if unknown:
        problems.add(
            key, f"unknown key(s) {', '.join(unknown)} (base, targets, fragments, options)"
        )
    base = config.get("base", "defconfig")
    normal_base: dict[str, Any] = {}
    if isinstance(base, str):
        if base == "running":
            normal_base = {"kind": "running"}
        elif MAKE_TARGET.match(base) and (base.endswith("config")):
            normal_base = {"kind": "make", "target": base}
        else:
            problems.add(
                f"{key}.base",
                f"{base!r}: a make target ending in 'config' (defconfig, "
                "x86_64_defconfig), 'running', or {file: path}",
            )
    elif isinstance(base, dict) and set(base) == {"file"}:
        path = resolve(base_dir, str(base["file"]))
        if not os.path.isfile(path):
            problems.add(f"{key}.base.file", f"{path} does not exist on the controller")
        else:
            normal_base = {"kind": "file", "path": path}
    elif isinstance(base, dict) and set(base) == {"make"}:
        normal_base = {"kind": "make", "target": str(base["make"])}
    else:
        problems.add(f"{key}.base", "a make target, 'running', {make: target} or {file: path}")
    targets = config.get("targets") or []
    if not isinstance(targets, list) or not all(
        isinstance(t, str) and MAKE_TARGET.match(t) and t.endswith(".config") for t in targets
    ):
        problems.add(
            f"{key}.targets", "must be a list of in-tree config targets such as kvm_guest.config"
        )
        targets = []
    fragments = []
    raw_fragments = config.get("fragments") or []
    if not isinstance(raw_fragments, list):
        problems.add(f"{key}.fragments", "must be a list of config fragment files")
        raw_fragments = []
    for index, fragment in enumerate(raw_fragments):
        path = resolve(base_dir, str(fragment))
        if not os.path.isfile(path):
            problems.add(f"{key}.fragments[{index}]", f"{path} does not exist on the controller")
            continue
        with open(path) as handle:
            text = handle.read()
        for number, line in enumerate(text.splitlines(), start=1):
            stripped = line.strip()
            if stripped and not stripped.startswith("#") and not OPTION.match(stripped):
                problems.add(
                    f"{key}.fragments[{index}]",
                    f"{path}:{number}: {stripped!r} is not a kernel option line "
                    "(CONFIG_NAME=y|m|n, a number or a quoted string)",
                )
        fragments.append({"name": os.path.basename(path), "path": path, "text": text})
    options = option_list(config.get("options"), f"{key}.options", problems)
    return {
        "base": normal_base,
        "targets": list(targets),
        "fragments": fragments,
        "options": options,
    }


def validate_variants(
    variants: Any,
    defaults: dict[str, Any] | None,
    base_dir: str,
    select: list[str] | None = None,
    groups: list[str] | None = None,
    hosts: list[str] | None = None,
) -> tuple[list[dict[str, Any]], list[str]]:
    """(normalised variants, errors). Errors name the key: kernel_variants[i].field[j]."""
    problems = Problems()
    if not isinstance(variants, list) or not variants:
        return [], ["kernel_variants: must be a non-empty list of variants"]
    seen: dict[str, int] = {}
    normalised = []
    for index, raw in enumerate(variants):
        key = f"kernel_variants[{index}]"
        if not isinstance(raw, dict):
            problems.add(key, "must be a mapping")
            continue
        variant = merge(defaults or {}, raw)
        unknown = sorted(set(variant) - VARIANT_KEYS)
        if unknown:
            problems.add(key, f"unknown key(s) {', '.join(unknown)}")
        name = variant.get("name")
        if not isinstance(name, str) or not NAME.match(name):
            problems.add(
                f"{key}.name",
                f"{name!r}: 1-31 lower-case letters, digits and '-', "
                "starting with a letter or digit",
            )
            name = f"#{index}"
        elif name in seen:
            problems.add(f"{key}.name", f"{name!r} is also kernel_variants[{seen[name]}].name")
        seen.setdefault(name, index)
        source = check_source(variant.get("source"), f"{key}.source", problems)
        patches = check_patches(variant.get("patches"), f"{key}.patches", base_dir, problems)
        config = check_config(variant.get("config"), f"{key}.config", base_dir, problems)
        group_options: dict[str, list[str]] = {}
        raw_groups = variant.get("group_options") or {}
        if not isinstance(raw_groups, dict):
            problems.add(f"{key}.group_options", "must map a host group to a list of options")
            raw_groups = {}
        for group, options in raw_groups.items():
            if groups and group not in groups:
                problems.add(f"{key}.group_options.{group}", f"no inventory group {group!r}")
            group_options[str(group)] = option_list(
                options, f"{key}.group_options.{group}", problems
            )
        only = variant.get("groups") or []
        if not isinstance(only, list):
            problems.add(f"{key}.groups", "must be a list of host groups")
            only = []
        for group in only:
            if groups and group not in groups:
                problems.add(f"{key}.groups", f"no inventory group {group!r}")
        only_hosts = variant.get("hosts") or []
        if not isinstance(only_hosts, list):
            problems.add(f"{key}.hosts", "must be a list of inventory host names")
            only_hosts = []
        for host in only_hosts:
            if hosts and host not in hosts:
                problems.add(f"{key}.hosts", f"no inventory host {host!r}")
        sweep, sweep_problems = variant_sweep_problems(variant, key)
        problems.errors.extend(str(problem) for problem in sweep_problems)
        sweep = sweep or {"profile": None, "workqueue": None, "copy_configs": [], "knob_params": {}}
        timeout = variant.get("boot_timeout")
        if timeout is not None and (
            not isinstance(timeout, int) or isinstance(timeout, bool) or timeout < 30
        ):
            problems.add(f"{key}.boot_timeout", f"{timeout!r}: whole seconds, at least 30")
        expect_failure = variant.get("expect_boot_failure", False)
        if not isinstance(expect_failure, bool):
            problems.add(f"{key}.expect_boot_failure", f"{expect_failure!r}: true or false")
        normalised.append(
            {
                "name": name,
                "description": str(variant.get("description", "")),
                "source": source,
                "patches": patches,
                "config": config,
                "group_options": group_options,
                "groups": [str(g) for g in only],
                "hosts": [str(h) for h in only_hosts],
                "knob_profile": sweep["profile"],
                "workqueue": sweep["workqueue"] or "none",
                "copy_configs": sweep["copy_configs"],
                "knob_params": sweep["knob_params"],
                "boot_timeout": timeout,
                "expect_boot_failure": expect_failure is True,
            }
        )
    names = [v["name"] for v in normalised]
    for index, wanted in enumerate(select or []):
        if wanted not in names:
            problems.add(
                f"kernel_build_variants[{index}]",
                f"no variant named {wanted!r} (have {', '.join(names)})",
            )
    if select:
        normalised = [v for v in normalised if v["name"] in select]
    return normalised, problems.errors


def variant_applies(variant: dict[str, Any], host: str, group_names: list[str]) -> bool:
    """Whether a (validated) variant is for this host: its `hosts` and `groups` say."""
    if variant.get("groups") and not set(variant["groups"]) & set(group_names):
        return False
    return not (variant.get("hosts") and host not in variant["hosts"])


def variants_by_host(
    variants: list[dict[str, Any]], host_groups: dict[str, list[str]]
) -> dict[str, list[str]]:
    """host -> the names of the variants it gets, in the inventory's order."""
    return {
        host: [v["name"] for v in variants if variant_applies(v, host, groups)]
        for host, groups in host_groups.items()
    }


# Kernel options named after an architecture: the symbol itself (CONFIG_X86) or a prefix of
# the others' (CONFIG_ARM64_64K_PAGES), with the architecture each belongs to.
FOREIGN_OPTIONS = {
    "x86_64": (("ARM64", "arm64"), ("ARM", "arm")),
    "aarch64": (("X86", "x86"),),
}


def _option_name(text: str) -> str:
    """CONFIG_X=y, X, '# CONFIG_X is not set' -> X."""
    text = text.strip().removeprefix("# ").removeprefix("CONFIG_")
    return text.split(" is not set")[0].split("=")[0]


def foreign_arch_option(option: str, arch: str) -> str | None:
    """The architecture `option` belongs to, when it is not `arch` (else None)."""
    name = _option_name(option)
    for symbol, other in FOREIGN_OPTIONS.get(arch, ()):
        if name == symbol or name.startswith(symbol + "_"):
            return other
    return None


def architecture_mismatches(
    variants: list[dict[str, Any]],
    raw_names: list[str],
    host_groups: dict[str, list[str]],
    host_arch: dict[str, str],
    host_options: dict[str, list[str]],
) -> list[str]:
    """Options of another architecture asked of a host whose architecture is known
    (`lab_arch`), before any host is touched: e.g. CONFIG_ARM64_64K_PAGES=y for an x86 group.
    Each error names the key that asks for it and the host."""
    errors: list[str] = []
    for host, groups in host_groups.items():
        arch = host_arch.get(host) or ""
        if arch not in FOREIGN_OPTIONS:
            continue
        for index, option in enumerate(host_options.get(host) or []):
            other = foreign_arch_option(str(option), arch)
            if other:
                errors.append(
                    f"lab_arch_kernel_options[{index}] (host {host}): {option} is an {other} "
                    f"option, and {host} is {arch}"
                )
        for variant in variants:
            if not variant_applies(variant, host, groups):
                continue
            key = f"kernel_variants[{raw_names.index(variant['name'])}]"
            asked = [
                (f"{key}.config.options[{i}]", o)
                for i, o in enumerate(variant["config"].get("options", []))
            ] + [
                (f"{key}.group_options.{group}[{i}]", o)
                for group in sorted(set(groups) & set(variant["group_options"]))
                for i, o in enumerate(variant["group_options"][group])
            ]
            for where, option in asked:
                other = foreign_arch_option(option, arch)
                if other:
                    errors.append(
                        f"{where}: {option} is an {other} option, and {host} "
                        f"(groups {', '.join(sorted(groups))}) is {arch}"
                    )
    return errors
