"""The lab's own kernel patches (kernels/vlab/patches/) pass the kernel's style checker,
`scripts/checkpatch.pl --strict`, from Debian's linux-source-6.12 (the tree they are for),
and each carries a commit message that says what and why and a Signed-off-by.

Slow suite: unpacking the checker from the source tarball reads the whole archive."""

from __future__ import annotations

import email
import email.policy
import subprocess
import tarfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SOURCE = Path("/usr/src/linux-source-6.12.tar.xz")
PATCHES = sorted((REPO / "kernels" / "vlab" / "patches").rglob("*.patch"))
# What checkpatch.pl reads beside itself.
CHECKER_FILES = ("checkpatch.pl", "spelling.txt", "const_structs.checkpatch")

pytestmark = pytest.mark.vlab


@pytest.fixture(scope="module")
def checkpatch(tmp_path_factory: pytest.TempPathFactory) -> Path:
    if not SOURCE.exists():
        pytest.fail(f"{SOURCE} is missing: .ci/setup --dev installs linux-source-6.12")
    out = tmp_path_factory.mktemp("checkpatch")
    wanted = {f"linux-source-6.12/scripts/{name}" for name in CHECKER_FILES}
    with tarfile.open(SOURCE, "r:xz") as archive:
        members = [m for m in archive if m.name in wanted]
        archive.extractall(out, members=members, filter="data")
    script = out / "linux-source-6.12" / "scripts" / "checkpatch.pl"
    assert script.is_file(), f"no scripts/checkpatch.pl in {SOURCE}"
    return script


def test_there_are_patches() -> None:
    names = {p.parent.name for p in PATCHES}
    assert names == {"broken", "mt-copy"} and len(PATCHES) == 4


@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_checkpatch_strict_is_clean(checkpatch: Path, patch: Path) -> None:
    result = subprocess.run(
        ["perl", str(checkpatch), "--strict", "--no-tree", "--", str(patch)],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "total: 0 errors, 0 warnings, 0 checks" in result.stdout, result.stdout


@pytest.mark.parametrize("patch", PATCHES, ids=[p.name for p in PATCHES])
def test_each_patch_says_what_and_why(patch: Path) -> None:
    message = email.message_from_bytes(patch.read_bytes(), policy=email.policy.default)
    subject = str(message["Subject"])
    body = message.get_body()
    assert body is not None
    text = body.get_content()
    description = text.split("\n---\n", 1)[0]
    assert subject.startswith("[PATCH") and ": " in subject, subject
    # more than a one-liner: what changes and why, then the sign-off
    assert len(description.split()) >= 30, description
    assert "Signed-off-by: " in description, description
