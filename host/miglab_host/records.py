"""Sample records (schema miglab.sample/2): migbench's sample + what only the runner knows."""

from __future__ import annotations

from typing import Any

from miglab_host import SAMPLE_SCHEMA, sample_schema

# The schema's required fields, read from the one schema file (results-schema.json).
REQUIRED = tuple(sample_schema()["required"])

# Copied from migbench's sample line into the record.
FROM_MIGBENCH = (
    "rep",
    "src_node",
    "dst_node",
    "page_kind",
    "folio_size",
    "page_count",
    "bytes",
    "elapsed_ns",
    "gbps",
    "failed_pages",
    "backing_ok",
    "caller_cpu_ns",
    "system_cpu_ns",
    "system_cpu_resolution_ns",
    "system_cpu_ns_schedstat",
    "pgmigrate_success",
    "pgmigrate_fail",
    "thp_migration_success",
    "thp_migration_fail",
    "thp_migration_split",
    "pgmigrate_mt_batches",
    "pgmigrate_mt_folios",
    "pgmigrate_mt_works",
    "pgmigrate_mt_fallbacks",
    "kthread_cpu_ns",
    "kthreads",
    "cgroup_cpu_ns",
    "accounting_ns",
    "move_pages_ret",
    "status_errors",
    "warmup_moves",
    "base_page_size",
    "loopback",
    "fresh_buffer",
    "timestamp",
    "backing_detail",
)


def build_record(
    sample: dict, context: dict, cell: dict, cell_status: str, pattern_ok: bool | None
) -> dict:
    """``context``: run_id, host, arch, kernel_release, kernel_variant, kernel_build_hash,
    workqueue, knob_profile, migbench_sha256, sweep_name, base_page_size."""
    rec: dict[str, Any] = {"schema": SAMPLE_SCHEMA}
    for key in (
        "run_id",
        "host",
        "arch",
        "kernel_release",
        "kernel_variant",
        "kernel_build_hash",
        "workqueue",
        "knob_profile",
        "migbench_sha256",
        "sweep_name",
        "base_page_size",
    ):
        rec[key] = context.get(key)
    rec.update(
        {
            "load": cell["load"],
            "copy_config": cell["copy_config"],
            "threads": cell["threads"],
            "cell_id": cell["cell_id"],
            "cell_index": cell["index"],
        }
    )
    for key in FROM_MIGBENCH:
        if key in sample:
            rec[key] = sample[key]
    rec["threads_effective"] = threads_effective(rec)
    rec["cell_status"] = cell_status
    rec["pattern_ok"] = pattern_ok
    return rec


def threads_effective(rec: dict) -> float | None:
    """Copy threads the kernel used per batch: its work items over its batches, from the
    counters of a kernel that has them (None otherwise, or when no batch went that way)."""
    batches, works = rec.get("pgmigrate_mt_batches"), rec.get("pgmigrate_mt_works")
    if not isinstance(batches, int) or not isinstance(works, int) or batches <= 0:
        return None
    return round(works / batches, 3)


def copy_path_problem(copy_config: str, samples: list[dict]) -> str | None:
    """Why the counters contradict the configuration (None if they agree, or if the kernel
    has no such counters): an mt_N move must have copied through the multi-threaded path,
    a serial or vanilla move must not have."""
    family = copy_config.split("_", 1)[0]
    for s in samples:
        batches, folios = s.get("pgmigrate_mt_batches"), s.get("pgmigrate_mt_folios")
        if batches is None or folios is None:
            continue  # a kernel without these counters: nothing to prove either way
        if family == "mt" and batches < 1:
            return (
                f"{copy_config}: move {s.get('rep')} copied no batch through the multi-threaded "
                f"path (pgmigrate_mt_batches +{batches}, pgmigrate_mt_folios +{folios}): the "
                "knobs did not take effect, or the kernel ignored them"
            )
        if family in ("serial", "vanilla") and (batches > 0 or folios > 0):
            return (
                f"{copy_config}: move {s.get('rep')} went through the multi-threaded copy "
                f"(pgmigrate_mt_batches +{batches}, pgmigrate_mt_folios +{folios})"
            )
    return None


def problems(rec: dict) -> list[str]:
    """Cheap structural check (the runner has no jsonschema); unit tests use the real schema."""
    out = [f"missing {k}" for k in REQUIRED if k not in rec]
    for k in ("page_count", "bytes", "elapsed_ns", "folio_size"):
        v = rec.get(k)
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            out.append(f"{k} must be a positive integer, got {v!r}")
    if not isinstance(rec.get("backing_ok"), bool):
        out.append("backing_ok must be a boolean")
    return out
