"""Kernel knobs: profiles as data (profiles.json), writes with read-back, restore of originals.

The knob root is configurable (``--sys-root``): ``/`` on a host, a fake tree in tests. Paths
in profiles are relative to it (``proc/sys/vm/use_mt_copy``).
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from typing import Any

COPY_CONFIG_RE = re.compile(r"^(vanilla|serial|mt_([1-9][0-9]{0,3})|dma_([1-9][0-9]{0,3}))$")
_PROFILES: dict | None = None


class KnobError(RuntimeError):
    """A knob cannot be set as asked: missing, rejected, or read back differently."""


def parse_copy_config(cfg: Any) -> tuple[str, int | None]:
    """'mt_4' -> ('mt', 4); 'serial' -> ('serial', None)."""
    m = COPY_CONFIG_RE.match(cfg) if isinstance(cfg, str) else None
    if not m:
        raise ValueError(f"unknown copy config {cfg!r}: use vanilla, serial, mt_<N> or dma_<N>")
    if m.group(2):
        return "mt", int(m.group(2))
    if m.group(3):
        return "dma", int(m.group(3))
    return cfg, None


def load_profiles() -> dict:
    global _PROFILES
    if _PROFILES is None:
        path = os.path.join(os.path.dirname(os.path.abspath(__file__)), "profiles.json")
        with open(path, encoding="utf-8") as f:
            _PROFILES = json.load(f)
    return _PROFILES


_BRACKET = re.compile(r"\[([^\]]+)\]")
_BOOL = {"y": "1", "n": "0", "1": "1", "0": "0"}


def selected_value(text: str) -> str:
    """'always [madvise] never' -> 'madvise'; anything else stripped."""
    text = text.strip()
    m = _BRACKET.search(text)
    return m.group(1) if m else text


def equivalent(wanted: str, got: str) -> bool:
    """Read-back comparison; module bool parameters read back as Y/N."""
    wanted, got = str(wanted).strip(), selected_value(got)
    if wanted == got:
        return True
    if wanted.lower() in _BOOL and got.lower() in _BOOL:
        return _BOOL[wanted.lower()] == _BOOL[got.lower()]
    return False


class SysTree:
    """Files under a root directory (``/`` or a fake tree)."""

    def __init__(self, root: str = "/") -> None:
        self.root = root

    def path(self, rel: str) -> str:
        return os.path.join(self.root, rel.lstrip("/"))

    def exists(self, rel: str) -> bool:
        return os.path.exists(self.path(rel))

    def read(self, rel: str) -> str:
        try:
            with open(self.path(rel), encoding="utf-8", errors="replace") as f:
                return f.read()
        except OSError as err:
            raise KnobError(f"/{rel.lstrip('/')}: reading failed: {err.strerror or err}") from None

    def read_value(self, rel: str) -> str:
        return selected_value(self.read(rel))

    def write(self, rel: str, value: str) -> None:
        try:
            with open(self.path(rel), "w", encoding="utf-8") as f:
                f.write(f"{value}\n")
        except OSError as err:
            try:
                now = f"; it still reads {self.read_value(rel)!r}"
            except KnobError:
                now = ""
            raise KnobError(
                f"/{rel.lstrip('/')}: writing {value!r} failed: {err.strerror or err}{now}"
            ) from None

    def listdir(self, rel: str) -> list[str]:
        try:
            return sorted(os.listdir(self.path(rel)))
        except OSError:
            return []


class Restorer:
    """Writes files, reading each back; remembers the first-seen value of every file it writes.

    ``on_first_write(originals)`` is called *before* a file is first changed, so the caller
    can persist the originals (a runner killed with SIGKILL is restored by the next one).
    """

    def __init__(
        self,
        tree: SysTree,
        on_first_write: Callable[[dict], None] | None = None,
        originals: dict | None = None,
    ) -> None:
        self.tree = tree
        self.on_first_write = on_first_write
        self.originals: dict[str, str] = dict(originals or {})

    def write(self, rel: str, value: Any, only_if_different: bool = False) -> bool:
        value = str(value)
        if not self.tree.exists(rel):
            raise KnobError(f"/{rel}: does not exist on this kernel")
        current = self.tree.read(rel)
        if rel not in self.originals:
            self.originals[rel] = selected_value(current)
            if self.on_first_write:
                self.on_first_write(dict(self.originals))
        if only_if_different and equivalent(value, current):
            return False
        self.tree.write(rel, value)
        got = self.tree.read(rel)
        if not equivalent(value, got):
            raise KnobError(f"/{rel}: wrote {value!r} but read back {selected_value(got)!r}")
        return True

    def reset(self, rel: str) -> None:
        self.write(rel, self.originals[rel], only_if_different=True)

    def restore(self) -> dict[str, dict]:
        """Put every original back (last written first); never stops at the first problem."""
        report: dict[str, dict] = {}
        for rel in reversed(list(self.originals)):
            original = self.originals[rel]
            entry: dict[str, Any] = {"original": original}
            try:
                self.write(rel, original, only_if_different=True)
                entry["restored"] = True
            except (KnobError, OSError) as err:
                entry["restored"] = False
                entry["error"] = str(err)
            report[rel] = entry
        return report


def detect_profile(tree: SysTree) -> tuple[str, list[str]]:
    """The first profile in detect_order whose detect files all exist; 'vanilla' otherwise."""
    profiles = load_profiles()
    matches = [
        name
        for name in profiles["detect_order"]
        if all(tree.exists(p) for p in profiles["profiles"][name]["detect"])
    ]
    return (matches[0] if matches else "vanilla"), matches


class KnobSession:
    """Applies copy configurations of one profile; each starts from the original values."""

    def __init__(
        self, tree: SysTree, profile: str, restorer: Restorer, params: dict | None = None
    ) -> None:
        profiles = load_profiles()["profiles"]
        if profile not in profiles:
            raise KnobError(f"unknown knob profile {profile!r}")
        self.tree = tree
        self.name = profile
        self.profile = profiles[profile]
        self.restorer = restorer
        self.params = dict(params or {})

    @classmethod
    def open(
        cls, tree: SysTree, requested: str, restorer: Restorer, params: dict | None = None
    ) -> KnobSession:
        """``requested`` is a profile name or 'auto' (detect from the knobs that exist)."""
        if requested == "auto":
            name, _ = detect_profile(tree)
        else:
            name = requested
            missing = [p for p in load_profiles()["profiles"][name]["detect"] if not tree.exists(p)]
            if missing:
                raise KnobError(
                    f"knob profile {name!r} needs /{missing[0]}, which this kernel "
                    f"does not have (is the right kernel variant booted?)"
                )
        return cls(tree, name, restorer, params)

    def writes_for(self, config: str) -> list[tuple[str, str, bool]]:
        """(path, value, optional) for a configuration; KnobError if the kernel cannot do it."""
        family, threads = parse_copy_config(config)
        configs = self.profile["configs"]
        if family not in configs:
            if self.name == "vanilla":
                raise KnobError(
                    f"copy config {config!r} needs copy knobs, but this kernel has "
                    f"none (knob profile 'vanilla'): it would silently run as "
                    f"vanilla"
                )
            raise KnobError(
                f"copy config {config!r} is not offered by knob profile "
                f"{self.name!r} (it offers: {', '.join(configs)})"
            )
        if threads is not None:
            lo, hi = self.profile["threads"][family]
            if not lo <= threads <= hi:
                raise KnobError(
                    f"copy config {config!r}: {threads} is outside the range of "
                    f"knob profile {self.name!r} ({lo}..{hi})"
                )
        writes = []
        if family != "vanilla":
            for pname, pval in self.params.items():
                spec = self.profile["params"].get(pname)
                if spec is None:
                    raise KnobError(f"knob profile {self.name!r} has no parameter {pname!r}")
                writes.append((spec["path"], str(pval), False))
        for w in configs[family]:
            value = w["value"].replace("{threads}", str(threads if threads is not None else ""))
            writes.append((w["path"], value, bool(w.get("optional", False))))
        for path, _value, optional in writes:
            if not optional and not self.tree.exists(path):
                raise KnobError(
                    f"copy config {config!r} needs /{path}, which this kernel does not have"
                )
        return writes

    def check(self, config: str) -> None:
        self.writes_for(config)

    def apply(self, config: str) -> dict[str, str]:
        """Reset knobs touched earlier to their originals, then write this configuration."""
        writes = [
            (p, v)
            for p, v, optional in self.writes_for(config)
            if not optional or self.tree.exists(p)
        ]
        targets = {p for p, _ in writes}
        for rel in list(self.restorer.originals):
            if rel not in targets:
                self.restorer.reset(rel)
        for rel, value in writes:
            self.restorer.write(rel, value)
        return {rel: self.tree.read_value(rel) for rel, _ in writes}

    def knob_paths(self) -> list[str]:
        paths: list[str] = []
        for writes in self.profile["configs"].values():
            for w in writes:
                if w["path"] not in paths:
                    paths.append(w["path"])
        for spec in self.profile["params"].values():
            if spec["path"] not in paths:
                paths.append(spec["path"])
        return paths

    def snapshot(self) -> dict[str, str | None]:
        """Current value of every knob of the profile (None where the file is absent)."""
        out: dict[str, str | None] = {}
        for rel in self.knob_paths() + list(self.profile.get("counters", [])):
            out[rel] = self.tree.read_value(rel) if self.tree.exists(rel) else None
        return out

    def counters(self) -> dict[str, str]:
        return {
            rel: self.tree.read_value(rel)
            for rel in self.profile.get("counters", [])
            if self.tree.exists(rel)
        }
