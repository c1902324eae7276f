"""miglab's kernel build tool: one kernel variant -> cached, identifiable packages.

Runs on the build host (the controller, a build server, or each lab host), standard
library only. The kernel_build role calls it once per (variant, architecture, config):

    python3 -m miglab_host kbuild build --spec-json '{...}'  # prepare, hash, build unless cached
    python3 -m miglab_host kbuild plan  --spec-json '{...}'  # prepare and hash only (no compile)

and reads one JSON object from the last line of stdout.

What it does, in order (docs/kernels.md):
1. source: unpack a tarball (or Debian's linux-source-X.Y) or clone a git ref once into a
   git-initialised pristine tree (tag `miglab-pristine`), shared by every variant on it;
2. patches: applied with git on a branch per variant (`miglab/<variant>`); a patch that does
   not apply is a PatchError naming the patch and the file, and the tree is reset to pristine;
3. config: base (a make target such as defconfig, a file, or the running kernel's config)
   + in-tree config targets (kvm_guest.config) + fragments + options, then `olddefconfig`,
   then every required option is checked and the missing ones are named;
4. build hash: sha256 over the source identity, the patches' bytes and the final .config
   (without its CONFIG_LOCALVERSION line); LOCALVERSION becomes -<variant>-<hash8> and the
   full hash is the build host name in /proc/version (KBUILD_BUILD_HOST=miglab-<hash>);
5. cache: packages live in <cache_dir>/<hash>/ with manifest.json; a cached hash is never
   rebuilt, and a memo of the inputs lets an unchanged variant skip steps 1-4 entirely;
6. build: `make bindeb-pkg` (or binrpm-pkg) with O=<one output dir per source, arch and config
   recipe>, so a second variant on the same tree only recompiles what its patches touch.
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from miglab_host.facts import MACHINE_TO_ARCH

# Bump when the way a build is made changes in a way the hashed inputs do not show.
TOOL_VERSION = 1
PRISTINE_TAG = "miglab-pristine"
GIT_IDENTITY = [
    "-c",
    "user.name=miglab",
    "-c",
    "user.email=miglab@localhost",
    "-c",
    "commit.gpgsign=false",
    "-c",
    "gc.auto=0",
    "-c",
    "core.autocrlf=false",
    "-c",
    "advice.detachedHead=false",
]
# Options whose values the tool owns: the identity line, and no SCM suffix.
LOCALVERSION_LINE = re.compile(r"^CONFIG_LOCALVERSION=")
OPTION_LINE = re.compile(r"^(CONFIG_[A-Za-z0-9_]+)=(.*)$")
UNSET_LINE = re.compile(r"^# (CONFIG_[A-Za-z0-9_]+) is not set$")
VARIANT_NAME = re.compile(r"^[a-z0-9][a-z0-9-]{0,30}$")


class BuildError(Exception):
    """Anything that stops a build; the message is what the user sees."""


class PatchError(BuildError):
    """A patch that does not apply. The tree has been reset to pristine."""


class ConfigError(BuildError):
    """Required options missing after olddefconfig."""


# --- small helpers ---------------------------------------------------------------------------


def sha256_bytes(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def log(message: str) -> None:
    print(f"[miglab-kbuild {time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def run(
    command: Sequence[str],
    cwd: Path | None = None,
    env: dict[str, str] | None = None,
    check: bool = True,
    log_file: Path | None = None,
) -> subprocess.CompletedProcess[str]:
    """Run a command; its output goes to log_file when given (long builds), else is captured."""
    environment = {**os.environ, "LC_ALL": "C", **(env or {})}
    if log_file is not None:
        with log_file.open("a") as handle:
            handle.write(f"\n$ {' '.join(command)}\n")
            handle.flush()
            result = subprocess.run(
                list(command),
                cwd=cwd,
                env=environment,
                stdout=handle,
                stderr=subprocess.STDOUT,
                text=True,
                check=False,
            )
        result = subprocess.CompletedProcess(result.args, result.returncode, "", "")
    else:
        result = subprocess.run(
            list(command), cwd=cwd, env=environment, capture_output=True, text=True, check=False
        )
    if check and result.returncode != 0:
        where = f" (log: {log_file})" if log_file else ""
        detail = tail(log_file, 40) if log_file else (result.stderr or result.stdout).strip()
        raise BuildError(f"`{' '.join(command)}` failed with {result.returncode}{where}:\n{detail}")
    return result


def tail(path: Path | None, lines: int) -> str:
    if path is None or not path.exists():
        return ""
    return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def git(tree: Path, *arguments: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return run(["git", *GIT_IDENTITY, *arguments], cwd=tree, check=check)


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """One build at a time per work directory (they share trees and output dirs)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def write_atomic(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    scratch = path.with_name(f".{path.name}.tmp{os.getpid()}")
    scratch.write_text(text)
    scratch.replace(path)


# --- the spec --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    name: str
    path: Path

    def data(self) -> bytes:
        try:
            return self.path.read_bytes()
        except OSError as error:
            raise BuildError(f"patch {self.name}: cannot read {self.path}: {error}") from error


@dataclass
class Spec:
    """One build: what the role passes as JSON (roles/kernel_build/tasks/build.yml)."""

    variant: str
    arch: str
    source: dict[str, Any]
    patches: list[Patch]
    config: dict[str, Any]
    required: list[str]
    package_format: str = "deb"
    cache_dir: Path = Path("/var/cache/miglab/kernels")
    work_dir: Path = Path("/var/cache/miglab/kernel-work")
    jobs: int = 0
    cross_compile: str = ""
    headers: bool = False
    extra_make_args: list[str] = field(default_factory=list)

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Spec:
        try:
            variant = str(data["variant"])
            if not VARIANT_NAME.match(variant):
                raise BuildError(
                    f"variant name {variant!r}: use 1-31 lower-case letters, digits and '-'"
                )
            arch = MACHINE_TO_ARCH.get(str(data["arch"]), str(data["arch"]))
            patches = [
                Patch(str(p.get("name") or Path(p["path"]).name), Path(p["path"]))
                for p in data.get("patches", [])
            ]
            package_format = str(data.get("package_format", "deb"))
            if package_format not in ("deb", "rpm"):
                raise BuildError(f"package_format {package_format!r}: deb or rpm")
            return cls(
                variant=variant,
                arch=arch,
                source=dict(data["source"]),
                patches=patches,
                config=dict(data.get("config", {})),
                required=[str(item) for item in data.get("required", [])],
                package_format=package_format,
                cache_dir=Path(data.get("cache_dir", "/var/cache/miglab/kernels")),
                work_dir=Path(data.get("work_dir", "/var/cache/miglab/kernel-work")),
                jobs=int(data.get("jobs", 0) or 0),
                cross_compile=str(data.get("cross_compile", "") or ""),
                headers=bool(data.get("headers", False)),
                extra_make_args=[str(a) for a in data.get("extra_make_args", [])],
            )
        except KeyError as error:
            raise BuildError(f"build spec: missing key {error}") from error

    def config_recipe(self) -> dict[str, Any]:
        """What defines the configuration before patches: the output-dir key."""
        return {
            "arch": self.arch,
            "cross_compile": self.cross_compile,
            "config": self.config,
            "package_format": self.package_format,
        }


# --- config lines ----------------------------------------------------------------------------


def parse_option(line: str) -> tuple[str, str] | None:
    """`CONFIG_X=v` -> (CONFIG_X, v); `# CONFIG_X is not set` or `CONFIG_X=n` -> (CONFIG_X, n)."""
    line = line.strip()
    unset = UNSET_LINE.match(line)
    if unset:
        return unset.group(1), "n"
    match = OPTION_LINE.match(line)
    if match:
        return match.group(1), match.group(2)
    return None


def normalise_option(text: str) -> tuple[str, str]:
    """Accept `CONFIG_X=y`, `X=y`, `CONFIG_X` (= y), `# CONFIG_X is not set`."""
    text = text.strip()
    parsed = parse_option(text)
    if parsed is None and not text.startswith("#"):
        name, _, value = text.partition("=")
        name = name.strip()
        if not name.startswith("CONFIG_"):
            name = "CONFIG_" + name
        parsed = (name, value.strip() or "y")
        if not OPTION_LINE.match(f"{parsed[0]}={parsed[1]}"):
            parsed = None
    if parsed is None:
        raise BuildError(f"not a kernel config option: {text!r}")
    return parsed


def fragment_options(text: str, name: str = "fragment") -> list[tuple[str, str, str]]:
    """The option lines of a config fragment, in order (comments and blanks skipped), each
    with where it stands (name:line)."""
    options = []
    for number, line in enumerate(text.splitlines(), start=1):
        stripped = line.strip()
        if not stripped or (stripped.startswith("#") and not UNSET_LINE.match(stripped)):
            continue
        option, value = normalise_option(stripped)
        options.append((option, value, f"{name}:{number}"))
    return options


def read_config(path: Path) -> dict[str, str]:
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        parsed = parse_option(line)
        if parsed:
            values[parsed[0]] = parsed[1]
    return values


def set_options(path: Path, options: Sequence[tuple[str, str]]) -> None:
    """Set options in a .config, replacing earlier lines for the same symbol."""
    lines = path.read_text().splitlines()
    index = {}
    for number, line in enumerate(lines):
        parsed = parse_option(line)
        if parsed:
            index[parsed[0]] = number
    for name, value in options:
        text = f"# {name} is not set" if value == "n" else f"{name}={value}"
        if name in index:
            lines[index[name]] = text
        else:
            index[name] = len(lines)
            lines.append(text)
    path.write_text("\n".join(lines) + "\n")


def option_is(config: dict[str, str], name: str, value: str) -> bool:
    """Whether the config has the option as asked (n: not set, or absent)."""
    return config.get(name, "n") == "n" if value == "n" else config.get(name) == value


def missing_options(config: dict[str, str], required: Sequence[str]) -> list[str]:
    """Required options the final config lacks, each named with what it is instead.

    `CONFIG_X` alone means enabled (y or m); `CONFIG_X=v` means exactly v (n: not set)."""
    problems = []
    for item in required:
        text = item.strip()
        explicit = "=" in text or UNSET_LINE.match(text) is not None
        name, wanted = normalise_option(text)
        actual = config.get(name)
        if not explicit:
            ok = actual in ("y", "m")
        elif wanted == "n":
            ok = actual in (None, "n")
        else:
            ok = actual == wanted
        if not ok:
            if actual is None:
                why = "absent (unknown symbol, or its dependencies are not met)"
            elif actual == "n":
                why = "is not set"
            else:
                why = f"is {actual}"
            problems.append(f"{name} (wanted {wanted if explicit else 'y or m'}, {why})")
    return problems


def hashed_config(config_text: str) -> str:
    """The config as it enters the build hash: everything but the LOCALVERSION line."""
    lines = [line for line in config_text.splitlines() if not LOCALVERSION_LINE.match(line)]
    return "\n".join(lines) + "\n"


def build_hash(
    variant: str,
    source_identity: str,
    arch: str,
    package_format: str,
    patches: Sequence[bytes],
    config_text: str,
) -> str:
    """sha256 over everything that defines a build: the variant's name (it is in the kernel
    release), the source's identity, the patches' bytes in order and the final config."""
    digest = hashlib.sha256()
    header = {
        "tool": TOOL_VERSION,
        "variant": variant,
        "source": source_identity,
        "arch": arch,
        "package_format": package_format,
        "patches": [sha256_bytes(data) for data in patches],
    }
    digest.update(json.dumps(header, sort_keys=True).encode())
    digest.update(b"\0config\0")
    digest.update(hashed_config(config_text).encode())
    return digest.hexdigest()


def localversion(variant: str, digest: str) -> str:
    return f"-{variant}-{digest[:8]}"


# --- source trees ----------------------------------------------------------------------------


def source_identity(source: dict[str, Any], work_dir: Path) -> tuple[str, str]:
    """(identity string that enters the hash, where the source is). Never touches the tree."""
    kind = source.get("kind")
    if kind == "debian_package":
        package = str(source["package"])
        tarball = Path(source.get("path") or f"/usr/src/{package}.tar.xz")
        version = ""
        if shutil.which("dpkg-query"):
            answer = run(["dpkg-query", "-W", "-f=${Version}", package], check=False)
            version = answer.stdout.strip() if answer.returncode == 0 else ""
        if not tarball.exists():
            raise BuildError(
                f"source {package}: {tarball} does not exist (install the Debian package {package})"
            )
        identity = f"debian:{package}={version}" if version else f"tarball:{sha256_file(tarball)}"
        return identity, str(tarball)
    if kind == "tarball":
        tarball = Path(str(source["path"]))
        if not tarball.exists():
            raise BuildError(f"source tarball {tarball} does not exist on the build host")
        return f"tarball:{sha256_file(tarball)}", str(tarball)
    if kind == "git":
        url, ref = str(source["url"]), str(source["ref"])
        mirror = work_dir / "git" / sha256_bytes(url.encode())[:16]
        commit = resolve_git_ref(mirror, url, ref)
        return f"git:{url}@{commit}", str(mirror)
    raise BuildError(f"unknown source kind {kind!r} (debian_package, tarball or git)")


def resolve_git_ref(store: Path, url: str, ref: str) -> str:
    """The commit a ref names. The ref is fetched (shallow) into a per-URL store and kept
    there as refs/miglab/<ref>, so a rerun without network still knows it."""
    if not (store / "HEAD").exists():
        store.mkdir(parents=True, exist_ok=True)
        run(["git", "init", "--quiet", "--bare", str(store)])
    local_ref = "refs/miglab/" + re.sub(r"[^A-Za-z0-9._/-]", "_", ref).strip("/")
    known = git(store, "rev-parse", "--verify", "--quiet", f"{local_ref}^{{commit}}", check=False)
    if known.returncode == 0 and re.fullmatch(r"[0-9a-f]{40}", ref):
        return known.stdout.strip()
    log(f"fetching {ref} from {url}")
    # `--`: the URL and the refspec are arguments, never options (an URL such as
    # --upload-pack=<command> would otherwise run that command)
    fetched = git(
        store, "fetch", "--quiet", "--depth=1", "--no-tags", "--", url, f"+{ref}:{local_ref}",
        check=False,
    )  # fmt: skip
    if fetched.returncode != 0:
        if known.returncode == 0:
            log(f"cannot fetch {ref} from {url}; using the known {known.stdout.strip()[:12]}")
            return known.stdout.strip()
        raise BuildError(f"git source {url} ref {ref}: cannot fetch: {fetched.stderr.strip()}")
    return git(store, "rev-parse", "--verify", f"{local_ref}^{{commit}}").stdout.strip()


def prepare_tree(source: dict[str, Any], identity: str, location: str, work_dir: Path) -> Path:
    """The pristine tree of a source (made once): a git repo with the tag miglab-pristine."""
    tree = work_dir / "trees" / sha256_bytes(identity.encode())[:16]
    if (tree / ".git").is_dir() and git(
        tree, "rev-parse", "-q", "--verify", PRISTINE_TAG, check=False
    ).returncode == 0:
        return tree
    shutil.rmtree(tree, ignore_errors=True)
    scratch = Path(tempfile.mkdtemp(prefix=".tree-", dir=_mkdir(tree.parent)))
    try:
        git(scratch, "init", "--quiet")
        if source.get("kind") == "git":
            commit = identity.rsplit("@", 1)[1]
            log(f"checking out {commit[:12]} from {location}")
            git(scratch, "fetch", "--quiet", "--depth=1", "--no-tags", "--", location, commit)
            git(scratch, "checkout", "--quiet", "--detach", commit)
        else:
            log(f"unpacking {location}")
            run(["tar", "-xf", location, "-C", str(scratch), "--strip-components=1"])
            git(scratch, "add", "--all", "--force")
            git(scratch, "commit", "--quiet", "--no-verify", "-m", f"pristine {identity}")
        git(scratch, "tag", "--force", PRISTINE_TAG)
        (scratch / ".git" / "miglab-source").write_text(identity + "\n")
        scratch.rename(tree)
    except BaseException:
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    return tree


def _mkdir(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


# --- patches ---------------------------------------------------------------------------------


def is_mail(data: bytes) -> bool:
    """git format-patch output, a b4 mbox or any mbox: applied with `git am`."""
    head = data[:4096].lstrip()
    return head.startswith(b"From ") or (
        b"\nSubject:" in b"\n" + head and b"\nFrom:" in b"\n" + head
    )


def describe_failure(output: str) -> str:
    """The file (and line) git could not patch, from git apply / git am messages."""
    files = []
    for match in re.finditer(r"error: patch failed: (\S+):(\d+)", output):
        files.append(f"{match.group(1)} (hunk at line {match.group(2)})")
    for match in re.finditer(
        r"error: (\S+): (does not exist in index|No such file or directory|already exists in "
        r"(?:working directory|index)|patch does not apply|does not match index)",
        output,
    ):
        if not any(entry.startswith(match.group(1) + " ") for entry in files):
            files.append(f"{match.group(1)} ({match.group(2)})")
    failed_at = re.search(r"Patch failed at (\d+) (.*)", output)
    where = f"; mail {failed_at.group(1)} '{failed_at.group(2).strip()}'" if failed_at else ""
    if files:
        return "does not apply to " + ", ".join(files) + where
    message = " ".join(line.strip() for line in output.splitlines() if line.strip())[:400]
    return f"does not apply ({message or 'git gave no reason'}){where}"


def reset_to_pristine(tree: Path) -> None:
    """Detached at the pristine commit, no changes, no stray files, no am session. Detach
    first: a reset on a variant's branch would move that branch."""
    git(tree, "am", "--abort", check=False)
    git(tree, "checkout", "--quiet", "--force", "--detach", PRISTINE_TAG)
    git(tree, "reset", "--quiet", "--hard", PRISTINE_TAG)
    git(tree, "clean", "--quiet", "-fdx")


def apply_patches(tree: Path, variant: str, patches: Sequence[Patch]) -> str:
    """Check out the variant's branch (pristine + patches), building it when its patches
    changed. Atomic: a patch that does not apply leaves the tree pristine. Returns the commit."""
    branch = f"miglab/{variant}"
    digest = sha256_bytes(json.dumps([sha256_bytes(p.data()) for p in patches]).encode())
    record = tree / ".git" / "miglab-branches.json"
    branches: dict[str, str] = json.loads(record.read_text()) if record.exists() else {}
    exists = git(tree, "rev-parse", "-q", "--verify", f"refs/heads/{branch}", check=False)
    current = git(tree, "symbolic-ref", "-q", "HEAD", check=False).stdout.strip()
    if exists.returncode == 0 and branches.get(branch) == digest:
        if (
            current != f"refs/heads/{branch}"
            or git(tree, "status", "--porcelain", "--untracked-files=no").stdout.strip()
        ):
            # Only files that differ between the branches are rewritten (and recompiled).
            git(tree, "checkout", "--quiet", "--force", branch)
        return git(tree, "rev-parse", "HEAD").stdout.strip()
    kept = unchanged_file_times(tree)
    reset_to_pristine(tree)
    for number, patch in enumerate(patches, start=1):
        data = patch.data()
        if not data.strip():
            reset_to_pristine(tree)
            raise PatchError(f"variant {variant}: patch {number} ({patch.name}) is empty")
        with tempfile.NamedTemporaryFile("wb", suffix=".patch", delete=False) as handle:
            handle.write(data)
            scratch = handle.name
        try:
            if is_mail(data):
                result = git(tree, "am", "--quiet", "--keep-cr", "--no-3way", scratch, check=False)
            else:
                result = git(tree, "apply", "--index", "--whitespace=nowarn", scratch, check=False)
                if result.returncode == 0:
                    git(tree, "commit", "--quiet", "--no-verify", "-m", f"miglab: {patch.name}")
        finally:
            os.unlink(scratch)
        if result.returncode != 0:
            reason = describe_failure(result.stdout + "\n" + result.stderr)
            reset_to_pristine(tree)
            raise PatchError(
                f"variant {variant}: patch {number} ({patch.name}, {patch.path}) {reason}. "
                f"The source tree was reset to pristine."
            )
    git(tree, "checkout", "--quiet", "-B", branch)
    restore_file_times(tree, kept)
    branches[branch] = digest
    write_atomic(record, json.dumps(branches, indent=1, sort_keys=True))
    return git(tree, "rev-parse", "HEAD").stdout.strip()


def unchanged_file_times(tree: Path) -> dict[str, tuple[str, int]]:
    """Before a new variant's branch is made from pristine: the files the current checkout
    has changed from pristine, with their blob and mtime. The reset to pristine rewrites them
    and the patches may write them back as they were (another variant of the same series):
    make would then rebuild all that includes them (mm/internal.h: all of mm/)."""
    changed = git(tree, "diff", "--name-only", "-z", PRISTINE_TAG, "HEAD").stdout.split("\0")
    out: dict[str, tuple[str, int]] = {}
    for path in filter(None, changed):
        blob = git(tree, "rev-parse", "-q", "--verify", f"HEAD:{path}", check=False)
        try:
            mtime = (tree / path).stat().st_mtime_ns
        except OSError:
            continue
        if blob.returncode == 0:
            out[path] = (blob.stdout.strip(), mtime)
    return out


def restore_file_times(tree: Path, kept: dict[str, tuple[str, int]]) -> None:
    """Files whose content is back to what it was keep their old mtime."""
    for path, (blob, mtime) in kept.items():
        now = git(tree, "rev-parse", "-q", "--verify", f"HEAD:{path}", check=False)
        if now.returncode == 0 and now.stdout.strip() == blob:
            try:
                os.utime(tree / path, ns=((tree / path).stat().st_atime_ns, mtime))
            except OSError:
                pass


# --- configuration ---------------------------------------------------------------------------


def make_command(
    spec: Spec, tree: Path, obj: Path, *targets: str, jobs: int | None = None
) -> list[str]:
    command = [
        "make",
        "-C",
        str(tree),
        f"O={obj}",
        f"ARCH={spec.arch}",
        # LOCALVERSION set (empty): no '+' suffix from the git tree; ours is in .config.
        "LOCALVERSION=",
    ]
    if spec.cross_compile:
        command.append(f"CROSS_COMPILE={spec.cross_compile}")
    if jobs:
        command.append(f"-j{jobs}")
    return [*command, *spec.extra_make_args, *targets]


def running_config() -> Path:
    release = os.uname().release
    for candidate in (Path(f"/boot/config-{release}"), Path("/proc/config.gz")):
        if candidate.exists():
            return candidate
    raise BuildError(f"base config 'running': no /boot/config-{release} or /proc/config.gz here")


def assemble_config(spec: Spec, tree: Path, obj: Path, log_file: Path) -> tuple[str, list[str]]:
    """Write obj/.config for the spec (without LOCALVERSION). Returns (its text, notes)."""
    obj.mkdir(parents=True, exist_ok=True)
    config = obj / ".config"
    base = spec.config.get("base") or {"kind": "make", "target": "defconfig"}
    kind = base.get("kind", "make")
    if kind == "make":
        run(make_command(spec, tree, obj, str(base.get("target", "defconfig"))), log_file=log_file)
    elif kind in ("file", "running"):
        source = Path(base["path"]) if kind == "file" else running_config()
        if source.suffix == ".gz":
            import gzip

            config.write_bytes(gzip.decompress(source.read_bytes()))
        else:
            shutil.copyfile(source, config)
    else:
        raise BuildError(f"config base kind {kind!r}: make, file or running")
    for target in spec.config.get("targets", []):
        run(make_command(spec, tree, obj, str(target)), log_file=log_file)
    requested: list[tuple[str, str, str]] = []
    for fragment in spec.config.get("fragments", []):
        requested += fragment_options(
            str(fragment.get("text", "")), str(fragment.get("name", "fragment"))
        )
    for index, option in enumerate(spec.config.get("options", [])):
        requested.append((*normalise_option(str(option)), f"options[{index}] ({option})"))
    forced = [("CONFIG_LOCALVERSION", '""'), ("CONFIG_LOCALVERSION_AUTO", "n")]
    current = read_config(config)
    notes = []
    # A distribution config names signing keys that only exist in its own build tree.
    for key in ("CONFIG_SYSTEM_TRUSTED_KEYS", "CONFIG_SYSTEM_REVOCATION_KEYS"):
        if current.get(key, '""') != '""':
            forced.append((key, '""'))
            notes.append(f"{key} cleared (was {current[key]})")
    set_options(config, [*((name, value) for name, value, _ in requested), *forced])
    run(make_command(spec, tree, obj, "olddefconfig"), log_file=log_file)
    final = read_config(config)
    problems = missing_options(final, spec.required)
    if problems:
        raise ConfigError(
            f"variant {spec.variant} ({spec.arch}): required kernel options missing after "
            f"olddefconfig: {'; '.join(problems)}"
        )
    # Every option asked for must have the value asked for: olddefconfig silently drops a
    # symbol whose dependencies are not met, or one that does not exist.
    changed = [
        f"{where}: {name}={value} asked for, olddefconfig made it {final.get(name, 'absent')}"
        for name, value, where in requested
        if not option_is(final, name, value)
    ]
    if changed:
        raise ConfigError(
            f"variant {spec.variant} ({spec.arch}): kernel options not as asked after "
            f"olddefconfig (unknown symbols, or their dependencies are not met): {'; '.join(changed)}"
        )
    return config.read_text(), notes


# --- cache -----------------------------------------------------------------------------------


def cached_manifest(cache_dir: Path, digest: str) -> dict[str, Any] | None:
    manifest_path = cache_dir / digest / "manifest.json"
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError):
        return None
    packages = [cache_dir / digest / name for name in manifest.get("packages", [])]
    if not packages or not all(p.exists() for p in packages):
        return None
    manifest["packages"] = [str(p) for p in packages]
    manifest["image_package"] = str(cache_dir / digest / manifest["image_package"])
    manifest["config_path"] = str(cache_dir / digest / "config")
    return manifest


def toolchain_identity(spec: Spec) -> str:
    parts = []
    for tool in (f"{spec.cross_compile}gcc", f"{spec.cross_compile}ld", "make"):
        answer = run([tool, "--version"], check=False) if shutil.which(tool) else None
        parts.append(answer.stdout.splitlines()[0] if answer and answer.stdout else f"{tool}: none")
    return " | ".join(parts)


def inputs_memo_key(spec: Spec, identity: str) -> str:
    """Everything the final config and hash follow from; lets a rerun skip the tree entirely."""
    payload = {
        "tool": sha256_bytes(Path(__file__).read_bytes()),
        "variant": spec.variant,
        "source": identity,
        "patches": [sha256_bytes(p.data()) for p in spec.patches],
        "recipe": spec.config_recipe(),
        "required": spec.required,
        "headers": spec.headers,
        "toolchain": toolchain_identity(spec),
    }
    if (spec.config.get("base") or {}).get("kind") == "running":
        payload["running_config"] = sha256_bytes(_read_config_bytes(running_config()))
    elif (spec.config.get("base") or {}).get("kind") == "file":
        payload["base_file"] = sha256_bytes(_read_config_bytes(Path(spec.config["base"]["path"])))
    return sha256_bytes(json.dumps(payload, sort_keys=True).encode())


def _read_config_bytes(path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as error:
        raise BuildError(f"base config {path}: {error}") from error


# --- the build -------------------------------------------------------------------------------


def package_targets(spec: Spec) -> tuple[str, dict[str, str]]:
    if spec.package_format == "rpm":
        return "binrpm-pkg", {}
    profiles = ["pkg.linux-upstream.nokerneldbg"]
    if not spec.headers:
        profiles.append("pkg.linux-upstream.nokernelheaders")
    return "bindeb-pkg", {"DEB_BUILD_PROFILES": " ".join(profiles)}


def collect_packages(spec: Spec, obj: Path, release: str) -> list[Path]:
    if spec.package_format == "rpm":
        found = sorted((obj / "rpmbuild" / "RPMS").glob("*/*.rpm"))
    else:
        found = sorted(obj.parent.glob("*.deb"))
    found = [
        p for p in found if release in p.name or "libc-dev" in p.name or "linux-libc" in p.name
    ]
    if not any(p.name.startswith(("linux-image", "kernel-")) for p in found):
        raise BuildError(f"the build made no kernel image package for {release} in {obj.parent}")
    return found


def image_package(packages: Sequence[Path]) -> Path:
    for package in packages:
        if package.name.startswith("linux-image-") and "-dbg" not in package.name:
            return package
    for package in packages:
        if (
            package.name.startswith("kernel-")
            and "devel" not in package.name
            and "headers" not in package.name
        ):
            return package
    raise BuildError("no kernel image package among " + ", ".join(p.name for p in packages))


def build(spec: Spec, compile_kernel: bool = True) -> dict[str, Any]:
    started = time.monotonic()
    work = spec.work_dir
    logs = _mkdir(work / "logs")
    with locked(work / "lock"):
        identity, location = source_identity(spec.source, work)
        memo_key = inputs_memo_key(spec, identity)
        memo = spec.cache_dir / "index" / f"{memo_key}.json"
        if memo.exists():
            digest = json.loads(memo.read_text()).get("build_hash", "")
            manifest = cached_manifest(spec.cache_dir, digest)
            if manifest:
                log(f"{spec.variant}: cached as {digest[:8]} (inputs unchanged)")
                return result(manifest, built=False, started=started, how="memo")
        tree = prepare_tree(spec.source, identity, location, work)
        commit = apply_patches(tree, spec.variant, spec.patches)
        recipe_key = sha256_bytes(
            json.dumps({"source": identity, **spec.config_recipe()}, sort_keys=True).encode()
        )[:16]
        obj = work / "obj" / f"{tree.name}-{spec.arch}-{recipe_key}" / "obj"
        log_file = logs / f"{spec.variant}.log"
        log_file.write_text(f"miglab kernel build of {spec.variant}: {identity} + {commit}\n")
        config_text, notes = assemble_config(spec, tree, obj, log_file)
        digest = build_hash(
            spec.variant,
            identity,
            spec.arch,
            spec.package_format,
            [p.data() for p in spec.patches],
            config_text,
        )
        local = localversion(spec.variant, digest)
        set_options(obj / ".config", [("CONFIG_LOCALVERSION", f'"{local}"')])
        run(make_command(spec, tree, obj, "olddefconfig"), log_file=log_file)
        if hashed_config((obj / ".config").read_text()) != hashed_config(config_text):
            raise BuildError(
                "setting CONFIG_LOCALVERSION changed other options (a bug): see .config"
            )
        # kernelrelease reads include/config/auto.conf: bring it up to date with .config first.
        run(make_command(spec, tree, obj, "syncconfig"), log_file=log_file)
        release = run(make_command(spec, tree, obj, "-s", "kernelrelease")).stdout.strip()
        if not release.endswith(local):
            raise BuildError(
                f"kernel release {release!r} does not end with {local!r}: is there a "
                "localversion file in the source tree?"
            )
        manifest = cached_manifest(spec.cache_dir, digest)
        if manifest:
            write_atomic(memo, json.dumps({"build_hash": digest}))
            log(f"{spec.variant}: cached as {digest[:8]}")
            return result(manifest, built=False, started=started, how="hash")
        if not compile_kernel:
            return {
                "variant": spec.variant,
                "build_hash": digest,
                "hash8": digest[:8],
                "kernel_release": release,
                "localversion": local,
                "built": False,
                "cached": False,
                "notes": notes,
                "seconds": round(time.monotonic() - started, 1),
            }
        target, env = package_targets(spec)
        for stale in [
            *obj.parent.glob("*.deb"),
            *obj.parent.glob("*.buildinfo"),
            *obj.parent.glob("*.changes"),
        ]:
            stale.unlink()
        shutil.rmtree(obj / "rpmbuild" / "RPMS", ignore_errors=True)
        jobs = spec.jobs or os.cpu_count() or 1
        env.update(
            {
                "KBUILD_BUILD_USER": "miglab",
                # The full build hash, readable in /proc/version of the running kernel.
                "KBUILD_BUILD_HOST": f"miglab-{digest}",
                "KDEB_PKGVERSION": f"{release}-1",
                "KDEB_COMPRESS": "gzip",
            }
        )
        log(f"{spec.variant}: building {release} ({target}, -j{jobs}); log {log_file}")
        compile_started = time.monotonic()
        run([*make_command(spec, tree, obj, target, jobs=jobs)], env=env, log_file=log_file)
        packages = collect_packages(spec, obj, release)
        staging = Path(tempfile.mkdtemp(prefix=f".{digest[:8]}-", dir=_mkdir(spec.cache_dir)))
        for package in packages:
            shutil.move(str(package), staging / package.name)
        shutil.copyfile(obj / ".config", staging / "config")
        manifest = {
            "variant": spec.variant,
            "build_hash": digest,
            "hash8": digest[:8],
            "kernel_release": release,
            "localversion": local,
            "arch": spec.arch,
            "package_format": spec.package_format,
            "source": identity,
            "tree_commit": commit,
            "patches": [{"name": p.name, "sha256": sha256_bytes(p.data())} for p in spec.patches],
            "config_sha256": sha256_bytes(hashed_config(config_text).encode()),
            "packages": [p.name for p in packages],
            "image_package": image_package(packages).name,
            "build_seconds": round(time.monotonic() - compile_started, 1),
            "built_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "build_host": os.uname().nodename,
            "notes": notes,
        }
        write_atomic(staging / "manifest.json", json.dumps(manifest, indent=1, sort_keys=True))
        final = spec.cache_dir / digest
        shutil.rmtree(final, ignore_errors=True)
        staging.chmod(0o755)
        staging.rename(final)
        write_atomic(memo, json.dumps({"build_hash": digest}))
        cached = cached_manifest(spec.cache_dir, digest)
        assert cached is not None
        return result(cached, built=True, started=started, how="built")


def result(manifest: dict[str, Any], built: bool, started: float, how: str) -> dict[str, Any]:
    return {
        **manifest,
        "built": built,
        "cached": not built,
        "how": how,
        "seconds": round(time.monotonic() - started, 1),
    }


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("action", choices=["build", "plan"])
    group = parser.add_mutually_exclusive_group(required=True)
    group.add_argument("--spec-json", help="the build spec as a JSON string")
    group.add_argument("--spec", type=Path, help="a file holding the build spec as JSON")


def command(args: argparse.Namespace) -> int:
    """Build or plan one spec; the answer is one JSON line on stdout, whatever happens."""
    try:
        data = json.loads(args.spec_json) if args.spec_json else json.loads(args.spec.read_text())
        spec = Spec.from_json(data)
        answer = build(spec, compile_kernel=args.action == "build")
    except BuildError as error:
        print(json.dumps({"failed": True, "error": str(error), "kind": type(error).__name__}))
        print(f"miglab-kbuild: {error}", file=sys.stderr)
        return 2
    except Exception as error:  # a bug or a bad spec: still one JSON line, and the traceback
        traceback.print_exc()
        print(
            json.dumps(
                {
                    "failed": True,
                    "kind": "InternalError",
                    "error": f"internal error ({type(error).__name__}: {error}); see stderr",
                }
            )
        )
        return 3
    print(json.dumps(answer, sort_keys=True))
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    add_arguments(parser)
    return command(parser.parse_args(argv))


if __name__ == "__main__":
    sys.exit(main())
