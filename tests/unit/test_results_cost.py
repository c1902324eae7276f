"""What a configuration costs, when it pays off, how close it gets to the ceiling: each
statistic on records with known answers (CPU split arithmetic, application loss, a Pareto
front, a crossover at a known page count, the ceiling ratio), old records without the new
fields, and the commands' bad input."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import results_fixture as fx
from miglab.cli import main
from miglab.errors import ConfigError
from miglab.results.ceiling import relative_to_ceiling
from miglab.results.cost import cost_cells, cost_tables, estimate, pareto_front
from miglab.results.crossover import crossovers, threshold
from miglab.results.load import load_samples
from miglab.results.sidecars import sidecars_for
from miglab.results.tables import build_tables
from scipy import stats as scipy_stats

MIB = 1 << 20


def v2(records: list[dict], **fields: object) -> list[dict]:
    """Records as migbench 1.3 and the runner write them (schema 2)."""
    return [{**r, "schema": "miglab.sample/2", **fields} for r in records]


def key(host: str, kind: str, load: str, workqueue: str | None, variant: str, config: str,
        count: int) -> tuple[object, ...]:  # fmt: skip
    return (host, kind, load, workqueue, variant, config, count)


def test_cpu_per_gb_charged_and_charged_to_nobody(tmp_path: Path) -> None:
    """Per sample: CPU ns / 1e6 per (bytes / 1e9); the cell's figure is the mean of its
    samples with a t interval."""
    records = []
    for rep, (caller, kthreads) in enumerate([(1_000_000, 3_000_000), (2_000_000, 5_000_000)]):
        (r,) = fx.samples_at(fx.EPYC, fx.UNBOUND, "busy", "mt_2", "2M", 4, [2.0], first_rep=rep)
        r.update(caller_cpu_ns=caller, kthread_cpu_ns=kthreads, cgroup_cpu_ns=caller,
                 load_cpu_share=0.72, load_cpu_share_baseline=0.9)  # fmt: skip
        records.append(r)
    fx.write_jsonl(tmp_path / "r2" / "epyc1" / "samples.jsonl", v2(records))
    frame = load_samples([tmp_path]).frame
    cell = cost_cells(frame)[key("epyc1", "2M", "busy", "unbound", "mt-unbound", "mt_2", 4)]
    gb = 4 * 2 * MIB / 1e9
    charged = np.array([1.0, 2.0]) / gb  # ms per GB
    assert cell.charged.n == 2 and cell.charged.mean == pytest.approx(charged.mean())
    half = scipy_stats.t.ppf(0.975, 1) * charged.std(ddof=1) / math.sqrt(2)
    assert cell.charged.high - cell.charged.mean == pytest.approx(half)
    assert cell.uncharged.mean == pytest.approx((np.array([3.0, 5.0]) / gb).mean())
    assert cell.cgroup.mean == pytest.approx(cell.charged.mean)
    assert cell.app_loss_percent == pytest.approx(20.0)  # (0.9 - 0.72) / 0.9


def test_records_without_the_new_fields_show_them_missing_never_zero(tmp_path: Path) -> None:
    """Schema 1 records (before migbench measured kernel threads) load; their uncharged CPU
    is missing, and a schema 2 record next to them keeps its own."""
    old = fx.samples_at(fx.EPYC, fx.UNBOUND, "idle", "mt_2", "2M", 4, [2.0, 2.1])
    new = v2(fx.samples_at(fx.EPYC, fx.UNBOUND, "idle", "mt_2", "2M", 8, [2.0, 2.1]),
             kthread_cpu_ns=4_000_000)  # fmt: skip
    fx.write_jsonl(tmp_path / "r2" / "epyc1" / "samples.jsonl", old + new)
    frame = load_samples([tmp_path]).frame
    assert frame["kthread_cpu_ns"].isna().sum() == 2
    cells = cost_cells(frame)
    assert cells[key("epyc1", "2M", "idle", "unbound", "mt-unbound", "mt_2", 4)].uncharged.missing
    assert cells[key("epyc1", "2M", "idle", "unbound", "mt-unbound", "mt_2", 8)].uncharged.n == 2
    code = main(["cost", str(tmp_path), "--format", "text", "-o", str(tmp_path / "out.txt")])
    assert code == 0
    text = (tmp_path / "out.txt").read_text()
    row4 = next(line for line in text.splitlines() if line.strip().startswith("4 "))
    assert row4.split("/")[1].strip().startswith("-"), row4  # missing, not 0.00
    assert "No kernel-thread CPU time in the records of: mt_2 at 4 pages" in text


def test_estimate_of_one_value_has_no_interval() -> None:
    one = estimate(np.array([3.0, np.nan]))
    assert one.n == 1 and one.mean == 3.0 and math.isnan(one.low)
    assert estimate(np.array([])).missing


def test_the_pareto_front() -> None:
    points = [(0.0, 1.0), (5.0, 3.0), (3.0, 2.0), (4.0, 1.5), (10.0, 3.0), (0.0, 0.5)]
    # (4, 1.5) loses to (3, 2); (10, 3) to (5, 3); (0, 0.5) to (0, 1)
    assert pareto_front(points) == [0, 2, 1]
    assert pareto_front([(1.0, 1.0), (1.0, 1.0)]) == [0, 1]  # ties beat nobody


def test_threshold_is_the_start_of_the_last_unbroken_run() -> None:
    assert threshold([1, 2, 4, 8], [False, False, True, True]) == 4
    assert threshold([1, 2, 4, 8], [False, True, False, True]) == 8
    assert threshold([1, 2, 4, 8], [True, True, True, True]) == 1
    assert threshold([1, 2, 4, 8], [True, True, True, False]) is None


def crossover_records() -> list[dict]:
    records = []
    serial = {1: 1.0, 2: 1.0, 4: 1.0, 8: 1.0, 16: 1.0}
    configs = {
        "serial": serial,
        "mt_4": {1: 0.5, 2: 1.0, 4: 2.0, 8: 2.5, 16: 3.0},  # pays off from 4 pages
        "mt_2": {1: 1.5, 2: 0.7, 4: 0.7, 8: 1.5, 16: 1.6},  # faster at 1, then from 8
        "mt_1": {1: 0.9, 2: 0.9, 4: 0.9, 8: 0.9, 16: 0.9},  # never
    }
    for config, means in configs.items():
        records += fx.Grid(fx.EPYC, fx.UNBOUND, "idle", "2M", {config: means}).records()
    records += fx.Grid(fx.EPYC, fx.VANILLA, "idle", "2M", {"vanilla": serial}).records()
    return records


def test_the_crossover_is_found_at_its_page_count(tmp_path: Path) -> None:
    fx.write_jsonl(tmp_path / "r2" / "epyc1" / "samples.jsonl", crossover_records())
    frame = load_samples([tmp_path]).frame
    found = {(c.copy_config, c.baseline): c for c in crossovers(frame)}
    assert found[("mt_4", "serial")].page_count == 4
    assert found[("mt_2", "serial")].page_count == 8
    assert found[("mt_1", "serial")].page_count is None
    assert found[("mt_4", "vanilla")].page_count == 4
    assert found[("mt_1", "serial")].text() == "never"
    assert found[("mt_4", "serial")].text() == ">= 4 pages"
    out = tmp_path / "crossover.md"
    assert main(["crossover", str(tmp_path), "-o", str(out)]) == 0
    text = out.read_text()
    assert "Crossover - host epyc1" in text
    assert ">= 4 pages vs serial; >= 4 pages vs vanilla" in text and "never vs serial" in text
    document = tmp_path / "crossover.json"
    assert main(["crossover", str(tmp_path), "--format", "json", "-o", str(document)]) == 0
    items = json.loads(document.read_text())["crossovers"]
    mt4 = next(i for i in items if i["copy_config"] == "mt_4" and i["baseline"] == "serial")
    assert mt4["from_page_count"] == 4 and mt4["significantly_faster"] == [
        False, False, True, True, True,
    ]  # fmt: skip


def write_ceiling(host_dir: Path, variant: str, load: str, gbps: dict[int, float],
                  ok: bool = True) -> None:  # fmt: skip
    path = host_dir / "variants" / variant / f"ceiling-{load}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    measurements = [
        {"type": "ceiling", "direction": direction, "threads": t, "cpus": t, "rep": rep,
         "bytes": 1 << 30, "elapsed_ns": 1, "gbps": value * (1 + 0.01 * rep),
         "placement_ok": True}
        for t, value in gbps.items() for direction in ("push", "pull") for rep in (0, 1, 2)
    ]  # fmt: skip
    path.write_text(
        json.dumps(
            {"schema": "miglab.ceiling/1", "run_id": "r2", "host": "epyc1",
             "kernel_variant": variant, "kernel_release": "x", "load": load, "ok": ok,
             "error": None if ok else "ceiling: 3 of 8 pages not on node 1",
             "measurements": measurements if ok else []}
        )
    )  # fmt: skip


def test_cells_relative_to_the_ceiling_at_their_thread_count(tmp_path: Path) -> None:
    records = fx.Grid(fx.EPYC, fx.VANILLA, "idle", "2M", {"vanilla": {1: 2.0}}).records()
    records += fx.Grid(
        fx.EPYC, fx.UNBOUND, "idle", "2M", {"serial": {1: 1.5}, "mt_4": {1: 6.0}}
    ).records()
    host_dir = tmp_path / "r2" / "epyc1"
    fx.write_jsonl(host_dir / "samples.jsonl", records)
    write_ceiling(host_dir, "vanilla", "idle", {1: 10.0})
    write_ceiling(host_dir, "mt-unbound", "idle", {1: 5.0, 4: 20.0})
    samples = load_samples([tmp_path])
    tables = build_tables(samples.frame)
    sidecars = sidecars_for(source.path for source in samples.sources)
    (table,) = relative_to_ceiling(tables, sidecars)
    # the median of three reps (1.00x, 1.01x, 1.02x the given value): 1.01x
    assert table.cell(1, "vanilla").value == pytest.approx(2.0 / 10.1 * 100, rel=1e-3)
    assert table.cell(1, "serial").value == pytest.approx(1.5 / 5.05 * 100, rel=1e-3)
    assert table.cell(1, "mt_4").value == pytest.approx(6.0 / 20.2 * 100, rel=1e-3)
    assert "% of the copy ceiling, push" in table.title
    assert table.notes(fx_rule())[0].startswith("Cells: the statistic as a percentage")
    out = tmp_path / "relative.md"
    assert main(["table", str(tmp_path), "--relative-to", "ceiling", "-o", str(out)]) == 0
    assert "29.70" in out.read_text()  # mt_4: 6 / 20.2


def fx_rule():  # the tables' default stability rule
    from miglab.results.stats import StabilityRule

    return StabilityRule()


def test_no_ceiling_is_an_error_naming_the_run_and_host(tmp_path: Path, capsys) -> None:
    host_dir = tmp_path / "r2" / "epyc1"
    fx.write_jsonl(
        host_dir / "samples.jsonl",
        fx.Grid(fx.EPYC, fx.VANILLA, "idle", "2M", {"vanilla": {1: 2.0}}).records(),
    )
    assert main(["table", str(tmp_path), "--relative-to", "ceiling"]) == 2
    err = capsys.readouterr().err
    assert "--relative-to ceiling" in err and "run r2" in err and "host epyc1" in err
    # a failed measurement is named too
    write_ceiling(host_dir, "vanilla", "idle", {}, ok=False)
    samples = load_samples([tmp_path])
    with pytest.raises(ConfigError, match="run r2, host epyc1: .*the measurement failed"):
        relative_to_ceiling(
            build_tables(samples.frame), sidecars_for(s.path for s in samples.sources)
        )


def test_a_bad_ceiling_file_is_a_sidecar_problem_naming_the_key(tmp_path: Path) -> None:
    host_dir = tmp_path / "r2" / "epyc1"
    fx.write_jsonl(
        host_dir / "samples.jsonl",
        fx.Grid(fx.EPYC, fx.VANILLA, "idle", "2M", {"vanilla": {1: 2.0}}).records(),
    )
    write_ceiling(host_dir, "vanilla", "idle", {1: 10.0})
    path = host_dir / "variants" / "vanilla" / "ceiling-idle.json"
    data = json.loads(path.read_text())
    data["measurements"][1]["placement_ok"] = False
    path.write_text(json.dumps(data))
    (side,) = sidecars_for([host_dir / "samples.jsonl"])
    assert side.ceilings == []
    assert side.problems == (
        f"{path}: measurements[1].placement_ok: the buffers' node placement was not verified",
    )


def test_cost_tables_share_the_vanilla_column(tmp_path: Path) -> None:
    fx.write_results(tmp_path)
    tables = cost_tables(load_samples([tmp_path]).frame)
    grace_busy = [t for t in tables if (t.host, t.page_kind, t.load) == ("grace1", "2M", "busy")]
    assert [t.workqueue for t in grace_busy] == ["highpri", "unbound"]
    assert all(t.configs[0] == "vanilla" for t in grace_busy)
    a, b = (t.cells[(1, "vanilla")] for t in grace_busy)
    assert a == b
