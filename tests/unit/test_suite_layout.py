"""The suites' layout on pytest-xdist (tests/conftest.py): every slow test on one worker, in
order, so two virtual labs never run at once. Checked by a real `pytest -n 2 --dist loadgroup`
on a small tree that uses the project's own conftest (a pytest or pytest-xdist upgrade that
stops honouring the groups shows here, not as two labs fighting over one lock)."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]

SLOW_FILE = """
import os, time
import pytest

@pytest.mark.parametrize("n", range(4))
def test_slow(n):
    time.sleep(0.2)
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"slow-{n} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""

MARKED_FILE = """
import os, time
import pytest

@pytest.mark.vlab
def test_marked_elsewhere():
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"marked {os.environ['PYTEST_XDIST_WORKER']}\\n")

@pytest.mark.parametrize("n", range(8))
def test_quick(n):
    time.sleep(0.1)
    with open(os.environ["RECORD"], "a") as out:
        out.write(f"quick-{n} {os.environ['PYTEST_XDIST_WORKER']}\\n")
"""


def test_every_slow_test_runs_on_one_worker_in_order(tmp_path: Path) -> None:
    shutil.copy(TESTS / "conftest.py", tmp_path / "conftest.py")
    (tmp_path / "vlab").mkdir()
    (tmp_path / "vlab" / "test_slow.py").write_text(SLOW_FILE)
    (tmp_path / "test_mixed.py").write_text(MARKED_FILE)
    record = tmp_path / "record.txt"
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q", "-n", "2",
         "--dist", "loadgroup", "-o", "markers=vlab: slow", "--rootdir", str(tmp_path),
         str(tmp_path)],
        cwd=tmp_path, env={"RECORD": str(record), "PATH": "/usr/bin:/bin"},
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    ran = [line.split() for line in record.read_text().splitlines()]
    slow = [(name, worker) for name, worker in ran if not name.startswith("quick")]
    assert {worker for _, worker in slow} == {slow[0][1]}, ran
    assert [name for name, _ in slow] == ["marked", "slow-0", "slow-1", "slow-2", "slow-3"]
    # the quick tests are not held back behind the slow ones: some run on the other worker
    assert any(w != slow[0][1] for name, w in ran if name.startswith("quick")), ran
