"""Shared code of miglab's controller-side Ansible modules.

They run on the controller (delegated to localhost) with the virtualenv's Python, where the
miglab and miglab_host packages are installed, and report miglab's own errors the same
way: the message, and the inventory key it names.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def lab_errors(module: Any) -> Iterator[None]:
    """Run the body; a missing miglab or one of its errors becomes a failed task."""
    try:
        yield
    except ImportError as error:
        module.fail_json(
            msg=f"the controller's Python lacks miglab ({error}): run `bash .ci/setup` and "
            "Ansible from its virtualenv (.venv/bin/ansible-playbook)"
        )
    except Exception as error:
        if not _is_lab_error(error):
            raise
        key = getattr(error, "key", None)
        module.fail_json(msg=str(error), **({"key": key} if key else {}))


def _is_lab_error(error: Exception) -> bool:
    from miglab.errors import MiglabError
    from miglab_host.plan import PlanError

    return isinstance(error, (MiglabError, PlanError))
