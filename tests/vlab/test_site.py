"""The lab's main job on the virtual lab, for real, the way a user runs it: `miglab run`
(playbooks/site.yml through ansible-runner, with its line-by-line view). It checks the
definition, provisions, builds the lab's variants of Debian's linux-source-6.12 (vanilla,
broken, and the lab's own copy series as mt-unbound and mt-highpri), and each guest boots,
verifies, sweeps (idle and busy; base pages, 2 MiB THP, 64K mTHP; vanilla, serial, mt_1, mt_2,
mt_4) and collects each of its variants at its own pace; the broken one (vnode2 only, a canary)
panics, is power-cycled back to the known-good kernel and reported while everything else
completes; every host ends on its default kernel; the run ends with the thread's tables and
a report. The records prove which copy path ran (the series' vmstat counters), the data
survived it (migbench's pattern check), the kernel logs stayed clean and the knobs were put
back. A second `miglab run` with nothing changed changes nothing and rebuilds nothing.
"""

from __future__ import annotations

import base64
import io
import json
import re
import statistics
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from matplotlib import image as matplotlib_image
from miglab.results.check import check_results
from miglab.results.load import load_samples
from miglab.results.tables import build_tables

from .conftest import INVENTORY, REPO, STATE_DIR, VENV_BIN, ansible, console_tails

VARIANTS = yaml.safe_load((INVENTORY / "group_vars" / "all" / "kernel_variants.yml").read_text())
BOOT_TIMEOUT = {
    v["name"]: v.get("boot_timeout", VARIANTS["kernel_variant_defaults"]["boot_timeout"])
    for v in VARIANTS["kernel_variants"]
}
CANARY = next(v for v in VARIANTS["kernel_variants"] if v.get("expect_boot_failure"))
GUESTS = yaml.safe_load((INVENTORY / "group_vars" / "all" / "vlab.yml").read_text())
# CPUs of each node of each guest (the copying node's CPUs cap the copy threads).
NODE_CPUS = {g["name"]: {n["cpus"] for n in g["numa"]} for g in GUESTS["vlab_guests"]}
# The whole job from empty caches: a first kernel build (~5 min on 2 cores), boots under
# TCG, sweeps.
PIPELINE_TIMEOUT = 5400
# The inventory's sweep with one page count per kind: every column, kind and load of the
# thread's tables, in CI's time.
SWEEP = {
    "sweep_loads": ["idle", "busy"],
    "sweep_folio_kinds": ["base", "2M", "64K"],
    "sweep_page_counts": {"base": [64], "2M": [2], "64K": [16]},
    "sweep_repetitions": 3,
    "sweep_warmup": 1,
}
COLUMNS = ["vanilla", "serial", "mt_1", "mt_2", "mt_4"]
# The host the second run (`--limit`) reruns.
RERUN_HOST = "vnode1"
MT_COUNTERS = (
    "pgmigrate_mt_batches",
    "pgmigrate_mt_folios",
    "pgmigrate_mt_works",
    "pgmigrate_mt_fallbacks",
)


@dataclass
class JobRun:
    returncode: int
    output: str
    events: list[dict[str, Any]]
    recap: dict[str, dict[str, int]]

    def explain(self) -> str:
        return f"exit {self.returncode}\n{self.output[-6000:]}\n{console_tails(STATE_DIR, 25)}"

    def messages(self, host: str) -> list[str]:
        """What the run's debug tasks said about this host, in order."""
        out = []
        for event in self.events:
            data = event.get("event_data") or {}
            res = data.get("res") or {}
            if data.get("host") == host and event.get("event") == "runner_on_ok" and "msg" in res:
                out.append(str(res["msg"]))
        return out

    def facts(self, host: str, name: str) -> list[Any]:
        """Every value the run set for this fact on this host, in order."""
        values = []
        for event in self.events:
            data = event.get("event_data") or {}
            facts = (data.get("res") or {}).get("ansible_facts") or {}
            if data.get("host") == host and name in facts:
                values.append(facts[name])
        return values


@dataclass
class Site:
    run_id: str
    first: JobRun
    second: JobRun
    results: Path
    guests: list[str]


def miglab_run(run_id: str, *options: str) -> JobRun:
    """`miglab run --log` of the whole job, as a user would type it."""
    extra = {"sweep_run_id": run_id, **SWEEP}
    before = set((REPO / "results" / run_id / "ansible").glob("events-*.jsonl"))
    result = subprocess.run(
        [str(VENV_BIN / "miglab"), "run", "--log", *options, "-e", json.dumps(extra)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=PIPELINE_TIMEOUT,
        check=False,
    )
    kept = REPO / "results" / run_id / "ansible"
    (events_file,) = set(kept.glob("events-*.jsonl")) - before
    (recap_file,) = kept.glob(
        events_file.name.replace("events-", "recap-").replace(".jsonl", ".json")
    )
    events = [json.loads(line) for line in events_file.read_text().splitlines()]
    recap = json.loads(recap_file.read_text())["recap"]
    return JobRun(result.returncode, result.stdout + result.stderr, events, recap)


@pytest.fixture(scope="module")
def site(guests: list[dict[str, Any]]) -> Site:
    run_id = f"vlab-site-{time.strftime('%Y%m%d-%H%M%S')}"
    first = miglab_run(run_id)
    assert first.returncode == 0, first.explain()
    # The rerun a user makes of one host (the lighter one: CI's time) must find it all done.
    second = miglab_run(run_id, "--limit", RERUN_HOST)
    return Site(run_id, first, second, REPO / "results" / run_id, [g["name"] for g in guests])


def samples(site: Site, guest: str) -> list[dict[str, Any]]:
    path = site.results / guest / "samples.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def guest_file(guest: str, path: str) -> str:
    with tempfile.TemporaryDirectory() as tree:
        answer = ansible(
            "ansible", guest, "-m", "ansible.builtin.slurp", "-a", f"src={path}", "--tree", tree
        )
        assert answer.returncode == 0, answer.output
        content = json.loads((Path(tree) / guest).read_text())["content"]
        return base64.b64decode(content).decode()


def known_good(guest: str) -> str:
    return str(json.loads(guest_file(guest, "/var/lib/miglab/known-good.json"))["kernel_release"])


def variants_for(guest: str) -> list[str]:
    return [v["name"] for v in VARIANTS["kernel_variants"] if guest in v.get("hosts", [guest])]


def test_the_whole_job_ran_on_every_host(site: Site) -> None:
    for guest in site.guests:
        counts = site.first.recap[guest]
        assert counts["failed"] == 0 and counts["unreachable"] == 0, site.first.explain()
        # Each host went through its own variants, in the inventory's order.
        started = [fact["name"] for fact in site.first.facts(guest, "lab_variant_current")]
        assert started == variants_for(guest), started


def test_every_variant_that_booted_was_swept_exactly_as_planned(site: Site) -> None:
    builds: dict[str, str] = {}
    for guest in site.guests:
        records = samples(site, guest)
        swept = [v for v in variants_for(guest) if v != CANARY["name"]]
        assert {r["kernel_variant"] for r in records} == set(swept)
        for variant in swept:
            plan = json.loads(
                (site.results / guest / "variants" / variant / "plan.json").read_text()
            )
            mine = [r for r in records if r["kernel_variant"] == variant]
            assert len(mine) == len(plan["cells"]) * plan["definition"]["repetitions"], variant
            keys = {(r["cell_id"], r["rep"]) for r in mine}
            assert len(keys) == len(mine), f"duplicate samples of {variant} on {guest}"
            # Every sample names the kernel it ran on: exactly that variant's build.
            (build_hash,) = {r["kernel_build_hash"] for r in mine}
            (release,) = {r["kernel_release"] for r in mine}
            assert release.endswith(f"-{variant}-{build_hash[:8]}"), release
            assert builds.setdefault(variant, build_hash) == build_hash  # one build, both hosts
    assert len(set(builds.values())) == len(builds)  # variants are different builds
    report = check_results([site.results])
    assert report.ok, "\n".join(report.lines())


def test_the_canary_fell_back_on_its_host_only_and_was_reported(site: Site) -> None:
    failures_dir = site.results / "boot-failures"
    assert sorted(p.stem for p in failures_dir.glob("*.json")) == sorted(CANARY["hosts"])
    for guest in CANARY["hosts"]:
        (record,) = json.loads((failures_dir / f"{guest}.json").read_text())
        assert record["variant"] == CANARY["name"]
        assert record["reason"] == "panic", record
        assert record["power_cycled"] is True
        assert record["recovered_to"] == known_good(guest)
        assert any(
            "miglab: deliberately broken test kernel" in line for line in record["console_excerpt"]
        )
        # Given up at its timeout (the reboot wait), not later; back soon after the power cycle.
        timeout = BOOT_TIMEOUT[CANARY["name"]]
        assert timeout <= record["failed_after_seconds"] <= timeout + 120
        assert record["recovered_after_seconds"] <= timeout + 420
        said = f"{guest}: {CANARY['name']} did not boot, as expected"
        assert any(said in message for message in site.first.messages(guest))


def test_hosts_did_not_wait_for_each_other(site: Site) -> None:
    """vnode1 started a variant while vnode2 was still on the canary's boot timeout."""

    def started(host: str, variant: str) -> float:
        for event in site.first.events:
            data = event.get("event_data") or {}
            facts = (data.get("res") or {}).get("ansible_facts") or {}
            if (
                data.get("host") == host
                and (facts.get("lab_variant_current") or {}).get("name") == variant
            ):
                return time.mktime(time.strptime(event["created"][:19], "%Y-%m-%dT%H:%M:%S"))
        raise AssertionError(f"{host} never started {variant}")

    (canary_host,) = CANARY["hosts"]
    other = next(g for g in site.guests if g != canary_host)
    after_canary = variants_for(canary_host)[variants_for(canary_host).index(CANARY["name"]) + 1]
    window = (started(canary_host, CANARY["name"]), started(canary_host, after_canary))
    assert any(window[0] < started(other, v) < window[1] for v in variants_for(other)), window


def test_every_host_ends_on_its_default_kernel(site: Site) -> None:
    for guest in site.guests:
        assert guest_file(guest, "/proc/sys/kernel/osrelease").strip() == known_good(guest)
        grubenv = guest_file(guest, "/boot/grub/grubenv")
        assert "next_entry=\n" in grubenv or "next_entry" not in grubenv
        assert "saved_entry=gnulinux-advanced-" in grubenv and known_good(guest) in grubenv


def test_the_run_ends_with_recap_tables_and_report(site: Site) -> None:
    lines = site.first.output.rstrip().splitlines()
    assert lines[-1].startswith("report: ") and lines[-1].endswith("report.html"), lines[-5:]
    report = Path(lines[-1].split(": ", 1)[1])
    assert report.is_file() and report.parent == site.results / "report"
    assert f"results: {site.results}" in site.first.output
    assert "recap:" in site.first.output
    # The tables as plain text (not a quoted YAML list inside Ansible's debug output).
    assert "4KB with system_unbound_wq on an idle system (GB/s) - host vnode1" in site.first.output
    assert "- '|" not in site.first.output
    # A line per finished build, and per host its variants and sweep progress as they went.
    for variant in BOOT_TIMEOUT:
        assert f"build: {variant} (x86) 6.12." in site.first.output, variant
    for guest in site.guests:
        for variant in variants_for(guest):
            assert f"{guest}: variant {variant}" in site.first.output
        assert f"{guest}: variant vanilla sweep 6/6 cells" in site.first.output


def swept_variants(guest: str) -> list[str]:
    return [v for v in variants_for(guest) if v != CANARY["name"]]


def variant_record(name: str) -> dict[str, Any]:
    merged = dict(VARIANTS["kernel_variant_defaults"])
    merged.update(next(v for v in VARIANTS["kernel_variants"] if v["name"] == name))
    return merged


def test_each_column_ran_the_copy_path_it_names_and_the_data_survived(site: Site) -> None:
    """The series' counters per sample: every mt_N move went through the multi-threaded copy
    (every folio, no fallback, as many threads as the copying node has CPUs up to N), no
    serial move did, the vanilla kernel has no such counters; migbench's pattern check of
    every word of every page passed after every one of them, idle and busy."""
    for guest in site.guests:
        (cpus,) = NODE_CPUS[guest]  # both nodes of a guest have the same CPU count
        records = samples(site, guest)
        for variant in swept_variants(guest):
            wanted = variant_record(variant)["copy_configs"]
            mine = [r for r in records if r["kernel_variant"] == variant]
            assert sorted({r["copy_config"] for r in mine}) == sorted(wanted), variant
            assert {r["load"] for r in mine} == {"idle", "busy"}
            assert {r["page_kind"] for r in mine} == {"base", "2M", "64K"}
        for r in records:
            where = f"{guest} {r['kernel_variant']} {r['cell_id']} rep {r['rep']}"
            assert r["pattern_ok"] is True and r["backing_ok"] is True, where
            assert r["fresh_buffer"] is (r["page_kind"] == "64K"), where
            counters = {name: r[name] for name in MT_COUNTERS}
            if r["kernel_variant"] == "vanilla":
                assert set(counters.values()) == {None}, (where, counters)
            elif r["copy_config"] == "serial":
                assert set(counters.values()) == {0}, (where, counters)
            else:
                requested = int(r["copy_config"].removeprefix("mt_"))
                # At least every folio of the move: the counters are the whole kernel's, and
                # under the busy load compaction also migrates (a replay saw 65 for 64 pages).
                assert counters["pgmigrate_mt_folios"] >= r["page_count"], (where, counters)
                assert counters["pgmigrate_mt_batches"] >= 1, (where, counters)
                assert counters["pgmigrate_mt_fallbacks"] == 0, (where, counters)
                assert r["threads_effective"] == min(requested, cpus), (where, counters)


def test_kernel_logs_stayed_clean_and_the_knobs_were_put_back(site: Site) -> None:
    for guest in site.guests:
        for variant in swept_variants(guest):
            vdir = site.results / guest / "variants" / variant
            log = json.loads((vdir / "kernel-log.json").read_text())
            assert log["available"] and log["problems"] == [], (guest, variant, log)
            knobs = json.loads((vdir / "knobs.json").read_text())
            assert knobs["after"] == knobs["originals"], (guest, variant, knobs)
            if variant_record(variant)["knob_profile"] == "mt_sysctl_v1":
                # the series' defaults, found before the sweep and left after it
                assert knobs["originals"] == {
                    "proc/sys/vm/use_mt_copy": "0",
                    "proc/sys/vm/limit_mt_num": "4",
                }, (guest, variant, knobs)


def test_the_tables_have_the_threads_layout_with_real_numbers(site: Site) -> None:
    """Per host, kind, load and workqueue: rows = page counts, columns vanilla, serial,
    mt_1, mt_2, mt_4, a number in every cell; the vanilla column is the vanilla kernel's and
    the same in the unbound and highpri tables; a copy that ran fewer threads than N is
    marked, and only then."""
    tables = build_tables(load_samples([site.results]).frame)
    by_key = {(t.key.host, t.key.page_kind, t.key.load, t.key.workqueue): t for t in tables}
    for guest in site.guests:
        (cpus,) = NODE_CPUS[guest]
        workqueues = sorted(
            {variant_record(v)["workqueue"] for v in swept_variants(guest)} - {"none"}
        )
        # a table per workqueue of the variants this guest ran, and no other
        assert {key[3] for key in by_key if key[0] == guest} == set(workqueues), guest
        for kind in ("base", "2M", "64K"):
            for load in ("idle", "busy"):
                tables = [by_key[(guest, kind, load, wq)] for wq in workqueues]
                for table in tables:
                    assert table.configs == COLUMNS, table.title
                    assert table.page_counts == SWEEP["sweep_page_counts"][kind], table.title
                    assert table.missing_cells() == [], table.title
                    assert all(c.value > 0 and c.n == 3 for c in table.cells.values())
                    assert table.vanilla_variants == ["vanilla"]
                    clamped = sorted(config for _, config, _ in table.clamped_cells())
                    assert clamped == [c for c in ("mt_2", "mt_4") if int(c[3:]) > cpus]
                (count,) = tables[0].page_counts
                # the vanilla kernel's column, shared by the unbound and highpri tables
                assert all(
                    t.cell(count, "vanilla") == tables[0].cell(count, "vanilla") for t in tables
                )
    out = site.first.output
    assert "64KB mTHP with system_highpri_wq on a busy system (GB/s) - host vnode1" in out
    assert "64KB mTHP with system_unbound_wq on a busy system (GB/s) - host vnode2" in out
    assert "2MB THP with system_unbound_wq on an idle system (GB/s) - host vnode1" in out


def test_the_copy_threads_cpu_time_is_seen_and_charged_to_nobody(site: Site) -> None:
    """migbench's kernel-thread CPU time per call, on the patched kernels under the busy load:
    an mt_2 call's copy work runs in kworkers, so every one of its samples shows kernel-thread
    time, and where the copy is the bulk of the call (the kind that moves the most bytes per
    call: 2 MiB THPs) the cell's median is well above serial's, whose calls copy in the caller.
    Tolerance: there, serial's median is at most a quarter of mt_2's. The measurement is of
    every kernel thread, and others than the copy's (RCU, timers, the network, the stress
    load's interrupts) run during any call, for a time that grows with the call's duration:
    under TCG on the busy guest that is ~15 ms per call, more than a small kind's whole copy
    (64K: 16 folios, 1 MiB), so the ratio is checked only where the copy dominates."""
    for guest in site.guests:
        records = [
            r
            for r in samples(site, guest)
            if r["load"] == "busy" and r["kernel_variant"] in ("mt-unbound", "mt-highpri")
        ]
        largest = max(records, key=lambda r: r["bytes"])["page_kind"]
        for variant in {"mt-unbound", "mt-highpri"} & set(variants_for(guest)):
            for kind in SWEEP["sweep_folio_kinds"]:
                mine = [
                    r for r in records if r["kernel_variant"] == variant and r["page_kind"] == kind
                ]
                mt2 = [r["kthread_cpu_ns"] for r in mine if r["copy_config"] == "mt_2"]
                serial = [r["kthread_cpu_ns"] for r in mine if r["copy_config"] == "serial"]
                where = f"{guest} {variant} {kind}: mt_2 {mt2}, serial {serial}"
                assert mt2 and serial and all(ns > 0 for ns in mt2), where
                if kind == largest:
                    assert statistics.median(serial) <= statistics.median(mt2) / 4, where
        assert all(r["accounting_ns"] > 0 for r in records)
        # cgroup v2 on the guests: migbench's own cgroup was charged its own CPU time
        assert all(r["cgroup_cpu_ns"] is not None for r in records)


def test_the_ceiling_was_measured_for_every_host_variant_and_load(site: Site) -> None:
    for guest in site.guests:
        (cpus,) = NODE_CPUS[guest]
        for variant in swept_variants(guest):
            wanted = sorted(
                {1}
                | {int(c[3:]) for c in variant_record(variant)["copy_configs"] if c[:3] == "mt_"}
            )
            for load in SWEEP["sweep_loads"]:
                path = site.results / guest / "variants" / variant / f"ceiling-{load}.json"
                ceiling = json.loads(path.read_text())
                assert ceiling["ok"] is True, (path, ceiling["error"])
                assert ceiling["threads"] == wanted
                found = {(m["direction"], m["threads"]) for m in ceiling["measurements"]}
                assert found == {(d, t) for d in ("push", "pull") for t in wanted}, path
                assert all(m["placement_ok"] and m["gbps"] > 0 for m in ceiling["measurements"])
                assert all(m["cpus"] == min(m["threads"], cpus) for m in ceiling["measurements"])


def test_the_report_has_the_cost_crossover_ceiling_and_plots(site: Site) -> None:
    """The run's own report (site.yml's last step), read as a browser would: every image is
    a PNG that decodes, nothing points outside the page."""
    page = (site.results / "report" / "report.html").read_text()
    for heading in (
        "Cost: CPU per GB and the application&#x27;s loss",
        "Crossover",
        "Relative to the copy ceiling",
    ):
        assert f"<h2>{heading}</h2>" in page, heading
    assert "CPU per GB moved, 2MB THP with system_unbound_wq under load busy - host vnode2" in page
    assert "Crossover - host vnode2" in page
    assert "throughput vs application loss" in page
    links = re.findall(r'(?:src|href)="([^"]+)"', page)
    assert links and all(link.startswith("data:image/png;base64,") for link in links), [
        link[:40] for link in links if not link.startswith("data:")
    ]
    for data in links:
        image = matplotlib_image.imread(
            io.BytesIO(base64.b64decode(data.split(",", 1)[1])), format="png"
        )
        assert image.shape[0] > 100 and image.shape[1] > 100


def test_a_second_run_changes_nothing_and_rebuilds_nothing(site: Site) -> None:
    """`--limit` one host, as a user reruns it: nothing is built, booted or swept again."""
    assert site.second.returncode == 0, site.second.explain()
    assert RERUN_HOST in site.second.recap and not set(site.second.recap) & (
        set(site.guests) - {RERUN_HOST}
    ), site.second.recap
    for host, counts in site.second.recap.items():
        assert counts["changed"] == 0, (host, site.second.explain())
    assert " built in " not in site.second.output
    for variant in variants_for(RERUN_HOST):
        assert f"build: {variant} (x86) 6.12." in site.second.output
    for variant in swept_variants(RERUN_HOST):
        cells = (
            len(SWEEP["sweep_loads"])
            * len(SWEEP["sweep_folio_kinds"])
            * len(variant_record(variant)["copy_configs"])
        )
        said = f"{RERUN_HOST}: all {cells} cells of {variant} are complete in run {site.run_id}"
        assert any(said in m for m in site.second.messages(RERUN_HOST)), variant
