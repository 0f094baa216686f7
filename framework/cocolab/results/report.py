"""One self-contained HTML page of results: runs across (a kernel on a lane each), tests down.

Each cell is the test's verdict on that run, coloured, with its reason on hover and a link to
its failure bundle; a lane baseline (a known kernel issue) has a colour of its own. With
earlier results (`since`), a cell whose verdict differs from the same test's on the same lane
there is marked and listed at the top: what changed from one kernel to the next. The page
loads nothing: its style is inline, and so is the one script, which records what the browser
rendered (each cell's computed colour) for the browser test to read back.
"""

from __future__ import annotations

import html
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from cocolab.results import verdict
from cocolab.results.model import RunResults, TestResult
from cocolab.results.verdict import Verdict

COLOURS = {"pass": "#2e7d32", "fail": "#c62828", "error": "#6a1b9a", "rig": "#37474f",
           "skip": "#9e9e9e", "xfail": "#ef6c00", "baseline": "#f9a825", "none": "#ffffff"}
"""A cell class's colour; the classes are results/verdict.py's report column."""

WORDS = {**{v.words.report: v.words.shown for v in Verdict}, "none": "-"}


def cell_class(test: TestResult | None) -> str:
    return "none" if test is None else verdict.of(test).words.report


@dataclass(frozen=True)
class Change:
    nodeid: str
    column: str
    was: str
    now: str


def changes(runs: Sequence[RunResults], since: Sequence[RunResults]) -> list[Change]:
    """Tests whose verdict on a run differs from the one on the same lane in `since` (the
    latest such run there)."""
    earlier = {run.facts.lane: run for run in sorted(since, key=lambda r: r.facts.started)}
    found = []
    for run in runs:
        old = earlier.get(run.facts.lane)
        if old is None:
            continue
        before = {t.nodeid: cell_class(t) for t in old.tests}
        for test in run.tests:
            now, was = cell_class(test), before.get(test.nodeid, "none")
            if now != was:
                found.append(Change(test.nodeid, run.facts.column(), was, now))
    return found


def _href(bundle: str, page: Path) -> str | None:
    """A bundle's link: relative to the page when it lies under the page's directory (an
    artifact directory moves as a whole), else its absolute file: URI, or an http(s) URL as
    given. Anything else (a javascript: URL, a relative path from elsewhere) is no link."""
    scheme = urllib.parse.urlsplit(bundle).scheme
    if scheme in ("http", "https"):
        return bundle
    target, base = Path(bundle), page.parent.resolve()
    if scheme or not target.is_absolute():
        return None
    if target.is_relative_to(base):
        return target.relative_to(base).as_posix()
    return target.as_uri()


def _column_head(run: RunResults) -> str:
    """A run's column: the kernel and lane, and SIMULATED (never on hover only) when its
    confidential guest is simulated."""
    e = html.escape
    f = run.facts
    facts = "\n".join([f"kernel {f.kernel} ({f.kernel_release})",
                       f"patches {len(f.patches)}", f"config sha256 {f.kernel_config_sha256[:16]}",
                       f"lane {f.lane}", f"cc {f.cc}", f"QEMU {f.qemu}",
                       f"accelerator {f.accel}", f"host {f.host_cpu}", f"started {f.started}",
                       f"shards {', '.join(run.shards) or 'none'}"])
    badge = " <b class=simulated>SIMULATED</b>" if f.simulated else ""
    patched = f" +{len(f.patches)} patch(es)" if f.patches else ""
    return (f'<th class=run title="{e(facts)}" data-lane="{e(f.lane)}">'
            f'{e(f.kernel_release)}{e(patched)}<br><small>{e(f.lane)}</small>{badge}</th>')


def _title(test: TestResult | None, change: Change | None) -> str:
    if test is None:
        return "not run"
    title = f"{test.outcome} in {test.duration:.1f} s" + (f": {test.reason}" if test.reason
                                                          else "")
    if test.baseline:
        title += f"\nbaseline: {test.baseline}"
    if test.finding:
        title += f"\nfinding: {test.finding}"
    if test.rig_failure:
        title += "\nrig failure (not the kernel's verdict: the VM, host or rig stood in the way)"
    if change is not None:
        title += f"\nchanged: was {WORDS[change.was]}"
    return title


def _cell(test: TestResult | None, change: Change | None, page: Path) -> str:
    e = html.escape
    cls = cell_class(test)
    word = WORDS[cls] + (f" {test.finding.upper()}" if test is not None and test.finding
                         else "")
    href = _href(test.bundle, page) if test is not None and test.bundle else None
    if href is not None:
        word = f'<a href="{e(href)}">{word}</a>'
    extra = " changed" if change is not None else ""
    return (f'<td class="cell {cls}{extra}" data-outcome="{cls}" '
            f'title="{e(_title(test, change))}">{word}</td>')


def _summary(by_run: list[dict[str, TestResult]]) -> str:
    keys = []
    for cls in ("pass", "fail", "baseline", "xfail", "error", "rig", "skip"):
        n = sum(1 for tests in by_run for t in tests.values() if cell_class(t) == cls)
        keys.append(f'<span class="key {cls}" data-outcome="{cls}">{WORDS[cls]} {n}</span>')
    return "".join(keys)


def _changes(changed: list[Change], asked: bool) -> str:
    if not asked:
        return ""
    e = html.escape
    items = "".join(f"<li>{e(c.nodeid)} on {e(c.column)}: {WORDS[c.was]} &rarr; "
                    f"{WORDS[c.now]}</li>" for c in changed)
    return (f"<h2 id=changes>Changed since the earlier results: {len(changed)}</h2>"
            f"<ul>{items}</ul>")


PAGE = """<!DOCTYPE html>
<html lang=en><head><meta charset=utf-8><title>cocolab results</title>
<style>
body {{ font: 13px sans-serif; margin: 1em; }}
table {{ border-collapse: collapse; }}
th, td {{ border: 1px solid #ccc; padding: 2px 6px; }}
td.test {{ font-family: monospace; white-space: nowrap; }}
td.cell, .key {{ color: #fff; text-align: center; font-weight: bold; }}
td.cell a {{ color: #fff; }}
td.none {{ color: #999; }}
td.changed {{ outline: 3px solid #000; outline-offset: -3px; }}
.key {{ padding: 2px 8px; margin-right: 4px; }}
.simulated {{ color: #b71c1c; }}
{style}
</style></head>
<body>
<h1>cocolab results: {runs} run(s), {tests} test(s)</h1>
<p>{summary}</p>
{changes}
<table id=matrix>
{head}
{rows}
</table>
<script>
for (const el of document.querySelectorAll("[data-outcome]"))
  el.dataset.rendered = getComputedStyle(el).backgroundColor;
document.body.dataset.rendered = "yes";
</script>
</body></html>
"""
"""The page: inline style and one inline script, which records each cell's computed colour
for the browser test; it loads nothing."""


def render(runs: Sequence[RunResults], page: Path, since: Sequence[RunResults] = ()) -> str:
    runs = sorted(runs, key=lambda r: (r.facts.lane, r.facts.kernel_release, r.facts.started))
    by_run = [{t.nodeid: t for t in run.tests} for run in runs]
    nodeids = sorted({n for tests in by_run for n in tests})
    changed = changes(runs, since)
    marked = {(c.nodeid, c.column): c for c in changed}
    rows = []
    for nodeid in nodeids:
        cells = [_cell(tests.get(nodeid), marked.get((nodeid, run.facts.column())), page)
                 for run, tests in zip(runs, by_run, strict=True)]
        rows.append(f"<tr><td class=test>{html.escape(nodeid)}</td>{''.join(cells)}</tr>")
    head = "".join(["<tr><th class=test>test</th>", *map(_column_head, runs), "</tr>"])
    style = "\n".join(f".{cls} {{ background: {colour}; }}" for cls, colour in COLOURS.items())
    return PAGE.format(style=style, runs=len(runs), tests=len(nodeids),
                       summary=_summary(by_run), changes=_changes(changed, bool(since)),
                       head=head, rows="".join(rows))
