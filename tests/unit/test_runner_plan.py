"""Plan expansion and validation (miglab_host.plan), including the inventories' sweeps."""

from __future__ import annotations

import json
import subprocess
import sys
from collections import Counter
from pathlib import Path

import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
import yaml
from miglab_host import plan as planmod
from miglab_host.plan import PlanError, expand, load_plan
from miglab_runner_testlib import REPO, RUNNER_DIR, definition


def test_expansion_counts_and_cells():
    p = expand(definition(loads=["idle", "busy"]))
    # 2 loads x 1 config x (2 base counts + 2 THP counts)
    assert len(p["cells"]) == 8
    assert [c["index"] for c in p["cells"]] == list(range(8))
    ids = [c["cell_id"] for c in p["cells"]]
    assert len(set(ids)) == len(ids)
    assert "vanilla:busy:vanilla:2M:4" in ids
    # loads are blocks, in the given order (stress-ng is started once per load)
    assert [c["load"] for c in p["cells"]] == ["idle"] * 4 + ["busy"] * 4
    assert p["seed"] == planmod.default_seed("unit")


def test_counts_of_a_kind_left_out_make_no_cells():
    """A narrower -e sweep_folio_kinds keeps the inventory's counts for the other kinds."""
    d = definition(folio_kinds=["base"])
    d["page_counts"]["64K"] = [8]
    p = expand(d)
    assert {c["page_kind"] for c in p["cells"]} == {"base"}


def test_thread_matrix_of_a_patched_variant():
    record = {
        "name": "mt",
        "knob_profile": "mt_sysctl_v1",
        "workqueue": "unbound",
        "copy_configs": ["serial", "mt_1", "mt_2", "mt_32"],
    }
    p = expand(definition(kernel_variants=[{"name": "vanilla"}, record], kernel_variant="mt"))
    assert len(p["cells"]) == 4 * 4
    threads = {c["copy_config"]: c["threads"] for c in p["cells"]}
    assert threads == {"serial": None, "mt_1": 1, "mt_2": 2, "mt_32": 32}
    assert p["variant_definition"]["workqueue"] == "unbound"
    assert p["variant_definition"]["profile"] == "mt_sysctl_v1"
    assert p["variant_key"] == "kernel_variants[1]"


def test_the_record_is_merged_over_kernel_variant_defaults():
    """What to sweep comes from the variant's one record, over kernel_variant_defaults (as the
    kernel build merges it); the record's build keys are the kernel build's, not looked at."""
    d = definition(
        kernel_variant_defaults={"knob_profile": "mt_sysctl_v1", "source": {"git": {}}},
        kernel_variants=[
            {"name": "vanilla", "knob_profile": "vanilla", "description": "Debian's, as is"},
            {"name": "mt", "copy_configs": ["serial", "mt_4"], "patches": [{"file": "x"}]},
        ],
        kernel_variant="mt",
    )
    p = expand(d)
    assert p["variant_definition"] == {
        "profile": "mt_sysctl_v1",
        "workqueue": None,
        "copy_configs": ["serial", "mt_4"],
        "knob_params": {},
    }
    assert {c["copy_config"] for c in p["cells"]} == {"serial", "mt_4"}
    assert expand(dict(d, kernel_variant="vanilla"))["variant_definition"]["copy_configs"] == [
        "vanilla"
    ]


def test_order_is_deterministic_and_seeded():
    a = expand(definition(seed=7))
    b = expand(definition(seed=7))
    c = expand(definition(seed=8))
    seq = expand(definition(order="sequential"))
    assert [x["cell_id"] for x in a["cells"]] == [x["cell_id"] for x in b["cells"]]
    assert Counter(x["cell_id"] for x in a["cells"]) == Counter(x["cell_id"] for x in seq["cells"])
    assert a["seed"] == 7 and c["seed"] == 8
    assert [x["cell_id"] for x in seq["cells"]] == [
        "vanilla:idle:vanilla:base:32",
        "vanilla:idle:vanilla:base:256",
        "vanilla:idle:vanilla:2M:1",
        "vanilla:idle:vanilla:2M:4",
    ]


def test_interleave_rotates_configurations():
    records = [
        {"name": "mt", "knob_profile": "mt_sysctl_v1", "copy_configs": ["serial", "mt_2", "mt_4"]}
    ]
    p = expand(
        definition(
            kernel_variants=records,
            kernel_variant="mt",
            order="interleave",
            folio_kinds=["2M"],
            page_counts={"2M": [1, 2, 4]},
        )
    )
    cells = p["cells"]
    groups = [cells[i : i + 3] for i in range(0, 9, 3)]
    for g in groups:  # one (kind, count) per group, every configuration once
        assert len({(c["page_kind"], c["page_count"]) for c in g}) == 1
        assert sorted(c["copy_config"] for c in g) == ["mt_2", "mt_4", "serial"]
    firsts = [g[0]["copy_config"] for g in groups]
    assert len(set(firsts)) == 3  # no configuration always runs first


def test_workqueue_none_means_null():
    records = [{"name": "v", "copy_configs": ["vanilla"], "workqueue": "none"}]
    plan = expand(definition(kernel_variants=records, kernel_variant="v"))
    assert plan["variant_definition"]["workqueue"] is None


def test_plan_hash_identity():
    a = expand(definition())
    assert a["plan_hash"] == expand(definition(cell_timeout_seconds=5))["plan_hash"]
    assert a["plan_hash"] == expand(definition(settle_seconds=3))["plan_hash"]
    assert a["plan_hash"] != expand(definition(repetitions=5))["plan_hash"]
    assert (
        a["plan_hash"] != expand(definition(page_counts={"base": [32], "2M": [1, 4]}))["plan_hash"]
    )


def test_load_plan_rejects_a_tampered_plan():
    p = expand(definition())
    assert load_plan(json.loads(json.dumps(p)))["plan_hash"] == p["plan_hash"]
    p["cells"][0]["page_count"] = 999
    with pytest.raises(PlanError, match="do not match"):
        load_plan(p)


@pytest.mark.parametrize(
    "over, key, text",
    [
        (
            {"page_counts": {"base": [0, 32], "2M": [1]}},
            "sweep_page_counts.base[0]",
            "positive integer",
        ),
        (
            {"page_counts": {"base": [32], "2M": [-4]}},
            "sweep_page_counts.2M[0]",
            "positive integer",
        ),
        (
            {"page_counts": {"base": [32], "2M": [True]}},
            "sweep_page_counts.2M[0]",
            "positive integer",
        ),
        ({"page_counts": {"base": [32]}}, "sweep_page_counts.2M", "missing"),
        (
            {"page_counts": {"base": [32], "2M": [1], "2m": [2]}},
            "sweep_page_counts.2m",
            "unknown folio kind",
        ),
        (
            {"page_counts": {"base": [32], "2M": [1], "64K": [0]}},
            "sweep_page_counts.64K[0]",
            "positive integer",
        ),
        ({"folio_kinds": ["base", "huge"]}, "sweep_folio_kinds[1]", "unknown folio kind"),
        ({"folio_kinds": ["base", "3M"]}, "sweep_folio_kinds[1]", "power of two"),
        ({"folio_kinds": ["base", "4K"]}, "sweep_folio_kinds[1]", "between 8K and 1G"),
        ({"folio_kinds": ["base", "base"]}, "sweep_folio_kinds[1]", "duplicate"),
        ({"repetitions": 0}, "sweep_repetitions", ">= 1"),
        ({"repetitions": "10"}, "sweep_repetitions", "integer"),
        ({"warmup": -1}, "sweep_warmup", ">= 0"),
        ({"loads": ["idle", "heavy"]}, "sweep_loads[1]", "unknown load"),
        ({"order": "random"}, "sweep_order", "must be one of"),
        ({"dst_node": 0}, "sweep_dst_node", "must differ"),
        ({"run_id": ""}, "sweep_run_id", "required"),
        ({"run_id": "../x"}, "sweep_run_id", "must be a name"),
        ({"kernel_variant": "other"}, "sweep_kernel_variant", "not the name of a kernel variant"),
        ({"kernel_variants": []}, "kernel_variants", "non-empty list"),
        ({"bogus": 1}, "sweep_bogus", "unknown key"),
        ({"tuning": {"thp_enabled": "never"}}, "sweep_tuning.thp_enabled", "impossible"),
        ({"tuning": {"numa_balancing": 2}}, "sweep_tuning.numa_balancing", "must be one of"),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "auto", "copy_configs": ["mt_0"]}
                ]
            },
            "kernel_variants[0].copy_configs[0]",
            "unknown copy config",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "auto", "copy_configs": ["mt_128"]}
                ]
            },
            "kernel_variants[0].copy_configs[0]",
            "outside the range of any knob profile (1..64)",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "mt_sysctl_v1", "copy_configs": ["mt_64"]}
                ]
            },
            "kernel_variants[0].copy_configs[0]",
            "outside the range of profile 'mt_sysctl_v1'",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "dcbm_sysfs_v4", "copy_configs": ["dma_17"]}
                ]
            },
            "kernel_variants[0].copy_configs[0]",
            "(1..16)",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "dcbm_sysfs_v4", "copy_configs": ["mt_4"]}
                ]
            },
            "kernel_variants[0].copy_configs[0]",
            "not offered by knob profile",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "vanilla", "copy_configs": ["serial"]}
                ]
            },
            "kernel_variants[0].copy_configs[0]",
            "not offered",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "knob_profile": "nope", "copy_configs": ["vanilla"]}
                ]
            },
            "kernel_variants[0].knob_profile",
            "unknown knob profile",
        ),
        (
            {"kernel_variants": [{"name": "vanilla", "copy_configs": []}]},
            "kernel_variants[0].copy_configs",
            "non-empty list",
        ),
        (
            {
                "kernel_variants": [
                    {"name": "vanilla", "copy_configs": ["vanilla"], "workqueue": "fast"}
                ]
            },
            "kernel_variants[0].workqueue",
            "must be one of",
        ),
        (
            {
                "kernel_variants": [
                    {
                        "name": "vanilla",
                        "knob_profile": "mt_sysctl_v1",
                        "copy_configs": ["serial"],
                        "knob_params": {"push_0_pull_1": 2},
                    }
                ]
            },
            "kernel_variants[0].knob_params.push_0_pull_1",
            "must be one of 0, 1",
        ),
        (
            {"stress_loads": {"busy": [{"stressor": "cpu", "workers": -1}]}, "loads": ["busy"]},
            "sweep_stress_loads.busy[0].workers",
            ">= 0",
        ),
        (
            {"stress_loads": {"busy": [{"stressor": "CPU!"}]}, "loads": ["busy"]},
            "sweep_stress_loads.busy[0].stressor",
            "metacharacter",
        ),
    ],
)
def test_bad_definitions_name_the_key(over, key, text):
    with pytest.raises(PlanError) as exc:
        expand(definition(**over))
    assert exc.value.key == key, str(exc.value)
    assert text in str(exc.value)


@pytest.mark.parametrize(
    "value", ["a;b", "a|b", "$(reboot)", "`id`", "a b", "x&&y", "a>b", "a\nb", "it's"]
)
def test_shell_metacharacters_are_rejected_with_the_key(value):
    with pytest.raises(PlanError) as exc:
        expand(definition(name=value))
    assert exc.value.key == "sweep_name"
    assert "metacharacter" in str(exc.value)
    with pytest.raises(PlanError) as exc:
        expand(
            definition(
                stress_loads={"busy": [{"stressor": "cpu", "options": {"cpu-method": value}}]},
                loads=["busy"],
            )
        )
    assert exc.value.key == "sweep_stress_loads.busy[0].options.cpu-method"


def test_plan_command_line_names_the_key():
    d = definition(page_counts={"base": [32], "2M": [0]})
    r = subprocess.run(
        [sys.executable, "-m", "miglab_host", "plan", "--definition", "-"],
        input=json.dumps(d),
        capture_output=True,
        text=True,
        cwd=RUNNER_DIR,
        check=False,
    )
    assert r.returncode == 2
    assert "sweep_page_counts.2M[0]: page count must be a positive integer, got 0" in r.stderr
    assert r.stdout == ""


def _inventory_definition(inventory: Path) -> dict:
    """The definition the sweep role builds: role defaults overlaid with the inventory's
    group_vars (the sweep in lab/sweep.yml, the variant records in all/kernel_variants.yml)."""
    defaults = yaml.safe_load((REPO / "roles/sweep/defaults/main.yml").read_text())
    values = dict(defaults)
    values.update(yaml.safe_load((inventory / "group_vars/lab/sweep.yml").read_text()))
    records = yaml.safe_load((inventory / "group_vars/all/kernel_variants.yml").read_text())
    out = {key: records[key] for key in planmod.VARIANT_RECORD_KEYS if key in records}
    for key in planmod.DEFAULTS:
        if f"sweep_{key}" in values:
            out[key] = values[f"sweep_{key}"]
    return out


def test_example_lab_carries_the_thread_matrix():
    d = _inventory_definition(REPO / "inventory/example-lab")
    d["run_id"] = "example"
    assert d["page_counts"]["2M"] == [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 768, 1024]
    assert d["page_counts"]["base"] == [32, 256, 512, 768, 1024]
    assert d["repetitions"] == 10
    plans = {
        record["name"]: expand(dict(d, kernel_variant=record["name"]))
        for record in d["kernel_variants"]
    }
    assert set(plans) == {"vanilla", "mt-unbound", "mt-highpri"}
    thread_columns = ["serial"] + [f"mt_{n}" for n in (1, 2, 4, 8, 16, 32)]
    for name, plan in plans.items():
        configs = plan["variant_definition"]["copy_configs"]
        assert configs == (["vanilla"] if name == "vanilla" else thread_columns), name
        assert len(plan["cells"]) == len(d["loads"]) * len(configs) * (12 + 5)
    assert plans["mt-unbound"]["variant_definition"]["workqueue"] == "unbound"
    assert plans["mt-highpri"]["variant_definition"]["workqueue"] == "highpri"
    assert {p["variant_definition"]["profile"] for n, p in plans.items() if n != "vanilla"} == {
        "mt_sysctl_v1"
    }


def test_vlab_sweep_is_small_and_valid():
    d = _inventory_definition(REPO / "inventory/vlab")
    d["run_id"] = "vlab"
    p = expand(d)
    assert set(d["loads"]) == {"idle", "busy"}
    assert set(d["folio_kinds"]) == {"base", "2M", "64K"}
    # sweep_kernel_variant: vanilla, one column (sweep.yml alone, the running kernel)
    assert len(p["cells"]) <= 12
    # the patched variants: serial and mt_1, mt_2, mt_4 on every kind and load
    mt = expand(dict(d, kernel_variant="mt-unbound"))
    assert mt["variant_definition"]["copy_configs"] == ["serial", "mt_1", "mt_2", "mt_4"]
    assert len(mt["cells"]) == 2 * 4 * 6
    # ~1 GiB per guest node: the largest THP cell must stay well below it
    assert max(d["page_counts"]["2M"]) * 2 <= 256
