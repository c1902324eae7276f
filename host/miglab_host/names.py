"""Names that become path components or command arguments: one strict pattern for each.

A host name, a run id, a variant name, a patch file name ends up in a path (results/<run
id>/<host>/, the build's patch directory, the patch cache); a Message-ID ends up in a path
and in b4's argv. Each is checked here, on the controller before anything runs and again
where it is used, and a path made of them must stay under its root.
"""

from __future__ import annotations

import os
import re

# A path component: letters, digits, '.', '_', '-', starting with a letter or digit (so
# never '.', '..', an option such as '--help' or a hidden file), at most 128 characters.
PATH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
# A Message-ID (RFC 5322 msg-id, without the angle brackets) that is safe as a file name and
# as an argument: no '/', no leading '-' or '.', one '@'.
MESSAGE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._+=%$-]{0,200}@[A-Za-z0-9][A-Za-z0-9.-]{0,200}$")


def name_problem(value: object, what: str = "name") -> str | None:
    """Why `value` is not a path-component name (None if it is one)."""
    if not isinstance(value, str) or not PATH_NAME.match(value):
        return (
            f"{value!r} is not a valid {what}: 1-128 letters, digits, '.', '_' or '-', "
            "starting with a letter or digit (it becomes a path component)"
        )
    return None


def message_id_problem(value: object) -> str | None:
    """Why `value` is not a usable Message-ID (None if it is one); '<...>' is allowed."""
    text = value.strip().strip("<>") if isinstance(value, str) else value
    if not isinstance(text, str) or not MESSAGE_ID.match(text):
        return (
            f"{value!r} is not a Message-ID miglab accepts (local@domain of letters, digits "
            "and ._+=%$-, starting with a letter or digit, no '/')"
        )
    return None


def under_root(root: str, *names: str) -> str:
    """root/names... resolved, refused unless it stays under root (ValueError)."""
    base = os.path.realpath(root)
    path = os.path.realpath(os.path.join(base, *names))
    if os.path.commonpath([base, path]) != base:
        raise ValueError(f"{os.path.join(root, *names)} is outside {root}")
    return path
