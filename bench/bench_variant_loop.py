#!/usr/bin/env python3
"""The lab's wall time for the whole job (playbooks/site.yml) with two guests of different
speed, against the slower host's own time: does a host that finishes a variant early wait
for the other?

One guest gets a longer settle time before every cell (`sweep_settle_seconds`, a host
variable), so its sweeps are slow; the other runs the broken canary variant, whose boot
times out. With fixed variant slots every host waits for the slowest at every variant; in a
loop of its own, each host only waits for itself.

    python3 bench/bench_variant_loop.py                       # this checkout
    python3 bench/bench_variant_loop.py --checkout /tmp/old   # e.g. a worktree of an older commit

For each checkout it runs the whole job twice on the running virtual lab (kernel builds
cached: run the job once beforehand), with the same small sweep for every design (idle, base
pages, one page count, 3 samples): both guests (wall time W), then the slow guest alone with
--limit (its own time S). It prints W, S and W / S (goal: at most 1.10). The lab's
state (.vlab) is this checkout's, whichever checkout runs: the same guests for every design.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from miglab.lab.ansible import run_playbook

REPO = Path(__file__).resolve().parents[1]


def bench_inventory(checkout: Path, slow: str, settle: float) -> Path:
    """A copy of the checkout's virtual-lab inventory (at the same depth, so its relative
    paths hold) with the slow guest's settle time and this checkout's lab state."""
    source = checkout / "inventory" / "vlab"
    target = checkout / "inventory" / "bench-loop"
    shutil.rmtree(target, ignore_errors=True)
    shutil.copytree(source, target)
    vlab = target / "group_vars" / "all" / "vlab.yml"
    text = vlab.read_text()
    lines = [line for line in text.splitlines() if not line.startswith("vlab_state_dir:")]
    lines.append(f"vlab_state_dir: {REPO / '.vlab'}")
    vlab.write_text("\n".join(lines) + "\n")
    (target / "host_vars").mkdir(exist_ok=True)
    (target / "host_vars" / f"{slow}.yml").write_text(
        f"---\n# bench_variant_loop.py: this guest's sweeps are slow\nsweep_settle_seconds: {settle}\n"
    )
    return target / "hosts.yml"


def spans(events: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds from each lab host's first task to its last, from the run's events."""
    first: dict[str, dt.datetime] = {}
    last: dict[str, dt.datetime] = {}
    for event in events:
        host = (event.get("event_data") or {}).get("host")
        if not host or host == "localhost" or "created" not in event:
            continue
        when = dt.datetime.fromisoformat(event["created"])
        first.setdefault(host, when)
        last[host] = when
    return {host: (last[host] - first[host]).total_seconds() for host in sorted(first)}


# The same small sweep for every design: one load, base pages, one page count.
SMALL_SWEEP = {
    "sweep_loads": ["idle"],
    "sweep_folio_kinds": ["base"],
    "sweep_page_counts": {"base": [64]},
    "sweep_repetitions": 3,
    "sweep_warmup": 1,
}


def whole_job(
    checkout: Path, inventory: Path, run_id: str, limit: str | None
) -> tuple[float, dict[str, float]]:
    """site.yml of `checkout` on the lab: its wall time and each host's span."""
    started = time.monotonic()
    run = run_playbook(
        Path("playbooks/site.yml"),
        ["-e", json.dumps({"sweep_run_id": run_id, **SMALL_SWEEP})],
        project_dir=checkout,
        inventory=inventory,
        limit=f"{limit},localhost" if limit else None,
    )
    seconds = time.monotonic() - started
    log = checkout / "results" / f"{run_id}.log"
    log.parent.mkdir(exist_ok=True)
    log.write_text(run.stdout())
    if run.rc != 0:
        raise SystemExit(f"{run_id}: ansible-playbook exit {run.rc}; see {log}\n{run.report()}")
    return seconds, spans(run.events)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--checkout", type=Path, default=REPO, help="the miglab tree to run")
    parser.add_argument("--slow", default="vnode1", help="the guest with the long settle time")
    parser.add_argument("--settle", type=float, default=20.0, help="its settle time per cell (s)")
    args = parser.parse_args(argv)
    checkout = args.checkout.resolve()
    inventory = bench_inventory(checkout, args.slow, args.settle)
    stamp = time.strftime("%Y%m%d-%H%M%S")
    design = checkout.name
    try:
        wall, both_spans = whole_job(checkout, inventory, f"bench-loop-{stamp}-both", None)
        alone, _ = whole_job(checkout, inventory, f"bench-loop-{stamp}-{args.slow}", args.slow)
    finally:
        shutil.rmtree(inventory.parent, ignore_errors=True)
    print(f"checkout {checkout} ({design}); {args.slow} settles {args.settle:g} s per cell")
    print(f"whole job, both guests (W):          {wall:7.0f} s")
    for host, span in both_spans.items():
        print(f"  {host}: first to last task         {span:7.0f} s")
    print(f"whole job, {args.slow} alone (S):        {alone:7.0f} s")
    print(f"W / S:                               {wall / alone:7.2f}  (goal <= 1.10)")
    # Whether the job waits for anything beyond its slowest host: with variant slots every
    # host waits at every variant, so W exceeds even the slowest span; with a loop of its
    # own per host, W ends with the slowest host. W / S also holds the CPU the two guests
    # take from each other (2 CPUs, two TCG guests): the slow guest's span with the other
    # running, against S, shows how much.
    slowest = max(both_spans, key=both_spans.__getitem__)
    print(
        f"W / slowest host's span ({slowest}):      {wall / both_spans[slowest]:7.2f}  "
        f"({args.slow} with the other guest running / alone: "
        f"{both_spans.get(args.slow, float('nan')) / alone:.2f})"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
