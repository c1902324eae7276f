"""The lab_host role and its facts script.

The script's parsing runs against fake /sys and /proc trees (a Grace host with 64 KiB pages, an
x86 host, a kernel without NUMA or THP). The role runs for real, through playbooks/provision.yml,
against this machine (connection local, packages skipped with lab_host_install_packages=false,
the custom fact and the facts file in a temporary directory). This machine has ONE NUMA node,
so the role succeeds with lab_host_min_numa_nodes=1 and fails with the default of 2.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from pathlib import Path
from types import ModuleType
from typing import Any

import jsonschema
import pytest
from miglab.lab.ansible import PlaybookRun, run_playbook

REPO = Path(__file__).resolve().parents[2]
BIN = REPO / ".venv" / "bin"
PLAYBOOK = "playbooks/provision.yml"
NODE_DIR = Path("/sys/devices/system/node")
THP_DIR = Path("/sys/kernel/mm/transparent_hugepage")
KIB, MIB, GIB = 1024, 1024 * 1024, 1024 * 1024 * 1024

# miglab.labfacts/1, exactly the shape the role promises (no other keys).
LABFACTS_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema",
        "hostname",
        "arch",
        "kernel_release",
        "kernel_cmdline",
        "cpu_model",
        "base_page_size",
        "pmd_thp_size",
        "mthp_sizes",
        "thp_enabled",
        "numa_balancing",
        "numa_nodes",
        "cpu_count",
        "memory_bytes",
    ],
    "properties": {
        "schema": {"const": "miglab.labfacts/1"},
        "hostname": {"type": "string", "minLength": 1},
        "arch": {"type": "string", "minLength": 1},
        "kernel_release": {"type": "string", "minLength": 1},
        "kernel_cmdline": {"type": "string"},
        "cpu_model": {"type": "string", "minLength": 1},
        "base_page_size": {"type": "integer", "minimum": 4096},
        "pmd_thp_size": {"type": ["integer", "null"], "minimum": 1},
        "mthp_sizes": {"type": "array", "items": {"type": "integer", "minimum": 1}},
        "thp_enabled": {"type": ["string", "null"]},
        "numa_balancing": {"type": ["integer", "null"]},
        "numa_nodes": {
            "type": "array",
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["node", "cpus", "memory_bytes"],
                "properties": {
                    "node": {"type": "integer", "minimum": 0},
                    "cpus": {"type": "array", "items": {"type": "integer", "minimum": 0}},
                    "memory_bytes": {"type": "integer", "minimum": 0},
                },
            },
        },
        "cpu_count": {"type": "integer", "minimum": 0},
        "memory_bytes": {"type": "integer", "minimum": 0},
    },
}


def validate_labfacts(facts: dict[str, Any]) -> None:
    jsonschema.Draft202012Validator(LABFACTS_SCHEMA).validate(facts)


@pytest.fixture(scope="module")
def labfacts() -> ModuleType:
    """The host package's facts module (what `python3 -m miglab_host facts` prints)."""
    from miglab_host import facts

    return facts


# ---------------------------------------------------------------------------------------------
# The facts script against fake trees
# ---------------------------------------------------------------------------------------------

GRACE_CPUINFO = "".join(
    f"processor\t: {n}\nBogoMIPS\t: 2000.00\n"
    "Features\t: fp asimd evtstrm aes pmull sha1 sha2 crc32 atomics fphp asimdhp cpuid\n"
    "CPU implementer\t: 0x41\nCPU architecture: 8\nCPU variant\t: 0x0\n"
    "CPU part\t: 0xd4f\nCPU revision\t: 0\n\n"
    for n in range(4)
)
X86_CPUINFO = (
    "processor\t: 0\nvendor_id\t: AuthenticAMD\ncpu family\t: 25\nmodel\t\t: 1\n"
    "model name\t: AMD EPYC 7763 64-Core Processor\nstepping\t: 1\n\n"
    "processor\t: 1\nvendor_id\t: AuthenticAMD\n"
    "model name\t: AMD EPYC 7763 64-Core Processor\n\n"
)


def write(root: Path, path: str, text: str) -> None:
    target = root / path.lstrip("/")
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(text)


# Two 480 GiB sockets and a 1 GiB memory node in 64 KiB pages (a DMA zone and a Normal zone
# on node 0, an empty zone on node 2); MemTotal (above) is less: the kernel's reservations.
GRACE_ZONEINFO = """\
Node 0, zone      DMA
  per-node stats
      nr_inactive_anon 12
  pages free     60000
        min      100
        spanned  65536
        present  65536
        managed  64000
Node 0, zone   Normal
  pages free     7000000
        spanned  7798784
        present  7798784
        managed  7600000
Node 1, zone   Normal
  pages free     7000000
        spanned  7864320
        present  7864320
        managed  7800000
Node 2, zone   Normal
  pages free     0
        spanned  0
        present  0
        managed  0
Node 10, zone   Normal
  pages free     16000
        spanned  16384
        present  16384
        managed  16000
"""


def fake_grace(root: Path) -> Path:
    """Two Grace sockets (72 CPUs each in the real thing, 2 here) plus a CPU-less memory node,
    a 64 KiB-page kernel (PMD 512 MiB, mTHP up to 2 MiB), and the noise /sys really has."""
    node = "/sys/devices/system/node"
    write(root, f"{node}/node0/cpulist", "0-1\n")
    write(
        root, f"{node}/node0/meminfo", "Node 0 MemTotal:       498069504 kB\nNode 0 MemFree: 1 kB\n"
    )
    write(root, f"{node}/node1/cpulist", "2,3\n")
    write(root, f"{node}/node1/meminfo", "Node 1 MemTotal:       500170752 kB\n")
    write(root, f"{node}/node2/cpulist", "\n")
    write(root, f"{node}/node2/meminfo", "Node 2 MemTotal:              0 kB\n")
    write(root, f"{node}/node10/cpulist", "\n")
    write(root, f"{node}/node10/meminfo", "Node 10 MemTotal:       1048576 kB\n")
    for noise in ("online", "possible", "has_memory", "has_cpu"):
        write(root, f"{node}/{noise}", "0-2,10\n")
    (root / node.lstrip("/") / "power").mkdir()
    thp = "/sys/kernel/mm/transparent_hugepage"
    write(root, f"{thp}/enabled", "always madvise [never]\n")
    write(root, f"{thp}/hpage_pmd_size", "536870912\n")
    for kb in (2048, 128, 64, 16384):
        (root / thp.lstrip("/") / f"hugepages-{kb}kB").mkdir()
    write(root, f"{thp}/hugepages-notasize", "")
    write(root, "/proc/cpuinfo", GRACE_CPUINFO)
    write(root, "/proc/cmdline", "BOOT_IMAGE=/vmlinuz-6.13.0-mt root=UUID=x ro\n")
    write(root, "/proc/meminfo", "MemTotal:       999288832 kB\n")
    write(root, "/proc/zoneinfo", GRACE_ZONEINFO)
    write(root, "/proc/sys/kernel/osrelease", "6.13.0-rc5-mt+\n")
    write(root, "/proc/sys/kernel/hostname", "grace1\n")
    write(root, "/proc/sys/kernel/numa_balancing", "0\n")
    return root


GRACE_EXPECTED = {
    "schema": "miglab.labfacts/1",
    "hostname": "grace1",
    "arch": "aarch64",
    "kernel_release": "6.13.0-rc5-mt+",
    "kernel_cmdline": "BOOT_IMAGE=/vmlinuz-6.13.0-mt root=UUID=x ro",
    "cpu_model": "Neoverse-V2",
    "base_page_size": 65536,
    "pmd_thp_size": 512 * MIB,
    "mthp_sizes": [64 * KIB, 128 * KIB, 2 * MIB, 16 * MIB],
    "thp_enabled": "never",
    "numa_balancing": 0,
    "numa_nodes": [
        {"node": 0, "cpus": [0, 1], "memory_bytes": 480 * GIB},
        {"node": 1, "cpus": [2, 3], "memory_bytes": 480 * GIB},
        {"node": 2, "cpus": [], "memory_bytes": 0},
        {"node": 10, "cpus": [], "memory_bytes": 1 * GIB},
    ],
    "cpu_count": 4,
    "memory_bytes": 961 * GIB,
}


def test_gather_fake_grace(labfacts: ModuleType, tmp_path: Path) -> None:
    facts = labfacts.gather(str(fake_grace(tmp_path)), machine="aarch64", page_size=65536)
    assert facts == GRACE_EXPECTED
    validate_labfacts(facts)


def test_node_memory_is_meminfo_total_where_zoneinfo_cannot_be_read(
    labfacts: ModuleType, tmp_path: Path
) -> None:
    root = fake_grace(tmp_path)
    (root / "proc" / "zoneinfo").unlink()
    facts = labfacts.gather(str(root), machine="aarch64", page_size=65536)
    assert [n["memory_bytes"] for n in facts["numa_nodes"]] == [
        498069504 * KIB, 500170752 * KIB, 0, 1048576 * KIB,
    ]  # fmt: skip


def test_facts_command_prints_the_json_for_a_root(tmp_path: Path) -> None:
    # As a host runs it: the host's own python3 (standard library only), from the package dir.
    proc = subprocess.run(
        ["/usr/bin/python3", "-m", "miglab_host", "facts", str(fake_grace(tmp_path))],
        cwd=REPO / "host",
        env={"PATH": "/usr/bin:/bin", "PYTHONDONTWRITEBYTECODE": "1"},
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    facts = json.loads(proc.stdout)
    validate_labfacts(facts)
    assert [n["cpus"] for n in facts["numa_nodes"]] == [[0, 1], [2, 3], [], []]
    # a fake root has no page size of its own: the command reads this machine's
    pages = [n["memory_bytes"] // facts["base_page_size"] for n in facts["numa_nodes"]]
    assert pages == [7864320, 7864320, 0, 16384]
    assert facts["cpu_model"] == "Neoverse-V2"


def test_gather_without_numa_or_thp(labfacts: ModuleType, tmp_path: Path) -> None:
    # A kernel built without CONFIG_NUMA and CONFIG_TRANSPARENT_HUGEPAGE.
    write(tmp_path, "/sys/devices/system/cpu/online", "0-7\n")
    write(tmp_path, "/proc/meminfo", "MemTotal:       16384000 kB\nMemFree: 1 kB\n")
    write(tmp_path, "/proc/cpuinfo", X86_CPUINFO)
    write(tmp_path, "/proc/cmdline", "ro quiet\n")
    facts = labfacts.gather(str(tmp_path), machine="x86_64", page_size=4096, hostname="epyc1")
    validate_labfacts(facts)
    assert facts["numa_nodes"] == []
    assert facts["cpu_count"] == 8
    assert facts["memory_bytes"] == 16384000 * KIB
    assert facts["pmd_thp_size"] is None
    assert facts["mthp_sizes"] == []
    assert facts["thp_enabled"] is None
    assert facts["numa_balancing"] is None
    assert facts["cpu_model"] == "AMD EPYC 7763 64-Core Processor"
    assert facts["hostname"] == "epyc1"


@pytest.mark.parametrize(
    ("text", "cpus"),
    [
        ("0-3,8,10-11\n", [0, 1, 2, 3, 8, 10, 11]),
        ("5\n", [5]),
        ("\n", []),
        ("", []),
        ("0-71\n", list(range(72))),
        ("72-143,216-287", list(range(72, 144)) + list(range(216, 288))),
    ],
)
def test_parse_cpulist(labfacts: ModuleType, text: str, cpus: list[int]) -> None:
    assert labfacts.parse_cpulist(text) == cpus


def test_parse_node_meminfo(labfacts: ModuleType) -> None:
    assert labfacts.parse_node_meminfo("Node 3 MemTotal:  1024 kB\nNode 3 MemFree: 5 kB\n") == MIB
    with pytest.raises(ValueError):
        labfacts.parse_node_meminfo("Node 3 MemFree: 5 kB\n")


@pytest.mark.parametrize(
    ("cpuinfo", "model"),
    [
        (GRACE_CPUINFO, "Neoverse-V2"),
        (X86_CPUINFO, "AMD EPYC 7763 64-Core Processor"),
        ("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd0c\n", "Neoverse-N1"),
        ("processor\t: 0\nCPU implementer\t: 0x41\nCPU part\t: 0xd99\n", "ARM part 0xd99"),
        (
            "processor\t: 0\nCPU implementer\t: 0x00\nCPU part\t: 0x000\n",
            "implementer 0x00 part 0x000",
        ),
        (
            "processor\t: 0\ncpu\t\t: POWER10 (architected), altivec supported\n",
            "POWER10 (architected), altivec supported",
        ),
        ("processor\t: 0\n", "unknown"),
        ("", "unknown"),
    ],
)
def test_parse_cpu_model(labfacts: ModuleType, cpuinfo: str, model: str) -> None:
    assert labfacts.parse_cpu_model(cpuinfo) == model


def test_thp_mode_and_sizes(labfacts: ModuleType, tmp_path: Path) -> None:
    thp = "/sys/kernel/mm/transparent_hugepage"
    write(tmp_path, f"{thp}/enabled", "[always] madvise never\n")
    write(tmp_path, f"{thp}/hpage_pmd_size", "2097152\n")
    (tmp_path / thp.lstrip("/") / "hugepages-2048kB").mkdir()
    (tmp_path / thp.lstrip("/") / "hugepages-1048576kB").mkdir()
    assert labfacts.thp_facts(str(tmp_path)) == {
        "pmd_thp_size": 2 * MIB,
        "mthp_sizes": [2 * MIB, 1024 * MIB],
        "thp_enabled": "always",
    }


# ---------------------------------------------------------------------------------------------
# The role, for real, on this machine
# ---------------------------------------------------------------------------------------------


def sys_cpulist(text: str) -> list[int]:
    """The test's own reading of a cpulist, independent of the script's."""
    cpus: list[int] = []
    for part in filter(None, text.strip().split(",")):
        lo, _, hi = part.partition("-")
        cpus += range(int(lo), int(hi or lo) + 1)
    return cpus


def sys_nodes() -> dict[int, dict[str, Any]]:
    """Node number -> cpus (from /sys) and memory (present pages in /proc/zoneinfo, summed
    by awk, times the page size)."""
    present = subprocess.run(
        ["awk", '/^Node/ {node = $2 + 0} $1 == "present" {pages[node] += $2} '
         'END {for (n in pages) print n, pages[n]}', "/proc/zoneinfo"],
        capture_output=True, text=True, check=True,
    ).stdout.split()  # fmt: skip
    pages = {int(n): int(p) for n, p in zip(present[::2], present[1::2], strict=True)}
    page_size = os.sysconf("SC_PAGESIZE")
    nodes = {}
    for d in NODE_DIR.glob("node*"):
        if not d.name[4:].isdigit():
            continue
        nodes[int(d.name[4:])] = {
            "cpus": sys_cpulist((d / "cpulist").read_text()),
            "memory_bytes": pages.get(int(d.name[4:]), 0) * page_size,
        }
    return nodes


def memory_nodes() -> int:
    return sum(1 for n in sys_nodes().values() if n["memory_bytes"] > 0)


class Run:
    """One ansible-playbook run through ansible-runner: its recap and per-task results from
    the structured events (never from Ansible's text output)."""

    def __init__(self, run: PlaybookRun) -> None:
        self.run = run
        self.returncode = run.rc
        self.output = run.report() + "\n" + run.stdout()[-6000:]

    def recap(self) -> dict[str, int]:
        return self.run.host("localhost")

    def results(self) -> list[tuple[str, str, dict[str, Any]]]:
        """(task name without the role prefix, status, result) per task, in order."""
        statuses = {
            "runner_on_ok": "ok",
            "runner_on_failed": "failed",
            "runner_on_skipped": "skipping",
            "runner_on_unreachable": "unreachable",
        }
        found = []
        for event in self.run.results():
            status = statuses.get(event["event"])
            if status is None:
                continue  # loop items and retries: the task's own result follows
            data = event["event_data"]
            res = data.get("res") or {}
            if status == "ok" and res.get("changed"):
                status = "changed"
            found.append((str(data.get("task")), status, res))
        return found

    def changed_tasks(self) -> list[str]:
        return [name for name, status, _ in self.results() if status == "changed"]

    def failed(self) -> list[tuple[str, dict[str, Any]]]:
        return [(name, res) for name, status, res in self.results() if status == "failed"]


@pytest.fixture(scope="module")
def ansible_playbook(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Run]:
    if os.geteuid() != 0:
        pytest.skip("the lab_host role runs as root (it writes root-owned files)")
    python = BIN / "python"
    if not (BIN / "ansible-playbook").exists():
        pytest.fail(f"{BIN}/ansible-playbook missing: run `bash .ci/setup --dev`")
    inventory = tmp_path_factory.mktemp("inventory") / "hosts.yml"
    # The group `lab` (the playbook's target) with this machine in it, connected locally.
    inventory.write_text(
        json.dumps(
            {
                "lab": {
                    "hosts": {
                        "localhost": {
                            "ansible_connection": "local",
                            "ansible_python_interpreter": str(python),
                            "ansible_become": False,
                        }
                    }
                }
            }
        )
    )

    def run(extra_vars: dict[str, Any]) -> Run:
        varfile = inventory.parent / "extra-vars.json"
        varfile.write_text(json.dumps(extra_vars))
        result = run_playbook(
            Path(PLAYBOOK),
            ["-e", f"@{varfile}"],
            project_dir=REPO,
            inventory=inventory,
            env={"ANSIBLE_RETRY_FILES_ENABLED": "0"},
            timeout=600,
        )
        return Run(result)

    return run


def role_vars(workdir: Path, **extra: Any) -> dict[str, Any]:
    return {
        "lab_host_install_packages": False,
        "host_package_dir": str(workdir / "host"),
        "lab_host_fact_dir": str(workdir / "facts.d"),
        "lab_host_facts_path": str(workdir / "lib" / "lab-facts.json"),
        **extra,
    }


@pytest.fixture(scope="module")
def single_node_run(
    ansible_playbook: Callable[..., Run], tmp_path_factory: pytest.TempPathFactory
) -> dict[str, Any]:
    """Provision this machine with lab_host_min_numa_nodes=1; /sys read around the run."""
    workdir = tmp_path_factory.mktemp("lab_host")
    extra = role_vars(workdir, lab_host_min_numa_nodes=1)
    before = sys_nodes()
    run = ansible_playbook(extra)
    after = sys_nodes()
    assert run.returncode == 0, run.output
    return {"run": run, "vars": extra, "workdir": workdir, "before": before, "after": after}


def written_facts(single_node_run: dict[str, Any]) -> dict[str, Any]:
    return json.loads(Path(single_node_run["vars"]["lab_host_facts_path"]).read_text())


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_role_writes_facts_matching_sys(single_node_run: dict[str, Any]) -> None:
    facts = written_facts(single_node_run)
    validate_labfacts(facts)
    before, after = single_node_run["before"], single_node_run["after"]
    assert [n["node"] for n in facts["numa_nodes"]] == sorted(after)
    for node in facts["numa_nodes"]:
        assert node["cpus"] == after[node["node"]]["cpus"], node
        # A node's present pages do not change while the role runs (MemTotal would on a VM
        # that accepts its memory lazily); the readings around the run bound the value.
        low, high = sorted(
            (before[node["node"]]["memory_bytes"], after[node["node"]]["memory_bytes"])
        )
        assert low <= node["memory_bytes"] <= high, (node, low, high)
    assert facts["cpu_count"] == len({c for n in after.values() for c in n["cpus"]})
    assert facts["memory_bytes"] == sum(n["memory_bytes"] for n in facts["numa_nodes"])


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_role_facts_match_the_running_system(single_node_run: dict[str, Any]) -> None:
    facts = written_facts(single_node_run)

    def sh(*argv: str) -> str:
        return subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()

    assert facts["base_page_size"] == int(sh("getconf", "PAGESIZE"))
    assert facts["arch"] == sh("uname", "-m")
    assert facts["kernel_release"] == sh("uname", "-r")
    assert facts["kernel_cmdline"] == Path("/proc/cmdline").read_text().strip()
    if THP_DIR.is_dir():
        assert facts["pmd_thp_size"] == int((THP_DIR / "hpage_pmd_size").read_text())
        mthp = sorted(
            int(d.name[len("hugepages-") : -2]) * KIB for d in THP_DIR.glob("hugepages-*kB")
        )
        assert facts["mthp_sizes"] == mthp
        mode = re.search(r"\[(\w+)\]", (THP_DIR / "enabled").read_text())
        assert mode and facts["thp_enabled"] == mode.group(1)
    balancing = Path("/proc/sys/kernel/numa_balancing")
    if balancing.exists():
        assert facts["numa_balancing"] == int(balancing.read_text())
    cpuinfo = Path("/proc/cpuinfo").read_text()
    model = re.search(r"^model name\s*:\s*(.+)$", cpuinfo, re.MULTILINE)
    if model:
        assert facts["cpu_model"] == model.group(1).strip()


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_role_publishes_the_same_facts_and_installs_the_custom_fact(
    single_node_run: dict[str, Any],
) -> None:
    run: Run = single_node_run["run"]
    published = [
        res["ansible_facts"]["lab_host_facts"]
        for name, _, res in run.results()
        if name == "Publish the lab facts as lab_host_facts"
    ]
    assert published == [written_facts(single_node_run)], run.output
    fact = Path(single_node_run["vars"]["lab_host_fact_dir"]) / "miglab.fact"
    assert fact.stat().st_mode & 0o777 == 0o755
    # The custom fact runs the shipped package with the host's python3, as Ansible would.
    shipped = Path(single_node_run["vars"]["host_package_dir"]) / "miglab_host" / "facts.py"
    assert shipped.read_bytes() == (REPO / "host" / "miglab_host" / "facts.py").read_bytes()
    proc = subprocess.run([str(fact)], capture_output=True, text=True, timeout=60, check=True)
    assert json.loads(proc.stdout)["schema"] == "miglab.labfacts/1"
    path = Path(single_node_run["vars"]["lab_host_facts_path"])
    assert path.stat().st_mode & 0o777 == 0o644
    # packages were skipped as asked, not installed
    skipped = {name for name, status, _ in run.results() if status == "skipping"}
    assert "Install the packages the lab needs" in skipped


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_role_second_run_changes_nothing(
    single_node_run: dict[str, Any], ansible_playbook: Callable[..., Run]
) -> None:
    first = Path(single_node_run["vars"]["lab_host_facts_path"]).read_text()
    again = ansible_playbook(single_node_run["vars"])
    assert again.returncode == 0, again.output
    second = Path(single_node_run["vars"]["lab_host_facts_path"]).read_text()
    if second == first:
        assert again.recap()["changed"] == 0, again.changed_tasks()
    else:
        # Only possible when the machine's facts really changed in between (this CI VM's
        # lazily initialised memory): then the file is rewritten, and nothing else changes.
        old, new = json.loads(first), json.loads(second)
        for facts in (old, new):
            facts["memory_bytes"] = 0
            for node in facts["numa_nodes"]:
                node["memory_bytes"] = 0
        assert old == new, (first, second)
        assert again.changed_tasks() == ["Write the lab facts file"], again.output


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_role_fails_clearly_with_too_few_numa_nodes(
    ansible_playbook: Callable[..., Run], tmp_path: Path
) -> None:
    found = memory_nodes()
    # This machine has one node, so the default (2) must fail; on a bigger machine ask for more.
    extra = (
        role_vars(tmp_path) if found < 2 else role_vars(tmp_path, lab_host_min_numa_nodes=found + 1)
    )
    wanted = extra.get("lab_host_min_numa_nodes", 2)
    run = ansible_playbook(extra)
    assert run.returncode != 0, run.output
    failed = run.failed()
    assert [name for name, _ in failed] == ["Check that the host has enough NUMA nodes with memory"]
    msg = failed[0][1]["msg"]
    assert f"localhost has {found} NUMA node(s) with memory" in msg, msg
    assert f"at least {wanted}" in msg, msg
    assert "numactl --hardware" in msg, msg
    assert "Virtual lab" in msg and "inventory topology" in msg, msg
    # The facts were still written, and the message says where.
    assert extra["lab_host_facts_path"] in msg
    validate_labfacts(json.loads(Path(extra["lab_host_facts_path"]).read_text()))


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
@pytest.mark.parametrize(
    ("name", "value", "complaint"),
    [
        ("lab_host_min_numa_nodes", "two", "int"),
        ("lab_host_install_packages", "maybe", "bool"),
        ("lab_host_apt_cache_valid_time", "a day", "int"),
        ("lab_host_packages", {"numactl": True}, "list"),
    ],
)
def test_argument_specs_reject_bad_values(
    ansible_playbook: Callable[..., Run], tmp_path: Path, name: str, value: Any, complaint: str
) -> None:
    extra = role_vars(tmp_path, **{name: value})
    run = ansible_playbook(extra)
    assert run.returncode != 0, run.output
    failed = run.failed()
    assert len(failed) == 1, run.output
    task, res = failed[0]
    # The first play checks every role's arguments, before any host is contacted.
    assert task == "Stop with every problem found (no lab host was contacted)", run.output
    assert f"argument '{name}'" in res["msg"] and complaint in res["msg"], res["msg"]
    # Validation comes first: nothing was installed or written.
    assert not Path(extra["lab_host_fact_dir"]).exists()
    assert not Path(extra["lab_host_facts_path"]).exists()
