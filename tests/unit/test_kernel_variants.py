"""Validation of kernel variants (miglab.lab.variants, behind library/kernel_variants.py) and the
per-host build planning filters (roles/kernel_build/filter_plugins/kernel_build.py)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from kernel_testlib import FILTERS, REPO, load
from miglab.lab import variants as variants_module

filters = load(FILTERS, "kernel_build_filters")


@pytest.fixture()
def lab(tmp_path: Path) -> Path:
    (tmp_path / "patches").mkdir()
    (tmp_path / "patches" / "0001-a.patch").write_text("diff --git a/x b/x\n--- a/x\n+++ b/x\n")
    (tmp_path / "patches" / "empty.patch").write_text("")
    (tmp_path / "patches" / "notes.txt").write_text("just words\n")
    (tmp_path / "lab.config").write_text("# comment\nCONFIG_NUMA=y\n# CONFIG_EFI is not set\n")
    (tmp_path / "bad.config").write_text('CONFIG_CMDLINE="console=ttyS0"\nCONFIG_HZ=banana\n')
    return tmp_path


def validate(
    variants: Any, base_dir: Path, **kwargs: Any
) -> tuple[list[dict[str, Any]], list[str]]:
    defaults = kwargs.pop("defaults", {"source": {"debian_package": "linux-source-6.12"}})
    kwargs.setdefault("groups", ["all", "lab", "grace", "x86"])
    kwargs.setdefault("hosts", ["grace1", "epyc1"])
    return variants_module.validate_variants(variants, defaults, str(base_dir), **kwargs)


def test_a_good_variant_is_normalised(lab: Path) -> None:
    variants, errors = validate(
        [
            {"name": "vanilla"},
            {
                "name": "mt-highpri",
                "patches": [
                    {"message_id": "<20250103172419.4148674-1-ziy@nvidia.com>"},
                    {"file": "patches/0001-a.patch"},
                ],
                "config": {
                    "base": "defconfig",
                    "targets": ["kvm_guest.config"],
                    "fragments": ["lab.config"],
                    "options": ["CONFIG_HZ_1000=y"],
                },
                "group_options": {"grace": ["CONFIG_ARM64_64K_PAGES=y"]},
                "knob_profile": "mt_sysctl_v1",
                "workqueue": "highpri",
                "boot_timeout": 900,
            },
        ],
        lab,
    )
    assert errors == []
    assert [v["name"] for v in variants] == ["vanilla", "mt-highpri"]
    assert variants[0]["source"] == {"kind": "debian_package", "package": "linux-source-6.12"}
    assert variants[0]["config"]["base"] == {"kind": "make", "target": "defconfig"}
    mt = variants[1]
    assert mt["patches"][0] == {
        "kind": "message_id",
        "message_id": "20250103172419.4148674-1-ziy@nvidia.com",
        "name": "20250103172419.4148674-1-ziy@nvidia.com",
    }
    assert mt["patches"][1]["path"] == str(lab / "patches" / "0001-a.patch")
    assert len(mt["patches"][1]["sha256"]) == 64
    assert mt["config"]["fragments"][0]["text"].startswith("# comment")
    assert mt["group_options"] == {"grace": ["CONFIG_ARM64_64K_PAGES=y"]}


@pytest.mark.parametrize(
    ("variants", "expected"),
    [
        ([], "kernel_variants: must be a non-empty list"),
        ([{"name": "Vanilla"}], "kernel_variants[0].name: 'Vanilla'"),
        (
            [{"name": "a"}, {"name": "a"}],
            "kernel_variants[1].name: 'a' is also kernel_variants[0].name",
        ),
        (
            [{"name": "a", "source": {"git": {"url": "x"}}}],
            "kernel_variants[0].source.git: must be a mapping with url and ref",
        ),
        (
            [{"name": "a", "source": {"tarball": "/t.tar", "debian_package": "linux-source-6.12"}}],
            "kernel_variants[0].source: must have exactly one of",
        ),
        (
            [{"name": "a", "source": {"debian_package": "linux-6.12"}}],
            "kernel_variants[0].source.debian_package",
        ),
        (
            [
                {"name": "a"},
                {"name": "b"},
                {"name": "c", "patches": [{"file": "patches/missing.patch"}]},
            ],
            "kernel_variants[2].patches[0].file: ",
        ),
        (
            [{"name": "a", "patches": [{"file": "patches/0001-a.patch", "mbox": "x"}]}],
            "kernel_variants[0].patches[0]: must have exactly one of file, mbox, message_id",
        ),
        (
            [{"name": "a", "patches": [{"files": "x"}]}],
            "kernel_variants[0].patches[0]: unknown key(s) files",
        ),
        (
            [{"name": "a", "patches": [{"file": "patches/empty.patch"}]}],
            "kernel_variants[0].patches[0].file: ",
        ),
        ([{"name": "a", "patches": [{"mbox": "patches/notes.txt"}]}], "contains no diff"),
        (
            [{"name": "a", "patches": [{"message_id": "not a message id"}]}],
            "kernel_variants[0].patches[0].message_id",
        ),
        (
            [{"name": "a", "config": {"base": "/boot/config-6.1.0"}}],
            "kernel_variants[0].config.base",
        ),
        (
            [{"name": "a", "config": {"base": {"file": "nope.config"}}}],
            "kernel_variants[0].config.base.file",
        ),
        (
            [{"name": "a", "config": {"fragments": ["nope.config"]}}],
            "kernel_variants[0].config.fragments[0]",
        ),
        (
            [{"name": "a", "config": {"options": ["CONFIG NUMA"]}}],
            "kernel_variants[0].config.options[0]",
        ),
        (
            [{"name": "a", "config": {"option": []}}],
            "kernel_variants[0].config: unknown key(s) option",
        ),
        (
            [{"name": "a", "group_options": {"arm": ["CONFIG_ARM64_64K_PAGES=y"]}}],
            "kernel_variants[0].group_options.arm: no inventory group 'arm'",
        ),
        (
            [{"name": "a", "hosts": ["grace9"]}],
            "kernel_variants[0].hosts: no inventory host 'grace9'",
        ),
        (
            [{"name": "a", "knob_profile": "mt_sysctl_v9"}],
            "kernel_variants[0].knob_profile: unknown knob profile 'mt_sysctl_v9'",
        ),
        ([{"name": "a", "workqueue": "fast"}], "kernel_variants[0].workqueue: must be one of"),
        # What the sweep measures on a variant is part of its one record, checked here by the
        # sweep planner's own code against the knob profiles (profiles.json).
        (
            [{"name": "a", "knob_profile": "mt_sysctl_v1", "copy_configs": ["mt_64"]}],
            "kernel_variants[0].copy_configs[0]: 64 mt threads/channels is outside the range "
            "of profile 'mt_sysctl_v1' (1..32)",
        ),
        (
            [{"name": "a", "knob_profile": "mt_sysctl_v1", "copy_configs": ["serial", "dma_2"]}],
            "kernel_variants[0].copy_configs[1]: copy config 'dma_2' is not offered by knob "
            "profile 'mt_sysctl_v1'",
        ),
        (
            [{"name": "a", "copy_configs": ["mt_4"]}],
            "kernel_variants[0].copy_configs[0]: copy config 'mt_4' is not offered by knob "
            "profile 'vanilla'",
        ),
        (
            [{"name": "a", "copy_configs": ["fast"]}],
            "kernel_variants[0].copy_configs[0]: unknown copy config 'fast'",
        ),
        (
            [{"name": "a", "copy_configs": ["vanilla", "vanilla"]}],
            "kernel_variants[0].copy_configs[1]: duplicate entry 'vanilla'",
        ),
        (
            [{"name": "a", "knob_profile": "mt_sysctl_v1", "knob_params": {"threads": 4}}],
            "kernel_variants[0].knob_params.threads: profile 'mt_sysctl_v1' has no parameter",
        ),
        (
            [{"name": "a"}, {"name": "b"}, {"name": "a"}],
            "kernel_variants[2].name: 'a' is also kernel_variants[0].name",
        ),
        ([{"name": "a", "boot_timeout": 5}], "kernel_variants[0].boot_timeout"),
        ([{"name": "a", "patchs": []}], "kernel_variants[0]: unknown key(s) patchs"),
        # Names are names, values are values: nothing escapes its place.
        (
            [
                {
                    "name": "a",
                    "source": {"git": {"url": "--upload-pack=touch /tmp/x", "ref": "main"}},
                }
            ],
            "kernel_variants[0].source.git.url: '--upload-pack=touch /tmp/x' is not a repository URL",
        ),
        (
            [{"name": "a", "source": {"git": {"url": "https://x.org/r.git", "ref": "--help"}}}],
            "kernel_variants[0].source.git.ref: '--help' is not a tag, branch or commit name",
        ),
        (
            [{"name": "a", "patches": [{"message_id": "../../../../tmp/evil@x"}]}],
            "kernel_variants[0].patches[0].message_id: '../../../../tmp/evil@x' is not a Message-ID",
        ),
        (
            [{"name": "a", "patches": [{"message_id": "--help@x"}]}],
            "kernel_variants[0].patches[0].message_id: '--help@x' is not a Message-ID",
        ),
        (
            [{"name": "a", "config": {"options": ["CONFIG_NUMA=maybe"]}}],
            "kernel_variants[0].config.options[0]: 'CONFIG_NUMA=maybe' is not a kernel option line",
        ),
        (
            [{"name": "a", "config": {"options": ["CONFIG_HZ=banana"]}}],
            "kernel_variants[0].config.options[0]: 'CONFIG_HZ=banana' is not a kernel option line",
        ),
        (
            [{"name": "a", "config": {"fragments": ["bad.config"]}}],
            "bad.config:2: 'CONFIG_HZ=banana' is not a kernel option line",
        ),
    ],
)
def test_errors_name_the_offending_key(lab: Path, variants: Any, expected: str) -> None:
    _, errors = validate(variants, lab)
    assert any(expected in error for error in errors), errors


def test_selecting_an_unknown_variant_is_an_error(lab: Path) -> None:
    _, errors = validate([{"name": "vanilla"}], lab, select=["mt"])
    assert errors == ["kernel_build_variants[0]: no variant named 'mt' (have vanilla)"]


def test_defaults_merge_config_one_level_deep(lab: Path) -> None:
    defaults = {
        "source": {"debian_package": "linux-source-6.12"},
        "config": {"base": "x86_64_defconfig", "fragments": ["lab.config"]},
        "boot_timeout": 400,
    }
    variants, errors = validate(
        [
            {"name": "a", "config": {"options": ["CONFIG_HZ_1000=y"]}},
            {"name": "b", "boot_timeout": 150},
        ],
        lab,
        defaults=defaults,
    )
    assert errors == []
    assert variants[0]["config"]["base"]["target"] == "x86_64_defconfig"
    assert variants[0]["config"]["options"] == ["CONFIG_HZ_1000=y"]
    assert [v["boot_timeout"] for v in variants] == [400, 150]


@pytest.mark.parametrize("lab_name", ["vlab", "example-lab"])
def test_the_repository_inventories_validate(lab_name: str) -> None:
    data = yaml.safe_load(
        (REPO / "inventory" / lab_name / "group_vars" / "all" / "kernel_variants.yml").read_text()
    )
    base_dir = REPO / "kernels" / lab_name
    variants, errors = variants_module.validate_variants(
        data["kernel_variants"],
        data.get("kernel_variant_defaults", {}),
        str(base_dir),
        groups=["all", "lab", "grace", "x86", "controller"],
        hosts=["vnode1", "vnode2", "grace1", "grace2", "epyc1", "localhost"],
    )
    assert errors == []
    names = [v["name"] for v in variants]
    assert (
        names
        == {
            "vlab": ["vanilla", "broken", "mt-unbound", "mt-highpri"],
            "example-lab": ["vanilla", "mt-unbound", "mt-highpri"],
        }[lab_name]
    )
    # The thread's two patched kernels: the same knobs, one workqueue each.
    patched = {v["name"]: v for v in variants if v["knob_profile"] == "mt_sysctl_v1"}
    assert {v["workqueue"] for v in patched.values()} == {"unbound", "highpri"}


def test_one_build_per_variant_architecture_and_config(lab: Path) -> None:
    variants, errors = validate(
        [
            {"name": "vanilla", "config": {"base": "defconfig"}},
            {"name": "one", "hosts": ["grace1"]},
            {
                "name": "mt",
                "groups": ["grace"],
                "group_options": {"grace": ["CONFIG_ARM64_64K_PAGES=y"]},
                "patches": [{"message_id": "20250103172419.4148674-1-ziy@nvidia.com"}],
            },
        ],
        lab,
    )
    assert errors == []

    def requests(
        host: str, machine: str, groups: list[str], options: list[str]
    ) -> list[dict[str, Any]]:
        return list(
            filters.kernel_build_requests(
                variants,
                machine,
                "Debian",
                groups,
                options,
                ["CONFIG_NUMA"],
                "/w",
                "/p",
                None,
                host,
            )
        )

    grace1 = requests("grace1", "aarch64", ["lab", "grace"], [])
    grace2 = requests("grace2", "aarch64", ["lab", "grace"], [])
    epyc = requests("epyc1", "x86_64", ["lab", "x86"], ["CONFIG_X86_64_ACPI_NUMA=y"])
    assert [r["variant"] for r in grace1] == ["vanilla", "one", "mt"]  # one: grace1 only
    assert [r["variant"] for r in grace2] == ["vanilla", "mt"]
    assert [r["variant"] for r in epyc] == ["vanilla"]  # mt is for the grace group only
    mt = grace1[2]
    assert mt["kernel_arch"] == "arm64"
    assert (
        "CONFIG_ARM64_64K_PAGES=y" in mt["config"]["options"]
        and "CONFIG_ARM64_64K_PAGES=y" in mt["required"]
    )
    assert mt["patches"][0]["controller_path"] == "/p/20250103172419.4148674-1-ziy@nvidia.com.mbx"
    assert "CONFIG_X86_64_ACPI_NUMA=y" in epyc[0]["required"]
    unique = filters.kernel_build_unique(grace2 + grace1 + epyc)
    # one build per key, in the inventory's order of variants (a build then follows the
    # variant it differs least from), hosts in the order given within a variant
    assert [(u["variant"], u["kernel_arch"]) for u in unique] == [
        ("vanilla", "arm64"),
        ("vanilla", "x86"),
        ("one", "arm64"),
        ("mt", "arm64"),
    ]


def test_build_failures_and_results_from_job_results() -> None:
    request = {
        "key": "k1",
        "variant": "mt",
        "arch": "x86_64",
        "knob_profile": "mt_sysctl_v1",
        "workqueue": "unbound",
        "boot_timeout": None,
    }
    ok = {
        "rc": 0,
        "item": request,
        "stdout_lines": [
            '{"build_hash": "ab", "kernel_release": "6.12-mt-ab", '
            '"packages": ["/c/ab/i.deb"], "image_package": "/c/ab/i.deb"}'
        ],
    }
    bad = {
        "rc": 2,
        "item": {**request, "key": "k2", "variant": "broken"},
        "stdout_lines": [
            '{"failed": true, "error": "variant broken: patch 1 (x.patch) does not apply to mm/migrate.c"}'
        ],
    }
    assert filters.kernel_build_failures([ok, bad]) == [
        "kernel build broken (x86_64): variant broken: patch 1 (x.patch) does not apply to mm/migrate.c"
    ]
    results = filters.kernel_build_results([request], [ok, bad], "buildbox", "/home")
    assert results["mt"]["packages"] == ["/home/ab/i.deb"]
    assert results["mt"]["workqueue"] == "unbound" and results["mt"]["packages_on"] == "controller"


def test_which_host_gets_which_variant(lab: Path) -> None:
    variants, errors = validate(
        [
            {"name": "vanilla"},
            {"name": "canary", "hosts": ["epyc1"]},
            {"name": "grace-only", "groups": ["grace"]},
        ],
        lab,
    )
    assert errors == []
    by_host = variants_module.variants_by_host(
        variants, {"grace1": ["all", "lab", "grace"], "epyc1": ["all", "lab", "x86"]}
    )
    assert by_host == {"grace1": ["vanilla", "grace-only"], "epyc1": ["vanilla", "canary"]}


HOST_GROUPS = {"grace1": ["all", "lab", "grace"], "epyc1": ["all", "lab", "x86"]}
HOST_ARCH = {"grace1": "aarch64", "epyc1": "x86_64"}


def test_an_option_of_another_architecture_names_its_key_and_the_host(lab: Path) -> None:
    raw = [
        {"name": "vanilla"},
        {
            "name": "mt",
            "config": {"options": ["CONFIG_NUMA=y", "# CONFIG_X86_5LEVEL is not set"]},
            # a 64 KiB variant asked for the x86 group
            "group_options": {"x86": ["CONFIG_ARM64_64K_PAGES=y"], "grace": ["ARM64_64K_PAGES"]},
        },
    ]
    variants, errors = validate(raw, lab)
    assert errors == []
    problems = variants_module.architecture_mismatches(
        variants,
        [v["name"] for v in raw],
        HOST_GROUPS,
        HOST_ARCH,
        {"epyc1": ["CONFIG_NUMA=y", "CONFIG_ARM_GIC_V3=y"]},
    )
    assert problems == [
        "kernel_variants[1].config.options[1]: # CONFIG_X86_5LEVEL is not set is an x86 option, "
        "and grace1 (groups all, grace, lab) is aarch64",
        "lab_arch_kernel_options[1] (host epyc1): CONFIG_ARM_GIC_V3=y is an arm option, and "
        "epyc1 is x86_64",
        "kernel_variants[1].group_options.x86[0]: CONFIG_ARM64_64K_PAGES=y is an arm64 option, "
        "and epyc1 (groups all, lab, x86) is x86_64",
    ]


def test_hosts_of_unknown_architecture_are_not_judged(lab: Path) -> None:
    raw = [{"name": "v", "config": {"options": ["CONFIG_ARM64_64K_PAGES=y"]}}]
    variants, _ = validate(raw, lab)
    assert variants_module.architecture_mismatches(variants, ["v"], HOST_GROUPS, {}, {}) == []
    # an aarch64 host may ask for arm64 options
    assert (
        variants_module.architecture_mismatches(
            variants, ["v"], {"grace1": HOST_GROUPS["grace1"]}, HOST_ARCH, {}
        )
        == []
    )


@pytest.mark.vlab  # a real ansible-playbook run: the slow suite
def test_the_check_play_refuses_a_64k_option_for_the_x86_group_before_any_host(
    tmp_path: Path,
) -> None:
    import subprocess

    done = subprocess.run(
        [
            str(REPO / ".venv" / "bin" / "ansible-playbook"),
            "-i",
            "inventory/example-lab/hosts.yml",
            "playbooks/check.yml",
            "-e",
            '{"kernel_variant_defaults": {"source": {"debian_package": "linux-source-6.12"},'
            ' "group_options": {"x86": ["CONFIG_ARM64_64K_PAGES=y"]}}}',
        ],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode != 0
    # The example lab's hosts are placeholders (192.0.2.x): had the play contacted one, it
    # would have failed as unreachable instead.
    assert "unreachable=1" not in done.stdout
    assert (
        "group_options.x86[0]: CONFIG_ARM64_64K_PAGES=y is an arm64 option, and epyc1 "
        "(groups lab, x86) is x86_64"
    ) in done.stdout + done.stderr
