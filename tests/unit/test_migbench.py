"""migbench, compiled here with gcc -O2 as the migbench role does.

This machine has one NUMA node, so a real sweep refuses to run: that refusal (exit 2, clear
message) is the main check. ``--loopback-test`` (src = dst, no migration) then exercises the
allocation, the folio-backing verification (pagemap + kpageflags, needs root) and the output
on this machine; the real moves between two nodes are checked on the virtual lab.
"""

from __future__ import annotations

import ctypes
import json
import os
import subprocess
from pathlib import Path

import pytest
from miglab_runner_testlib import compile_migbench

THP = Path("/sys/kernel/mm/transparent_hugepage")
PR_SET_THP_DISABLE = 41


@pytest.fixture(scope="module")
def migbench(tmp_path_factory) -> Path:
    return compile_migbench(tmp_path_factory.mktemp("migbench"))


def run(binary: Path, *args: str, preexec=None) -> subprocess.CompletedProcess:
    return subprocess.run(
        [str(binary), *args],
        capture_output=True,
        text=True,
        timeout=120,
        preexec_fn=preexec,
        check=False,
    )


def lines(out: str) -> list[dict]:
    return [json.loads(line) for line in out.splitlines() if line.strip()]


def nodes_with_memory() -> int:
    path = Path("/sys/devices/system/node/has_memory")
    if not path.exists():
        return 1
    n = 0
    for part in path.read_text().strip().split(","):
        a, _, b = part.partition("-")
        n += int(b or a) - int(a) + 1
    return n


def thp_mode(path: Path) -> str:
    text = path.read_text()
    return text[text.index("[") + 1 : text.index("]")]


needs_root = pytest.mark.skipif(os.geteuid() != 0, reason="PFNs in pagemap need CAP_SYS_ADMIN")


@pytest.mark.skipif(nodes_with_memory() >= 2, reason="this machine has two NUMA nodes")
def test_refuses_on_a_one_node_machine(migbench):
    r = run(migbench, "--kind", "2M", "--count", "4")
    assert r.returncode == 2
    assert "refusing to run" in r.stderr
    assert "1 NUMA node with memory" in r.stderr
    assert "needs at least two" in r.stderr
    err = lines(r.stdout)[-1]
    assert err["type"] == "error" and err["stage"] == "host"
    assert not [x for x in lines(r.stdout) if x["type"] == "sample"]


@pytest.mark.skipif(nodes_with_memory() >= 2, reason="this machine has two NUMA nodes")
def test_check_host_describes_the_host_and_refuses(migbench):
    r = run(migbench, "--check-host")
    assert r.returncode == 2
    host = lines(r.stdout)[0]
    assert host["type"] == "host"
    assert host["nodes_with_memory"] == [0]
    assert host["base_page_size"] == os.sysconf("SC_PAGESIZE")
    assert "needs at least two" in r.stderr


def test_version_is_json_with_the_build_identity(migbench):
    r = run(migbench, "--version")
    assert r.returncode == 0
    v = json.loads(r.stdout)
    assert v["source_sha256"] == "test" and v["migbench_version"]


@pytest.mark.parametrize(
    "args, message",
    [
        (("--kind", "2M", "--count", "0"), "--count must be >= 1"),
        (("--kind", "2M", "--count", "-3"), "--count must be >= 1"),
        (("--kind", "2M", "--count", "x"), "not an integer"),
        (("--count", "4"), "--kind is required"),
        (("--kind", "2M", "--count", "1", "--reps", "0"), "--reps must be >= 1"),
        (("--kind", "2M", "--count", "1", "--src", "1", "--dst", "1"), "two different nodes"),
    ],
)
def test_usage_errors_exit_1(migbench, args, message):
    r = run(migbench, *args)
    assert r.returncode == 1, r.stderr
    assert message in r.stderr


@pytest.mark.parametrize("kind", ["3M", "2X", "base2", "0K"])
def test_unknown_folio_kind_is_rejected(migbench, kind):
    r = run(migbench, "--kind", kind, "--count", "1", "--loopback-test")
    assert r.returncode == 1
    assert "unknown folio kind" in r.stderr


def test_the_base_page_size_as_a_kind_is_rejected(migbench):
    size = os.sysconf("SC_PAGESIZE") // 1024
    r = run(migbench, "--kind", f"{size}K", "--count", "1", "--loopback-test")
    assert r.returncode == 1
    assert "use 'base'" in r.stderr


def test_a_size_the_kernel_does_not_offer_is_a_host_error(migbench):
    r = run(migbench, "--kind", "1G", "--count", "1", "--loopback-test")
    assert r.returncode == 2
    assert "not offered by this kernel" in r.stderr


@needs_root
def test_loopback_base_pages_verified_and_timed(migbench):
    r = run(
        migbench,
        "--kind",
        "base",
        "--count",
        "64",
        "--reps",
        "3",
        "--warmup",
        "1",
        "--loopback-test",
    )
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    samples = [x for x in out if x["type"] == "sample"]
    assert [s["rep"] for s in samples] == [0, 1, 2]
    page = os.sysconf("SC_PAGESIZE")
    for s in samples:
        assert s["backing_ok"] is True and s["failed_pages"] == 0
        assert s["folio_size"] == page and s["bytes"] == 64 * page
        assert s["elapsed_ns"] > 0 and s["loopback"] is True
        assert s["gbps"] == pytest.approx(s["bytes"] / s["elapsed_ns"], rel=1e-3)
        assert s["system_cpu_resolution_ns"] > 0
    summary = out[-1]
    assert summary["type"] == "summary" and summary["pattern_ok"] is True and summary["ok"]


@needs_root
@pytest.mark.skipif(
    not (THP / "enabled").exists()
    or thp_mode(THP / "enabled") == "never"
    or int((THP / "hpage_pmd_size").read_text()) != 2 << 20,
    reason="2 MiB PMD THP not available here",
)
def test_loopback_thp_backing_verified(migbench):
    r = run(migbench, "--kind", "2M", "--count", "4", "--reps", "2", "--loopback-test")
    if r.returncode == 3 and "backing" in r.stderr:
        pytest.skip(f"no THP available right now (fragmented memory?): {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    samples = [x for x in lines(r.stdout) if x["type"] == "sample"]
    assert len(samples) == 2
    assert all(
        s["backing_ok"] and s["folio_size"] == 2 << 20 and s["bytes"] == 4 * (2 << 20)
        for s in samples
    )


def _disable_thp_for_child() -> None:
    libc = ctypes.CDLL(None, use_errno=True)
    assert libc.prctl(PR_SET_THP_DISABLE, 1, 0, 0, 0) == 0


@needs_root
def test_missing_thp_backing_fails_loudly_with_honest_bytes(migbench):
    """The TCG pitfall: MADV_HUGEPAGE without THP. migbench must notice, report the bytes
    really moved (4 KiB per address, not 2 MiB) with backing_ok=false, and exit 3."""
    r = run(
        migbench,
        "--kind",
        "2M",
        "--count",
        "3",
        "--reps",
        "4",
        "--loopback-test",
        preexec=_disable_thp_for_child,
    )
    assert r.returncode == 3
    assert "backing check failed" in r.stderr
    out = lines(r.stdout)
    samples = [x for x in out if x["type"] == "sample"]
    assert len(samples) == 1  # the failing move is a record, then stop
    s = samples[0]
    page = os.sysconf("SC_PAGESIZE")
    assert s["backing_ok"] is False
    assert s["bytes"] == 3 * page  # not 3 x 2 MiB: no 500x inflated GB/s
    assert "0 of 3 folios" in s["backing_detail"]
    assert any(x["type"] == "error" and x["stage"] == "backing" for x in out)
    assert out[-1]["type"] == "summary" and out[-1]["ok"] is False


@pytest.mark.skipif(
    not (THP / "hugepages-64kB" / "enabled").exists()
    or thp_mode(THP / "hugepages-64kB" / "enabled") != "never",
    reason="needs an mTHP kernel with 64K disabled",
)
@pytest.mark.xdist_group("host-mthp-64k")  # reads the setting the next test changes
def test_disabled_mthp_size_is_a_host_error(migbench):
    r = run(migbench, "--kind", "64K", "--count", "2", "--loopback-test")
    assert r.returncode == 2
    assert "64K is disabled" in r.stderr


@pytest.fixture
def mthp_64k_madvise():
    """64K mTHP set to madvise for one test, the old setting put back after it."""
    enabled = THP / "hugepages-64kB" / "enabled"
    if not enabled.exists() or os.geteuid() != 0:
        pytest.skip("needs root and an mTHP kernel (hugepages-64kB)")
    old = thp_mode(enabled)
    enabled.write_text("madvise")
    try:
        yield
    finally:
        enabled.write_text(old)


@needs_root
@pytest.mark.xdist_group("host-mthp-64k")
def test_mthp_gets_a_fresh_buffer_for_every_move(migbench, mthp_64k_madvise):
    """A PTE-mapped mTHP is split by its second migration, so every move gets a new buffer
    faulted in on the source node, verified as 64K folios before the move and checked for its
    pattern after it; PMD-sized THP and base pages keep one buffer."""
    r = run(
        migbench, "--kind", "64K", "--count", "8", "--reps", "3", "--warmup", "1", "--loopback-test"
    )
    if r.returncode == 3 and "backing" in r.stderr:
        pytest.skip(f"no 64K folios available right now: {r.stderr.strip()}")
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    samples = [x for x in out if x["type"] == "sample"]
    assert len(samples) == 3
    assert all(s["fresh_buffer"] and s["backing_ok"] and s["bytes"] == 8 * 65536 for s in samples)
    assert {(s["src_node"], s["dst_node"]) for s in samples} == {(0, 0)}
    summary = out[-1]
    assert summary["type"] == "summary" and summary["pattern_ok"] is True

    base = run(migbench, "--kind", "base", "--count", "8", "--reps", "2", "--loopback-test")
    assert base.returncode == 0, base.stderr
    assert not any(x.get("fresh_buffer") for x in lines(base.stdout) if x["type"] == "sample")


@needs_root
def test_ceiling_copies_between_verified_buffers_with_each_thread_count(migbench):
    r = run(migbench, "--ceiling", "--threads", "1,2", "--size-mib", "8", "--reps", "2",
            "--loopback-test")  # fmt: skip
    assert r.returncode == 0, r.stderr
    out = lines(r.stdout)
    assert {(x["direction"], x["threads"], x["rep"]) for x in out} == {
        (d, t, rep) for d in ("push", "pull") for t in (1, 2) for rep in (0, 1)
    }
    assert all(
        x["type"] == "ceiling" and x["placement_ok"] and x["bytes"] == 8 << 20 and x["gbps"] > 0
        for x in out
    )
    assert all(x["cpus"] == min(x["threads"], os.cpu_count() or 1) for x in out)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--threads", "1,x"], "--threads: a list of thread counts"),
        (["--threads", "0"], "--threads: a list of thread counts"),
        (["--size-mib", "big"], "--size-mib: not an integer"),
    ],
)
def test_ceiling_usage_errors(migbench, args, message):
    r = run(migbench, "--ceiling", *args, "--loopback-test")
    assert r.returncode == 1 and message in r.stderr, r.stderr


@needs_root
def test_every_sample_says_what_the_kernel_threads_ran_and_what_that_cost(migbench):
    """kthread_cpu_ns: run time of all kernel threads during the call (kworkers doing copy
    work appear there); accounting_ns: what the snapshots around the window cost."""
    r = run(migbench, "--kind", "base", "--count", "64", "--reps", "3", "--loopback-test")
    assert r.returncode == 0, r.stderr
    samples = [x for x in lines(r.stdout) if x["type"] == "sample"]
    kthreads = sum(1 for p in Path("/proc").iterdir() if p.name.isdigit() and _is_kthread(p))
    for s in samples:
        assert isinstance(s["kthread_cpu_ns"], int) and s["kthread_cpu_ns"] >= 0
        assert abs(s["kthreads"] - kthreads) <= max(5, kthreads // 10)
        assert s["accounting_ns"] > 0
        assert s["cgroup_cpu_ns"] is None  # no --cgroup given


def _is_kthread(proc: Path) -> bool:
    try:
        flags = int((proc / "stat").read_text().rsplit(")", 1)[1].split()[6])
    except (OSError, IndexError, ValueError):
        return False
    return bool(flags & 0x00200000)


@pytest.fixture
def cgroup_dir():
    mount = next(
        (line.split()[1] for line in Path("/proc/self/mounts").read_text().splitlines()
         if line.split()[2] == "cgroup2"),
        None,
    )  # fmt: skip
    if mount is None or os.geteuid() != 0:
        pytest.skip("needs root and a cgroup v2 mount")
    path = Path(mount) / f"miglab-unit-{os.getpid()}"
    path.mkdir()
    yield path
    path.rmdir()


def test_migbench_joins_its_cgroup_and_reports_what_it_was_charged(migbench, cgroup_dir):
    r = run(migbench, "--kind", "base", "--count", "512", "--reps", "3", "--loopback-test",
            "--cgroup", str(cgroup_dir))  # fmt: skip
    assert r.returncode == 0, r.stderr
    for s in (x for x in lines(r.stdout) if x["type"] == "sample"):
        # The caller's own CPU time is charged to its cgroup, up to a scheduler tick (10 ms at
        # HZ=100): the cgroup's sum misses the running task's time since its last update.
        assert s["cgroup_cpu_ns"] is not None and s["cgroup_cpu_ns"] >= 0
        assert s["cgroup_cpu_ns"] + 10_000_000 >= s["caller_cpu_ns"], s
