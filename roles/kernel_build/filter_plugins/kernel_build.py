"""Filters of the kernel_build role: from validated variants to the builds a host needs."""

from __future__ import annotations

import hashlib
import json
import os
from typing import Any

from miglab.lab.variants import variant_applies
from miglab_host.facts import kernel_arch

PACKAGE_FORMATS = {"Debian": "deb", "RedHat": "rpm"}


def staged_patch_path(work_dir: str, variant: str, index: int, name: str) -> str:
    return os.path.join(work_dir, "patches", variant, f"{index:04d}-{os.path.basename(name)}")


def kernel_build_requests(
    variants: list[dict[str, Any]],
    machine: str,
    os_family: str,
    group_names: list[str],
    host_options: list[str],
    required: list[str],
    work_dir: str,
    patch_cache_dir: str,
    running_config: str | None = None,
    inventory_hostname: str = "",
) -> list[dict[str, Any]]:
    """The builds a host needs: one spec per variant meant for it. Hosts whose specs are
    equal share a build: `key` hashes everything but where the build runs."""
    arch = kernel_arch(machine)
    package_format = PACKAGE_FORMATS.get(os_family, "deb")
    requests = []
    for order, variant in enumerate(variants):
        if not variant_applies(variant, inventory_hostname, group_names):
            continue
        group_options = [
            option
            for group in sorted(group_names)
            for option in variant.get("group_options", {}).get(group, [])
        ]
        needed = list(host_options) + group_options
        config = variant["config"]
        base = dict(config["base"])
        if base.get("kind") == "running":
            if running_config is None:
                raise ValueError(
                    f"variant {variant['name']}: base 'running' needs the host's config"
                )
            digest = hashlib.sha256(running_config.encode()).hexdigest()
            base = {
                "kind": "file",
                "path": os.path.join(work_dir, "configs", f"running-{digest[:16]}.config"),
                "sha256": digest,
                "from_host": True,
            }
        elif base.get("kind") == "file":
            base = {
                "kind": "file",
                "controller_path": base["path"],
                "path": os.path.join(work_dir, "configs", f"{variant['name']}-base.config"),
            }
        patches = []
        for index, patch in enumerate(variant.get("patches", []), start=1):
            if patch["kind"] == "message_id":
                controller_path = os.path.join(patch_cache_dir, f"{patch['message_id']}.mbx")
            else:
                controller_path = patch["path"]
            patches.append(
                {
                    "name": patch["name"],
                    "kind": patch["kind"],
                    "controller_path": controller_path,
                    "path": staged_patch_path(
                        work_dir, variant["name"], index, os.path.basename(controller_path)
                    ),
                }
            )
        spec = {
            "variant": variant["name"],
            "arch": machine,
            "kernel_arch": arch,
            "package_format": package_format,
            "source": variant["source"],
            "patches": patches,
            "config": {
                "base": base,
                "targets": config.get("targets", []),
                "fragments": [
                    {"name": f["name"], "text": f["text"]} for f in config.get("fragments", [])
                ],
                "options": list(config.get("options", [])) + needed,
            },
            "required": list(required) + needed,
        }
        identity = {k: v for k, v in spec.items()}
        identity["patches"] = [
            {"name": p["name"], "source": p["controller_path"]} for p in patches
        ] + [p.get("sha256") for p in variant.get("patches", [])]
        spec["key"] = hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16]
        spec["knob_profile"] = variant.get("knob_profile")
        spec["workqueue"] = variant.get("workqueue")
        spec["boot_timeout"] = variant.get("boot_timeout")
        spec["expect_boot_failure"] = bool(variant.get("expect_boot_failure"))
        spec["order"] = order  # the variant's place in the inventory
        requests.append(spec)
    return requests


def kernel_build_unique(requests: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Requests of several hosts, one per key (first wins), in the inventory's order of
    variants: variants of one tree are listed so that each differs little from the one
    before (vanilla, a small test patch, a series, the series plus one), and a build that
    follows its neighbour recompiles little."""
    seen: dict[str, dict[str, Any]] = {}
    for request in requests:
        seen.setdefault(request["key"], request)
    return sorted(seen.values(), key=lambda request: int(request.get("order", 0)))


def _job_answer(job: dict[str, Any]) -> dict[str, Any] | None:
    lines = job.get("stdout_lines") or []
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return dict(json.loads(line))
            except ValueError:
                return None
    return None


def kernel_build_failures(jobs: list[dict[str, Any]]) -> list[str]:
    """One message per build job that failed: the tool's own error, or why it did not run."""
    messages = []
    for job in jobs:
        if job.get("skipped"):
            continue
        item = job.get("item", {})
        label = f"{item.get('variant', '?')} ({item.get('arch', '?')})"
        answer = _job_answer(job)
        if job.get("rc") == 0 and answer and not answer.get("failed"):
            continue
        if answer and answer.get("error"):
            messages.append(f"kernel build {label}: {answer['error']}")
        else:
            detail = job.get("stderr") or job.get("msg") or "no output"
            messages.append(f"kernel build {label}: {str(detail).strip()[-2000:]}")
    return messages


def kernel_build_results(
    requests: list[dict[str, Any]],
    jobs: list[dict[str, Any]],
    where: str,
    controller_cache_dir: str,
) -> dict[str, dict[str, Any]]:
    """variant name -> the build this host gets, with where its packages are."""
    by_key = {}
    for job in jobs:
        answer = _job_answer(job)
        if job.get("rc") == 0 and answer and not answer.get("failed"):
            by_key[job["item"]["key"]] = answer
    results = {}
    for request in requests:
        build = by_key.get(request["key"])
        if build is None:
            continue
        entry = dict(build)
        entry["packages_on"] = "host" if where == "each" else "controller"
        if where not in ("controller", "each"):
            directory = os.path.join(controller_cache_dir, build["build_hash"])
            entry["packages"] = [
                os.path.join(directory, os.path.basename(p)) for p in build["packages"]
            ]
            entry["image_package"] = os.path.join(
                directory, os.path.basename(build["image_package"])
            )
        entry.update(
            {
                "variant": request["variant"],
                "knob_profile": request.get("knob_profile"),
                "workqueue": request.get("workqueue"),
                "boot_timeout": request.get("boot_timeout"),
                "expect_boot_failure": bool(request.get("expect_boot_failure")),
                "key": request["key"],
            }
        )
        results[request["variant"]] = entry
    return results


class FilterModule:
    def filters(self) -> dict[str, Any]:
        return {
            "kernel_arch": kernel_arch,
            "kernel_build_requests": kernel_build_requests,
            "kernel_build_unique": kernel_build_unique,
            "kernel_build_failures": kernel_build_failures,
            "kernel_build_results": kernel_build_results,
        }
