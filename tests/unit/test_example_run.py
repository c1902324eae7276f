"""The committed example run (docs/examples/vlab-site/, a real run of the virtual lab's main
job): the thread's table layout comes out of it, with the shared vanilla column and the marks
its guests' shapes call for, and the other analysis commands run on it."""

from __future__ import annotations

from pathlib import Path

import pytest
from miglab.cli import main
from miglab.results.check import check_results
from miglab.results.load import load_samples
from miglab.results.render import render_summary_tables
from miglab.results.stats import StabilityRule
from miglab.results.tables import SummaryTable, build_tables

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "vlab-site"
COLUMNS = ["vanilla", "serial", "mt_1", "mt_2", "mt_4"]
# per guest: CPUs of each NUMA node (inventory/vlab/group_vars/all/vlab.yml when it was run)
NODE_CPUS = {"vnode1": 1, "vnode2": 2}
PAGE_COUNTS = {"4KB": [64], "2MB THP": [2], "64KB mTHP": [16]}


@pytest.fixture(scope="module")
def tables() -> list[SummaryTable]:
    return build_tables(load_samples([EXAMPLE]).frame)


def test_the_example_is_complete_and_consistent() -> None:
    report = check_results([EXAMPLE])
    assert report.ok, report
    assert len(load_samples([EXAMPLE]).frame) == 324


def test_the_thread_layout_per_host_kind_load_and_workqueue(tables: list[SummaryTable]) -> None:
    titles = [table.title for table in tables]
    assert len(titles) == len(set(titles)) == 2 * 3 * 2 * 2, titles
    for table in tables:
        assert table.configs == COLUMNS, table.title
        kind = next(k for k in PAGE_COUNTS if table.title.startswith(f"{k} "))
        assert table.page_counts == PAGE_COUNTS[kind], table.title
        assert any(w in table.title for w in ("system_unbound_wq", "system_highpri_wq"))
        assert all(table.usable_cell(n, c) for n in table.page_counts for c in COLUMNS)


def test_one_vanilla_column_is_shared_by_the_unbound_and_highpri_tables(
    tables: list[SummaryTable],
) -> None:
    by_base: dict[tuple[str, str, str], list[SummaryTable]] = {}
    for table in tables:
        by_base.setdefault((table.key.host, table.key.page_kind, table.key.load), []).append(table)
    assert len(by_base) == 12
    for base, pair in by_base.items():
        unbound, highpri = sorted(pair, key=lambda t: str(t.key.workqueue) != "unbound")
        assert (unbound.key.workqueue, highpri.key.workqueue) == ("unbound", "highpri"), base
        count = unbound.page_counts[0]
        assert unbound.cell(count, "vanilla") == highpri.cell(count, "vanilla"), base
        assert unbound.cell(count, "serial") != highpri.cell(count, "serial"), base


def test_mt_cells_wider_than_a_node_are_marked_clamped(tables: list[SummaryTable]) -> None:
    for table in tables:
        cpus = NODE_CPUS[table.key.host]
        clamped = sorted({config for _, config, _ in table.clamped_cells()})
        assert clamped == [c for c in ("mt_2", "mt_4") if int(c[3:]) > cpus], table.title
        for _, config, cell in table.clamped_cells():
            assert cell.threads_effective <= cpus + 1e-9, (table.title, config)
    text = render_summary_tables(tables, "text", StabilityRule())
    assert "Clamped: mt_2 at 64 pages ran 1 copy thread per batch on average" in text
    assert "Clamped: mt_4 at 64 pages ran 2 copy threads per batch on average" in text


@pytest.mark.parametrize(
    "argv",
    [
        ["compare", "--speedup"],
        ["cost", "--load", "busy"],
        ["crossover"],
        ["table", "--relative-to", "ceiling"],
    ],
)
def test_the_readme_commands_run_on_it(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*argv, str(EXAMPLE)]) == 0
    out = capsys.readouterr().out
    assert "vnode1" in out and "vnode2" in out
