"""`miglab run` (miglab.lab): bad input is refused before any host is contacted with exit code 2
and the key named; the live view follows a real recorded event stream."""

from __future__ import annotations

import io
import json
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from miglab.cli import main
from miglab.lab.ansible import run_playbook
from miglab.lab.progress import RunProgress
from miglab.lab.run import STAGE_TAGS, RunOptions, run_lab
from miglab.lab.view import LogView, host_line, replay

REPO = Path(__file__).resolve().parents[2]
# A real stream: the events `miglab run` stored for the virtual lab's main job, trimmed to
# what the view reads (tests/vlab/test_site.py makes such a run; results/<run>/ansible/).
EVENTS = Path(__file__).parent / "data" / "vlab-site-events.jsonl"
LOCKS = Path(os.environ.get("HOME", "/root")) / ".cache" / "miglab" / "locks"


def test_an_unknown_stage_is_refused_by_the_command_line(
    capsys: pytest.CaptureFixture[str],
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["run", "--stage", "reboot-everything"])
    assert exit_info.value.code == 2
    assert "--stage: invalid choice: 'reboot-everything'" in capsys.readouterr().err


@pytest.mark.parametrize(
    "arguments, key",
    [
        (["-i", "inventory/no-such-lab/hosts.yml"], "-i/--inventory"),
        (["-e", "@/no/such/vars.yml"], "-e"),
        (["--project-dir", "/tmp"], "--project-dir"),
    ],
)
def test_bad_paths_are_refused_naming_the_option(
    arguments: list[str], key: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--log", *arguments]) == 2
    assert f"miglab: error: {key}: " in capsys.readouterr().err


def test_every_stage_is_a_set_of_site_tags() -> None:
    site = (REPO / "playbooks" / "site.yml").read_text() + (
        REPO / "playbooks" / "variants.yml"
    ).read_text()
    for stage, tags in STAGE_TAGS.items():
        for tag in tags:
            assert tag in site, (stage, tag)
    options = RunOptions(REPO, stage="sweep", extra_vars=["a=b c", '{"x": "$(id)"}'])
    # Values stay single arguments of ansible-playbook, whatever they contain.
    assert options.argv() == [
        "--tags", "vlab,sweep", "--skip-tags", "summary", "-e", "a=b c", "-e", '{"x": "$(id)"}',
    ]  # fmt: skip


class Listener:
    """A TCP port that counts connections: where the lab hosts of a test inventory are."""

    def __init__(self) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(16)
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
            except OSError:
                continue
            self.connections += 1
            conn.close()

    def close(self) -> None:
        self.stop.set()
        self.thread.join()
        self.sock.close()


def lab_inventory(
    tmp_path: Path,
    port: int,
    variants: list[dict[str, Any]],
    names: tuple[str, ...] = ("grace1", "epyc1"),
    sweep: dict[str, Any] | None = None,
) -> Path:
    """A real lab's inventory (the example lab's sweep, `sweep` merged over it) whose hosts
    are the listener."""
    inventory = tmp_path / "inventory" / "testlab"
    (inventory / "group_vars" / "all").mkdir(parents=True)
    (inventory / "group_vars" / "lab").mkdir(parents=True)
    hosts = {
        "all": {
            "children": {
                "lab": {
                    "hosts": {
                        name: {"ansible_host": "127.0.0.1", "ansible_port": port} for name in names
                    }
                }
            }
        }
    }
    (inventory / "hosts.yml").write_text(yaml.safe_dump(hosts))
    example = REPO / "inventory" / "example-lab" / "group_vars"
    example_sweep = yaml.safe_load((example / "lab" / "sweep.yml").read_text())
    (inventory / "group_vars" / "lab" / "sweep.yml").write_text(
        yaml.safe_dump({**example_sweep, **(sweep or {})})
    )
    (inventory / "group_vars" / "all" / "kernel_variants.yml").write_text(
        yaml.safe_dump(
            {
                "kernel_variant_defaults": {"source": {"debian_package": "linux-source-6.12"}},
                "kernel_variants": variants,
                "kernel_build_base_dir": str(tmp_path),
            }
        )
    )
    return inventory / "hosts.yml"


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
@pytest.mark.parametrize(
    "variants, errors",
    [
        (
            [{"name": "vanilla"}, {"name": "mt"}, {"name": "mt"}],
            ["kernel_variants[2].name: 'mt' is also kernel_variants[1].name"],
        ),
        (
            [
                {"name": "vanilla"},
                {"name": "mt", "knob_profile": "mt_sysctl_v1", "copy_configs": ["mt_64"]},
            ],
            [
                "kernel_variants[1].copy_configs[0]: 64 mt threads/channels is outside the range of "
                "profile 'mt_sysctl_v1' (1..32)"
            ],
        ),
        (
            [{"name": "vanilla", "copy_configs": ["serial", "turbo"]}],
            [
                "kernel_variants[0].copy_configs[0]: copy config 'serial' is not offered by knob profile "
                "'vanilla' (it offers: vanilla)",
                "kernel_variants[0].copy_configs[1]: unknown copy config 'turbo'",
            ],
        ),
    ],
)
def test_bad_variants_are_exit_2_before_any_host_is_contacted(
    tmp_path: Path, variants: list[dict[str, Any]], errors: list[str]
) -> None:
    listener = Listener()
    try:
        inventory = lab_inventory(tmp_path, listener.port, variants)
        options = RunOptions(REPO, inventory=inventory)
        outcome = run_lab(options, LogView(io.StringIO()), results_root=tmp_path / "results")
    finally:
        listener.close()
    assert outcome.exit_code == 2
    for error in errors:
        assert any(error in found for found in outcome.check_errors), outcome.check_errors
    assert listener.connections == 0


def test_the_sweep_progress_line_has_cells_and_eta() -> None:
    progress = RunProgress()
    base = {"host": "vnode1", "play": "p", "role": "sweep", "task": "Wait for the next step"}
    progress.feed(
        {
            "event": "runner_on_ok",
            "event_data": {
                **base,
                "role": "lab_variant",
                "res": {"ansible_facts": {"lab_variant_current": {"name": "mt-unbound"}}},
            },
        }  # fmt: skip
    )
    progress.feed({"event": "runner_on_start", "event_data": base})
    status = {"done": 12, "total": 40, "failed": 1, "state": "running", "eta_seconds": 190,
              "current_cell": "mt-unbound:busy:mt_2:2M:8", "run_dir": "/r", "variant": "mt-unbound"}  # fmt: skip
    assert progress.feed(
        {"event": "runner_retry", "event_data": {**base, "res": {"stdout": json.dumps(status)}}}
    )
    line = host_line(progress.hosts["vnode1"])
    assert line == "vnode1: variant mt-unbound sweep 12/40 cells 1 failed ETA 3m10s"


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_a_second_run_of_the_same_lab_is_refused_naming_the_first(tmp_path: Path) -> None:
    """Run A holds the lab's lock (check.yml, then a long play); run B on the same hosts, from
    another copy of the inventory, is refused before it contacts any host, naming run A."""
    listener = Listener()
    try:
        variants = [{"name": "vanilla"}]
        first = lab_inventory(tmp_path / "a", listener.port, variants)
        second = lab_inventory(tmp_path / "b", listener.port, variants)
        long_run = tmp_path / "long-run.yml"
        long_run.write_text(
            yaml.safe_dump(
                [
                    {"ansible.builtin.import_playbook": str(REPO / "playbooks" / "check.yml")},
                    {
                        "name": "Stay a while",
                        "hosts": "localhost",
                        "gather_facts": False,
                        "tasks": [{"name": "Wait", "ansible.builtin.wait_for": {"timeout": 10}}],
                    },
                ],
                sort_keys=False,
            )
        )
        results: list[Any] = []
        thread = threading.Thread(
            target=lambda: results.append(
                run_playbook(
                    long_run,
                    ["-e", "sweep_run_id=run-a"],
                    project_dir=REPO,
                    inventory=first,
                    timeout=120,
                )
            )
        )
        thread.start()
        deadline = time.monotonic() + 60
        while not any("run-a" in p.read_text() for p in LOCKS.glob("*.lock") if p.is_file()):
            assert time.monotonic() < deadline and thread.is_alive(), "run A never took the lock"
            time.sleep(0.5)
        refused = run_lab(
            RunOptions(REPO, stage="summary", inventory=second, extra_vars=["sweep_run_id=run-b"]),
            LogView(io.StringIO()),
            results_root=tmp_path / "results",
        )
        thread.join(120)
        after = run_lab(
            RunOptions(REPO, stage="summary", inventory=second, extra_vars=["sweep_run_id=run-b"]),
            LogView(io.StringIO()),
            results_root=tmp_path / "results",
        )
    finally:
        listener.close()
    assert refused.exit_code == 2
    (message,) = refused.check_errors
    assert message.startswith("another run holds the lab: run run-a, ansible-playbook pid ")
    assert results and results[0].rc == 0, results[0].report() if results else "no run A"
    assert after.exit_code == 0, after.check_errors  # the lock went with run A
    assert listener.connections == 0


@pytest.fixture(scope="module")
def recorded() -> list[dict[str, Any]]:
    return [json.loads(line) for line in EVENTS.read_text().splitlines()]


def test_the_view_follows_a_recorded_run(recorded: list[dict[str, Any]]) -> None:
    out = io.StringIO()
    progress = replay(recorded, out)
    lines = out.getvalue().splitlines()
    assert progress.run_id and progress.run_id.startswith("vlab-site-")
    # A line per finished build, with its duration.
    built = [line for line in lines if line.startswith("build: ")]
    assert {line.split()[1] for line in built} == {"vanilla", "broken", "mt-unbound", "mt-highpri"}
    assert all(" built in " in line or " cached (" in line for line in built)
    # Per host: each variant it went through, its stages, its sweep cells as they were done.
    for host in ("vnode1", "vnode2"):
        mine = [line for line in lines if line.startswith(f"{host}: ")]
        assert any("variant vanilla boot" in line for line in mine), mine
        assert any("variant mt-unbound sweep 24/24 cells" in line for line in mine), mine
        assert any(" collect" in line for line in mine), mine
        state = progress.hosts[host]
        assert state.variant == "mt-highpri" and not state.failures and not state.unreachable
    assert progress.hosts["vnode1"].variants_done == ["vanilla", "mt-unbound"]
    # the canary on vnode2 only, and the host went on
    assert progress.hosts["vnode2"].variants_done == ["vanilla", "broken", "mt-unbound"]
    assert not progress.check_errors


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
def test_a_failed_loop_is_reported_as_its_failed_items(tmp_path: Path) -> None:
    """One line per failed item, not one more for the loop's "One or more items failed"."""
    play = tmp_path / "loop.yml"
    play.write_text(
        yaml.safe_dump(
            [
                {
                    "name": "A loop with one bad item",
                    "hosts": "localhost",
                    "gather_facts": False,
                    "tasks": [
                        {
                            "name": "Refuse item two",
                            "ansible.builtin.fail": {"msg": "item {{ item }} is bad"},
                            "when": "item == 2",
                            "loop": [1, 2, 3],
                        }
                    ],
                }
            ],
            sort_keys=False,
        )
    )
    run = run_playbook(play, project_dir=REPO, timeout=120)
    assert run.rc != 0
    assert run.failures() == ["localhost: Refuse item two: item 2 is bad"], run.failures()


VANILLA = [{"name": "vanilla"}]
# (bad input, how it is given: inventory host names, variants, sweep over the example's,
# extra vars, stage), and what the refusal must name
BAD_INPUTS = [
    ("host name with a path", {"names": ("../../escaped", "epyc1")}, "'../../escaped'"),
    ("host name with a space", {"names": ("grace1 -H otherbmc", "epyc1")}, "grace1 -H otherbmc"),
    ("run id with a path", {"extra": ["sweep_run_id=../secret"]}, "'../secret'"),
    ("collect's run id with a path", {"extra": ["collect_run_id=../secret"], "stage": "collect"},
     "collect_run_id"),
    ("page count 0", {"sweep": {"sweep_page_counts": {"base": [0], "2M": [1]}}},
     "sweep_page_counts.base[0]"),
    ("unknown folio kind", {"sweep": {"sweep_folio_kinds": ["base", "huge"]}},
     "sweep_folio_kinds"),
    ("repetitions not a number", {"sweep": {"sweep_repetitions": "many"}}, "sweep_repetitions"),
    ("git url that is an option",
     {"variants": [{"name": "vanilla", "source": {"git": {
         "url": "--upload-pack=touch /tmp/miglab-pwned", "ref": "main"}}}]},
     "kernel_variants[0].source.git.url"),
    ("Message-ID with a path",
     {"variants": [{"name": "vanilla"}, {"name": "mt", "patches": [
         {"message_id": "../../../../tmp/evil@x"}]}]},
     "kernel_variants[1].patches[0]"),
    ("Message-ID that is an option",
     {"variants": [{"name": "vanilla"}, {"name": "mt", "patches": [{"message_id": "--help@x"}]}]},
     "kernel_variants[1].patches[0]"),
    ("config value not in Kconfig syntax",
     {"variants": [{"name": "vanilla", "config": {"options": ["CONFIG_NUMA=maybe"]}}]},
     "kernel_variants[0].config.options[0]"),
    ("config number that is not one",
     {"variants": [{"name": "vanilla", "config": {"options": ["CONFIG_HZ=banana"]}}]},
     "kernel_variants[0].config.options[0]"),
    ("variant with an unknown key", {"variants": [{"name": "vanilla", "colour": "red"}]},
     "kernel_variants.colour"),
    ("variant name with a path", {"variants": [{"name": "../x"}]}, "kernel_variants[0].name"),
]  # fmt: skip


@pytest.mark.vlab  # real ansible-playbook runs: the slow suite
@pytest.mark.parametrize(("given", "named"), [case[1:] for case in BAD_INPUTS],
                         ids=[case[0] for case in BAD_INPUTS])  # fmt: skip
def test_bad_input_is_refused_naming_it_before_any_host_is_contacted(
    tmp_path: Path, given: dict[str, Any], named: str
) -> None:
    listener = Listener()
    pwned = Path("/tmp/miglab-pwned")
    pwned.unlink(missing_ok=True)
    try:
        inventory = lab_inventory(
            tmp_path,
            listener.port,
            given.get("variants", VANILLA),
            names=given.get("names", ("grace1", "epyc1")),
            sweep=given.get("sweep"),
        )
        options = RunOptions(
            REPO, stage=given.get("stage"), inventory=inventory, extra_vars=given.get("extra", [])
        )
        outcome = run_lab(options, LogView(io.StringIO()), results_root=tmp_path / "results")
    finally:
        listener.close()
    assert outcome.exit_code == 2, outcome
    assert any(named in error for error in outcome.check_errors), outcome.check_errors
    assert listener.connections == 0
    assert not pwned.exists()
