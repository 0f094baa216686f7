#!/usr/bin/env python3
"""How long `cocolab build` makes a kernel developer wait, measured in one run:

    python bench/build.py [--source debian:7.3] [--lane cc-sim-tdx] [--json FILE]

1. cold: an empty ccache, no patched tree, no O= directory (a cache of its own; only the
   unpacked Debian source and the apt state are shared with the real cache);
2. no change: the same request again;
3. a one-line edit in a driver: one more patch, adding a line to drivers/virtio/virtio.c;
4. back: the request of 1 again (the edit undone: its file recompiled, the rest as it was).

Each is `cocolab build` as a user runs it, timed from outside; ratios are to the cold build.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "framework"))

from cocolab.paths import cache_root  # noqa: E402

EDIT = """\
--- a/drivers/virtio/virtio.c
+++ b/drivers/virtio/virtio.c
@@ -1,3 +1,4 @@
 // SPDX-License-Identifier: GPL-2.0-only
+/* cocolab bench: a one-line edit */
 #include <linux/virtio.h>
 #include <linux/spinlock.h>
"""


def timed(argv: list[str], env: dict[str, str]) -> tuple[float, str]:
    start = time.monotonic()
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    took = time.monotonic() - start
    if done.returncode != 0:
        sys.exit(f"{' '.join(argv)} failed ({done.returncode}):\n{done.stderr[-3000:]}")
    return took, done.stdout.strip().splitlines()[-1]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default="debian:7.3")
    parser.add_argument("--lane", default="cc-sim-tdx")
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    shared = cache_root()
    with tempfile.TemporaryDirectory(prefix="cocolab-bench-build-") as tmp:
        root = Path(tmp) / "cache"  # a cache of its own: nothing else at its root
        (root / "build").mkdir(parents=True)
        for name in ("apt",):
            (root / name).symlink_to(shared / name)
        for name in ("sources", "debs"):
            (shared / "build" / name).mkdir(parents=True, exist_ok=True)
            (root / "build" / name).symlink_to(shared / "build" / name)
        edit = Path(tmp) / "one-line-edit.patch"
        edit.write_text(EDIT)
        env = {**os.environ, "COCOLAB_CACHE": str(root)}
        cocolab = [str(Path(sys.executable).with_name("cocolab")), "build", args.source,
                   "--lane", args.lane]
        rows = []
        for name, extra in (("cold (empty ccache)", []), ("no change", []),
                            ("one-line edit in a driver", ["--patch", str(edit)]),
                            ("edit undone", [])):
            took, said = timed([*cocolab, *extra], env)
            rows.append((name, took, said))
            print(f"{name:<28} {took:8.1f} s   {said}", flush=True)
    cold = rows[0][1]
    print(f"\n{'':<28} {'seconds':>8}   of cold")
    for name, took, _ in rows:
        print(f"{name:<28} {took:8.1f}   {took / cold:6.3f}x")
    if args.json:
        args.json.write_text(json.dumps({"source": args.source, "lane": args.lane,
                                         "cores": len(os.sched_getaffinity(0)),
                                         "rows": [{"what": n, "seconds": round(t, 1),
                                                   "said": s} for n, t, s in rows]},
                                        indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
