"""Sweep definition: validation and expansion into a plan (the ordered list of cells).

Runs on the controller (``python3 -m miglab_host plan``, before any host is touched) and
again on each host (the runner re-validates what it is given). Every error names the key as
the inventory spells it (``sweep_page_counts.2M[0]``, ``kernel_variants[2].copy_configs[1]``),
so the message points at the YAML.

The kernel variant swept is one record of the inventory's ``kernel_variants`` (the single
description of a variant, docs/kernels.md): its knob profile, workqueue label, copy
configurations and knob parameters come from there; its build keys are the kernel build's.

A *cell* is one (load, copy config, folio kind, page count) of one kernel variant; its samples
come from one migbench process (warm-up moves, then ``repetitions`` recorded moves).
"""

from __future__ import annotations

import copy
import hashlib
import json
import random
import re
from typing import Any

from miglab_host import PLAN_SCHEMA
from miglab_host.knobs import load_profiles, parse_copy_config
from miglab_host.names import PATH_NAME

KEY_PREFIX = "sweep_"

# Characters a shell would interpret. Nothing here goes through a shell, but a value that
# contains one is a typo or an attack, and it would end up in file names and argv.
SHELL_METACHARACTERS = set(";&|$`<>(){}[]*?!~#^'\"\\ \t\r\n")

KIND_RE = re.compile(r"^(base|[1-9][0-9]*[KMG])$")
STRESSOR_RE = re.compile(r"^[a-z][a-z0-9-]{0,31}$")
ORDERS = ("shuffle", "interleave", "sequential")
WORKQUEUES = (None, "unbound", "highpri")
THP_ENABLED = (None, "always", "madvise", "never")
THP_DEFRAG = (None, "always", "defer", "defer+madvise", "madvise", "never")
MAX_PAGE_COUNT = 1 << 20
MAX_REPETITIONS = 100000

DEFAULTS: dict[str, Any] = {
    "run_id": None,
    "name": "sweep",
    "kernel_variant": "vanilla",
    "kernel_build_hash": None,
    "kernel_variants": [{"name": "vanilla"}],
    "kernel_variant_defaults": {},
    "loads": ["idle"],
    "stress_loads": {"busy": [{"stressor": "cpu", "workers": 0}]},
    "folio_kinds": ["base"],
    "page_counts": {"base": [32]},
    "repetitions": 10,
    "warmup": 2,
    "settle_seconds": 0,
    "order": "shuffle",
    "seed": None,
    "src_node": 0,
    "dst_node": 1,
    "cell_timeout_seconds": 900,
    "tuning": {
        "numa_balancing": 0,
        "thp_enabled": "madvise",
        "thp_defrag": "madvise",
        "compact_before_cell": False,
    },
    "idle": {
        "max_busy_percent": 10,
        "sample_seconds": 2,
        "wait_seconds": 120,
        "refuse_stress_ng": True,
    },
    "stress": {"settle_seconds": 2, "baseline_seconds": 5, "min_busy_percent": 80},
    # The user-space copy ceiling, once per variant and load (migbench --ceiling).
    "ceiling": {"enabled": True, "size_mib": 1024, "repetitions": 5},
}

# The sweep's keys of a kernel variant record, with their defaults (the record's other keys,
# source, patches, config, ..., belong to the kernel build and are not looked at here).
VARIANT_SWEEP_DEFAULTS: dict[str, Any] = {
    "knob_profile": "vanilla",
    "workqueue": "none",
    "copy_configs": ["vanilla"],
    "knob_params": {},
}
# Keys of the definition that are the inventory's own kernel variant records: they are not
# spelled with the sweep_ prefix, and their free text (descriptions) is not sweep input.
VARIANT_RECORD_KEYS = ("kernel_variants", "kernel_variant_defaults")

# What makes two plans "the same run" for resume: changing any of these under an existing
# run_id is refused, changing the rest (timeouts, settle time, idle thresholds) is allowed.
IDENTITY_KEYS = ("run_id", "repetitions", "warmup", "src_node", "dst_node", "tuning")


class PlanError(ValueError):
    """A bad sweep definition; ``key`` is the inventory key, e.g. ``sweep_page_counts.2M[0]``."""

    def __init__(self, key: str, problem: str) -> None:
        super().__init__(f"{key}: {problem}")
        self.key = key
        self.problem = problem


def _key(path: str) -> str:
    """The inventory's name of a definition key: sweep_<path>, except the variant records."""
    return path if path.startswith(VARIANT_RECORD_KEYS) else KEY_PREFIX + path


def kind_bytes(kind: str) -> int | None:
    """'2M' -> 2097152; None for 'base' (the host's page size)."""
    if kind == "base":
        return None
    unit = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[kind[-1]]
    return int(kind[:-1]) * unit


def check_safe_strings(value: Any, path: str) -> None:
    """Reject shell metacharacters and control characters anywhere in the definition."""
    if isinstance(value, str):
        bad = sorted({c for c in value if c in SHELL_METACHARACTERS or ord(c) < 32})
        if bad:
            raise PlanError(
                _key(path), f"value {value!r} contains shell metacharacter(s) {''.join(bad)!r}"
            )
    elif isinstance(value, dict):
        for k, v in value.items():
            check_safe_strings(k, f"{path} (key)")
            check_safe_strings(v, f"{path}.{k}")
    elif isinstance(value, list):
        for i, v in enumerate(value):
            check_safe_strings(v, f"{path}[{i}]")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _int(v: Any, path: str, minimum: int | None = None, maximum: int | None = None) -> int:
    if not _is_int(v):
        raise PlanError(_key(path), f"must be an integer, got {v!r}")
    if minimum is not None and v < minimum:
        raise PlanError(_key(path), f"must be >= {minimum}, got {v}")
    if maximum is not None and v > maximum:
        raise PlanError(_key(path), f"must be <= {maximum}, got {v}")
    return v


def _number(v: Any, path: str, minimum: float = 0) -> float:
    if not (_is_int(v) or isinstance(v, float)) or v < minimum:
        raise PlanError(_key(path), f"must be a number >= {minimum}, got {v!r}")
    return v


def _choice(v: Any, path: str, choices: tuple) -> Any:
    if v not in choices:
        shown = ", ".join("null" if c is None else str(c) for c in choices)
        raise PlanError(_key(path), f"must be one of {shown}; got {v!r}")
    return v


def _name(v: Any, path: str) -> str:
    """A name that may become a path component (names.PATH_NAME, the one pattern)."""
    if not isinstance(v, str) or not PATH_NAME.match(v):
        raise PlanError(
            _key(path),
            f"must be a name of letters, digits, '.', '_', '-' "
            f"(starting with a letter or digit), got {v!r}",
        )
    return v


def _list(v: Any, path: str) -> list:
    if not isinstance(v, list) or not v:
        raise PlanError(_key(path), f"must be a non-empty list, got {v!r}")
    seen = set()
    for i, item in enumerate(v):
        marker = json.dumps(item, sort_keys=True)
        if marker in seen:
            raise PlanError(_key(f"{path}[{i}]"), f"duplicate entry {item!r}")
        seen.add(marker)
    return v


def _dict(v: Any, path: str) -> dict:
    if not isinstance(v, dict):
        raise PlanError(_key(path), f"must be a mapping, got {v!r}")
    return v


def _merge(defaults: dict, given: dict, path: str) -> dict:
    unknown = sorted(set(given) - set(defaults))
    if unknown:
        where = f"{path}.{unknown[0]}" if path else unknown[0]
        raise PlanError(_key(where), f"unknown key (known: {', '.join(sorted(defaults))})")
    merged = copy.deepcopy(defaults)
    merged.update(copy.deepcopy(given))
    return merged


def _validate_copy_config(cfg: Any, path: str, profile_name: str, profiles: dict) -> None:
    try:
        family, threads = parse_copy_config(cfg)
    except ValueError as err:
        raise PlanError(_key(path), str(err)) from None
    if profile_name == "auto":
        candidates = [p for p in profiles["profiles"].values() if family in p["configs"]]
    else:
        candidates = [profiles["profiles"][profile_name]]
        if family not in candidates[0]["configs"]:
            raise PlanError(
                _key(path),
                f"copy config {cfg!r} is not offered by knob profile "
                f"{profile_name!r} (it offers: "
                f"{', '.join(candidates[0]['configs'])})",
            )
    if not candidates:
        raise PlanError(_key(path), f"no knob profile offers copy config {cfg!r}")
    if threads is not None:
        ranges = [p["threads"][family] for p in candidates if family in p["threads"]]
        lo = min(r[0] for r in ranges)
        hi = max(r[1] for r in ranges)
        if not lo <= threads <= hi:
            which = f"profile {profile_name!r}" if profile_name != "auto" else "any knob profile"
            raise PlanError(
                _key(path),
                f"{threads} {family} threads/channels is outside the range of {which} ({lo}..{hi})",
            )


def _check_knob_param(pname: str, pval: Any, ppath: str, profile: str, profiles: dict) -> None:
    if not (_is_int(pval) or isinstance(pval, str)):
        raise PlanError(_key(ppath), f"must be an integer or a string, got {pval!r}")
    if profile == "auto":
        if not any(pname in p["params"] for p in profiles["profiles"].values()):
            raise PlanError(_key(ppath), f"no knob profile has a parameter {pname!r}")
        return
    known = profiles["profiles"][profile]["params"]
    if pname not in known:
        raise PlanError(
            _key(ppath),
            f"profile {profile!r} has no parameter {pname!r} (it has: {', '.join(known) or 'none'})",
        )
    choices = known[pname].get("choices")
    if choices and str(pval) not in choices:
        raise PlanError(_key(ppath), f"must be one of {', '.join(choices)}, got {pval!r}")


def variant_sweep_problems(record: Any, key: str) -> tuple[dict, list[PlanError]]:
    """Check the sweep's part of one kernel variant record (already merged over
    kernel_variant_defaults): every problem, each naming its key (``key`` names the record,
    e.g. kernel_variants[2]), and the part as the runner uses it: profile, workqueue (None
    for 'none'), copy_configs, knob_params. The kernel build's validation calls this too."""
    profiles = load_profiles()
    problems: list[PlanError] = []

    def check(test: Any, *args: Any) -> bool:
        try:
            test(*args)
        except PlanError as err:
            problems.append(err)
            return False
        return True

    if not check(_dict, record, key):
        return {}, problems
    v = {
        name: copy.deepcopy(record.get(name, default))
        for name, default in VARIANT_SWEEP_DEFAULTS.items()
    }
    for name in VARIANT_SWEEP_DEFAULTS:
        check(check_safe_strings, v[name], f"{key}.{name}")
    profile = v["knob_profile"]
    known_profile = profile == "auto" or profile in profiles["profiles"]
    if not known_profile:
        problems.append(
            PlanError(
                _key(f"{key}.knob_profile"),
                f"unknown knob profile {profile!r} (known: auto, {', '.join(profiles['profiles'])})",
            )
        )
    workqueue = None if v["workqueue"] in ("none", None) else v["workqueue"]
    check(_choice, workqueue, f"{key}.workqueue", WORKQUEUES)
    configs = v["copy_configs"]
    if check(_list, configs, f"{key}.copy_configs") and known_profile:
        for i, cfg in enumerate(configs):
            check(_validate_copy_config, cfg, f"{key}.copy_configs[{i}]", profile, profiles)
    params = v["knob_params"]
    if check(_dict, params, f"{key}.knob_params") and known_profile:
        for pname, pval in params.items():
            check(_check_knob_param, pname, pval, f"{key}.knob_params.{pname}", profile, profiles)
    part = {
        "profile": profile,
        "workqueue": workqueue,
        "copy_configs": list(configs) if isinstance(configs, list) else [],
        "knob_params": params if isinstance(params, dict) else {},
    }
    return part, problems


def variant_sweep_definition(record: Any, key: str) -> dict:
    """The sweep's part of a kernel variant record; PlanError (the first problem) if bad."""
    part, problems = variant_sweep_problems(record, key)
    if problems:
        raise problems[0]
    return part


def _swept_variant(d: dict) -> tuple[str, dict]:
    """The key of the record of the variant named by kernel_variant (kernel_variants[i]) and
    the sweep's definition of that variant."""
    records = d["kernel_variants"]
    if not isinstance(records, list) or not records:
        raise PlanError("kernel_variants", "must be a non-empty list of kernel variant records")
    defaults = _dict(d["kernel_variant_defaults"], "kernel_variant_defaults")
    names = []
    for index, record in enumerate(records):
        name = record.get("name") if isinstance(record, dict) else None
        names.append(name)
        if name == d["kernel_variant"]:
            key = f"kernel_variants[{index}]"
            return key, variant_sweep_definition({**defaults, **record}, key)
    raise PlanError(
        _key("kernel_variant"),
        f"{d['kernel_variant']!r} is not the name of a kernel variant "
        f"(kernel_variants: {', '.join(str(n) for n in names)})",
    )


def _validate_stressors(name: str, given: Any) -> list:
    path = f"stress_loads.{name}"
    _name(name, f"stress_loads (key {name!r})")
    if name == "idle":
        raise PlanError(_key(path), "'idle' is the built-in quiet load, not a stress load")
    out = []
    for i, spec in enumerate(_list(given, path)):
        spath = f"{path}[{i}]"
        spec = _merge({"stressor": None, "workers": 0, "options": {}}, _dict(spec, spath), spath)
        if not isinstance(spec["stressor"], str) or not STRESSOR_RE.match(spec["stressor"]):
            raise PlanError(
                _key(f"{spath}.stressor"),
                f"must be a stress-ng stressor name such as 'cpu', got {spec['stressor']!r}",
            )
        _int(spec["workers"], f"{spath}.workers", 0, 4096)
        for oname, oval in _dict(spec["options"], f"{spath}.options").items():
            if not isinstance(oname, str) or not STRESSOR_RE.match(oname):
                raise PlanError(_key(f"{spath}.options"), f"bad stress-ng option name {oname!r}")
            if not (_is_int(oval) or isinstance(oval, str)):
                raise PlanError(
                    _key(f"{spath}.options.{oname}"),
                    f"must be an integer or a string, got {oval!r}",
                )
        out.append(spec)
    return out


def validate_definition(definition: Any) -> dict:
    """Validate a sweep definition; return it normalised (defaults filled in)."""
    d = _merge(DEFAULTS, _dict(definition, "definition"), "")
    for k, v in d.items():
        if k not in VARIANT_RECORD_KEYS:
            check_safe_strings(v, k)

    if d["run_id"] is None or d["run_id"] == "":
        raise PlanError(
            _key("run_id"),
            "is required (it names the results directory; reuse it to resume a sweep)",
        )
    _name(d["run_id"], "run_id")
    _name(d["name"], "name")
    _name(d["kernel_variant"], "kernel_variant")
    if d["kernel_build_hash"] is not None:
        _name(d["kernel_build_hash"], "kernel_build_hash")

    _swept_variant(d)  # validated here; expand() takes it again

    stress = _dict(d["stress_loads"], "stress_loads")
    d["stress_loads"] = {name: _validate_stressors(name, s) for name, s in stress.items()}
    for i, load in enumerate(_list(d["loads"], "loads")):
        _name(load, f"loads[{i}]")
        if load != "idle" and load not in d["stress_loads"]:
            raise PlanError(
                _key(f"loads[{i}]"),
                f"unknown load {load!r}: use 'idle' or a key of "
                f"{KEY_PREFIX}stress_loads ({', '.join(d['stress_loads'])})",
            )

    kinds = _list(d["folio_kinds"], "folio_kinds")
    for i, kind in enumerate(kinds):
        kpath = f"folio_kinds[{i}]"
        if not isinstance(kind, str) or not KIND_RE.match(kind):
            raise PlanError(
                _key(kpath), f"unknown folio kind {kind!r}: use 'base' or a size such as 64K, 2M"
            )
        size = kind_bytes(kind)
        if size is not None and (size & (size - 1) or size < 8192 or size > (1 << 30)):
            raise PlanError(
                _key(kpath),
                f"folio size {kind} must be a power of two between "
                f"8K and 1G ('base' for base pages)",
            )
    counts = _dict(d["page_counts"], "page_counts")
    for kind in kinds:
        if kind not in counts:
            raise PlanError(
                _key(f"page_counts.{kind}"), "missing: every folio kind needs its page counts"
            )
    for kind, values in counts.items():
        # Counts for a kind this sweep leaves out are kept for another run (a narrower
        # -e sweep_folio_kinds), but a key that is no kind at all is a typo.
        if kind not in kinds and not (isinstance(kind, str) and KIND_RE.match(kind)):
            raise PlanError(
                _key(f"page_counts.{kind}"),
                f"unknown folio kind {kind!r}: use 'base' or a size such as 64K, 2M",
            )
        for i, n in enumerate(_list(values, f"page_counts.{kind}")):
            if not _is_int(n) or n < 1:
                raise PlanError(
                    _key(f"page_counts.{kind}[{i}]"),
                    f"page count must be a positive integer, got {n!r}",
                )
            _int(n, f"page_counts.{kind}[{i}]", 1, MAX_PAGE_COUNT)

    _int(d["repetitions"], "repetitions", 1, MAX_REPETITIONS)
    _int(d["warmup"], "warmup", 0, 1000)
    _number(d["settle_seconds"], "settle_seconds")
    _choice(d["order"], "order", ORDERS)
    if d["seed"] is not None:
        _int(d["seed"], "seed", 0)
    _int(d["src_node"], "src_node", 0, 1023)
    _int(d["dst_node"], "dst_node", 0, 1023)
    if d["src_node"] == d["dst_node"]:
        raise PlanError(_key("dst_node"), "must differ from sweep_src_node")
    _int(d["cell_timeout_seconds"], "cell_timeout_seconds", 1)

    tuning = _merge(DEFAULTS["tuning"], _dict(d["tuning"], "tuning"), "tuning")
    _choice(tuning["numa_balancing"], "tuning.numa_balancing", (None, 0, 1))
    _choice(tuning["thp_enabled"], "tuning.thp_enabled", THP_ENABLED)
    _choice(tuning["thp_defrag"], "tuning.thp_defrag", THP_DEFRAG)
    if not isinstance(tuning["compact_before_cell"], bool):
        raise PlanError(_key("tuning.compact_before_cell"), "must be true or false")
    if tuning["thp_enabled"] == "never" and any(k != "base" for k in kinds):
        raise PlanError(
            _key("tuning.thp_enabled"),
            "'never' makes every folio kind other than 'base' impossible",
        )
    d["tuning"] = tuning

    idle = _merge(DEFAULTS["idle"], _dict(d["idle"], "idle"), "idle")
    _number(idle["max_busy_percent"], "idle.max_busy_percent")
    _number(idle["sample_seconds"], "idle.sample_seconds", 0.1)
    _number(idle["wait_seconds"], "idle.wait_seconds")
    if not isinstance(idle["refuse_stress_ng"], bool):
        raise PlanError(_key("idle.refuse_stress_ng"), "must be true or false")
    d["idle"] = idle
    stress_cfg = _merge(DEFAULTS["stress"], _dict(d["stress"], "stress"), "stress")
    _number(stress_cfg["settle_seconds"], "stress.settle_seconds")
    _number(stress_cfg["baseline_seconds"], "stress.baseline_seconds")
    _number(stress_cfg["min_busy_percent"], "stress.min_busy_percent")
    d["stress"] = stress_cfg
    ceiling = _merge(DEFAULTS["ceiling"], _dict(d["ceiling"], "ceiling"), "ceiling")
    if not isinstance(ceiling["enabled"], bool):
        raise PlanError(_key("ceiling.enabled"), "must be true or false")
    _int(ceiling["size_mib"], "ceiling.size_mib", 1)
    _int(ceiling["repetitions"], "ceiling.repetitions", 1)
    d["ceiling"] = ceiling
    return d


def ceiling_threads(copy_configs: list[str]) -> list[int]:
    """The thread counts the ceiling is measured at: 1 (what vanilla and serial copy with)
    and every N of the variant's mt_N."""
    counts = {1}
    for config in copy_configs:
        family, _, n = config.partition("_")
        if family == "mt" and n.isdigit():
            counts.add(int(n))
    return sorted(counts)


def default_seed(run_id: str) -> int:
    return int(hashlib.sha256(run_id.encode()).hexdigest()[:8], 16)


def cell_id(variant: str, load: str, copy_config: str, kind: str, count: int) -> str:
    return f"{variant}:{load}:{copy_config}:{kind}:{count}"


def _order_cells(
    base: list[tuple[str, str, int]], configs: list[str], order: str, rng: random.Random
) -> list[tuple[str, str, int]]:
    if order == "sequential":
        return base
    if order == "shuffle":
        cells = list(base)
        rng.shuffle(cells)
        return cells
    # interleave: (kind, count) groups in random order, every configuration once per group,
    # the configuration order rotated from group to group (a cyclic Latin square), so slow
    # drift spreads over all configurations and no configuration always comes first.
    groups: list[tuple[str, int]] = []
    for _cfg, kind, count in base:
        if (kind, count) not in groups:
            groups.append((kind, count))
    rng.shuffle(groups)
    cells = []
    for g, (kind, count) in enumerate(groups):
        shift = g % len(configs)
        for cfg in configs[shift:] + configs[:shift]:
            cells.append((cfg, kind, count))
    return cells


def expand(definition: Any) -> dict:
    """Validate and expand a definition into the plan for its ``kernel_variant``."""
    d = validate_definition(definition)
    variant_name = d["kernel_variant"]
    variant_key, variant = _swept_variant(d)
    seed = d["seed"] if d["seed"] is not None else default_seed(d["run_id"])
    configs = list(variant["copy_configs"])
    base = [
        (cfg, kind, count)
        for kind in d["folio_kinds"]
        for count in d["page_counts"][kind]
        for cfg in configs
    ]
    cells: list[dict[str, Any]] = []
    for load in d["loads"]:
        rng = random.Random(f"{seed}:{variant_name}:{load}")
        for cfg, kind, count in _order_cells(base, configs, d["order"], rng):
            _family, threads = parse_copy_config(cfg)
            cells.append(
                {
                    "index": len(cells),
                    "cell_id": cell_id(variant_name, load, cfg, kind, count),
                    "load": load,
                    "copy_config": cfg,
                    "threads": threads,
                    "page_kind": kind,
                    "page_count": count,
                }
            )
    plan = {
        "schema": PLAN_SCHEMA,
        "run_id": d["run_id"],
        "name": d["name"],
        "variant": variant_name,
        "variant_definition": variant,
        # where the inventory spells that variant: preflight names its keys
        "variant_key": variant_key,
        "seed": seed,
        "definition": d,
        "cells": cells,
    }
    plan["plan_hash"] = plan_hash(plan)
    return plan


def plan_hash(plan: dict) -> str:
    """Identity of a plan for resume (operational settings such as timeouts excluded)."""
    d = plan["definition"]
    loads_used = {name: d["stress_loads"][name] for name in d["loads"] if name != "idle"}
    identity = {
        "variant": plan["variant"],
        "variant_definition": plan["variant_definition"],
        "cells": [c["cell_id"] for c in plan["cells"]],
        "stress_loads": loads_used,
        **{k: d[k] for k in IDENTITY_KEYS},
    }
    blob = json.dumps(identity, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()


def load_plan(data: Any) -> dict:
    """Re-validate a plan received from the controller (the host trusts nothing)."""
    if not isinstance(data, dict) or data.get("schema") != PLAN_SCHEMA:
        raise PlanError(_key("plan"), f"not a {PLAN_SCHEMA} document")
    fresh = expand(data.get("definition"))
    if fresh["plan_hash"] != data.get("plan_hash") or fresh["cells"] != data.get("cells"):
        raise PlanError(
            _key("plan"),
            "the cells do not match the definition (plan edited by hand "
            "or made by a different miglab_host version)",
        )
    return fresh
