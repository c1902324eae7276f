"""The runner's preflight on hosts of other page sizes (fake /sys trees): which folio sizes a
64 KiB- or 16 KiB-page kernel offers as mTHP or PMD THP, read from what the host reports."""

from __future__ import annotations

from pathlib import Path

import miglab_runner_testlib  # noqa: F401 (puts the runner on sys.path: import it first)
import pytest
from miglab_host.knobs import SysTree
from miglab_host.plan import expand
from miglab_host.preflight import PreflightError, preflight
from miglab_runner_testlib import definition, fake_host_tree

KIB = 1024
MIB = 1024 * KIB


def host_tree(root: Path, pmd: int, mthp_kib: tuple[int, ...]) -> SysTree:
    """Two nodes with 4 GiB each, THP with this PMD size and these mTHP sizes."""
    return SysTree(fake_host_tree(root, mthp=tuple(f"{k}kB" for k in mthp_kib), pmd_size=pmd))


def plan(kinds: list[str], counts: dict[str, list[int]]) -> dict:
    return expand(definition(folio_kinds=kinds, page_counts=counts))


def refusal(tree: SysTree, page_size: int, kinds: list[str], counts: dict) -> PreflightError:
    """The error preflight raises for this sweep on a host with this base page size."""
    with pytest.raises(PreflightError) as err:
        preflight(plan(kinds, counts), tree, require_root=False, page_size=page_size)
    return err.value


# Grace with 64 KiB pages: the PMD maps 512 MiB, 2 MiB is mTHP (order 5).
GRACE_64K = (512 * MIB, (128, 256, 512, 1024, 2048, 4096, 8192, 16384, 32768, 65536, 131072))


def test_2m_is_mthp_on_a_64k_host_and_accepted(tmp_path: Path) -> None:
    tree = host_tree(tmp_path, *GRACE_64K)
    report = preflight(
        plan(["base", "2M"], {"base": [4, 32], "2M": [1, 4]}),
        tree,
        require_root=False,
        page_size=64 * KIB,
    )
    assert report["ok"] and report["base_page_size"] == 64 * KIB
    assert "2M" in report["offered_folio_sizes"] and "512M" in report["offered_folio_sizes"]


def test_2m_not_offered_on_a_64k_host_is_refused_with_the_key(tmp_path: Path) -> None:
    # A 64 KiB kernel without mTHP: only the 512 MiB PMD size
    tree = host_tree(tmp_path, 512 * MIB, ())
    err = refusal(tree, 64 * KIB, ["base", "2M"], {"base": [4], "2M": [1]})
    assert err.key == "sweep_folio_kinds[1]"
    assert "folio size 2M is not offered by this kernel (offered: 512M)" in str(err)


def test_64k_is_the_base_page_of_a_64k_host(tmp_path: Path) -> None:
    tree = host_tree(tmp_path, *GRACE_64K)
    err = refusal(tree, 64 * KIB, ["base", "64K"], {"base": [4], "64K": [4]})
    assert err.key == "sweep_folio_kinds[1]"
    assert "64K is the base page size of this host: use 'base'" in str(err)


def test_a_count_is_checked_against_the_node_in_folios_of_the_host(tmp_path: Path) -> None:
    """Bytes are page count x the host's base page: 65536 base pages are 256 MiB with 4 KiB
    pages, which a 4 GiB node holds, and 4 GiB with 64 KiB pages, which it does not."""
    counts = {"base": [65536], "2M": [1]}
    small = host_tree(tmp_path / "4k", 2 * MIB, (64,))
    assert preflight(plan(["base"], counts), small, require_root=False, page_size=4 * KIB)["ok"]
    large = host_tree(tmp_path / "64k", *GRACE_64K)
    err = refusal(large, 64 * KIB, ["base"], counts)
    assert err.key == "sweep_page_counts.base[0]"
    assert "65536 x 64K does not fit comfortably into a node of this host (4G)" in str(err)


def test_2m_is_mthp_on_a_16k_host_and_the_pmd_is_32m(tmp_path: Path) -> None:
    """Debian's arm64-16k kernel (the virtual lab's Grace-shaped guest powers on with it)."""
    tree = host_tree(tmp_path, 32 * MIB, (32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384))
    report = preflight(
        plan(["base", "2M"], {"base": [4], "2M": [1]}), tree, require_root=False, page_size=16 * KIB
    )
    assert report["ok"] and "2M" in report["offered_folio_sizes"]
    assert "32M" in report["offered_folio_sizes"] and "64M" not in report["offered_folio_sizes"]
