"""Coverage read back as the hardening lane reads it (kernel/coverage.py), on a program
compiled here with gcc --coverage instead of a kernel: its .gcno in a "build" directory,
the .gcda of two runs in two "guest" directories laid out as debugfs mirrors the build.
A line is reached if any run reached it; a run with no .gcda reached nothing."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from cocolab.kernel.coverage import CoverageError, build_dir, file_coverage

SOURCE = """\
int pick(int a)
{
	if (a > 1)
		return 2;
	return 1;
}

int other(int a)
{
	return a * 3;
}

int main(int argc, char **argv)
{
	(void)argv;
	return pick(argc) - 1 + (argc > 5 ? other(argc) : 0);
}
"""

pytestmark = pytest.mark.skipif(shutil.which("gcc") is None or shutil.which("gcov") is None,
                                reason="needs gcc and gcov: apt-get install gcc")


@pytest.fixture
def built(tmp_path: Path) -> tuple[Path, Path, Path]:
    """(tree, build, program): drivers/x/prog.c compiled in build/drivers/x with coverage."""
    tree, build = tmp_path / "tree", tmp_path / "build"
    (tree / "drivers/x").mkdir(parents=True)
    (build / "drivers/x").mkdir(parents=True)
    (tree / "drivers/x/prog.c").write_text(SOURCE)
    subprocess.run(["gcc", "--coverage", "-O0", "-o", str(build / "drivers/x/prog"),
                    str(tree / "drivers/x/prog.c")], cwd=build / "drivers/x", check=True)
    gcno = next((build / "drivers/x").glob("*.gcno"))
    gcno.rename(build / "drivers/x/prog.gcno")
    return tree, build, build / "drivers/x/prog"


def run_as_guest(built: tuple[Path, Path, Path], guest: Path, *args: str) -> None:
    """Run the program once and keep its .gcda where a guest's would be saved."""
    _, build, program = built
    for old in build.rglob("*.gcda"):
        old.unlink()
    subprocess.run([str(program), *args], cwd=build, check=False)
    gcda = next(build.rglob("*.gcda"))
    dest = guest / str(build).lstrip("/") / "drivers/x/prog.gcda"
    dest.parent.mkdir(parents=True)
    shutil.copyfile(gcda, dest)


def test_runs_are_merged_by_union(built: tuple[Path, Path, Path], tmp_path: Path) -> None:
    tree, build, _ = built
    one, many = tmp_path / "guests/vm-1", tmp_path / "guests/vm-2"
    run_as_guest(built, one)                         # argc 1: pick's "return 1"
    run_as_guest(built, many, "a", "b", "c", "d", "e")  # argc 6: "return 2" and other()
    alone = file_coverage(build, tree, "drivers/x/prog.c", [one])
    both = file_coverage(build, tree, "drivers/x/prog.c", [one, many])
    assert alone.lines == both.lines and len(alone.lines) >= 6
    assert alone.reached < both.reached == both.lines
    assert 4 not in alone.reached and 4 in both.reached  # "return 2;"
    assert both.percent == 100.0
    assert set(both.functions) >= {"pick", "other", "main"}
    assert alone.of_functions(("other",)) == (0, 2)
    none = file_coverage(build, tree, "drivers/x/prog.c", [tmp_path / "nothing"])
    assert none.reached == set() and none.lines == alone.lines


def test_the_build_directory_is_read_from_a_guests_paths(tmp_path: Path) -> None:
    build = tmp_path / "cache/out/KEY"
    build.mkdir(parents=True)
    (build / "cocolab-build.json").write_text("{}")
    gcda = tmp_path / "guests/seed-1/vm-3" / str(build).lstrip("/") / \
        "drivers/virtio/virtio_ring.gcda"
    assert build_dir(gcda, "drivers/virtio/virtio_ring.c") == build
    assert build_dir(tmp_path / "vm/root/gone/drivers/virtio/virtio_ring.gcda",
                     "drivers/virtio/virtio_ring.c") is None
    with pytest.raises(CoverageError, match=r"not the \.gcda"):
        build_dir(gcda, "drivers/block/virtio_blk.c")


def test_a_source_built_without_gcov_says_so(tmp_path: Path) -> None:
    with pytest.raises(CoverageError, match="not built with GCOV"):
        file_coverage(tmp_path, tmp_path, "drivers/x/prog.c", [])
