"""`miglab run`: the lab's main job, or one stage of it, with a live view."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from rich.console import Console

from miglab.lab.run import STAGES, RunOptions, find_project_dir, finish, run_lab
from miglab.lab.view import LiveView, LogView


def run(args: argparse.Namespace) -> int:
    options = RunOptions(
        project_dir=(args.project_dir or find_project_dir()).resolve(),
        stage=args.stage,
        limit=args.limit,
        inventory=args.inventory,
        extra_vars=list(args.extra_vars or []),
    )
    options.check()
    console = Console(file=sys.stdout)
    live = console.is_terminal and not args.log
    view = LiveView(console) if live else LogView(sys.stdout)
    outcome = run_lab(options, view)
    return finish(outcome, options, sys.stdout)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "run",
        help="run the lab's main job (playbooks/site.yml) or one stage, with a live view",
        description="Runs playbooks/site.yml through ansible-runner: per host the variant, "
        "stage and sweep progress (cells done / total, ETA), a line per finished kernel build; "
        "then the recap, the tables and the report's path. The run's Ansible events are kept "
        "in results/<run_id>/ansible/. Exit 0 ok, 1 a host failed, 2 bad input.",
    )
    parser.add_argument(
        "--stage",
        choices=STAGES,
        help="only this stage (boot and sweep are one loop: each host boots, then sweeps, "
        "each of its variants)",
    )
    parser.add_argument("--limit", help="only these hosts (Ansible's --limit)")
    parser.add_argument("-i", "--inventory", type=Path, help="inventory (default: ansible.cfg's)")
    parser.add_argument(
        "-e",
        "--extra-vars",
        action="append",
        metavar="VARS",
        help="extra variables, as for ansible-playbook (key=value, JSON or @file; repeatable)",
    )
    parser.add_argument("--log", action="store_true", help="a line per change, not a live table")
    parser.add_argument(
        "--project-dir", type=Path, help="the miglab checkout (default: found from here)"
    )
    parser.set_defaults(func=run)
