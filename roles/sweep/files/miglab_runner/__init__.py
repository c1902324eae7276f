"""miglab_runner: the host-side sweep runner of miglab (Python standard library only).

It runs on the lab hosts' own python3 (Debian bookworm: 3.11) and on the controller (plan
validation). Sub-commands: ``python3 -m miglab_runner {plan,preflight,run,status,stop,restore}``.
"""

__version__ = "1.0"

SAMPLE_SCHEMA = "miglab.sample/1"
PLAN_SCHEMA = "miglab.plan/1"
