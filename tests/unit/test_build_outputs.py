"""Where `cocolab build` puts what it built, with make stood in for: each build an O=
directory of its own, started from its source's newest build, kept after other builds until
pruned, never pruned or rewritten while a session boots it (kernel/inuse.py)."""

from __future__ import annotations

from pathlib import Path

import pytest
from test_build import git, patch_file, toy_tree

from cocolab.kernel import build as kbuild
from cocolab.kernel import inuse
from cocolab.kernel.build import BuildRequest, Source, build, build_key, tree_source
from cocolab.kernel.kconfig import Kconfig
from cocolab.kernel.resolve import built_patches


@pytest.fixture
def make(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[Path]:
    """make stood in for: the "kernel" it builds names the patches the tree carries; each O=
    directory it compiled in is listed."""
    compiled: list[Path] = []
    tree = toy_tree(tmp_path)
    monkeypatch.setattr(kbuild, "missing_tools", list)
    monkeypatch.setattr(kbuild, "suites_fragment", lambda: "")
    monkeypatch.setattr(kbuild, "compiler", lambda: "gcc 12")
    monkeypatch.setattr(kbuild, "resolve_source",
                        lambda text: Source(tree, "debian:7.3", immutable=True))

    def configure(tree: Path, out: Path, requested: str, base: str) -> Kconfig:
        (out / ".config").write_text("CONFIG_MODULES=n\n")
        (out / ".cocolab-request.config").write_text(requested)
        return Kconfig.from_file(out / ".config")

    def compile_kernel(tree: Path, out: Path, jobs: int, modules: bool) -> int:
        compiled.append(out)
        (out / "arch/x86/boot").mkdir(parents=True, exist_ok=True)
        mem = (tree / "drivers/char/mem.c").read_text()
        (out / "arch/x86/boot/bzImage").write_text("patched" if "no\n" in mem else "plain")
        (out / "include/config").mkdir(parents=True, exist_ok=True)
        (out / "include/config/kernel.release").write_text("7.3.4\n")
        (out / "mem.o").touch()  # an object, for the next build to start from
        return 1

    monkeypatch.setattr(kbuild, "configure", configure)
    monkeypatch.setattr(kbuild, "compile_kernel", compile_kernel)
    return compiled


def image(out: Path) -> str:
    return (out / "arch/x86/boot/bzImage").read_text()


def test_two_builds_of_one_source_are_two_paths_each_keeping_its_kernel(
        tmp_path: Path, make: list[Path]) -> None:
    plain = build(BuildRequest("debian:7.3"))
    patched = build(BuildRequest("debian:7.3", (patch_file(tmp_path),)))
    assert plain.out != patched.out
    assert (image(plain.out), image(patched.out)) == ("plain", "patched")
    again = build(BuildRequest("debian:7.3"))  # the first request again: a hit, as it was
    assert again.out == plain.out and again.cached and image(plain.out) == "plain"
    assert len(make) == 2
    assert built_patches(patched.out)[0].endswith(" " + str(tmp_path / "0001-say-no.patch"))
    assert built_patches(plain.out) == ()


def test_a_new_build_starts_from_its_sources_newest_build(tmp_path: Path,
                                                         make: list[Path]) -> None:
    first = build(BuildRequest("debian:7.3"))
    (first.out / "mem.o").write_text("from the first build")
    second = build(BuildRequest("debian:7.3", (patch_file(tmp_path),)))
    assert (second.out / "mem.o").exists()  # copied: make rebuilds only what changed
    assert (second.out / "cocolab-build.json").exists()


def test_old_builds_are_pruned_but_never_one_in_use(tmp_path: Path, make: list[Path]) -> None:
    outs = [build(BuildRequest("debian:7.3", kconfig=(f"OPT{i}=y",))).out
            for i in range(kbuild.KEEP_BUILDS)]
    inuse.hold(outs[0])  # a session boots the oldest
    try:
        outs += [build(BuildRequest("debian:7.3", kconfig=(f"OPT{i}=y",))).out
                 for i in range(kbuild.KEEP_BUILDS, kbuild.KEEP_BUILDS + 2)]
        assert outs[0].exists(), "a build in use was pruned"
        assert not outs[1].exists()  # the oldest not in use
        assert all(out.exists() for out in outs[2:])  # the newest KEEP_BUILDS
    finally:
        inuse._release(outs[0])


def test_a_build_this_process_boots_is_converted_not_deadlocked(tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    inuse.hold(out)
    try:
        said: list[str] = []
        with inuse.exclusive(out, said.append):
            pass
        assert said == [] and inuse.in_use(out)
    finally:
        inuse._release(out)
    assert not inuse.in_use(out)


def test_an_edit_to_a_git_tree_is_a_build_of_its_own(tmp_path: Path) -> None:
    """A git tree's key carries its content (HEAD plus uncommitted changes): the path printed
    for one edit keeps naming that kernel after the next edit is built."""
    tree = toy_tree(tmp_path)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "base")
    source = tree_source(tree)
    keys = [build_key(source, [], "", "minimal", "gcc", kbuild._revision(source))]
    (tree / "drivers/char/mem.c").write_text("edited\n")
    keys.append(build_key(source, [], "", "minimal", "gcc", kbuild._revision(source)))
    (tree / "drivers/char/mem.c").write_text("edited again\n")
    keys.append(build_key(source, [], "", "minimal", "gcc", kbuild._revision(source)))
    assert len(set(keys)) == 3
