"""`cocolab build`: a kernel from source, patched, with a minimal config, cached.

A source is Debian's `linux-source-X.Y` (`debian:7.3`, fetched through the private apt from
whichever suite this host's mirror serves the newest one in) or a tree the user has. The
user's tree is never written to: a git tree is checked out into a worktree in the cache (HEAD
plus its uncommitted changes, `git stash create`), any other tree (which must be clean) and a
Debian source are copied there with hard links. Patches are applied to that tree, every link
a patch touches broken first, in the order given; one that does not apply is one line naming
it and the first failed hunk's file, before anything compiles.

The config is `make tinyconfig`, then `kernel/configs/kvm_guest.config`, `guests/kconfig/
minimal.config` (what a userland and cocolab's guest need beyond tiny), the fragment `cocolab
kconfig` computes for the rig, the suites and their machines, and the caller's own lines
(a lane's), merged by the kernel's own merge_config.sh and settled by `make olddefconfig`;
what Kconfig would not set is said. Compiles go through ccache (its directory in cocolab's
cache). Each source has one tree, and each build (source, patches, config request, compiler:
the build key) an O= directory of its own, `build/out/<source>-<base>-<key>`: the path
`cocolab build` prints names that kernel and keeps naming it after other builds of the same
source, until pruned (the newest KEEP_BUILDS are kept; one a session boots never goes). A new
build starts as a copy of the newest one of its source, so make rebuilds only what the new
patches or options change, and ccache, whose paths are relative to the O= directory, hits
across them. The request recorded there makes an unchanged request for a Debian source a hit
without running make; a user's tree is always handed to make, and a session booting that
build holds it (kernel/inuse.py), so make waits for it.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import time
from collections import deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from filelock import FileLock

from cocolab import progress
from cocolab.errors import ConfigError, HostError, KernelError
from cocolab.kernel import inuse
from cocolab.kernel.apt import PrivateApt
from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, Kconfig, parse_requirement
from cocolab.paths import GUESTS_DIR, cache_dir, write_atomic

SOURCE_SUITES = ("bookworm-backports", "trixie", "trixie-backports", "sid", "experimental")
"""Where `debian:X.Y` looks for linux-source-X.Y; the newest version among them wins."""
MINIMAL_CONFIG = GUESTS_DIR / "kconfig" / "minimal.config"
BASES = ("minimal", "defconfig")
TOOLS = ("make", "gcc", "flex", "bison", "bc", "ccache", "git")
"""Programs a build runs, each in the Debian package of its name (libelf-dev and libssl-dev
are headers: make says when they are missing)."""
_DEBIAN = re.compile(r"^debian:(?:(\d+\.\d+)|([a-z][a-z0-9-]*))$")
_COMPILED = re.compile(r"^\s+(CC|AS|LD|AR|HOSTCC|HOSTLD|OBJCOPY)\s")
_LINKING = re.compile(r"^\s+LD\s+(vmlinux|arch/x86/boot/compressed/vmlinux)$")


class BuildError(KernelError):
    """A build that failed: a patch that does not apply, a config or a compile error."""


@dataclass(frozen=True)
class Patch:
    path: Path
    text: str

    @property
    def name(self) -> str:
        return self.path.name

    def files(self) -> list[str]:
        """The paths this patch writes, relative to the tree (its `+++ b/` lines)."""
        names = re.findall(r"^\+\+\+ (?:b/)?(\S+)", self.text, re.MULTILINE)
        return list(dict.fromkeys(n for n in names if n != "/dev/null"))

    def digest(self) -> str:
        return hashlib.sha256(self.text.encode()).hexdigest()


def read_patch(path: Path, source: str = "--patch") -> Patch:
    """A git format-patch file, a plain unified diff or an mbox of a series; one line if not."""
    try:
        text = path.read_text(errors="replace")
    except OSError as exc:
        raise ConfigError(f"{source} {path}: {exc.strerror}") from None
    if not re.search(r"^\+\+\+ \S", text, re.MULTILINE):
        raise ConfigError(f"{source} {path}: not a patch (no '+++' file header); give a "
                          "git format-patch file, a unified diff or an mbox of a series")
    return Patch(path, text)


@dataclass(frozen=True)
class Source:
    tree: Path
    """The pristine tree: never written to."""
    identity: str
    """What names it in the build key and in messages."""
    git: bool = False
    immutable: bool = False
    """A packaged source never changes: an unchanged request needs no make at all."""


@dataclass(frozen=True)
class BuildRequest:
    source: str
    """'debian:7.3', 'debian:trixie' or a path to a kernel tree."""
    patches: tuple[Path, ...] = ()
    kconfig: tuple[str, ...] = ()
    """Extra options (NAME, NAME=y|m|n), e.g. a lane's."""
    base: str = "minimal"
    jobs: int = field(default_factory=lambda: len(os.sched_getaffinity(0)))


@dataclass(frozen=True)
class Built:
    out: Path
    """The O= directory: pass it to --kernel."""
    release: str
    cached: bool
    seconds: float
    compiled: int
    dropped: tuple[str, ...] = ()
    """Options the request asked for that Kconfig would not set."""


def is_source_tree(tree: Path) -> bool:
    """A kernel source tree (its Makefile and Kconfig's scripts), built or not."""
    return (tree / "Makefile").is_file() and (tree / "scripts/kconfig").is_dir()


def check_source(text: str, source: str = "cocolab build") -> None:
    """Refuse, without network, a source that is neither debian:X.Y, debian:SUITE nor a tree."""
    if text.startswith("debian:"):
        if not _DEBIAN.match(text):
            raise ConfigError(f"{source}: {text!r} is not debian:X.Y (a linux-source version, "
                              "e.g. debian:7.3, debian:6.12) or debian:SUITE (e.g. "
                              "debian:trixie)")
        return
    if not is_source_tree(Path(text).expanduser()):
        raise ConfigError(f"{source}: {text} is not a kernel source tree (no Makefile and "
                          "scripts/kconfig) nor debian:X.Y")


def missing_tools() -> list[str]:
    return [tool for tool in TOOLS if shutil.which(tool) is None]


def _apt(suite: str) -> PrivateApt:
    return PrivateApt(cache_dir("apt", suite), suite)


def _newer(a: str, b: str) -> bool:
    return subprocess.run(["dpkg", "--compare-versions", a, "gt", b], check=False).returncode == 0


def find_debian_source(text: str) -> tuple[str, str, str]:
    """(suite, package, version) for debian:X.Y (the newest among SOURCE_SUITES) or
    debian:SUITE (that suite's linux-source)."""
    m = _DEBIAN.match(text)
    if m is None:
        raise ConfigError(f"{text!r} is not debian:X.Y or debian:SUITE")
    if m.group(2):  # a suite: its meta package names the versioned one
        apt = _apt(m.group(2))
        apt.update()
        package = apt.depends("linux-source")[0]
        return m.group(2), package, apt.version(package)
    package = f"linux-source-{m.group(1)}"
    offers = _offers("^" + re.escape(package) + "$").get(package)
    if not offers:
        raise KernelError(f"no Debian suite this host's mirror serves has {package} "
                          f"(looked in {', '.join(SOURCE_SUITES)}); `cocolab build --list` "
                          "says which versions there are")
    version, suite = newest_offer(offers)
    return suite, package, version


def _offers(pattern: str = r"^linux-source-[0-9]") -> dict[str, list[tuple[str, str]]]:
    """The linux-source-X.Y packages matching `pattern` in SOURCE_SUITES:
    {package: [(version, suite), ...]}."""
    found: dict[str, list[tuple[str, str]]] = {}
    for suite in SOURCE_SUITES:
        apt = _apt(suite)
        try:
            apt.update()
            names = {line.split()[0] for line in apt.search(pattern).splitlines() if line}
        except KernelError:
            continue  # a suite this mirror does not serve
        for name in names:
            found.setdefault(name, []).append((apt.version(name), suite))
    return found


def newest_offer(offers: list[tuple[str, str]]) -> tuple[str, str]:
    best = offers[0]
    for offer in offers[1:]:
        if _newer(offer[0], best[0]):
            best = offer
    return best


def list_debian_sources() -> list[str]:
    """'debian:7.3  linux-source-7.3 7.3.4-1~bpo13+1 (trixie-backports)', one line per suite
    and version, by version; the one debian:X.Y builds is marked."""
    found = _offers()
    lines = []
    for name in sorted(found, key=lambda n: [int(x) for x in re.findall(r"\d+", n)]):
        best = newest_offer(found[name])
        for version, suite in found[name]:
            mark = "  <- debian:" + name.removeprefix("linux-source-") \
                if (version, suite) == best else ""
            lines.append(f"{name} {version} ({suite}){mark}")
    return lines


def debian_source(text: str) -> Source:
    suite, package, version = find_debian_source(text)
    root = cache_dir("build", "sources", f"{package}_{version}".replace("~", "-"))
    tree = root / package
    with FileLock(str(root / ".lock")):
        if not (root / ".unpacked").exists():
            debs = cache_dir("build", "debs")
            with progress.step(f"fetching {package} {version} ({suite})") as step:
                deb = next(iter(debs.glob(f"{package}_{version.replace(':', '%3a')}_*.deb")),
                           None)
                if deb is None:
                    deb, = (d for d in _apt(suite).download([package], debs)
                            if d.name.startswith(f"{package}_"))
                step.done = progress.mib(deb.stat().st_size)
            with progress.step(f"unpacking {package}"):
                shutil.rmtree(tree, ignore_errors=True)
                unpack_source_deb(deb, package, root)
            (root / ".unpacked").touch()
            deb.unlink()  # 160 MB that the unpacked tree makes redundant
    return Source(tree, f"{package} {version}", immutable=True)


def unpack_source_deb(deb: Path, package: str, dest: Path) -> None:
    """The tarball inside the .deb, streamed: dpkg-deb | tar -xO | tar -xJ (tar, not Python's
    tarfile, whose extraction filters Debian 12's Python 3.11.2 lacks)."""
    tarball = f"./usr/src/{package}.tar.xz"
    steps = [["dpkg-deb", "--fsys-tarfile", str(deb)], ["tar", "-xO", tarball],
             ["tar", "-xJ", "--no-same-owner", "-C", str(dest)]]
    procs: list[subprocess.Popen[bytes]] = []
    for argv in steps:
        upstream = procs[-1].stdout if procs else None
        procs.append(subprocess.Popen(
            argv, stdin=upstream if upstream else subprocess.DEVNULL, stderr=subprocess.PIPE,
            stdout=None if argv is steps[-1] else subprocess.PIPE))
        if upstream:
            upstream.close()  # the next process holds it now
    for argv, proc in zip(steps, procs, strict=True):
        err = proc.stderr.read().decode(errors="replace").strip() if proc.stderr else ""
        if proc.wait() != 0:
            raise KernelError(f"unpacking {deb.name}: {' '.join(argv)} exited "
                              f"{proc.returncode}: {err[-500:]}")


def tree_source(path: Path) -> Source:
    tree = path.expanduser().resolve()
    git = subprocess.run(["git", "-C", str(tree), "rev-parse", "--show-toplevel"],
                         capture_output=True, text=True, check=False)
    is_git = git.returncode == 0 and Path(git.stdout.strip()) == tree
    return Source(tree, str(tree), git=is_git)


def resolve_source(text: str) -> Source:
    check_source(text)
    return debian_source(text) if text.startswith("debian:") else tree_source(Path(text))


def _git(tree: Path, *args: str) -> str:
    done = subprocess.run(["git", "-C", str(tree), *args], capture_output=True, text=True,
                          check=False)
    if done.returncode != 0:
        raise BuildError(f"git {' '.join(args)} in {tree}: {done.stderr.strip()[-500:]}")
    return done.stdout.strip()


def _in_tree_build(tree: Path) -> bool:
    return (tree / ".config").exists() or (tree / "include/config").exists()


def prepare_tree(source: Source, patches: Sequence[Patch], key: str) -> Path:
    """The tree to build, at one path per source (cache/build/trees/KEY): a worktree of a git
    tree, else a hard-linked copy, with the patches applied. A packaged source's copy is
    made again when the patches change; a user's plain tree's at every build, since an
    editor that replaces a file leaves the old link behind."""
    if source.git:
        return _worktree(source, patches, key)
    if _in_tree_build(source.tree):
        raise BuildError(f"{source.tree} has an in-tree build (.config): cocolab builds out of "
                         "tree (O=) and never writes to your tree; run `make mrproper` there, "
                         "or make it a git repository (cocolab then builds a worktree of it)")
    copy = cache_dir("build", "trees") / key
    stamp = copy.parent / f"{key}.applied"
    want = [p.digest() for p in patches]
    before = json.loads(stamp.read_text()) if stamp.exists() else {}
    if source.immutable and before.get("patches") == want and copy.is_dir():
        return copy
    shutil.rmtree(copy, ignore_errors=True)
    stamp.unlink(missing_ok=True)
    with progress.step(f"linking a copy of {source.tree.name}"):
        # links keep every untouched file's mtime: make rebuilds only what a patch changed
        subprocess.run(["cp", "-al", str(source.tree), str(copy)], check=True)
    for name in before.get("files", []):  # back to pristine, but newer than its objects
        if (copy / name).is_file():
            _own_copy(copy / name)
    _apply(copy, patches, on_failure=lambda: shutil.rmtree(copy, ignore_errors=True))
    files = sorted({name for p in patches for name in p.files()})
    write_atomic(stamp, json.dumps({"patches": want, "files": files}))
    return copy


def _worktree(source: Source, patches: Sequence[Patch], key: str) -> Path:
    """A worktree of the user's git tree at HEAD plus its uncommitted changes to tracked
    files (`git stash create`, which touches neither the tree nor its stash), patched."""
    commit = _git(source.tree, "stash", "create") or _git(source.tree, "rev-parse", "HEAD")
    wt = cache_dir("build", "trees") / key
    stamp = wt.parent / f"{key}.applied"
    want = "\n".join([commit, *(p.digest() for p in patches)])
    if stamp.exists() and stamp.read_text() == want:
        return wt
    stamp.unlink(missing_ok=True)
    if not (wt / ".git").exists():
        shutil.rmtree(wt, ignore_errors=True)
        _git(source.tree, "worktree", "prune")
        with progress.step(f"checking out a worktree of {source.tree}"):
            _git(source.tree, "worktree", "add", "--detach", str(wt), commit)
    else:  # only what differs is rewritten, so make recompiles only that
        _git(wt, "checkout", "--force", "--detach", commit)
    _apply(wt, patches, on_failure=lambda: _git(wt, "checkout", "--force", "--detach", commit))
    write_atomic(stamp, want)
    return wt


def _own_copy(path: Path) -> None:
    """Replace a hard link with a file of its own (same bytes and mode, mtime now)."""
    data, mode = path.read_bytes(), path.stat().st_mode
    path.unlink()
    path.write_bytes(data)
    path.chmod(mode)


def _apply(tree: Path, patches: Sequence[Patch], on_failure: Callable[[], object]) -> None:
    for patch in patches:
        for name in patch.files():  # a hard link shared with the pristine tree is broken
            target = tree / name
            if target.is_file() and target.stat().st_nlink > 1:
                _own_copy(target)
        done = subprocess.run(["git", "apply", "--whitespace=nowarn", "-"], cwd=tree,
                              input=patch.text, capture_output=True, text=True, check=False)
        if done.returncode != 0:
            on_failure()
            raise BuildError(f"--patch {patch.path}: does not apply: {first_failure(done.stderr)}"
                             "; nothing was compiled")
        progress.say(f"applied {patch.name}")


def first_failure(stderr: str) -> str:
    """git apply's first complaint, as 'first failed hunk in FILE (line N)'."""
    if m := re.search(r"patch failed: (\S+):(\d+)", stderr):
        return f"first failed hunk in {m.group(1)} (line {m.group(2)})"
    if m := re.search(r"error: (\S+): (No such file or directory|does not exist in index)",
                      stderr):
        return f"{m.group(1)} does not exist in the tree"
    if m := re.search(r"error: (\S+): already exists", stderr):
        return f"{m.group(1)} already exists in the tree"
    lines = [line for line in stderr.splitlines() if line.strip()]
    return lines[0] if lines else "git apply failed"


def requested_config(request: BuildRequest, fragment: str) -> str:
    """Every option asked for, one `CONFIG_X=v` (or `# CONFIG_X is not set`) a line."""
    lines = []
    if request.base == "minimal":
        lines += [line for line in MINIMAL_CONFIG.read_text().splitlines()
                  if line.startswith(("CONFIG_", "# CONFIG_"))]
    lines += [line for line in fragment.splitlines() if line.startswith(("CONFIG_", "# CONFIG_"))]
    for text in request.kconfig:
        req = parse_requirement(text)
        if req is None:
            raise ConfigError(f"kconfig {text!r}: not {REQUIREMENT_SYNTAX}")
        name, wanted = req
        lines.append(f"# {name} is not set" if wanted == "n" else f"{name}={wanted or 'y'}")
    return "\n".join(lines) + "\n"


def dropped_options(requested: str, got: Kconfig) -> list[str]:
    """What the request asked for and the settled config does not have (the last word for an
    option wins, as in merge_config.sh)."""
    wants: dict[str, str | None] = {}
    for line in requested.splitlines():
        if m := re.match(r"^(CONFIG_\w+)=(.*)$", line):
            wants[m.group(1)] = m.group(2)
        elif m := re.match(r"^# (CONFIG_\w+) is not set$", line):
            wants[m.group(1)] = None
    out = []
    for name, value in wants.items():
        have = got.get(name)
        ok = have is None if value is None else (
            have in ("y", "m") if value == "m" else have == value)
        if not ok:
            out.append(f"{name}={value if value is not None else 'n'} ({got.describe(name)})")
    return out


def compiler() -> str:
    done = subprocess.run(["gcc", "--version"], capture_output=True, text=True, check=False)
    return done.stdout.splitlines()[0] if done.stdout else "gcc unknown"


def suites_fragment() -> str:
    """`cocolab kconfig --bare` over the repo's suites, in a process of its own (pytest
    collects them; this may run inside a pytest run)."""
    done = subprocess.run([sys.executable, "-m", "cocolab.cli", "kconfig", "--bare"],
                          capture_output=True, text=True, check=False,
                          env={**os.environ, "COCOLAB_LANE": "default"})
    if done.returncode != 0:
        raise BuildError(f"cocolab kconfig --bare failed ({done.returncode}): "
                         f"{done.stderr.strip()[-1000:]}")
    return done.stdout


def _digest(*parts: str) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(part.encode() + b"\0")
    return h.hexdigest()[:16]


def build_key(source: Source, patches: Sequence[Patch], requested: str, base: str,
              cc: str, revision: str = "") -> str:
    """What was built: (source and its revision, patches, config request, compiler). It
    names the build's O= directory; an unchanged request of a packaged source is a hit
    without make."""
    return _digest(source.identity, revision, base, requested, cc,
                   *(p.digest() for p in patches))


def _revision(source: Source) -> str:
    """A git tree's content as a commit (HEAD plus uncommitted changes: `git stash create`),
    so an edit is a build of its own; "" for a packaged source (its identity is its version)
    and for a plain tree, which is named by its path: a session booting a build of it holds
    that build (kernel/inuse.py) while make rewrites it."""
    if not source.git:
        return ""
    return _git(source.tree, "stash", "create") or _git(source.tree, "rev-parse", "HEAD")


def source_key(source: Source) -> str:
    """Names the source's one patched tree and its builds' O= directories: a new patch
    rewrites the files it touches and make rebuilds what depends on them, a new config what
    depends on the options that changed (kbuild's fixdep), and the paths every compile
    command carries stay the same relative to the O= directory, so ccache hits the rest."""
    return _digest(source.identity)


def _make_vars(tree: Path, out: Path) -> list[str]:
    return ["-C", str(tree), f"O={out}", "CC=ccache gcc", "HOSTCC=ccache gcc",
            "KBUILD_BUILD_TIMESTAMP=cocolab", "KBUILD_BUILD_USER=cocolab",
            "KBUILD_BUILD_HOST=cocolab"]


def _env() -> dict[str, str]:
    ccache = cache_dir("build", "ccache")
    # BASEDIR: paths under cocolab's build cache are hashed relative to the O= directory
    return {**os.environ, "CCACHE_DIR": str(ccache), "CCACHE_MAXSIZE": "5G",
            "CCACHE_COMPILERCHECK": "content", "CCACHE_BASEDIR": str(ccache.parent),
            "LC_ALL": "C"}


def _run(argv: list[str], what: str) -> str:
    done = subprocess.run(argv, capture_output=True, text=True, check=False, env=_env(),
                          stdin=subprocess.DEVNULL)
    if done.returncode != 0:
        tail = "\n".join((done.stdout + done.stderr).splitlines()[-30:])
        raise BuildError(f"{what}: {' '.join(argv)} exited {done.returncode}:\n{tail}")
    return done.stdout


def configure(tree: Path, out: Path, requested: str, base: str) -> Kconfig:
    make = ["make", *_make_vars(tree, out)]
    _run([*make, "tinyconfig" if base == "minimal" else "defconfig"], "configure")
    fragments = [out / ".cocolab-request.config"]
    fragments[0].write_text(requested)
    if base == "minimal":
        fragments.insert(0, tree / "kernel/configs/kvm_guest.config")
    _run(["sh", str(tree / "scripts/kconfig/merge_config.sh"), "-m", "-O", str(out),
          str(out / ".config"), *map(str, fragments)], "configure")
    _run([*make, "olddefconfig"], "configure")
    return Kconfig.from_file(out / ".config")


def compile_kernel(tree: Path, out: Path, jobs: int, modules: bool) -> int:
    """make bzImage (and modules), said as it goes; the number of objects it built."""
    targets = ["bzImage", *(["modules"] if modules else [])]
    argv = ["make", *_make_vars(tree, out), f"-j{jobs}", *targets]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            env=_env(), stdin=subprocess.DEVNULL)
    tail: deque[str] = deque(maxlen=40)
    count, last = 0, time.monotonic()
    assert proc.stdout is not None
    for line in proc.stdout:
        tail.append(line.rstrip())
        if m := _LINKING.match(line):
            progress.say(f"compile: linking {m.group(1)} ({count} objects before it)")
        if _COMPILED.match(line):
            count += 1
        if time.monotonic() - last >= 15:
            progress.say(f"compile: {count} objects built")
            last = time.monotonic()
    if proc.wait() != 0:
        errors = [line for line in tail if "error" in line.lower()]
        raise BuildError(f"make {' '.join(targets)} failed ({proc.returncode}) in {out}:\n"
                         + "\n".join(errors[:5] or list(tail)[-15:]))
    return count


def build(request: BuildRequest) -> Built:
    """Build (or find built) the kernel `request` describes."""
    lacking = missing_tools()
    if lacking:
        raise HostError(f"building a kernel needs {', '.join(lacking)}: apt-get install "
                        f"--no-install-recommends {' '.join(lacking)} libelf-dev libssl-dev "
                        "(./setup.sh installs them)")
    if request.base not in BASES:
        raise ConfigError(f"--base {request.base}: choose one of {', '.join(BASES)}")
    patches = [read_patch(p) for p in request.patches]
    source = resolve_source(request.source)
    requested = requested_config(request, suites_fragment())
    key = build_key(source, patches, requested, request.base, compiler(), _revision(source))
    where = source_key(source)
    family = f"{where}-{request.base}"
    out = cache_dir("build", "out", f"{family}-{key}")
    start = time.monotonic()
    with FileLock(str(cache_dir("build") / f"{where}.lock")):  # the tree and its O= dirs
        stamp = out / "cocolab-build.json"
        image = out / "arch/x86/boot/bzImage"
        if source.immutable and stamp.exists() and image.exists():
            info = json.loads(stamp.read_text())
            if info.get("key") == key and "patch_digests" in info:
                return Built(out, info["release"], True, time.monotonic() - start, 0,
                             tuple(info.get("dropped", ())))
        if not (out / ".config").exists():
            _seed(out, family)
        with inuse.exclusive(out, progress.say):
            release, count, dropped = _build_in(source, patches, request, requested, key,
                                                where, out)
        _prune(family, out)
    return Built(out, release, False, time.monotonic() - start, count, tuple(dropped))


def _build_in(source: Source, patches: Sequence[Patch], request: BuildRequest,
              requested: str, key: str, where: str, out: Path) -> tuple[str, int, list[str]]:
    """Configure and compile into `out`, which nobody boots meanwhile; its stamp last."""
    stamp = out / "cocolab-build.json"
    stamp.unlink(missing_ok=True)  # from here on, the O= dir is not what it says
    tree = prepare_tree(source, patches, where)
    request_file = out / ".cocolab-request.config"
    if not (out / ".config").exists() or not request_file.exists() \
            or request_file.read_text() != requested:
        with progress.step(f"configuring ({request.base} + cocolab's fragment)") as step:
            config = configure(tree, out, requested, request.base)
            step.done = f"{len(config.values)} options"
    config = Kconfig.from_file(out / ".config")
    dropped = dropped_options(requested, config)
    for line in dropped:
        progress.say(f"Kconfig would not set {line}")
    with progress.step(f"compiling {source.identity}"
                       + "".join(f" + {p.name}" for p in patches)) as step:
        count = compile_kernel(tree, out, request.jobs, modules=config.builtin("MODULES"))
        step.done = f"{count} objects compiled, {request.jobs} jobs"
    release = (out / "include/config/kernel.release").read_text().strip()
    write_atomic(stamp, json.dumps({
        "source": source.identity, "tree": str(tree), "patches": [str(p.path) for p in patches],
        "patch_digests": [f"{p.digest()} {p.path.resolve()}" for p in patches],
        "base": request.base, "release": release, "dropped": dropped, "key": key,
    }, indent=1))
    return release, count, dropped


KEEP_BUILDS = 4
"""Built O= directories kept per source and base (the newest; one in use is never pruned)."""


def _siblings(family: str) -> list[Path]:
    """The finished builds of one source and base, newest first (and the one directory per
    source an earlier cocolab kept, so an old cache seeds a new build)."""
    root = cache_dir("build", "out")
    found = [p for p in [*root.glob(f"{family}-*"), root / family]
             if (p / "cocolab-build.json").exists()]
    return sorted(found, key=lambda p: (p / "cocolab-build.json").stat().st_mtime, reverse=True)


def _seed(out: Path, family: str) -> None:
    """A new build starts as a copy of the newest build of its source, so make rebuilds only
    what the new patches or options change (and every other build keeps its kernel)."""
    siblings = [p for p in _siblings(family) if p != out]
    if not siblings:
        return
    with progress.step(f"copying the build {siblings[0].name} to start from") as step:
        subprocess.run(["cp", "-a", "--reflink=auto", f"{siblings[0]}/.", str(out)],
                       check=True)
        (out / "cocolab-build.json").unlink(missing_ok=True)
        step.done = siblings[0].name


def _prune(family: str, keep: Path) -> None:
    for old in _siblings(family)[KEEP_BUILDS:]:
        if old != keep and old.name != family and not inuse.in_use(old):
            shutil.rmtree(old, ignore_errors=True)
            progress.say(f"pruned the build {old.name} ({KEEP_BUILDS} newer ones are kept)")
