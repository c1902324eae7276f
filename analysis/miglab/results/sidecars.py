"""Files the sweep runner may write beside samples.jsonl (results/<run_id>/<host>/).

- plan.json (`miglab.plan/1`): the cells the run meant to measure and how many samples each.
- lab-facts.json: the host's NUMA shape, base page size, kernel release, CPU model.
- run-meta.json: knob values, stress-ng settings, variant and migbench build identity
  (any JSON object; shown as key/value).

- variants/<variant>/ceiling-<load>.json (`miglab.ceiling/1`): the user-space copy ceiling
  between the host's nodes under that load, per direction and thread count.

All are optional: analysis works from samples.jsonl alone. Their shapes are documented in
docs/analysis.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miglab.errors import ConfigError

PLAN_SCHEMA_ID = "miglab.plan/1"
PLAN_FILE = "plan.json"
LAB_FACTS_FILE = "lab-facts.json"
RUN_META_FILE = "run-meta.json"

CEILING_SCHEMA_ID = "miglab.ceiling/1"
CEILING_DIRECTIONS = ("push", "pull")

PLAN_CELL_FIELDS: dict[str, type] = {
    "cell_id": str,
    "load": str,
    "copy_config": str,
    "page_kind": str,
    "page_count": int,
    "kernel_variant": str,
}


@dataclass(frozen=True)
class PlannedCell:
    cell_id: str
    load: str
    copy_config: str
    page_kind: str
    page_count: int
    kernel_variant: str

    @property
    def key(self) -> tuple[str, str, str, int, str]:
        return (self.load, self.copy_config, self.page_kind, self.page_count, self.kernel_variant)

    def describe(self) -> str:
        return (
            f"{self.cell_id} ({self.kernel_variant}, {self.load}, {self.copy_config}, "
            f"{self.page_kind}, {self.page_count} page{'' if self.page_count == 1 else 's'})"
        )


@dataclass(frozen=True)
class Plan:
    path: Path
    run_id: str
    host: str | None  # None: the host of the samples beside the plan
    repetitions: int
    cells: tuple[PlannedCell, ...]


def read_json_object(path: Path) -> dict[str, Any]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise ConfigError(str(path), f"cannot read: {error.strerror or error}") from error
    except ValueError as error:
        raise ConfigError(str(path), f"not valid JSON ({error})") from error
    if not isinstance(data, dict):
        raise ConfigError(str(path), "expected a JSON object")
    return data


def _is_type(value: object, expected: type) -> bool:
    if expected is int:
        return isinstance(value, int) and not isinstance(value, bool)
    return isinstance(value, expected)


def read_plan(path: Path) -> Plan:
    """The minimal plan shape miglab relies on (docs/analysis.md); anything else in the file
    is ignored. The sweep runner's per-variant plans (variants/<name>/plan.json) name the
    variant once at the top ("variant") and the repetitions in "definition", and have no
    "host": those are accepted too (the plan then covers whichever host's samples lie
    beside it)."""
    data = read_json_object(path)
    if data.get("schema") != PLAN_SCHEMA_ID:
        raise ConfigError(
            f"{path}: schema", f"expected {PLAN_SCHEMA_ID!r}, got {data.get('schema')!r}"
        )
    definition = data.get("definition")
    if not isinstance(definition, dict):
        definition = {}
    repetitions: Any = data.get("repetitions", definition.get("repetitions"))
    default_variant = data.get("kernel_variant", data.get("variant"))
    if not _is_type(data.get("run_id"), str):
        raise ConfigError(f"{path}: run_id", "missing or not a str")
    if "host" in data and not _is_type(data["host"], str):
        raise ConfigError(f"{path}: host", "not a str")
    if not isinstance(repetitions, int) or isinstance(repetitions, bool) or repetitions < 1:
        raise ConfigError(f"{path}: repetitions", "missing or not an integer >= 1")
    if not _is_type(data.get("cells"), list):
        raise ConfigError(f"{path}: cells", "missing or not a list")
    cells = []
    for index, cell in enumerate(data["cells"]):
        if not isinstance(cell, dict):
            raise ConfigError(f"{path}: cells[{index}]", "expected an object")
        values = dict(cell)
        values.setdefault("kernel_variant", default_variant)
        for key, expected in PLAN_CELL_FIELDS.items():
            if not _is_type(values.get(key), expected):
                raise ConfigError(
                    f"{path}: cells[{index}].{key}", f"missing or not a {expected.__name__}"
                )
        cells.append(PlannedCell(**{key: values[key] for key in PLAN_CELL_FIELDS}))
    return Plan(path, data["run_id"], data.get("host"), repetitions, tuple(cells))


@dataclass(frozen=True)
class CeilingMeasurement:
    direction: str  # push: source-node CPUs copy; pull: destination-node CPUs
    threads: int
    cpus: int  # distinct CPUs the threads ran on (fewer than threads on a small node)
    gbps: float


@dataclass(frozen=True)
class Ceiling:
    """What one host could copy between its nodes from user space, under one load, while one
    kernel variant ran (variants/<variant>/ceiling-<load>.json)."""

    path: Path
    run_id: str
    host: str
    kernel_variant: str
    load: str
    ok: bool
    error: str | None
    measurements: tuple[CeilingMeasurement, ...]


CEILING_FIELDS: dict[str, type] = {"run_id": str, "host": str, "kernel_variant": str, "load": str}


def read_ceiling(path: Path) -> Ceiling:
    data = read_json_object(path)
    if data.get("schema") != CEILING_SCHEMA_ID:
        raise ConfigError(
            f"{path}: schema", f"expected {CEILING_SCHEMA_ID!r}, got {data.get('schema')!r}"
        )
    for key, expected in CEILING_FIELDS.items():
        if not _is_type(data.get(key), expected):
            raise ConfigError(f"{path}: {key}", f"missing or not a {expected.__name__}")
    if not isinstance(data.get("ok"), bool):
        raise ConfigError(f"{path}: ok", "missing or not a bool")
    if not _is_type(data.get("measurements"), list):
        raise ConfigError(f"{path}: measurements", "missing or not a list")
    measurements = []
    for index, item in enumerate(data["measurements"]):
        where = f"{path}: measurements[{index}]"
        if not isinstance(item, dict):
            raise ConfigError(where, "expected an object")
        if item.get("direction") not in CEILING_DIRECTIONS:
            raise ConfigError(f"{where}.direction", "must be 'push' or 'pull'")
        for key in ("threads", "cpus"):
            if not _is_type(item.get(key), int) or item[key] < 1:
                raise ConfigError(f"{where}.{key}", "missing or not an integer >= 1")
        gbps = item.get("gbps")
        if isinstance(gbps, bool) or not isinstance(gbps, int | float) or not gbps > 0:
            raise ConfigError(f"{where}.gbps", "missing or not a positive number")
        if item.get("placement_ok") is not True:
            raise ConfigError(
                f"{where}.placement_ok", "the buffers' node placement was not verified"
            )
        measurements.append(
            CeilingMeasurement(item["direction"], item["threads"], item["cpus"], float(gbps))
        )
    error = data.get("error")
    return Ceiling(
        path,
        data["run_id"],
        data["host"],
        data["kernel_variant"],
        data["load"],
        data["ok"],
        str(error) if error is not None else None,
        tuple(measurements),
    )


@dataclass
class Sidecars:
    """What lies beside one samples.jsonl; `problems` lists sidecar files that could not be
    used (a report shows them as warnings, `check` fails on them)."""

    directory: Path
    plans: list[Plan] = field(default_factory=list)
    lab_facts: dict[str, Any] | None = None
    run_meta: dict[str, Any] | None = None
    ceilings: list[Ceiling] = field(default_factory=list)
    problems: tuple[str, ...] = ()


def plan_paths(directory: Path) -> list[Path]:
    """plan.json beside samples.jsonl, and the sweep runner's variants/<name>/plan.json."""
    paths = [directory / PLAN_FILE] if (directory / PLAN_FILE).is_file() else []
    return paths + sorted(directory.glob(f"variants/*/{PLAN_FILE}"))


def sidecars_for(sample_files: Iterable[Path]) -> list[Sidecars]:
    found = []
    seen: set[Path] = set()
    for sample_file in sample_files:
        directory = sample_file.parent
        if directory.resolve() in seen:
            continue
        seen.add(directory.resolve())
        sidecars = Sidecars(directory)
        problems = []
        for path in plan_paths(directory):
            try:
                sidecars.plans.append(read_plan(path))
            except ConfigError as error:
                problems.append(str(error))
        for path in sorted(directory.glob("variants/*/ceiling-*.json")):
            try:
                sidecars.ceilings.append(read_ceiling(path))
            except ConfigError as error:
                problems.append(str(error))
        for name in (LAB_FACTS_FILE, RUN_META_FILE):
            path = directory / name
            if not path.exists():
                continue
            try:
                data = read_json_object(path)
            except ConfigError as error:
                problems.append(str(error))
                continue
            if name == LAB_FACTS_FILE:
                sidecars.lab_facts = data
            else:
                sidecars.run_meta = data
        sidecars.problems = tuple(problems)
        found.append(sidecars)
    return found


def numa_shape(lab_facts: dict[str, Any]) -> str:
    """'2 nodes: node 0 72 CPUs 480.0 GiB, node 1 ...' from lab-facts.json."""
    nodes = lab_facts.get("numa_nodes")
    if not isinstance(nodes, list) or not nodes:
        return "unknown"
    parts = []
    for node in nodes:
        if not isinstance(node, dict):
            continue
        cpus = node.get("cpus")
        cpu_text = f"{len(cpus)} CPUs" if isinstance(cpus, list) else "? CPUs"
        memory = node.get("memory_bytes")
        memory_text = (
            f"{memory / (1 << 30):.1f} GiB" if isinstance(memory, int | float) else "? GiB"
        )
        parts.append(f"node {node.get('node', '?')}: {cpu_text}, {memory_text}")
    return f"{len(parts)} node(s): " + "; ".join(parts)


def flatten(data: Any, prefix: str = "") -> list[tuple[str, str]]:
    """Nested JSON as sorted dotted key/value pairs, for showing run-meta.json."""
    if isinstance(data, dict):
        pairs: list[tuple[str, str]] = []
        for key in sorted(data):
            pairs.extend(flatten(data[key], f"{prefix}.{key}" if prefix else str(key)))
        return pairs
    if isinstance(data, list) and any(isinstance(item, dict | list) for item in data):
        pairs = []
        for index, item in enumerate(data):
            pairs.extend(flatten(item, f"{prefix}[{index}]"))
        return pairs
    return [(prefix, json.dumps(data) if not isinstance(data, str) else data)]
