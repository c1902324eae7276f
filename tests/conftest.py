"""Both suites in one pytest run, on two workers (`pytest -n 2 --dist loadgroup`, as
.ci/test runs them): every test of the slow suite (marker vlab: everything in tests/vlab/,
and the tests marked so elsewhere, real ansible-playbook runs) goes to one worker, in order,
so there is never more than one virtual lab; the quick tests spread over both. Tests that
change the same host setting share a group of their own."""

from __future__ import annotations

from pathlib import Path

import pytest

VLAB_TESTS = Path(__file__).parent / "vlab"


# First: pytest-xdist reads the groups in its own collection hook.
@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if VLAB_TESTS in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.vlab)
        if item.get_closest_marker("vlab") is not None:
            item.add_marker(pytest.mark.xdist_group("vlab"))
