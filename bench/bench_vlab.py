#!/usr/bin/env python3
"""Virtual-lab speed: the first image build, and `up` of every guest from a cached image.

Goals (2-core machine, TCG): first build <= 300 s; up of two guests from cache <= 90 s.
Run from the repo root as root: `.venv/bin/python bench/bench_vlab.py [--skip-build]`;
`--arch aarch64` times the foreign-architecture (arm64) image instead, `-i INVENTORY` brings
up another lab (e.g. one with an aarch64 guest).
The cold build goes to a temporary cache directory, so the lab's own cache is untouched.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from miglab.vlab.image import ImageRecipe, build_image

REPO = Path(__file__).resolve().parents[1]
PLAYBOOK = [str(REPO / ".venv" / "bin" / "ansible-playbook"), "playbooks/vlab.yml"]


def timed_playbook(inventory: list[str], *extra: str) -> float:
    started = time.monotonic()
    subprocess.run([*PLAYBOOK, *inventory, *extra], cwd=REPO, check=True, stdout=subprocess.DEVNULL)
    return time.monotonic() - started


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--skip-build", action="store_true", help="do not time a cold image build")
    parser.add_argument(
        "--arch", choices=["x86_64", "aarch64"], default="x86_64", help="the image to build"
    )
    parser.add_argument("-i", "--inventory", help="the lab to bring up (default: the vlab)")
    args = parser.parse_args(argv)
    inventory = ["-i", args.inventory] if args.inventory else []

    if not args.skip_build:
        with tempfile.TemporaryDirectory(prefix="miglab-bench-", dir="/var/tmp") as cache:
            started = time.monotonic()
            build_image(ImageRecipe.for_arch(args.arch), Path(cache), "tcg")
            print(
                f"first {args.arch} image build: {time.monotonic() - started:.1f} s"
                + (" (goal <= 300 s)" if args.arch == "x86_64" else "")
            )

    # Make sure the lab's own image is cached, then time a cold `up` from it.
    timed_playbook(inventory)
    timed_playbook(inventory, "-e", "vlab_state=down")
    up = timed_playbook(inventory)
    print(f"up of the lab's guests from a cached image: {up:.1f} s (goal <= 90 s)")
    again = timed_playbook(inventory)
    print(f"up again (nothing to do): {again:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
