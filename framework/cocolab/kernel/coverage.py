"""Line coverage of kernel sources from what guests of a GCOV kernel counted.

A GCOV kernel's build directory holds a .gcno beside each profiled object; each guest it
booted leaves the matching .gcda files (guest/gcov.py saves them, one directory a VM, laid
out as the guest's debugfs mirrors the build directory). Debian's `gcov` (the compiler's
own, gcc 12 here) reads one .gcno and .gcda pair into JSON (`gcov -j -t`): every line that
has code, with its count, and every function. A line is reached if any guest ran it, so
guests are merged by union, not by summing counters (a snapshot's restored guests would
count their shared boot many times).
"""

from __future__ import annotations

import gzip
import json
import shutil
import subprocess
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from cocolab.errors import KernelError


class CoverageError(KernelError):
    """Coverage could not be read (no gcov, no .gcno: not a GCOV build)."""


@dataclass
class FileCoverage:
    source: str
    """The source file, relative to the kernel tree: drivers/virtio/virtio_ring.c."""
    lines: set[int] = field(default_factory=set)
    """Lines with code."""
    reached: set[int] = field(default_factory=set)
    functions: dict[str, tuple[int, int]] = field(default_factory=dict)
    """name: (start line, end line)."""

    @property
    def percent(self) -> float:
        return 100.0 * len(self.reached) / len(self.lines) if self.lines else 0.0

    def of_functions(self, names: tuple[str, ...]) -> tuple[int, int]:
        """(reached, lines) over the named functions' lines."""
        spans = [self.functions[n] for n in names if n in self.functions]
        lines = {ln for ln in self.lines if any(a <= ln <= b for a, b in spans)}
        return len(lines & self.reached), len(lines)

    def line(self) -> str:
        return (f"{self.source:<40} {len(self.reached):>5} / {len(self.lines):<5} lines "
                f"{self.percent:5.1f}%")


def _gcov_json(gcno: Path, gcda: Path | None, source: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory(prefix="cocolab-gcov-") as tmp:
        stem = Path(tmp) / gcno.stem
        shutil.copyfile(gcno, stem.with_suffix(".gcno"))
        if gcda is not None:
            shutil.copyfile(gcda, stem.with_suffix(".gcda"))
        done = subprocess.run(["gcov", "-j", "-t", "-o", str(stem.with_suffix(".gcno")),
                               str(source)], capture_output=True, cwd=tmp, check=False)
    if done.returncode != 0 or not done.stdout:
        raise CoverageError(f"gcov on {gcno} failed ({done.returncode}): "
                            f"{done.stderr.decode(errors='replace').strip()[-500:]}")
    raw = done.stdout
    text = gzip.decompress(raw) if raw[:2] == b"\x1f\x8b" else raw
    return json.loads(text.splitlines()[0])  # type: ignore[no-any-return]


def file_coverage(build: Path, tree: Path, source: str, runs: list[Path]) -> FileCoverage:
    """`source`'s coverage over the guests whose .gcda files are under each of `runs`."""
    if shutil.which("gcov") is None:
        raise CoverageError("coverage needs gcov: apt-get install --no-install-recommends gcc")
    obj = Path(source).with_suffix("")
    gcno = build / obj.with_suffix(".gcno")
    if not gcno.is_file():
        raise CoverageError(f"{gcno} does not exist: {source} was not built with GCOV "
                            "profiling (the hardening lane's kernel profiles the virtio "
                            "drivers)")
    cov = FileCoverage(source)
    for gcda in [None, *(g for run in runs for g in run.rglob(f"{obj.name}.gcda")
                         if str(g).endswith(str(obj.with_suffix(".gcda"))))]:
        data = _gcov_json(gcno, gcda, tree / source)
        for entry in data.get("files", []):  # type: ignore[attr-defined]
            if not str(entry["file"]).endswith(source):
                continue  # a header's inline functions
            for line in entry["lines"]:
                cov.lines.add(int(line["line_number"]))
                if int(line["count"]) > 0:
                    cov.reached.add(int(line["line_number"]))
            for fn in entry["functions"]:
                cov.functions[fn["demangled_name"]] = (int(fn["start_line"]),
                                                       int(fn["end_line"]))
    return cov


DRIVERS = ("drivers/virtio/virtio_ring.c", "drivers/virtio/virtio.c",
           "drivers/block/virtio_blk.c", "drivers/net/virtio_net.c",
           "drivers/char/hw_random/virtio-rng.c")
"""What the hardening lane profiles and the hostile-device suite reaches (with the PCI
transport, drivers/virtio/virtio_pci_*.c, which is profiled too)."""

PATHS: dict[str, dict[str, tuple[str, ...]]] = {
    "used ring": {
        "drivers/virtio/virtio_ring.c": (
            "virtqueue_get_buf_ctx_split", "detach_buf_split", "more_used_split",
            "virtqueue_get_buf_ctx_packed", "detach_buf_packed", "more_used_packed",
            "virtqueue_get_buf_ctx", "vring_interrupt"),
        "drivers/block/virtio_blk.c": ("virtblk_done", "virtblk_result",
                                       "virtblk_request_done", "virtblk_poll"),
        "drivers/char/hw_random/virtio-rng.c": ("random_recv_done", "copy_data",
                                                "virtio_read"),
        "drivers/net/virtio_net.c": ("virtnet_receive", "receive_buf", "receive_mergeable",
                                     "receive_small", "receive_big", "free_old_xmit"),
    },
    "config space": {
        "drivers/virtio/virtio.c": ("virtio_features_ok", "virtio_dev_probe",
                                    "__virtio_config_changed"),
        "drivers/block/virtio_blk.c": ("virtblk_probe", "virtblk_update_capacity",
                                       "virtblk_read_limits", "init_vq"),
        "drivers/net/virtio_net.c": ("virtnet_probe", "virtnet_config_changed_work",
                                     "virtnet_validate"),
    },
}
"""The host-input paths reported apart (issue 34 §6): what a device publishes in the used
ring, and what it says in config space. Functions a kernel lacks are left out."""


def build_dir(gcda: Path, source: str) -> Path | None:
    """The cocolab build directory a guest's .gcda mirrors (debugfs keeps the objtree's
    absolute path, and the guest's directory comes before it: .../VM/root/.../out/KEY/
    drivers/x.gcda -> /root/.../out/KEY), if it is on this host; None if not."""
    suffix = Path(source).with_suffix(".gcda").parts
    parts = gcda.parts
    if parts[-len(suffix):] != suffix:
        raise CoverageError(f"{gcda} is not the .gcda of {source}")
    above = parts[1:-len(suffix)]
    for start in range(len(above)):
        candidate = Path("/", *above[start:])
        if (candidate / "cocolab-build.json").is_file():
            return candidate
    return None


def report(runs: list[Path], build: Path, tree: Path,
           sources: tuple[str, ...] = DRIVERS) -> list[str]:
    """Per file, then per path: lines reached of lines, over every guest under `runs`."""
    covs = {s: file_coverage(build, tree, s, runs) for s in sources
            if (build / Path(s).with_suffix(".gcno")).is_file()}
    lines = [cov.line() for cov in covs.values()]
    lines += [f"{s:<40} not built with GCOV (not in this kernel, or not profiled)"
              for s in sources if s not in covs]
    for path, by_file in PATHS.items():
        reached = total = 0
        for source, functions in by_file.items():
            if source in covs:
                r, t = covs[source].of_functions(functions)
                reached, total = reached + r, total + t
        if total:
            lines.append(f"{'(' + path + ')':<40} {reached:>5} / {total:<5} lines "
                         f"{100.0 * reached / total:5.1f}%")
    return lines
