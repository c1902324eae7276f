"""The sample record schema `miglab.sample/2` (and version 1), and the checks that implement it.

The JSON Schema file (host/miglab_host/results-schema.json, in the host package whose
runner writes the records) is the single source of the field list. Validating a million
records with jsonschema takes minutes, so the loaders use checks derived from that file: a
per-record Python check (`record_is_valid`) and vectorised Arrow checks (in load.py).
jsonschema itself produces the wording of every problem reported for a bad record
(`describe_line`), so `check`, `table`, `compare` and `report` print the same file:line
messages; the unit tests hold the three implementations to the same verdicts.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import math
import re
from dataclasses import dataclass
from typing import Any, Literal

import jsonschema
import miglab_host

# The version this miglab writes, and every version it reads (the schema's own enum).
SAMPLE_SCHEMA_ID = miglab_host.SAMPLE_SCHEMA
SAMPLE_SCHEMA_IDS: tuple[str, ...] = tuple(
    miglab_host.sample_schema()["properties"]["schema"]["enum"]
)

FieldKind = Literal["string", "integer", "number", "boolean"]

# Keywords the derived checks implement; a schema edit that uses another keyword on a
# property must extend the checks first (field_specs() refuses it).
_SUPPORTED_KEYWORDS = frozenset(
    {"type", "enum", "const", "minimum", "minLength", "pattern", "format", "description"}
)
INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1

# RFC 3339 date-time as written by the sweep runner (upper-case T, Z or +hh:mm offset).
# The same expression runs in Python (re) and in Arrow (RE2).
DATE_TIME_PATTERN = (
    r"^([0-9]{4})-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])T([01][0-9]|2[0-3]):([0-5][0-9])"
    r":([0-5][0-9])(\.[0-9]+)?(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$"
)
_DATE_TIME_RE = re.compile(DATE_TIME_PATTERN)


@dataclass(frozen=True)
class FieldSpec:
    """One property of the sample schema, reduced to what the fast checks need."""

    name: str
    kind: FieldKind
    nullable: bool
    required: bool
    minimum: float | None = None
    min_length: int | None = None
    pattern: str | None = None
    enum: tuple[str, ...] | None = None
    const: str | None = None
    date_time: bool = False

    @property
    def needs_key_count(self) -> bool:
        """Arrow reads a missing key and an explicit null alike; for these fields the two
        differ in validity, so the loader counts the key's occurrences instead."""
        return self.required == self.nullable


@functools.cache
def sample_schema() -> dict[str, Any]:
    return miglab_host.sample_schema()


def _json_type_of(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    raise RuntimeError(f"unsupported schema constant {value!r}")


def _spec_from_property(name: str, prop: dict[str, Any], required: bool) -> FieldSpec:
    unsupported = set(prop) - _SUPPORTED_KEYWORDS
    if unsupported:
        raise RuntimeError(
            f"schema property {name!r} uses {sorted(unsupported)}, which the fast checks "
            "in miglab/results/schema.py do not implement"
        )
    enum: tuple[str, ...] | None = None
    const: str | None = None
    if "type" in prop:
        declared = prop["type"]
        types = {declared} if isinstance(declared, str) else set(declared)
    elif "enum" in prop:
        types = {_json_type_of(value) for value in prop["enum"]}
    elif "const" in prop:
        types = {_json_type_of(prop["const"])}
    else:
        raise RuntimeError(f"schema property {name!r} has no type, enum or const")
    if "enum" in prop:
        enum = tuple(value for value in prop["enum"] if value is not None)
        if not all(isinstance(value, str) for value in enum):
            raise RuntimeError(f"schema property {name!r}: only string enums are supported")
    if "const" in prop:
        if not isinstance(prop["const"], str):
            raise RuntimeError(f"schema property {name!r}: only string constants are supported")
        const = prop["const"]
    nullable = "null" in types or (enum is not None and None in prop["enum"])
    types.discard("null")
    if types == {"integer", "number"}:
        types = {"number"}
    if len(types) != 1:
        raise RuntimeError(f"schema property {name!r}: unsupported type set {sorted(types)}")
    kind = types.pop()
    if kind not in ("string", "integer", "number", "boolean"):
        raise RuntimeError(f"schema property {name!r}: unsupported type {kind!r}")
    fmt = prop.get("format")
    if fmt not in (None, "date-time"):
        raise RuntimeError(f"schema property {name!r}: unsupported format {fmt!r}")
    return FieldSpec(
        name=name,
        kind=kind,  # type: ignore[arg-type]
        nullable=nullable,
        required=required,
        minimum=prop.get("minimum"),
        min_length=prop.get("minLength"),
        pattern=prop.get("pattern"),
        enum=enum,
        const=const,
        date_time=fmt == "date-time",
    )


@functools.cache
def field_specs() -> tuple[FieldSpec, ...]:
    schema = sample_schema()
    required = set(schema["required"])
    specs = tuple(
        _spec_from_property(name, prop, name in required)
        for name, prop in schema["properties"].items()
    )
    missing = required - {spec.name for spec in specs}
    if missing:
        raise RuntimeError(f"schema requires fields without a definition: {sorted(missing)}")
    return specs


def field_names() -> tuple[str, ...]:
    return tuple(spec.name for spec in field_specs())


def is_date_time(value: str) -> bool:
    """RFC 3339 date-time with a real calendar date."""
    match = _DATE_TIME_RE.match(value)
    if match is None:
        return False
    year, month, day = (int(match.group(index)) for index in (1, 2, 3))
    try:
        dt.date(year, month, day)
    except ValueError:
        return False
    return True


def _integer_value(value: object) -> int | None:
    """The integer a JSON value stands for (jsonschema accepts 5.0 as an integer)."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and math.isfinite(value) and value.is_integer():
        return int(value)
    return None


def _value_is_valid(spec: FieldSpec, value: object) -> bool:
    if spec.kind == "string":
        if not isinstance(value, str):
            return False
        if spec.const is not None and value != spec.const:
            return False
        if spec.enum is not None and value not in spec.enum:
            return False
        if spec.min_length is not None and len(value) < spec.min_length:
            return False
        if spec.pattern is not None and re.search(spec.pattern, value) is None:
            return False
        if spec.date_time and not is_date_time(value):
            return False
        return True
    if spec.kind == "boolean":
        return isinstance(value, bool)
    if spec.kind == "integer":
        number: float | int | None = _integer_value(value)
        if number is None or not INT64_MIN <= number <= INT64_MAX:
            return False
    else:
        if isinstance(value, bool) or not isinstance(value, int | float):
            return False
        number = value
        if not math.isfinite(number):
            return False
    return spec.minimum is None or number >= spec.minimum


def record_is_valid(record: dict[str, Any]) -> bool:
    """The per-record check used when a file has to be read line by line."""
    for spec in field_specs():
        if spec.name not in record:
            if spec.required:
                return False
            continue
        value = record[spec.name]
        if value is None:
            if not spec.nullable:
                return False
            continue
        if not _value_is_valid(spec, value):
            return False
    return True


def normalised_value(spec: FieldSpec, value: object) -> object:
    """The value a valid record's field holds, in the column type the loader uses."""
    if value is None:
        return None
    if spec.kind == "integer":
        return _integer_value(value)
    if spec.kind == "number":
        return float(value)  # type: ignore[arg-type]
    return value


def _reject_constant(name: str) -> float:
    raise ValueError(f"{name} is not valid JSON")


def parse_json_line(text: str) -> Any:
    """json.loads without Python's NaN/Infinity extension (JSON has no such values)."""
    return json.loads(text, parse_constant=_reject_constant)


@functools.cache
def _validator() -> jsonschema.protocols.Validator:
    format_checker = jsonschema.FormatChecker(formats=())
    # format keywords apply only to strings; other types are the "type" keyword's business
    format_checker.checks("date-time")(
        lambda value: not isinstance(value, str) or is_date_time(value)
    )
    validator_class = jsonschema.validators.validator_for(sample_schema())
    validator: jsonschema.protocols.Validator = validator_class(
        sample_schema(), format_checker=format_checker
    )
    return validator


def _describe_error(error: jsonschema.ValidationError) -> str:
    if error.validator == "required":
        missing = str(error.message).split("'")[1] if "'" in error.message else error.message
        return f"missing required field '{missing}'"
    where = ".".join(str(part) for part in error.absolute_path)
    return f"field '{where}': {error.message}" if where else error.message


def describe_record(record: object) -> list[str]:
    """Everything wrong with one parsed record, worded by jsonschema; [] when valid."""
    if not isinstance(record, dict):
        return [f"not a JSON object (got {_json_type_of_any(record)})"]
    version = record.get("schema")
    if version not in SAMPLE_SCHEMA_IDS:
        readable = " and ".join(repr(v) for v in SAMPLE_SCHEMA_IDS)
        if "schema" not in record:
            return [f"missing required field 'schema' (expected {SAMPLE_SCHEMA_ID!r})"]
        if isinstance(version, str) and version.startswith("miglab.sample/"):
            return [f"unknown schema version {version!r} (this miglab reads {readable})"]
        return [f"not a miglab sample record (schema {version!r}, expected {SAMPLE_SCHEMA_ID!r})"]
    errors = sorted(
        _validator().iter_errors(record), key=lambda error: [str(p) for p in error.absolute_path]
    )
    problems = [_describe_error(error) for error in errors]
    # Beyond JSON Schema: integers must fit the 64-bit columns the analysis uses.
    for spec in field_specs():
        number = _integer_value(record.get(spec.name)) if spec.kind == "integer" else None
        if number is not None and not INT64_MIN <= number <= INT64_MAX:
            problems.append(f"field '{spec.name}': {number} does not fit in 64 bits")
    return problems


def _json_type_of_any(value: object) -> str:
    if isinstance(value, list):
        return "array"
    try:
        return _json_type_of(value)
    except RuntimeError:
        return type(value).__name__


def describe_line(text: str) -> list[str]:
    """Everything wrong with one line of samples.jsonl; [] when it is a valid record."""
    try:
        record = parse_json_line(text)
    except ValueError as error:
        reason = error.msg if isinstance(error, json.JSONDecodeError) else str(error)
        column = f" at column {error.colno}" if isinstance(error, json.JSONDecodeError) else ""
        return [f"not valid JSON ({reason}{column}); truncated or corrupt line"]
    return describe_record(record)
