"""`miglab vlab ...`: the virtual lab's power buttons, for people and for playbooks.

`playbooks/vlab.yml` brings the lab up and down; these commands act on one running guest,
e.g. the kernel_boot role's power-cycle command on the virtual lab is
`miglab vlab power-cycle vnode1 --state-dir .vlab`.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from miglab.errors import MiglabError
from miglab.vlab import guests
from miglab.vlab.qemu import GuestPaths


def _paths(args: argparse.Namespace) -> GuestPaths:
    paths = GuestPaths.for_guest(Path(args.state_dir), args.guest)
    if not paths.directory.is_dir():
        raise MiglabError(f"guest {args.guest!r}: no such guest under {args.state_dir}/guests")
    return paths


def reset(args: argparse.Namespace) -> int:
    guests.reset(_paths(args))
    print(f"{args.guest}: reset")
    return 0


def power_cycle(args: argparse.Namespace) -> int:
    pid = guests.power_cycle(_paths(args))
    print(f"{args.guest}: power-cycled (qemu pid {pid})")
    return 0


def poweroff(args: argparse.Namespace) -> int:
    was_running = guests.stop(_paths(args))
    print(f"{args.guest}: {'powered off' if was_running else 'was not running'}")
    return 0


def console(args: argparse.Namespace) -> int:
    log = _paths(args).console_log
    lines = log.read_text(errors="replace").splitlines() if log.exists() else []
    print("\n".join(lines[-args.lines :]))
    return 0


def state(args: argparse.Namespace) -> int:
    paths = _paths(args)
    pid = guests.running_pid(paths)
    answer: object = None
    if pid is not None:
        answer = guests.qmp(paths, "query-status")
    print(json.dumps({"guest": args.guest, "running": pid is not None, "pid": pid, "qmp": answer}))
    return 0


def register(subparsers: argparse._SubParsersAction) -> None:
    vlab = subparsers.add_parser(
        "vlab", help="act on one guest of the virtual lab (reset, power off, console)"
    )
    actions = vlab.add_subparsers(dest="vlab_command", required=True, metavar="ACTION")
    for name, handler, text in (
        ("reset", reset, "the reset button (QMP system_reset; the power supply cold-boots it)"),
        (
            "power-cycle",
            power_cycle,
            "power off and on: the power supply restarts qemu (a cold boot)",
        ),
        ("poweroff", poweroff, "power off and clean up the pid file and socket"),
        ("state", state, "running or not, with QMP's status, as JSON"),
        ("console", console, "print the tail of the serial console log"),
    ):
        action = actions.add_parser(name, help=text)
        action.add_argument("guest", help="guest name, e.g. vnode1")
        action.add_argument(
            "--state-dir", default=".vlab", help="the lab's state directory (default: .vlab)"
        )
        if name == "console":
            action.add_argument(
                "--lines", type=int, default=60, help="how many lines (default: 60)"
            )
        action.set_defaults(func=handler)
