#!/usr/bin/env python3
"""A long hostile-device campaign, with progress: seeds one after another, each a pytest run
of tests/virtio_hostile/test_campaign.py with --device-rounds K, then what came of it.

    python bench/campaign.py --seeds 1-5 --rounds 10 [--lane hardening] [--coverage DIR]
        [-- PYTEST ARGS]

Each seed's run has its own results directory (results/campaign/seed-N, beside a run's
own). Per seed, one line as it ends: rounds passed, the denial-of-service rounds
(recorded), the rounds that failed (a kernel report, a crash, a foreign byte: what the
round's bundle shows), the rig's errors, and rounds a minute over the run's wall time (boots
included). `--coverage DIR` keeps every guest's GCOV counters (a GCOV kernel: --lane
hardening) and ends with `cocolab coverage DIR`. Exits 1 if a round failed or the rig erred.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PYTHON = REPO / ".venv/bin/python"


def seeds(text: str) -> list[int]:
    """'3' or '1-5' or '1,4,9'."""
    out: list[int] = []
    for part in text.split(","):
        first, _, last = part.partition("-")
        out += range(int(first), int(last or first) + 1)
    return out


def one_seed(seed: int, rounds: int, lane: str, coverage: Path | None,
             extra: list[str]) -> dict[str, object]:
    results = REPO / "results/campaign" / f"seed-{seed}"  # VM logs, bundles: not bench data
    argv = [str(PYTHON), "-m", "pytest", "tests/virtio_hostile/test_campaign.py", "-q",
            "-p", "no:cacheprovider", "--lane", lane, "--device-seed", str(seed),
            "--device-rounds", str(rounds), "--results", str(results), *extra]
    if coverage is not None:
        argv += ["--gcov-dir", str(coverage / f"seed-{seed}")]
    start = time.monotonic()
    done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, check=False)
    seconds = time.monotonic() - start
    path = results / "cocolab-results.json"
    tests = json.loads(path.read_text())["tests"] if path.exists() else []
    count = {
        "passed": sum(t["outcome"] == "passed" for t in tests),
        "dos": sum(t["outcome"] == "passed" and t.get("finding") == "dos" for t in tests),
        "failed": sum(t["outcome"] == "failed" and not t.get("rig_failure") for t in tests),
        "rig": sum(bool(t.get("rig_failure")) for t in tests),
        "skipped": sum(t["outcome"] == "skipped" for t in tests),
    }
    return {"seed": seed, "rounds": len(tests), "seconds": round(seconds, 1),
            "exit": done.returncode, **count,
            "problems": [f"{t['nodeid'].split('::')[-1]}: {t['reason'][:160]}"
                         for t in tests if t["outcome"] in ("failed", "error")]}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seeds", default="1", help="seeds: N, A-B or a list (default 1)")
    ap.add_argument("--rounds", type=int, default=5, help="rounds a device per seed")
    ap.add_argument("--lane", default="default")
    ap.add_argument("--coverage", type=Path, metavar="DIR",
                    help="keep GCOV counters here and report them (a GCOV lane)")
    ap.add_argument("--json", type=Path, help="write every seed's line here")
    ap.add_argument("pytest_args", nargs="*", help="after --: passed to pytest")
    args = ap.parse_args()
    lines = []
    total_rounds, total_s = 0, 0.0
    for seed in seeds(args.seeds):
        line = one_seed(seed, args.rounds, args.lane, args.coverage, args.pytest_args)
        lines.append(line)
        total_rounds += int(line["rounds"])  # type: ignore[call-overload]
        total_s += float(line["seconds"])  # type: ignore[arg-type]
        per_min = 60.0 * int(line["rounds"]) / float(line["seconds"])  # type: ignore
        print(f"seed {seed}: {line['rounds']} rounds in {line['seconds']} s "
              f"({per_min:.1f}/min): {line['passed']} passed ({line['dos']} dos), "
              f"{line['failed']} failed, {line['rig']} rig errors, {line['skipped']} skipped",
              flush=True)
        for problem in line["problems"]:  # type: ignore[attr-defined]
            print(f"    {problem}", flush=True)
    print(f"campaign: {total_rounds} rounds in {total_s:.0f} s "
          f"({60.0 * total_rounds / max(total_s, 1e-9):.1f} rounds/min, boots included)")
    if args.json:
        args.json.write_text(json.dumps(lines, indent=1) + "\n")
    if args.coverage is not None:
        subprocess.run([str(REPO / ".venv/bin/cocolab"), "coverage", str(args.coverage)],
                       check=False)
    bad = sum(int(line["failed"]) + int(line["rig"]) for line in lines)  # type: ignore
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
