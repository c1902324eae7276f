"""miglab_host: everything miglab runs on a lab host or build host (Python standard library
only), shipped there as one archive and installed in the controller's virtualenv too.

It runs on the hosts' own python3 (Debian bookworm: 3.11) and on the controller (plan
validation, the manifest check at home). ``python3 -m miglab_host --help`` lists the
sub-commands: facts (the lab facts), plan, preflight, run, status, stop, restore (the sweep
runner), manifest (SHA256SUMS of a run), kbuild (the kernel build tool).

The sample schema (results-schema.json) and the knob profiles (profiles.json) live here, the
one copy that the runner, the analysis and the docs all read.
"""

import json
import os

__version__ = "1.1"

SAMPLE_SCHEMA = "miglab.sample/2"
PLAN_SCHEMA = "miglab.plan/1"
PACKAGE_DIR = os.path.dirname(os.path.abspath(__file__))
SCHEMA_FILE = os.path.join(PACKAGE_DIR, "results-schema.json")


def sample_schema() -> dict:
    """The JSON Schema of a sample record (miglab.sample/2; reads version 1 too)."""
    with open(SCHEMA_FILE, encoding="utf-8") as f:
        return dict(json.load(f))
