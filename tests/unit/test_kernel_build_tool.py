"""The kernel build tool (host/miglab_host/kbuild.py): build hash, config
checks, atomic patching, and caching, on a tiny fake kernel tree (no compiler needed)."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest
from kernel_testlib import HOST_DIR, MIGRATE_C, diff, mail, make_source_tarball
from miglab_host import kbuild as kb

CONFIG = 'CONFIG_LOCALVERSION="-vanilla-0123abcd"\nCONFIG_NUMA=y\nCONFIG_MIGRATION=y\n# CONFIG_EFI is not set\n'


def digest(**changes: Any) -> str:
    arguments: dict[str, Any] = {
        "variant": "vanilla",
        "source_identity": "debian:linux-source-6.12=6.12.117-1~deb12u1",
        "arch": "x86",
        "package_format": "deb",
        "patches": [b"patch one\n", b"patch two\n"],
        "config_text": CONFIG,
    }
    arguments.update(changes)
    return str(kb.build_hash(**arguments))


# --- build hash --------------------------------------------------------------------------------


def test_build_hash_is_stable() -> None:
    # The same inputs give the same hash in every process and on every machine: a cached build
    # is found again. (A deliberate change of the recipe bumps TOOL_VERSION and this value.)
    assert digest() == digest(patches=[b"patch one\n", b"patch two\n"])
    assert digest() == "418df2377d66ca737d528d906eb455ed0ee9b9318fdb26a0b144d759659cd595"


def test_build_hash_ignores_only_the_localversion_line() -> None:
    other_localversion = CONFIG.replace("-vanilla-0123abcd", "-vanilla-ffffffff")
    assert digest(config_text=other_localversion) == digest()


@pytest.mark.parametrize(
    "changes",
    [
        {"patches": [b"patch one\n", b"patch twO\n"]},  # one byte of a patch
        {"patches": [b"patch two\n", b"patch one\n"]},  # the order of the patches
        {"patches": [b"patch one\n"]},  # a patch fewer
        {
            "config_text": CONFIG.replace("CONFIG_MIGRATION=y", "CONFIG_MIGRATION=n")
        },  # a config line
        {"config_text": CONFIG + "CONFIG_X86_64_ACPI_NUMA=y\n"},  # a config line more
        {"source_identity": "debian:linux-source-6.12=6.12.118-1~deb12u1"},  # the source
        {"variant": "mt-highpri"},  # the name (it is in the kernel release)
        {"arch": "arm64"},
        {"package_format": "rpm"},
    ],
)
def test_build_hash_changes_with_every_input(changes: dict[str, Any]) -> None:
    assert digest(**changes) != digest()


def test_localversion_carries_the_variant_and_the_short_hash() -> None:
    full = digest()
    assert kb.localversion("mt-highpri", full) == f"-mt-highpri-{full[:8]}"


# --- config options -----------------------------------------------------------------------------


def test_option_forms_are_normalised() -> None:
    assert kb.normalise_option("CONFIG_NUMA=y") == ("CONFIG_NUMA", "y")
    assert kb.normalise_option("NUMA=y") == ("CONFIG_NUMA", "y")
    assert kb.normalise_option("CONFIG_NUMA") == ("CONFIG_NUMA", "y")
    assert kb.normalise_option("# CONFIG_EFI is not set") == ("CONFIG_EFI", "n")
    assert kb.normalise_option('CONFIG_LOCALVERSION=""') == ("CONFIG_LOCALVERSION", '""')
    with pytest.raises(kb.BuildError, match="not a kernel config option"):
        kb.normalise_option("hello world")


def test_required_options_missing_are_named_with_what_they_are() -> None:
    config = {"CONFIG_NUMA": "y", "CONFIG_MIGRATION": "n", "CONFIG_HZ": "250"}
    problems = kb.missing_options(
        config,
        [
            "CONFIG_NUMA",
            "CONFIG_MIGRATION",
            "CONFIG_TRANSPARENT_HUGEPAGE",
            "CONFIG_HZ=1000",
            "CONFIG_ARM64_64K_PAGES=y",
        ],
    )
    assert problems == [
        "CONFIG_MIGRATION (wanted y or m, is not set)",
        "CONFIG_TRANSPARENT_HUGEPAGE (wanted y or m, absent (unknown symbol, or its dependencies are not met))",
        "CONFIG_HZ (wanted 1000, is 250)",
        "CONFIG_ARM64_64K_PAGES (wanted y, absent (unknown symbol, or its dependencies are not met))",
    ]
    assert (
        kb.missing_options(config, ["CONFIG_NUMA", "# CONFIG_EFI is not set", "CONFIG_HZ=250"])
        == []
    )


def test_set_options_replaces_and_appends(tmp_path: Path) -> None:
    config = tmp_path / ".config"
    config.write_text("CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=m\n")
    kb.set_options(config, [("CONFIG_B", "y"), ("CONFIG_A", "n"), ("CONFIG_D", '"x"')])
    assert config.read_text() == '# CONFIG_A is not set\nCONFIG_B=y\nCONFIG_C=m\nCONFIG_D="x"\n'


def test_fragment_lines_skip_comments() -> None:
    text = "# a comment\n\nCONFIG_NUMA=y\n# CONFIG_EFI is not set\n"
    assert kb.fragment_options(text, "lab.config") == [
        ("CONFIG_NUMA", "y", "lab.config:3"),
        ("CONFIG_EFI", "n", "lab.config:4"),
    ]


# --- patches --------------------------------------------------------------------------------------


@pytest.fixture()
def tree(tmp_path: Path) -> Path:
    tarball = make_source_tarball(tmp_path / "src")
    source = {"kind": "tarball", "path": str(tarball)}
    identity, location = kb.source_identity(source, tmp_path / "work")
    return Path(kb.prepare_tree(source, identity, location, tmp_path / "work"))


def git(tree: Path, *arguments: str) -> str:
    return subprocess.run(
        ["git", *arguments], cwd=tree, capture_output=True, text=True, check=True
    ).stdout


def write_patch(tmp_path: Path, name: str, text: str) -> Any:
    path = tmp_path / name
    path.write_text(text)
    return kb.Patch(name, path)


def test_patches_apply_on_a_branch_per_variant(tree: Path, tmp_path: Path) -> None:
    changed = MIGRATE_C.replace("line 10 of", "LINE 10 OF")
    patches = [
        write_patch(
            tmp_path, "0001-mail.patch", mail("mm: shout", diff("mm/migrate.c", MIGRATE_C, changed))
        ),
        write_patch(tmp_path, "0002-plain.diff", diff("mm/util.c", "util\n", "util2\n")),
    ]
    kb.apply_patches(tree, "mt", patches)
    assert "LINE 10 OF" in (tree / "mm" / "migrate.c").read_text()
    assert (tree / "mm" / "util.c").read_text() == "util2\n"
    assert git(tree, "symbolic-ref", "HEAD").strip() == "refs/heads/miglab/mt"
    # Same patches again: nothing is rewritten (mtimes kept, so make rebuilds nothing).
    before = (tree / "mm" / "migrate.c").stat().st_mtime_ns
    kb.apply_patches(tree, "mt", patches)
    assert (tree / "mm" / "migrate.c").stat().st_mtime_ns == before
    # Another variant on the same tree, then back: only the differing files change.
    kb.apply_patches(tree, "vanilla", [])
    assert (tree / "mm" / "migrate.c").read_text() == MIGRATE_C
    kb.apply_patches(tree, "mt", patches)
    assert "LINE 10 OF" in (tree / "mm" / "migrate.c").read_text()


def test_a_new_variant_of_the_same_series_rewrites_only_what_differs(
    tree: Path, tmp_path: Path
) -> None:
    """mt-highpri = mt-unbound's patches + one more: its first build starts from pristine,
    yet a file the two have alike (a header nearly everything includes) keeps its mtime,
    so make does not rebuild the kernel; the file the extra patch changes is new."""
    header = diff("mm/util.c", "util\n", "util2\n")
    first = write_patch(tmp_path, "0001-header.diff", header)
    changed = MIGRATE_C.replace("line 10 of", "LINE 10 OF")
    second = write_patch(tmp_path, "0002-migrate.diff", diff("mm/migrate.c", MIGRATE_C, changed))
    kb.apply_patches(tree, "mt-unbound", [first])
    util_mtime = (tree / "mm" / "util.c").stat().st_mtime_ns
    migrate_mtime = (tree / "mm" / "migrate.c").stat().st_mtime_ns
    time.sleep(0.05)
    kb.apply_patches(tree, "mt-highpri", [first, second])
    assert (tree / "mm" / "util.c").read_text() == "util2\n"
    assert (tree / "mm" / "util.c").stat().st_mtime_ns == util_mtime
    assert (tree / "mm" / "migrate.c").stat().st_mtime_ns > migrate_mtime
    # back to vanilla: the header differs from pristine, so it is rewritten
    kb.apply_patches(tree, "vanilla", [])
    assert (tree / "mm" / "util.c").stat().st_mtime_ns > util_mtime


@pytest.mark.parametrize("form", ["mail", "plain"])
def test_a_patch_that_does_not_apply_names_patch_and_file_and_leaves_the_tree_pristine(
    tree: Path, tmp_path: Path, form: str
) -> None:
    good = diff("mm/util.c", "util\n", "util2\n")
    wrong_base = MIGRATE_C.replace("line 20 of", "a line that is not there")
    bad = diff("mm/migrate.c", wrong_base, wrong_base.replace("line 21 of", "changed"))
    if form == "mail":
        good, bad = mail("util: change", good), mail("mm: change", bad)
    patches = [
        write_patch(tmp_path, "0001-good.patch", good),
        write_patch(tmp_path, "0002-bad.patch", bad),
    ]
    pristine = git(tree, "rev-parse", "miglab-pristine").strip()
    with pytest.raises(kb.PatchError) as error:
        kb.apply_patches(tree, "broken", patches)
    message = str(error.value)
    assert "patch 2 (0002-bad.patch" in message
    assert "mm/migrate.c" in message
    assert "reset to pristine" in message
    # Nothing half-applied: not even the first (good) patch, no stray files, no am session.
    assert git(tree, "rev-parse", "HEAD").strip() == pristine
    assert git(tree, "status", "--porcelain", "--ignored") == ""
    assert (tree / "mm" / "util.c").read_text() == "util\n"
    assert (tree / "mm" / "migrate.c").read_text() == MIGRATE_C
    assert not (tree / ".git" / "rebase-apply").exists()


def test_a_patch_for_a_missing_file_names_it(tree: Path, tmp_path: Path) -> None:
    patch = write_patch(tmp_path, "0001-ghost.patch", diff("mm/ghost.c", "a\n", "b\n"))
    with pytest.raises(kb.PatchError, match=r"0001-ghost.patch.*mm/ghost.c"):
        kb.apply_patches(tree, "ghost", [patch])


def test_failure_description_from_git_messages() -> None:
    output = (
        "Applying: mm/migrate: add copy_page_lists_mt\n"
        "error: patch failed: mm/migrate.c:1712\n"
        "error: mm/migrate.c: patch does not apply\n"
        "Patch failed at 0003 mm/migrate: add copy_page_lists_mt\n"
    )
    assert kb.describe_failure(output) == (
        "does not apply to mm/migrate.c (hunk at line 1712); "
        "mail 0003 'mm/migrate: add copy_page_lists_mt'"
    )


def test_a_git_source_is_fetched_once_and_identified_by_commit(tmp_path: Path) -> None:
    upstream = tmp_path / "upstream"
    upstream.mkdir()
    (upstream / "Makefile").write_text("all:\n")
    for command in (
        ["init", "-q"],
        ["add", "."],
        ["-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "x"],
        ["tag", "mm-everything-2025-01-03-05-59"],
    ):
        subprocess.run(["git", *command], cwd=upstream, check=True)
    commit = git(upstream, "rev-parse", "HEAD").strip()
    source = {"kind": "git", "url": f"file://{upstream}", "ref": "mm-everything-2025-01-03-05-59"}
    identity, location = kb.source_identity(source, tmp_path / "work")
    assert identity == f"git:file://{upstream}@{commit}"
    tree = kb.prepare_tree(source, identity, location, tmp_path / "work")
    assert git(tree, "rev-parse", "miglab-pristine").strip() == commit
    # Without the upstream, the ref is still known.
    subprocess.run(["rm", "-rf", str(upstream)], check=True)
    assert kb.source_identity(source, tmp_path / "work")[0] == identity


# --- the whole tool, with the fake tree's Makefile ------------------------------------------------


def spec(tmp_path: Path, tarball: Path, **changes: Any) -> dict[str, Any]:
    data: dict[str, Any] = {
        "variant": "vanilla",
        "arch": "x86_64",
        "source": {"kind": "tarball", "path": str(tarball)},
        "patches": [],
        "config": {
            "base": {"kind": "make", "target": "x86_64_defconfig"},
            "targets": ["kvm_guest.config"],
            "fragments": [{"name": "lab.config", "text": "CONFIG_EFI=y\n"}],
            "options": [],
        },
        "required": ["CONFIG_NUMA", "CONFIG_MIGRATION", "CONFIG_TRANSPARENT_HUGEPAGE"],
        "cache_dir": str(tmp_path / "cache"),
        "work_dir": str(tmp_path / "work"),
        "jobs": 1,
    }
    data.update(changes)
    return data


def run_tool(data: dict[str, Any], action: str = "build") -> tuple[int, dict[str, Any]]:
    result = subprocess.run(
        ["python3", "-m", "miglab_host", "kbuild", action, "--spec-json", json.dumps(data)],
        cwd=HOST_DIR,
        capture_output=True,
        text=True,
        check=False,
    )
    return result.returncode, json.loads(result.stdout.strip().splitlines()[-1])


def compiles(tmp_path: Path) -> int:
    counters = list((tmp_path / "work" / "obj").glob("*/compiles"))
    return sum(len(c.read_text().splitlines()) for c in counters)


def test_build_then_cached_then_rebuilt_only_when_an_input_changes(tmp_path: Path) -> None:
    tarball = make_source_tarball(tmp_path / "src")
    code, first = run_tool(spec(tmp_path, tarball))
    assert code == 0, first
    assert first["built"] is True
    assert first["kernel_release"] == f"6.12.0-vanilla-{first['build_hash'][:8]}"
    image = Path(first["image_package"])
    assert image.parent == tmp_path / "cache" / first["build_hash"]
    # The full build hash is the build host name, i.e. in /proc/version of the running kernel.
    assert image.read_text().strip() == f"miglab-{first['build_hash']}"
    manifest = json.loads((image.parent / "manifest.json").read_text())
    assert manifest["variant"] == "vanilla" and manifest["build_hash"] == first["build_hash"]
    config = (image.parent / "config").read_text()
    assert "CONFIG_EFI=y" in config and "CONFIG_VIRTIO=y" in config
    assert "# CONFIG_LOCALVERSION_AUTO is not set" in config
    assert compiles(tmp_path) == 1

    code, again = run_tool(spec(tmp_path, tarball))
    assert code == 0 and again["built"] is False and again["build_hash"] == first["build_hash"]
    assert compiles(tmp_path) == 1

    patch = tmp_path / "0001.patch"
    patch.write_text(diff("mm/migrate.c", MIGRATE_C, MIGRATE_C.replace("line 5 of", "LINE 5 OF")))
    patched = spec(
        tmp_path, tarball, variant="mt", patches=[{"name": patch.name, "path": str(patch)}]
    )
    code, mt = run_tool(patched)
    assert code == 0 and mt["built"] is True and mt["build_hash"] != first["build_hash"]
    assert compiles(tmp_path) == 2
    # One byte of the patch changes the hash; the plan (no compile) shows it.
    patch.write_text(patch.read_text().replace("LINE 5 OF", "LINE 5 of"))
    code, planned = run_tool(patched, action="plan")
    assert code == 0 and planned["built"] is False and planned["cached"] is False
    assert planned["build_hash"] != mt["build_hash"]
    assert compiles(tmp_path) == 2


def test_missing_required_options_stop_the_build_and_are_named(tmp_path: Path) -> None:
    tarball = make_source_tarball(tmp_path / "src")
    data = spec(
        tmp_path, tarball, required=["CONFIG_NUMA", "CONFIG_ARM64_64K_PAGES=y", "CONFIG_HZ_1000"]
    )
    data["config"]["options"] = ["CONFIG_ARM64_64K_PAGES=y"]
    code, answer = run_tool(data)
    assert code == 2 and answer["kind"] == "ConfigError"
    assert "required kernel options missing after olddefconfig" in answer["error"]
    assert "CONFIG_ARM64_64K_PAGES (wanted y, absent" in answer["error"]
    assert "CONFIG_HZ_1000 (wanted y or m, absent" in answer["error"]
    assert "CONFIG_NUMA" not in answer["error"].split("olddefconfig:")[1]
    assert compiles(tmp_path) == 0


def test_every_option_asked_for_must_survive_olddefconfig(tmp_path: Path) -> None:
    """A fragment line olddefconfig drops (an unknown symbol, unmet dependencies) stops the
    build naming the fragment and its line, not only the required options."""
    tarball = make_source_tarball(tmp_path / "src")
    data = spec(tmp_path, tarball)
    data["config"]["fragments"] = [
        {"name": "lab.config", "text": "CONFIG_EFI=y\nCONFIG_ARM64_64K_PAGES=y\n"}
    ]
    code, answer = run_tool(data)
    assert code == 2 and answer["kind"] == "ConfigError", answer
    assert (
        "lab.config:2: CONFIG_ARM64_64K_PAGES=y asked for, olddefconfig made it absent"
        in answer["error"]
    )
    assert compiles(tmp_path) == 0


def test_a_git_url_that_looks_like_an_option_runs_nothing(tmp_path: Path) -> None:
    """`git fetch -- URL`: an URL such as --upload-pack=<command> is a (missing) repository,
    never an option, so the command does not run."""
    marker = tmp_path / "ran"
    source = {"kind": "git", "url": f"--upload-pack=touch {marker}", "ref": "main"}
    with pytest.raises(kb.BuildError, match="cannot fetch"):
        kb.source_identity(source, tmp_path / "work")
    assert not marker.exists()


def test_a_patch_error_comes_back_as_json(tmp_path: Path) -> None:
    tarball = make_source_tarball(tmp_path / "src")
    patch = tmp_path / "0001-bad.patch"
    patch.write_text(diff("mm/migrate.c", "nothing like it\n", "changed\n"))
    code, answer = run_tool(
        spec(tmp_path, tarball, variant="bad", patches=[{"name": patch.name, "path": str(patch)}])
    )
    assert code == 2 and answer["kind"] == "PatchError"
    assert "0001-bad.patch" in answer["error"] and "mm/migrate.c" in answer["error"]


def test_a_bad_spec_is_still_one_json_line(tmp_path: Path) -> None:
    tarball = make_source_tarball(tmp_path / "src")
    code, answer = run_tool(spec(tmp_path, tarball, jobs="many"))
    assert code == 3 and answer["kind"] == "InternalError" and "many" in answer["error"]
