"""cocolab build's logic on a toy kernel tree: sources, patches, config requests, keys. No
kernel is compiled here (tests/smoke does that where a source is cached)."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

from cocolab.errors import ConfigError, KernelError
from cocolab.kernel.build import (
    BuildError,
    BuildRequest,
    Source,
    build_key,
    check_source,
    dropped_options,
    first_failure,
    newest_offer,
    prepare_tree,
    read_patch,
    requested_config,
    tree_source,
    unpack_source_deb,
)
from cocolab.kernel.kconfig import Kconfig

MEM_C = "".join(f"line {n}\n" for n in range(1, 21))
PATCH = """\
From: Someone <someone@example.org>
Subject: [PATCH] char/mem: say no

diff --git a/drivers/char/mem.c b/drivers/char/mem.c
--- a/drivers/char/mem.c
+++ b/drivers/char/mem.c
@@ -9,3 +9,4 @@
 line 9
 line 10
+no
 line 11
--
2.49.0
"""


def toy_tree(root: Path) -> Path:
    tree = root / "linux"
    (tree / "scripts/kconfig").mkdir(parents=True)
    (tree / "drivers/char").mkdir(parents=True)
    (tree / "Makefile").write_text("# toy\n")
    (tree / "drivers/char/mem.c").write_text(MEM_C)
    return tree


def patch_file(tmp_path: Path, text: str = PATCH, name: str = "0001-say-no.patch") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_a_patch_is_a_diff_or_it_is_one_line(tmp_path: Path) -> None:
    assert read_patch(patch_file(tmp_path)).files() == ["drivers/char/mem.c"]
    not_a_patch = patch_file(tmp_path, "Hello\n", "notes.txt")
    with pytest.raises(ConfigError, match=r"^--patch .*notes.txt: not a patch \(no '\+\+\+' "
                                          "file header\\); give a git format-patch file"):
        read_patch(not_a_patch)
    with pytest.raises(ConfigError, match="No such file or directory"):
        read_patch(tmp_path / "missing.patch")


def test_patches_go_to_a_linked_copy_and_the_source_is_never_written(tmp_path: Path) -> None:
    tree = toy_tree(tmp_path)
    source = Source(tree, "toy", immutable=True)
    copy = prepare_tree(source, [read_patch(patch_file(tmp_path))], "k1")
    assert copy != tree
    assert "+no" not in (copy / "drivers/char/mem.c").read_text()
    assert "\nno\n" in (copy / "drivers/char/mem.c").read_text()
    assert (tree / "drivers/char/mem.c").read_text() == MEM_C
    assert (copy / "Makefile").stat().st_ino == (tree / "Makefile").stat().st_ino  # linked
    assert (tree / "drivers/char/mem.c").stat().st_nlink == 1  # the patched one was not
    again = prepare_tree(source, [read_patch(patch_file(tmp_path))], "k1")
    assert again == copy and (copy / "drivers/char/mem.c").read_text().count("\nno\n") == 1


def test_files_a_patch_touched_are_newer_than_their_objects_once_it_is_gone(
        tmp_path: Path) -> None:
    """Patched, then built without the patch: mem.c is pristine again, and newer than the
    object the patched build left in the O= directory, so make compiles it again."""
    tree = toy_tree(tmp_path)
    source = Source(tree, "toy", immutable=True)
    patched = prepare_tree(source, [read_patch(patch_file(tmp_path))], "k")
    built_at = (patched / "drivers/char/mem.c").stat().st_mtime_ns
    pristine_mtime = (tree / "drivers/char/mem.c").stat().st_mtime_ns
    plain = prepare_tree(source, [], "k")
    assert plain == patched  # one path per source
    assert (plain / "drivers/char/mem.c").read_text() == MEM_C
    assert (plain / "drivers/char/mem.c").stat().st_mtime_ns >= built_at
    assert (tree / "drivers/char/mem.c").stat().st_mtime_ns == pristine_mtime
    assert (plain / "Makefile").stat().st_ino == (tree / "Makefile").stat().st_ino


def test_a_patch_that_does_not_apply_is_one_line_naming_it_and_the_hunk(tmp_path: Path) -> None:
    tree = toy_tree(tmp_path)
    (tree / "drivers/char/mem.c").write_text(MEM_C.replace("line 10\n", "line ten\n"))
    bad = patch_file(tmp_path)
    with pytest.raises(BuildError) as caught:
        prepare_tree(Source(tree, "toy"), [read_patch(bad)], "k2")
    assert str(caught.value) == (f"--patch {bad}: does not apply: first failed hunk in "
                                 "drivers/char/mem.c (line 9); nothing was compiled")
    assert not (tmp_path / "cache/build/trees/k2").exists()  # no half-patched copy is kept


def test_the_second_of_a_series_is_named_when_it_fails(tmp_path: Path) -> None:
    tree = toy_tree(tmp_path)
    first = patch_file(tmp_path)
    second = patch_file(tmp_path, PATCH.replace("drivers/char/mem.c", "drivers/char/port.c"),
                        "0002-port.patch")
    with pytest.raises(BuildError, match=r"^--patch .*0002-port.patch: does not apply: "
                                         "drivers/char/port.c does not exist in the tree"):
        prepare_tree(Source(tree, "toy"), [read_patch(first), read_patch(second)], "k3")


def test_an_in_tree_build_is_refused_unless_the_tree_is_git(tmp_path: Path) -> None:
    tree = toy_tree(tmp_path)
    (tree / ".config").write_text("CONFIG_X=y\n")
    with pytest.raises(BuildError, match=r"has an in-tree build .* never writes to your tree; "
                                         r"run `make mrproper` there, or make it a git"):
        prepare_tree(Source(tree, "toy"), [], "k")


def git(tree: Path, *args: str) -> str:
    return subprocess.run(["git", "-C", str(tree), "-c", "user.name=t", "-c",
                           "user.email=t@t", *args], check=True, capture_output=True,
                          text=True).stdout


def test_a_git_tree_is_built_from_a_worktree_with_its_uncommitted_changes(tmp_path: Path
                                                                          ) -> None:
    tree = toy_tree(tmp_path)
    git(tree, "init", "-q")
    git(tree, "add", "-A")
    git(tree, "commit", "-qm", "base")
    (tree / "drivers/char/mem.c").write_text(MEM_C.replace("line 1\n", "line one\n"))
    (tree / ".config").write_text("CONFIG_X=y\n")  # an in-tree build: fine, it is not used
    status = git(tree, "status", "--porcelain")
    source = tree_source(tree)
    assert source.git
    wt = prepare_tree(source, [read_patch(patch_file(tmp_path))], "k4")
    text = (wt / "drivers/char/mem.c").read_text()
    assert text.startswith("line one\n") and "\nno\n" in text
    assert not (wt / ".config").exists()
    assert git(tree, "status", "--porcelain") == status  # the user's tree as it was
    assert git(tree, "stash", "list") == ""
    (tree / "drivers/char/mem.c").write_text(MEM_C.replace("line 2\n", "line two\n"))
    text = (prepare_tree(source, [read_patch(patch_file(tmp_path))], "k4") / "drivers/char/mem.c"
            ).read_text()
    assert text.startswith("line 1\nline two\n") and text.count("\nno\n") == 1


def test_the_config_request_is_minimal_then_fragment_then_the_lane() -> None:
    request = BuildRequest("debian:7.3", kconfig=("INTEL_TDX_GUEST=y", "MODULES=n", "DEVMEM"))
    text = requested_config(request, "# a comment\nCONFIG_VFIO=y\n")
    lines = text.splitlines()
    assert lines.index("CONFIG_64BIT=y") < lines.index("CONFIG_VFIO=y") \
        < lines.index("CONFIG_INTEL_TDX_GUEST=y")
    assert lines[-2:] == ["# CONFIG_MODULES is not set", "CONFIG_DEVMEM=y"]
    assert "# a comment" not in lines
    with pytest.raises(ConfigError, match="kconfig 'no-such': not NAME"):
        requested_config(BuildRequest("debian:7.3", kconfig=("no-such",)), "")


def test_what_kconfig_would_not_set_is_named_with_what_it_set() -> None:
    got = Kconfig.parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_E=y\n")
    asked = "CONFIG_A=y\nCONFIG_B=m\nCONFIG_C=y\nCONFIG_D=y\n# CONFIG_E is not set\n"
    assert dropped_options(asked, got) == [
        "CONFIG_C=y (CONFIG_C is not set)", "CONFIG_D=y (CONFIG_D is not set)",
        "CONFIG_E=n (CONFIG_E=y)"]
    assert dropped_options("CONFIG_B=m\n", Kconfig.parse("CONFIG_B=y\n")) == []  # MODULES=n


def test_the_key_changes_with_every_input() -> None:
    source = Source(Path("/src"), "linux-source-7.3 7.3.4-1")
    base = build_key(source, [], "CONFIG_A=y\n", "minimal", "gcc 12")
    assert base == build_key(source, [], "CONFIG_A=y\n", "minimal", "gcc 12")
    assert len({base, build_key(Source(Path("/src"), "linux-source-7.3 7.3.5-1"), [],
                                "CONFIG_A=y\n", "minimal", "gcc 12"),
                build_key(source, [], "CONFIG_A=m\n", "minimal", "gcc 12"),
                build_key(source, [], "CONFIG_A=y\n", "defconfig", "gcc 12"),
                build_key(source, [], "CONFIG_A=y\n", "minimal", "gcc 13")}) == 5


@pytest.mark.parametrize("text", ["debian:", "debian:7", "debian:Trixie", "debian:7.3:x",
                                  "/nonexistent/linux"])
def test_a_source_that_is_none_is_one_line(text: str) -> None:
    with pytest.raises(ConfigError, match=r"^build: "):
        check_source(text, "build")


def test_first_failure_reads_git_apply() -> None:
    assert first_failure("error: patch failed: mm/char-mem.c:595\nerror: mm/char-mem.c: "
                         "patch does not apply\n") == \
        "first failed hunk in mm/char-mem.c (line 595)"
    assert first_failure("error: corrupt patch at line 7\n") == "error: corrupt patch at line 7"


def test_a_source_deb_is_unpacked_by_streaming_its_tarball(tmp_path: Path) -> None:
    """A linux-source .deb as Debian lays it out (usr/src/linux-source-X.Y.tar.xz), made
    here with dpkg-deb, unpacked through dpkg-deb | tar | tar."""
    pkg = tmp_path / "pkg"
    (pkg / "DEBIAN").mkdir(parents=True)
    (pkg / "DEBIAN/control").write_text("Package: linux-source-0.1\nVersion: 0.1-1\n"
                                        "Architecture: all\nMaintainer: t <t@t>\n"
                                        "Description: toy\n")
    toy_tree(tmp_path / "src")
    (tmp_path / "src/linux").rename(tmp_path / "src/linux-source-0.1")
    (pkg / "usr/src").mkdir(parents=True)
    subprocess.run(["tar", "-cJf", str(pkg / "usr/src/linux-source-0.1.tar.xz"), "-C",
                    str(tmp_path / "src"), "linux-source-0.1"], check=True)
    deb = tmp_path / "linux-source-0.1_0.1-1_all.deb"
    subprocess.run(["dpkg-deb", "--root-owner-group", "-Zgzip", "--build", str(pkg), str(deb)],
                   check=True, capture_output=True)
    dest = tmp_path / "out"
    dest.mkdir()
    unpack_source_deb(deb, "linux-source-0.1", dest)
    assert (dest / "linux-source-0.1/drivers/char/mem.c").read_text() == MEM_C
    with pytest.raises(KernelError, match=r"unpacking .*: tar -xO ./usr/src/linux-source-0.2"):
        unpack_source_deb(deb, "linux-source-0.2", dest)


def test_the_newest_offer_wins_by_debian_version_order() -> None:
    """debian:7.3 takes trixie-backports' 7.3.4 over experimental's release candidate, by
    dpkg's ordering (a ~ sorts before everything)."""
    offers = [("7.3~rc7-1~exp1", "experimental"), ("7.3.4-1~bpo13+1", "trixie-backports"),
              ("7.3.4-1~bpo12+1", "bookworm-backports")]
    assert newest_offer(offers) == ("7.3.4-1~bpo13+1", "trixie-backports")
