"""Reading samples.jsonl files into one validated sample table.

Each file is first read by Arrow's multi-threaded JSON reader with the column types the
schema declares, and checked with vectorised Arrow kernels; this keeps a million records
within seconds. A file Arrow cannot read (truncated lines, wrong JSON types, blank lines,
values out of range) is re-read line by line with the per-record Python checks, so every
bad record is reported as file:line with jsonschema's wording of what is wrong.

What the analysis uses is decided here, once: besides records that break the schema, a
file with no records, bytes that are not UTF-8, a record whose numbers contradict each
other (bytes is not page_count x folio_size, gbps is not bytes / elapsed_ns) and the same
sample recorded twice (same run, host, cell and rep) are refused, each as file:line; with
skip_bad they are left out (the first of duplicates kept) and listed.
"""

from __future__ import annotations

import codecs
import concurrent.futures
import mmap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pajson

from miglab.errors import ConfigError, MiglabError
from miglab.results.schema import (
    DATE_TIME_PATTERN,
    FieldSpec,
    describe_line,
    describe_record,
    field_specs,
    normalised_value,
    parse_json_line,
    record_is_valid,
)

SAMPLES_FILE_NAME = "samples.jsonl"
_BLOCK_SIZE = 1 << 20
_CHECK_ROWS = 1 << 17
_SCAN_CHUNK = 4 << 20
_BAD_RECORDS_SHOWN = 20

_ARROW_TYPES: dict[str, pa.DataType] = {
    "string": pa.string(),
    "integer": pa.int64(),
    "number": pa.float64(),
    "boolean": pa.bool_(),
}


@dataclass(frozen=True)
class BadRecord:
    """A line of a samples file that is not a valid sample record (`miglab.sample/1` or `/2`)."""

    path: Path
    line: int
    problems: tuple[str, ...]

    def __str__(self) -> str:
        where = f"{self.path}:{self.line}" if self.line else str(self.path)
        return f"{where}: {'; '.join(self.problems)}"


@dataclass(frozen=True)
class SourceFile:
    path: Path
    records: int
    bad: int
    read_line_by_line: bool


@dataclass
class SampleSet:
    """Valid samples (one row each, plus `source` file and `line`) and what was rejected:
    bad records (and empty files), duplicates of an earlier sample, inconsistent records."""

    frame: pd.DataFrame
    bad_records: list[BadRecord] = field(default_factory=list)
    sources: list[SourceFile] = field(default_factory=list)
    duplicates: list[BadRecord] = field(default_factory=list)
    inconsistent: list[BadRecord] = field(default_factory=list)

    @property
    def rejected(self) -> list[BadRecord]:
        return self.bad_records + self.duplicates + self.inconsistent

    @property
    def skipped(self) -> int:
        return len(self.rejected)


class CorruptInputError(MiglabError):
    """Bad records in the input; the message lists them as file:line."""

    def __init__(self, bad_records: Sequence[BadRecord]) -> None:
        shown = [str(record) for record in bad_records[:_BAD_RECORDS_SHOWN]]
        more = len(bad_records) - len(shown)
        if more > 0:
            shown.append(f"... and {more} more (run `miglab check` for the full list)")
        super().__init__(
            f"{len(bad_records)} bad sample record(s); fix them or pass --skip-bad:\n  "
            + "\n  ".join(shown)
        )
        self.bad_records = list(bad_records)


def find_sample_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files named on the command line, and samples.jsonl files below named directories."""
    found: list[Path] = []
    seen: set[Path] = set()
    for given in paths:
        path = Path(given)
        if path.is_dir():
            candidates = sorted(path.rglob(SAMPLES_FILE_NAME))
            if not candidates:
                raise ConfigError(str(path), f"no {SAMPLES_FILE_NAME} below this directory")
        elif path.is_file():
            candidates = [path]
        else:
            raise ConfigError(str(path), "no such file or directory")
        for candidate in candidates:
            resolved = candidate.resolve()
            if resolved not in seen:
                seen.add(resolved)
                found.append(candidate)
    return found


def arrow_read_schema() -> pa.Schema:
    return pa.schema([(spec.name, _ARROW_TYPES[spec.kind]) for spec in field_specs()])


def _converted_type(spec: FieldSpec) -> pa.DataType:
    if spec.date_time:
        return pa.timestamp("ns", tz="UTC")
    if spec.kind == "string":
        return pa.dictionary(pa.int32(), pa.string())
    return _ARROW_TYPES[spec.kind]


def sample_table_schema() -> pa.Schema:
    """Columns of the loaded sample table, in Arrow terms."""
    fields = [(spec.name, _converted_type(spec)) for spec in field_specs()]
    fields += [("source", pa.dictionary(pa.int32(), pa.string())), ("line", pa.int64())]
    return pa.schema(fields)


class _NeedsLineByLine(Exception):
    """The fast reader cannot vouch for this file; read it line by line."""


def _or(left: pa.Array | None, right: pa.Array) -> pa.Array:
    right = pc.fill_null(right, False)
    return right if left is None else pc.or_(left, right)


def _string_value_problems(spec: FieldSpec, values: pa.Array) -> pa.Array | None:
    """Per distinct value (a dictionary), whether it breaks the field's rules."""
    bad: pa.Array | None = None
    if spec.const is not None:
        bad = _or(bad, pc.not_equal(values, spec.const))
    if spec.enum is not None:
        bad = _or(bad, pc.invert(pc.is_in(values, value_set=pa.array(spec.enum))))
    if spec.min_length is not None:
        bad = _or(bad, pc.less(pc.utf8_length(values), spec.min_length))
    if spec.pattern is not None:
        bad = _or(bad, pc.invert(pc.match_substring_regex(values, spec.pattern)))
    if spec.date_time:
        bad = _or(bad, pc.invert(pc.match_substring_regex(values, DATE_TIME_PATTERN)))
    return bad


def _timestamps(values: pa.Array) -> pa.Array:
    try:
        return pc.cast(values, pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid:
        pass
    # Arrow parses at most nanoseconds; valid RFC 3339 may carry more digits.
    trimmed = pc.replace_substring_regex(values, r"(\.[0-9]{9})[0-9]+", r"\1")
    try:
        return pc.cast(trimmed, pa.timestamp("ns", tz="UTC"))
    except pa.ArrowInvalid as error:  # e.g. 30 February: the regex cannot see it
        raise _NeedsLineByLine(str(error)) from error


@dataclass
class _CheckedBatch:
    bad_rows: np.ndarray  # bool per row
    columns: dict[str, pa.ChunkedArray]  # converted, all rows
    non_null: dict[str, int]


def _dictionary_encoded(column: pa.ChunkedArray) -> tuple[pa.Array, pa.ChunkedArray]:
    """The distinct values and, per row, the index of its value (a chunked array's
    encoding shares one dictionary across its chunks)."""
    encoded = column.dictionary_encode()
    if encoded.num_chunks == 0:
        return pa.array([], pa.string()), encoded
    return encoded.chunk(encoded.num_chunks - 1).dictionary, encoded


def _check_and_convert(batch: pa.Table) -> _CheckedBatch:
    """Vectorised form of record_is_valid, plus the column conversion of the kept rows.
    Works on a table of Arrow's small batches as they are (concatenating them would copy)."""
    bad: pa.ChunkedArray | None = None
    columns: dict[str, pa.ChunkedArray] = {}
    non_null: dict[str, int] = {}
    for spec in field_specs():
        column = batch.column(spec.name)
        if spec.needs_key_count:
            non_null[spec.name] = len(column) - column.null_count
        if spec.required and not spec.nullable:
            bad = _or(bad, pc.is_null(column))
        if spec.kind == "string" and not spec.date_time:
            dictionary, encoded = _dictionary_encoded(column)
            value_bad = _string_value_problems(spec, dictionary)
            if value_bad is not None and encoded.num_chunks:
                indices = pa.chunked_array([chunk.indices for chunk in encoded.chunks])
                bad = _or(bad, pc.take(value_bad, indices))
            columns[spec.name] = encoded
        elif spec.kind == "string":
            value_bad = _string_value_problems(spec, column)
            if value_bad is not None:
                bad = _or(bad, value_bad)
            columns[spec.name] = column  # timestamps are converted after filtering
        else:
            if spec.kind == "number":
                bad = _or(bad, pc.invert(pc.is_finite(column)))
            if spec.minimum is not None:
                bad = _or(bad, pc.less(column, spec.minimum))
            columns[spec.name] = column
    if bad is None:
        mask = np.zeros(batch.num_rows, dtype=bool)
    else:
        mask = np.asarray(bad.to_numpy(), dtype=bool)
    return _CheckedBatch(mask, columns, non_null)


def _kept_batch(
    checked: _CheckedBatch, source: pa.Array, first_line: int, lines: np.ndarray | None = None
) -> pa.Table:
    any_bad = bool(checked.bad_rows.any())
    keep = pa.array(~checked.bad_rows)
    arrays: list[pa.ChunkedArray | pa.Array] = []
    for spec in field_specs():
        column = checked.columns[spec.name]
        if any_bad:
            column = pc.filter(column, keep)
        if spec.date_time:
            column = _timestamps(column)
        arrays.append(column)
    kept = int((~checked.bad_rows).sum())
    if lines is None:
        all_lines = np.arange(first_line, first_line + len(checked.bad_rows), dtype=np.int64)
        lines = all_lines[~checked.bad_rows]
    arrays.append(pa.DictionaryArray.from_arrays(pa.array(np.zeros(kept, np.int32)), source))
    arrays.append(pa.array(lines, type=pa.int64()))
    return pa.Table.from_arrays(arrays, schema=sample_table_schema())


@dataclass
class _Scan:
    lines: int  # non-empty last line included
    key_counts: dict[str, int]  # occurrences of '"name"' in the whole file
    utf8_ok: bool = True  # every byte of the file is UTF-8 (Arrow does not check)


def _scan_file(path: Path, key_names: Sequence[str]) -> _Scan:
    """Line count and key-token counts, read in chunks (runs in a thread beside Arrow's
    parser, which does not need the GIL)."""
    tokens = {name: f'"{name}"'.encode() for name in key_names}
    counts = dict.fromkeys(key_names, 0)
    overlap = max((len(token) for token in tokens.values()), default=1) - 1
    newlines = 0
    tail = b""
    last = b"\n"
    utf8 = codecs.getincrementaldecoder("utf-8")()
    utf8_ok = True
    with path.open("rb") as stream:
        while chunk := stream.read(_SCAN_CHUNK):
            # ASCII (what the runner writes) is UTF-8: only other bytes need the decoder.
            if utf8_ok and (not chunk.isascii() or utf8.getstate()[0]):
                try:
                    utf8.decode(chunk)
                except UnicodeDecodeError:
                    utf8_ok = False
            newlines += chunk.count(b"\n")
            last = chunk[-1:]
            window = tail + chunk if tokens else chunk
            for name, token in tokens.items():
                # occurrences wholly inside the carried-over tail were counted last time
                counts[name] += window.count(token) - tail.count(token)
            tail = window[-overlap:] if overlap and tokens else b""
    if utf8_ok:
        try:
            utf8.decode(b"", final=True)
        except UnicodeDecodeError:
            utf8_ok = False
    return _Scan(newlines + (0 if last == b"\n" else 1), counts, utf8_ok)


def _newline_offsets(path: Path) -> np.ndarray:
    """Byte offsets of every newline (only when some line must be looked at)."""
    offsets: list[np.ndarray] = []
    position = 0
    with path.open("rb") as stream:
        while chunk := stream.read(_SCAN_CHUNK):
            offsets.append(np.flatnonzero(np.frombuffer(chunk, dtype=np.uint8) == 10) + position)
            position += len(chunk)
    return np.concatenate(offsets) if offsets else np.zeros(0, dtype=np.int64)


class _LineIndex:
    """Random access to the lines of a file by number (1-based); the file is indexed on
    the first access, which most files never need."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._stream: BinaryIO | None = None
        self._map: mmap.mmap | None = None
        self.starts = self.ends = np.zeros(0, dtype=np.int64)

    def _open(self) -> mmap.mmap:
        if self._map is None:
            size = self._path.stat().st_size
            newlines = _newline_offsets(self._path)
            ends = newlines
            if size and (len(newlines) == 0 or newlines[-1] != size - 1):
                ends = np.append(newlines, size)  # last line without a newline
            self.ends = ends
            self.starts = np.concatenate(([0], ends[:-1] + 1)) if len(ends) else ends
            self._stream = self._path.open("rb")
            self._map = mmap.mmap(self._stream.fileno(), 0, access=mmap.ACCESS_READ)
        return self._map

    def raw(self, number: int) -> bytes:
        data = self._open()
        return data[int(self.starts[number - 1]) : int(self.ends[number - 1])]

    def text(self, number: int) -> str:
        return self.raw(number).decode("utf-8", errors="replace").rstrip("\r\n")

    def close(self) -> None:
        if self._map is not None:
            self._map.close()
        if self._stream is not None:
            self._stream.close()


def _key_present(raw: bytes, name: str) -> bool:
    """Whether a record line has top-level key `name` (its value is known to be null)."""
    token = f'"{name}"'.encode()
    occurrences = raw.count(token)
    if occurrences == 0:
        return False
    if occurrences == 1:
        rest = raw[raw.index(token) + len(token) :].lstrip()
        return rest.startswith(b":")
    try:
        record = parse_json_line(raw.decode("utf-8"))
    except ValueError:
        return False
    return isinstance(record, dict) and name in record


def _problems_for(text: str) -> tuple[str, ...]:
    problems = describe_line(text)
    if not problems:  # the derived checks and jsonschema disagree: a bug in miglab
        problems = ["rejected by miglab's record checks but accepted by the JSON Schema"]
    return tuple(problems)


@dataclass
class _FileResult:
    table: pa.Table
    bad: list[BadRecord]
    line_by_line: bool


def _regrouped(batches: Iterable[pa.RecordBatch]) -> Iterator[pa.Table]:
    """Arrow's reader yields one small batch per block (small blocks keep its read-ahead
    memory low); the checks cost a fixed overhead per call, so run them on groups."""
    pending: list[pa.RecordBatch] = []
    rows = 0
    for batch in batches:
        pending.append(batch)
        rows += batch.num_rows
        if rows >= _CHECK_ROWS:
            yield pa.Table.from_batches(pending)
            pending, rows = [], 0
    if pending:
        yield pa.Table.from_batches(pending)


def _read_fast(path: Path, source: pa.Array) -> _FileResult:
    key_fields = [spec for spec in field_specs() if spec.needs_key_count]
    # Required nullable keys (workqueue, threads) are null in every vanilla record: count
    # them while Arrow parses. Optional keys that may not be null (cell_id) are rarely null
    # at all: deal with them after the parse, only if they are.
    counted = [spec.name for spec in key_fields if spec.required]
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool:
        scan = pool.submit(_scan_file, path, counted)
        batches: list[pa.Table] = []
        bad_rows: list[np.ndarray] = []
        null_rows: dict[str, list[np.ndarray]] = {spec.name: [] for spec in key_fields}
        rows = 0
        try:
            reader = pajson.open_json(
                path,
                read_options=pajson.ReadOptions(block_size=_BLOCK_SIZE, use_threads=True),
                parse_options=pajson.ParseOptions(
                    explicit_schema=arrow_read_schema(), unexpected_field_behavior="ignore"
                ),
            )
            for batch in _regrouped(reader):
                checked = _check_and_convert(batch)
                for spec in key_fields:
                    column = batch.column(spec.name)
                    if column.null_count:
                        nulls = column.is_null().to_numpy()
                        null_rows[spec.name].append(np.flatnonzero(nulls) + rows + 1)
                batches.append(_kept_batch(checked, source, rows + 1))
                if checked.bad_rows.any():
                    bad_rows.append(np.flatnonzero(checked.bad_rows) + rows + 1)
                rows += batch.num_rows
        except pa.ArrowInvalid as error:
            raise _NeedsLineByLine(str(error)) from error
        scanned = scan.result()
    if not scanned.utf8_ok:
        raise _NeedsLineByLine("bytes that are not UTF-8")
    # Row n is line n only when no line is blank or holds two objects.
    if rows != scanned.lines:
        raise _NeedsLineByLine(f"{rows} records on {scanned.lines} lines")
    lines = _LineIndex(path)
    try:
        wanted = {int(number) for chunk in bad_rows for number in chunk}
        # Arrow reads a missing key as null. When the key occurs once per record that
        # should have it, there is nothing to look at; otherwise look at the raw lines of
        # the null values.
        missing_keys: set[int] = set()
        for spec in key_fields:
            nulls = sum(len(chunk) for chunk in null_rows[spec.name])
            if nulls == 0:
                continue
            expected = rows if spec.required else rows - nulls
            count = scanned.key_counts.get(spec.name)
            if count is None and nulls > rows // 16:
                count = _scan_file(path, [spec.name]).key_counts[spec.name]
            if count == expected:
                continue
            for number in (int(n) for chunk in null_rows[spec.name] for n in chunk):
                if _key_present(lines.raw(number), spec.name) != spec.required:
                    missing_keys.add(number)
        bad = [
            BadRecord(path, n, _problems_for(lines.text(n))) for n in sorted(wanted | missing_keys)
        ]
    finally:
        lines.close()
    table = pa.concat_tables(batches) if batches else sample_table_schema().empty_table()
    late = missing_keys - wanted
    if late:  # found after conversion: drop those rows now
        keep = pc.invert(pc.is_in(table["line"], value_set=pa.array(sorted(late), pa.int64())))
        table = table.filter(keep)
    return _FileResult(table, bad, line_by_line=False)


def _read_line_by_line(path: Path, source: pa.Array) -> _FileResult:
    specs = field_specs()
    values: dict[str, list[object]] = {spec.name: [] for spec in specs}
    lines: list[int] = []
    bad: list[BadRecord] = []
    with path.open("rb") as stream:
        for number, raw in enumerate(stream, start=1):
            try:
                text = raw.decode("utf-8").rstrip("\r\n")
            except UnicodeDecodeError as error:
                bad.append(BadRecord(path, number, (f"not valid UTF-8 ({error.reason})",)))
                continue
            if not text.strip():
                continue
            try:
                record = parse_json_line(text)
            except ValueError:
                bad.append(BadRecord(path, number, _problems_for(text)))
                continue
            if not isinstance(record, dict) or not record_is_valid(record):
                problems = describe_record(record) or [
                    "rejected by miglab's record checks but accepted by the JSON Schema"
                ]
                bad.append(BadRecord(path, number, tuple(problems)))
                continue
            for spec in specs:
                values[spec.name].append(normalised_value(spec, record.get(spec.name)))
            lines.append(number)
    raw_batch = pa.Table.from_arrays(
        [pa.array(values[spec.name], type=_ARROW_TYPES[spec.kind]) for spec in specs],
        schema=arrow_read_schema(),
    )
    checked = _check_and_convert(raw_batch)
    if checked.bad_rows.any():  # record_is_valid accepted what the vector checks reject
        for index in np.flatnonzero(checked.bad_rows):
            bad.append(
                BadRecord(path, lines[index], ("rejected by miglab's vectorised record checks",))
            )
    kept_lines = np.asarray(lines, dtype=np.int64)[~checked.bad_rows]
    try:
        batch = _kept_batch(checked, source, 1, kept_lines)
    except _NeedsLineByLine as error:  # cannot happen after record_is_valid; keep it loud
        raise MiglabError(f"{path}: cannot convert timestamps: {error}") from error
    bad.sort(key=lambda record: record.line)
    return _FileResult(batch, bad, line_by_line=True)


def _read_file(path: Path) -> _FileResult:
    source = pa.array([str(path)])
    if path.stat().st_size == 0:
        return _FileResult(sample_table_schema().empty_table(), [], line_by_line=False)
    try:
        return _read_fast(path, source)
    except _NeedsLineByLine:
        return _read_line_by_line(path, source)


def to_frame(tables: list[pa.Table]) -> pd.DataFrame:
    """Arrow sample tables to one pandas frame: strings as categoricals, nullable integers
    as Int64. Empties `tables`: self_destruct frees each Arrow column once converted, which
    keeps the peak near one copy of the data, but only when nothing else refers to it."""
    table = (
        pa.concat_tables(tables) if tables else sample_table_schema().empty_table()
    ).unify_dictionaries()
    tables.clear()
    frame = table.to_pandas(split_blocks=True, self_destruct=True)
    del table
    for spec in field_specs():
        if spec.kind == "integer" and spec.nullable:
            frame[spec.name] = frame[spec.name].astype("Int64")
    return frame


# A sample's identity: the same move recorded twice is a duplicate.
DUPLICATE_KEYS: tuple[str, ...] = (
    "run_id", "host", "kernel_variant", "workqueue", "load", "copy_config", "page_kind",
    "page_count", "rep",
)  # fmt: skip


def find_duplicates(frame: pd.DataFrame) -> tuple[list[BadRecord], np.ndarray]:
    """Each later record of a sample recorded more than once, naming the first; and the
    rows to keep (the first of each)."""
    if frame.empty:
        return [], np.ones(0, dtype=bool)
    keys = list(DUPLICATE_KEYS)
    later = frame.duplicated(keys, keep="first").to_numpy()
    if not later.any():
        return [], ~later
    involved = frame[frame.duplicated(keys, keep=False)]
    found = []
    for _, group in involved.groupby(keys, observed=True, dropna=False, sort=False):
        places = list(zip(group["source"], group["line"], strict=True))
        first = f"{places[0][0]}:{places[0][1]}"
        for source, line in places[1:]:
            found.append(
                BadRecord(
                    Path(str(source)),
                    int(line),
                    (f"duplicate sample (same cell and rep as {first})",),
                )
            )
    found.sort(key=lambda record: (str(record.path), record.line))
    return found, ~later


def find_inconsistencies(frame: pd.DataFrame) -> tuple[list[BadRecord], np.ndarray]:
    """Records whose numbers contradict each other, as the schema defines them (bytes =
    page_count x folio_size, gbps = bytes / elapsed_ns); and the rows that are consistent."""
    if frame.empty:
        return [], np.ones(0, dtype=bool)
    moved = frame["bytes"].to_numpy()
    expected_bytes = frame["page_count"].to_numpy() * frame["folio_size"].to_numpy()
    gbps = frame["gbps"].to_numpy(dtype=float)
    expected_gbps = moved / frame["elapsed_ns"].to_numpy(dtype=float)
    bytes_off = moved != expected_bytes
    # Writers round gbps (migbench before 2026-11-28 to 6 decimals): allow half a unit of
    # the 6th decimal plus a relative 1e-6, so rounding passes and a wrong number does not.
    gbps_off = np.abs(gbps - expected_gbps) > 5e-7 + 1e-6 * np.abs(expected_gbps)
    bad = bytes_off | gbps_off
    found = []
    for index in np.flatnonzero(bad):
        row = frame.iloc[index]
        problems = []
        if bytes_off[index]:
            problems.append(
                f"bytes {row['bytes']} is not page_count x folio_size "
                f"({row['page_count']} x {row['folio_size']})"
            )
        if gbps_off[index]:
            problems.append(
                f"gbps {row['gbps']} is not bytes / elapsed_ns ({expected_gbps[index]:.6g})"
            )
        found.append(BadRecord(Path(str(row["source"])), int(row["line"]), tuple(problems)))
    return found, ~bad


def load_samples(
    paths: Iterable[str | Path], skip_bad: bool = False, allow_empty: bool = False
) -> SampleSet:
    """Every valid record under `paths`; bad, duplicate and inconsistent records, and files
    without records, raise CorruptInputError unless skip_bad, in which case they are left
    out (the first of duplicates kept) and listed in the SampleSet. No usable record at all
    is a ConfigError naming the files, unless allow_empty (`miglab check` reports it)."""
    files = find_sample_files(paths)
    tables: list[pa.Table] = []
    bad: list[BadRecord] = []
    sources: list[SourceFile] = []
    for path in files:
        try:
            result = _read_file(path)
        except OSError as error:
            raise ConfigError(str(path), f"cannot read: {error.strerror or error}") from error
        tables.append(result.table)
        pa.default_memory_pool().release_unused()  # the parser's buffers, before the next file
        bad.extend(result.bad)
        if result.table.num_rows == 0 and not result.bad:
            bad.append(BadRecord(path, 0, ("no records in this file",)))
        sources.append(
            SourceFile(path, result.table.num_rows, len(result.bad), result.line_by_line)
        )
    frame = to_frame(tables)
    inconsistent, consistent = find_inconsistencies(frame)
    if not consistent.all():
        frame = frame[consistent]
    duplicates, first = find_duplicates(frame)
    if not first.all():
        frame = frame[first]
    samples = SampleSet(frame, bad, sources, duplicates, inconsistent)
    if samples.rejected and not skip_bad:
        raise CorruptInputError(sorted(samples.rejected, key=lambda r: (str(r.path), r.line)))
    if frame.empty and not allow_empty:
        raise ConfigError(
            ", ".join(str(path) for path in files), "no usable records in these files"
        )
    return samples


@dataclass(frozen=True)
class SampleFilter:
    """Row selection by the command-line filters; empty tuples select everything."""

    hosts: tuple[str, ...] = ()
    loads: tuple[str, ...] = ()
    page_kinds: tuple[str, ...] = ()
    variants: tuple[str, ...] = ()
    runs: tuple[str, ...] = ()

    def apply(self, frame: pd.DataFrame, keep_vanilla: bool = False) -> pd.DataFrame:
        """Rows matching every given filter. With keep_vanilla, `variants` does not drop the
        unpatched kernel's samples, which tables need for their reference column."""
        mask = pd.Series(True, index=frame.index)
        for column, wanted in (
            ("host", self.hosts),
            ("load", self.loads),
            ("page_kind", self.page_kinds),
            ("run_id", self.runs),
        ):
            if wanted:
                mask &= frame[column].isin(wanted)
        if self.variants:
            variant_mask = frame["kernel_variant"].isin(self.variants)
            if keep_vanilla:
                variant_mask |= frame["copy_config"] == "vanilla"
            mask &= variant_mask
        return frame[mask]
