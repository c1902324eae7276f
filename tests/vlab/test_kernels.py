"""The kernel pipeline on the virtual lab, for real: build the lab's three variants of
Debian's linux-source-6.12 (vanilla, broken, miglab-test), install them, boot each once,
verify the running kernel is exactly that build, sweep and collect; the broken one (vnode2
only) panics, is power-cycled back to the known-good kernel within its timeout and reported
while everything else completes; every host ends on its default kernel; a second build
with nothing changed rebuilds nothing.

The run is tests/vlab/kernel_pipeline.yml (the kernel part of site.yml). It uses the default
lab (the session's `guests` fixture). During development, point MIGLAB_VLAB_INVENTORY at a
copy of inventory/vlab with other ports (its state dir is <inventory>/../../.vlab); that lab
is brought up here.
"""

from __future__ import annotations

import base64
import json
import os
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from .conftest import REPO, AnsibleRun, ansible, playbook

DEFAULT_INVENTORY = REPO / "inventory" / "vlab" / "hosts.yml"
INVENTORY = Path(os.environ.get("MIGLAB_VLAB_INVENTORY", str(DEFAULT_INVENTORY))).resolve()
INVENTORY_DIR = INVENTORY if INVENTORY.is_dir() else INVENTORY.parent
LAB_STATE_DIR = INVENTORY_DIR.parent.parent / ".vlab"
VARIANTS = yaml.safe_load(
    (INVENTORY_DIR / "group_vars" / "all" / "kernel_variants.yml").read_text()
)
BOOT_TIMEOUT = {
    v["name"]: v.get("boot_timeout", VARIANTS["kernel_variant_defaults"]["boot_timeout"])
    for v in VARIANTS["kernel_variants"]
}
# The whole pipeline: a first build from scratch (~15 min on 2 cores), boots under TCG, sweeps.
PIPELINE_TIMEOUT = 5400


def run(*arguments: str, timeout: float = 1800) -> AnsibleRun:
    return playbook("-i", str(INVENTORY), *arguments, timeout=timeout)


@dataclass
class Pipeline:
    run_id: str
    first: AnsibleRun
    rebuild: AnsibleRun
    probes: dict[str, list[dict[str, Any]]]
    results: Path
    guests: list[str]


@pytest.fixture(scope="module")
def lab_guests(request: pytest.FixtureRequest) -> list[str]:
    """The lab, up: the session's default lab, or the one MIGLAB_VLAB_INVENTORY names."""
    if INVENTORY == DEFAULT_INVENTORY.resolve():
        return [g["name"] for g in request.getfixturevalue("guests")]
    up = run("playbooks/vlab.yml")
    assert up.returncode == 0, up.report(LAB_STATE_DIR)
    guests = yaml.safe_load((INVENTORY_DIR / "group_vars" / "all" / "vlab.yml").read_text())
    return [g["name"] for g in guests["vlab_guests"]]


@pytest.fixture(scope="module")
def pipeline(lab_guests: list[str], tmp_path_factory: pytest.TempPathFactory) -> Pipeline:
    run_id = f"vlab-kernels-{time.strftime('%Y%m%d-%H%M%S')}"
    probe_dir = tmp_path_factory.mktemp("probes")
    extra = {
        "sweep_run_id": run_id,
        "kernel_test_probe_dir": str(probe_dir),
        # A small sweep: the point is that every sample names the kernel it ran on.
        "sweep_variants": {
            "vanilla": {"copy_configs": ["vanilla"]},
            "miglab-test": {"copy_configs": ["vanilla"], "profile": "vanilla"},
        },
        "sweep_loads": ["idle"],
        "sweep_folio_kinds": ["base"],
        "sweep_page_counts": {"base": [32]},
        "sweep_repetitions": 2,
        "sweep_warmup": 1,
    }
    first = run("tests/vlab/kernel_pipeline.yml", "-e", json.dumps(extra), timeout=PIPELINE_TIMEOUT)
    assert first.returncode == 0, first.report(LAB_STATE_DIR)
    rebuild = run("playbooks/kernel_build.yml", timeout=1800)
    probes = {
        guest: [
            json.loads(line) for line in (probe_dir / f"{guest}.jsonl").read_text().splitlines()
        ]
        for guest in lab_guests
    }
    return Pipeline(run_id, first, rebuild, probes, REPO / "results" / run_id, lab_guests)


def samples(pipeline: Pipeline, guest: str) -> list[dict[str, Any]]:
    path = pipeline.results / guest / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def guest_file(guest: str, path: str) -> str:
    """A file of a guest of this lab, read through Ansible (slurp, written by the tree callback)."""
    with tempfile.TemporaryDirectory() as tree:
        answer = ansible(
            "ansible",
            "-i",
            str(INVENTORY),
            guest,
            "-m",
            "ansible.builtin.slurp",
            "-a",
            f"src={path}",
            "--tree",
            tree,
        )
        assert answer.returncode == 0, answer.output
        content = json.loads((Path(tree) / guest).read_text())["content"]
        return base64.b64decode(content).decode()


def known_good(guest: str) -> str:
    return str(json.loads(guest_file(guest, "/var/lib/miglab/known-good.json"))["kernel_release"])


def test_the_pipeline_ran_on_every_host(pipeline: Pipeline) -> None:
    for guest in pipeline.guests:
        recap = pipeline.first.recap(guest)
        assert recap["failed"] == 0 and recap["unreachable"] == 0, pipeline.first.report(
            LAB_STATE_DIR
        )


def test_vanilla_and_the_patched_variant_booted_verified_on_every_host(pipeline: Pipeline) -> None:
    for guest in pipeline.guests:
        vanilla, after_broken, patched = pipeline.probes[guest]
        for probe, name in ((vanilla, "vanilla"), (patched, "miglab-test")):
            assert probe["booted"] and probe["variant"] == name, probe
            # The running kernel is exactly that build: release and full build hash.
            assert probe["release"].endswith(f"-{name}-{probe['build_hash'][:8]}"), probe
            assert f"miglab@miglab-{probe['build_hash']}" in probe["banner"], probe
            assert sorted(probe["kernel_boot_hosts"]) == sorted(pipeline.guests)
        assert vanilla["build_hash"] != patched["build_hash"]


def test_the_patch_is_in_the_kernel_that_was_swept(pipeline: Pipeline) -> None:
    for guest in pipeline.guests:
        vanilla, _, patched = pipeline.probes[guest]
        assert vanilla["miglab_test_patch"] is None  # vanilla has no such sysctl
        assert patched["miglab_test_patch"] == "1"
        records = samples(pipeline, guest)
        by_variant = {r["kernel_variant"]: r for r in records}
        assert set(by_variant) == {"vanilla", "miglab-test"}, {r["kernel_variant"] for r in records}
        for record in records:
            probe = vanilla if record["kernel_variant"] == "vanilla" else patched
            # Every sample names the variant, its verified build hash and the kernel it ran on.
            assert record["kernel_build_hash"] == probe["build_hash"]
            assert record["kernel_release"] == probe["release"]


def test_the_broken_variant_fell_back_within_its_timeout_and_was_reported(
    pipeline: Pipeline,
) -> None:
    broken_hosts = [v for v in VARIANTS["kernel_variants"] if v["name"] == "broken"][0]["hosts"]
    for guest in pipeline.guests:
        vanilla, after_broken, _ = pipeline.probes[guest]
        assert not after_broken["booted"]
        if guest in broken_hosts:
            # Back on the known-good (distribution) kernel, not a test kernel.
            assert after_broken["release"] == known_good(guest)
            assert "miglab@miglab-" not in after_broken["banner"]
        else:
            # Not for this host: left alone, still on the previous variant.
            assert after_broken["release"] == vanilla["release"]
    failures_dir = pipeline.results / "boot-failures"
    assert sorted(p.stem for p in failures_dir.glob("*.json")) == sorted(broken_hosts)
    for guest in broken_hosts:
        (record,) = json.loads((failures_dir / f"{guest}.json").read_text())
        assert record["variant"] == "broken"
        assert record["reason"] == "panic", record
        assert record["power_cycled"] is True
        assert record["recovered_to"] == known_good(guest)
        assert any(
            "miglab: deliberately broken test kernel" in line for line in record["console_excerpt"]
        )
        # Given up at its timeout (the reboot wait), not later; back soon after the power cycle.
        assert (
            BOOT_TIMEOUT["broken"] <= record["failed_after_seconds"] <= BOOT_TIMEOUT["broken"] + 120
        )
        assert record["recovered_after_seconds"] <= BOOT_TIMEOUT["broken"] + 420
    assert "failed on vnode2: panic" in pipeline.first.output


def test_every_host_ends_on_its_default_kernel(pipeline: Pipeline) -> None:
    for guest in pipeline.guests:
        assert guest_file(guest, "/proc/sys/kernel/osrelease").strip() == known_good(guest)
        grubenv = guest_file(guest, "/boot/grub/grubenv")
        assert "next_entry=\n" in grubenv or "next_entry" not in grubenv
        assert "saved_entry=gnulinux-advanced-" in grubenv and known_good(guest) in grubenv


def test_a_second_run_with_nothing_changed_rebuilds_nothing(pipeline: Pipeline) -> None:
    assert pipeline.rebuild.returncode == 0, pipeline.rebuild.report(LAB_STATE_DIR)
    for guest in pipeline.guests:
        assert pipeline.rebuild.recap(guest)["changed"] == 0, pipeline.rebuild.report(LAB_STATE_DIR)
    for name in ("vanilla", "broken", "miglab-test"):
        assert f"{name}: 6.12." in pipeline.rebuild.output
    assert "built, build hash" not in pipeline.rebuild.output
