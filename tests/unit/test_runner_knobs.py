"""Knob profiles and host tuning against fake knob trees (tmp_path): detection, writes with
read-back, reset between configurations, restore at the end and on exceptions."""

from __future__ import annotations

import json
import os

import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
from miglab_host.journal import RunDir, write_json_atomic
from miglab_host.knobs import (
    KnobError,
    KnobSession,
    Restorer,
    SysTree,
    detect_profile,
    equivalent,
    load_profiles,
    parse_copy_config,
    selected_value,
)
from miglab_host.runner import boot_id, restore_from_state
from miglab_host.tuning import HostTuning, offered_sizes
from miglab_runner_testlib import add_profile_knobs, fake_host_tree, read, write

PROFILES = ["mt_sysctl_v1", "cpu_mt_v2", "dcbm_sysfs_v4", "dcbm_module_v6"]


def session(tmp_path, profile, requested="auto", params=None):
    add_profile_knobs(tmp_path, profile)
    tree = SysTree(str(tmp_path))
    return KnobSession.open(tree, requested, Restorer(tree), params)


def test_profiles_are_data_and_consistent():
    data = load_profiles()
    assert set(data["detect_order"]) == set(data["profiles"]) - {"vanilla"}
    for name, p in data["profiles"].items():
        assert "vanilla" in p["configs"], name
        for family in ("mt", "dma"):
            assert (family in p["configs"]) == (family in p["threads"]), (name, family)
        for writes in p["configs"].values():
            for w in writes:
                assert not w["path"].startswith("/")


@pytest.mark.parametrize("profile", PROFILES)
def test_detection(tmp_path, profile):
    add_profile_knobs(tmp_path, profile)
    assert detect_profile(SysTree(str(tmp_path)))[0] == profile


def test_no_knobs_is_vanilla(tmp_path):
    assert detect_profile(SysTree(str(tmp_path))) == ("vanilla", [])


def test_parse_copy_config():
    assert parse_copy_config("mt_16") == ("mt", 16)
    assert parse_copy_config("dma_2") == ("dma", 2)
    assert parse_copy_config("serial") == ("serial", None)
    for bad in ("mt_0", "mt_", "mt_4 ", "dma-2", "threads_4", 4):
        with pytest.raises(ValueError):
            parse_copy_config(bad)


def test_mt_sysctl_writes_read_back_and_reset(tmp_path):
    s = session(tmp_path, "mt_sysctl_v1")
    assert s.name == "mt_sysctl_v1"
    assert s.apply("mt_8") == {"proc/sys/vm/limit_mt_num": "8", "proc/sys/vm/use_mt_copy": "1"}
    assert read(tmp_path, "proc/sys/vm/use_mt_copy") == "1"
    s.apply("serial")  # limit_mt_num goes back to the kernel default
    assert read(tmp_path, "proc/sys/vm/use_mt_copy") == "0"
    assert read(tmp_path, "proc/sys/vm/limit_mt_num") == "4"
    s.apply("mt_2")
    s.apply("vanilla")  # vanilla: everything back to the original values, nothing written
    assert read(tmp_path, "proc/sys/vm/use_mt_copy") == "0"
    assert read(tmp_path, "proc/sys/vm/limit_mt_num") == "4"


def test_params_are_written_for_every_non_vanilla_config(tmp_path):
    s = session(tmp_path, "mt_sysctl_v1", params={"push_0_pull_1": 1})
    s.apply("mt_4")
    assert read(tmp_path, "proc/sys/vm/push_0_pull_1") == "1"
    s.apply("vanilla")
    assert read(tmp_path, "proc/sys/vm/push_0_pull_1") == "0"


def test_cpu_mt_one_migrator_at_a_time(tmp_path):
    s = session(tmp_path, "cpu_mt_v2")
    s.apply("dma_4")
    assert read(tmp_path, "sys/kernel/dcbm/offloading") == "1"
    assert read(tmp_path, "sys/kernel/dcbm/nr_dma_chan") == "4"
    assert read(tmp_path, "sys/kernel/cpu_mt/offloading") == "0"
    s.apply("mt_16")
    assert read(tmp_path, "sys/kernel/dcbm/offloading") == "0"
    assert read(tmp_path, "sys/kernel/cpu_mt/offloading") == "1"
    assert read(tmp_path, "sys/kernel/cpu_mt/threads") == "16"
    assert read(tmp_path, "sys/kernel/dcbm/nr_dma_chan") == "1"  # reset


def test_cpu_mt_without_the_dma_copier(tmp_path):
    add_profile_knobs(tmp_path, "cpu_mt_v2")
    for name in ("offloading", "nr_dma_chan"):
        (tmp_path / "sys/kernel/dcbm" / name).unlink()
    s = KnobSession.open(SysTree(str(tmp_path)), "auto", Restorer(SysTree(str(tmp_path))))
    s.apply("mt_4")  # the optional dcbm write is skipped
    assert read(tmp_path, "sys/kernel/cpu_mt/offloading") == "1"
    with pytest.raises(KnobError, match="needs /sys/kernel/dcbm/nr_dma_chan"):
        s.apply("dma_2")


def test_module_bool_parameter_reads_back_as_y_n(tmp_path):
    s = session(tmp_path, "dcbm_module_v6")
    tree = s.tree
    real_write = tree.write

    def kernel_like_write(rel, value):  # a bool module parameter stores Y/N
        real_write(rel, {"1": "Y", "0": "N"}.get(value, value))

    tree.write = kernel_like_write
    s.apply("dma_8")
    assert read(tmp_path, "sys/module/dcbm/parameters/offloading") == "Y"
    assert s.counters() == {
        "sys/module/dcbm/parameters/folios_migrated": "0",
        "sys/module/dcbm/parameters/folios_failures": "0",
    }
    report = s.restorer.restore()
    assert all(e["restored"] for e in report.values())
    assert read(tmp_path, "sys/module/dcbm/parameters/offloading") == "N"


def test_read_back_mismatch_is_an_error(tmp_path):
    s = session(tmp_path, "mt_sysctl_v1")
    real_write = s.tree.write

    def clamping_write(rel, value):  # a kernel that silently clamps the thread count
        real_write(rel, "4" if rel.endswith("limit_mt_num") else value)

    s.tree.write = clamping_write
    with pytest.raises(KnobError, match="wrote '32' but read back '4'"):
        s.apply("mt_32")


def test_rejected_write_is_an_error(tmp_path):
    s = session(tmp_path, "mt_sysctl_v1")
    (tmp_path / "proc/sys/vm/limit_mt_num").unlink()
    (tmp_path / "proc/sys/vm/limit_mt_num").mkdir()  # writing it fails like EINVAL would
    with pytest.raises(KnobError, match="^/proc/sys/vm/limit_mt_num: "):
        s.apply("mt_4")


@pytest.mark.skipif(os.geteuid() != 0, reason="writes a sysctl (the kernel refuses it)")
def test_a_value_the_running_kernel_rejects_names_the_file_and_both_values():
    """A real sysctl that refuses an out-of-range value, as vm.limit_mt_num refuses 0 and 33:
    the error names the file, the value asked for and the value still in force."""
    tree = SysTree("/")
    rel = "proc/sys/vm/overcommit_memory"  # 0..2
    before = tree.read_value(rel)
    restorer = Restorer(tree)
    with pytest.raises(KnobError) as exc:
        restorer.write(rel, "3")
    assert str(exc.value) == (
        f"/{rel}: writing '3' failed: Invalid argument; it still reads {before!r}"
    )
    assert restorer.restore()[rel]["restored"] is True
    assert tree.read_value(rel) == before


@pytest.mark.parametrize(
    "profile, config, message",
    [
        ("mt_sysctl_v1", "mt_64", "outside the range of knob profile 'mt_sysctl_v1' (1..32)"),
        ("mt_sysctl_v1", "dma_2", "not offered by knob profile 'mt_sysctl_v1'"),
        ("dcbm_sysfs_v4", "mt_2", "not offered by knob profile 'dcbm_sysfs_v4'"),
        ("dcbm_sysfs_v4", "dma_17", "(1..16)"),
    ],
)
def test_configs_the_kernel_cannot_do_are_errors(tmp_path, profile, config, message):
    s = session(tmp_path, profile)
    with pytest.raises(KnobError) as exc:
        s.apply(config)
    assert message in str(exc.value)


def test_vanilla_kernel_refuses_mt_instead_of_running_vanilla(tmp_path):
    tree = SysTree(str(tmp_path))
    s = KnobSession.open(tree, "auto", Restorer(tree))
    assert s.name == "vanilla"
    assert s.apply("vanilla") == {}
    with pytest.raises(KnobError, match="would silently run as vanilla"):
        s.apply("mt_4")


def test_named_profile_missing_on_this_kernel(tmp_path):
    tree = SysTree(str(tmp_path))
    with pytest.raises(KnobError, match="is the right kernel variant booted"):
        KnobSession.open(tree, "mt_sysctl_v1", Restorer(tree))


def test_originals_saved_before_the_first_write_and_restored_on_exception(tmp_path):
    add_profile_knobs(tmp_path, "mt_sysctl_v1")
    tree = SysTree(str(tmp_path))
    saved = []

    def persist(originals):
        # called before a file first changes: its value on disk is still the original
        new = set(originals) - set(saved[-1] if saved else {})
        assert len(new) == 1
        for rel in new:
            assert read(tmp_path, rel) == originals[rel]
        saved.append(dict(originals))

    restorer = Restorer(tree, persist)
    s = KnobSession(tree, "mt_sysctl_v1", restorer)
    with pytest.raises(RuntimeError, match="boom"):
        try:
            s.apply("mt_16")
            raise RuntimeError("boom")
        finally:
            report = restorer.restore()
    assert saved[-1] == {"proc/sys/vm/limit_mt_num": "4", "proc/sys/vm/use_mt_copy": "0"}
    assert all(e["restored"] for e in report.values())
    assert read(tmp_path, "proc/sys/vm/use_mt_copy") == "0"
    assert read(tmp_path, "proc/sys/vm/limit_mt_num") == "4"


def test_restore_continues_past_a_failing_file(tmp_path):
    add_profile_knobs(tmp_path, "mt_sysctl_v1")
    tree = SysTree(str(tmp_path))
    r = Restorer(tree)
    r.write("proc/sys/vm/use_mt_copy", "1")
    r.write("proc/sys/vm/limit_mt_num", "8")
    (tmp_path / "proc/sys/vm/limit_mt_num").unlink()
    report = r.restore()
    assert report["proc/sys/vm/limit_mt_num"]["restored"] is False
    assert report["proc/sys/vm/use_mt_copy"]["restored"] is True
    assert read(tmp_path, "proc/sys/vm/use_mt_copy") == "0"


def test_equivalent():
    assert equivalent("madvise", "always [madvise] never\n")
    assert equivalent("1", "Y") and equivalent("0", "N\n")
    assert not equivalent("1", "0") and not equivalent("madvise", "[always] madvise never")


def test_host_tuning_thp_and_mthp_modes(tmp_path):
    fake_host_tree(tmp_path, mthp=("64kB", "2048kB", "32kB"))
    tree = SysTree(str(tmp_path))
    restorer = Restorer(tree)
    tuning = HostTuning(
        tree, restorer, {"numa_balancing": 0, "thp_enabled": "always", "thp_defrag": None}
    )
    assert set(offered_sizes(tree)) == {2 << 20, 64 << 10, 32 << 10}
    tuning.apply_global()
    thp = "sys/kernel/mm/transparent_hugepage"

    def mode(root, rel):
        return selected_value(read(root, rel))

    assert read(tmp_path, "proc/sys/kernel/numa_balancing") == "0"
    assert mode(tmp_path, f"{thp}/enabled") == "always"
    assert "defrag" not in " ".join(restorer.originals)  # null: left alone
    tuning.prepare_kind(64 << 10)  # exactly one size enabled, no fallback mix
    assert mode(tmp_path, f"{thp}/hugepages-64kB/enabled") == "madvise"
    assert mode(tmp_path, f"{thp}/hugepages-2048kB/enabled") == "never"
    assert mode(tmp_path, f"{thp}/hugepages-32kB/enabled") == "never"
    tuning.prepare_kind(2 << 20)
    assert mode(tmp_path, f"{thp}/hugepages-2048kB/enabled") == "madvise"
    assert mode(tmp_path, f"{thp}/hugepages-64kB/enabled") == "never"
    assert tuning.prepare_kind(None) == {}
    report = restorer.restore()
    assert all(e["restored"] for e in report.values())
    assert read(tmp_path, "proc/sys/kernel/numa_balancing") == "1"
    assert mode(tmp_path, f"{thp}/enabled") == "madvise"  # bracket format restored
    assert mode(tmp_path, f"{thp}/hugepages-2048kB/enabled") == "never"


def test_leftovers_of_a_killed_runner_are_restored(tmp_path):
    """A runner killed with SIGKILL cannot clean up: the next one restores from state.json."""
    root = tmp_path / "root"
    add_profile_knobs(root, "mt_sysctl_v1")
    write(root, "proc/sys/vm/use_mt_copy", "1")  # left set by the dead runner
    rundir = RunDir(str(tmp_path / "results"), "r1")
    rundir.create()
    write_json_atomic(
        rundir.state,
        {
            "boot_id": boot_id(),
            "dirty": True,
            "pids": [],
            "originals": {"knobs": {"proc/sys/vm/use_mt_copy": "0"}, "tuning": {}},
        },
    )
    report = restore_from_state(rundir, SysTree(str(root)), lambda m: None)
    assert report["needed"] and report["knobs"]["proc/sys/vm/use_mt_copy"]["restored"]
    assert read(root, "proc/sys/vm/use_mt_copy") == "0"
    assert json.loads(open(rundir.state).read())["dirty"] is False
    # a reboot reset everything already: nothing is written
    write_json_atomic(
        rundir.state,
        {
            "boot_id": "another-boot",
            "dirty": True,
            "originals": {"knobs": {"proc/sys/vm/use_mt_copy": "7"}},
        },
    )
    report = restore_from_state(rundir, SysTree(str(root)), lambda m: None)
    assert "rebooted" in report["note"]
    assert read(root, "proc/sys/vm/use_mt_copy") == "0"
