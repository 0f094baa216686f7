"""KTAP (and the TAP 13/14 kselftest and older KUnit print), read into a tree of tests, and
the tree's leaves as results in pytest's words.

Written from the kernel's Documentation/dev-tools/ktap.rst: a version line (`KTAP version 1`,
`TAP version 13|14`), a plan (`1..N`), result lines (`ok|not ok N [- ]name [# DIRECTIVE
reason]`, directives SKIP, TODO, XFAIL, XPASS, TIMEOUT, ERROR;
kselftest.h prints XFAIL and XPASS on `ok` lines), diagnostics (`# ...`), `Bail out!`,
and subtests: a nested block, indented further (two spaces in KTAP, a tab or four spaces in
KUnit's older print, often opened by `# Subtest: NAME`), closed by its parent's result line.
kselftest's own nested output comes `# `-prefixed: a diagnostic, as kunit_tool reads it.

The console prefixes a line may carry (`[    0.06] `, `[    0.06][    T1] `) are taken off.
Nothing malformed raises: what cannot be read is a diagnostic, and a block the log leaves
unfinished (a crash, a timeout, a truncated file) gives an ERROR to every test it planned
and did not report ("did not report"), and to its parent when that never reported.
"""

from __future__ import annotations

import enum
import re
from collections import Counter
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field


class Status(enum.Enum):
    PASSED = "passed"
    FAILED = "failed"
    SKIPPED = "skipped"
    XFAILED = "xfailed"
    XPASSED = "xpassed"
    ERROR = "error"


@dataclass
class KtapTest:
    name: str
    number: int
    status: Status = Status.ERROR
    reason: str = ""
    subtests: list[KtapTest] = field(default_factory=list)
    log: list[str] = field(default_factory=list)

    def leaves(self, path: tuple[str, ...] = ()) -> Iterator[tuple[tuple[str, ...], KtapTest]]:
        """The tests without subtests, each with its path of names from the top; and a test
        with subtests that failed (or erred) on its own, none of them having done so (a
        suite's init that failed, a parent a crash left without its result)."""
        here = (*path, self.name)
        below = [leaf for sub in self.subtests for leaf in sub.leaves(here)]
        bad = (Status.FAILED, Status.ERROR)
        if not self.subtests or (self.status in bad
                                 and not any(t.status in bad for _, t in below)):
            yield here, self
        yield from below


_PREFIX = re.compile(r"^(?:\[[^\]]*\])+ ?")
_VERSION = re.compile(r"^(?:KTAP version 1|TAP version 1[34])\s*$")
_PLAN = re.compile(r"^1\.\.(\d+)\s*$")
_SUBTEST = re.compile(r"^# Subtest: (.*)$")
_RESULT = re.compile(r"^(ok|not ok) (\d+)(?: -)?(?: (.*?))?\s*$")
_DIRECTIVE = re.compile(r"^(.*?)\s*#\s*(?:(SKIP|TODO|XFAIL|XPASS|TIMEOUT|ERROR)\b:?)?\s*(.*)$",
                        re.I)
"""A result's `# DIRECTIVE reason`, or a plain `# comment` (kselftest's `# exit=1`)."""


@dataclass
class _Line:
    indent: int
    text: str
    structure: bool
    """A version, plan, subtest header, result or bail-out: the lines that nest. Anything
    else (a diagnostic, the kernel's own output between them) is log, whatever its indent."""


def _structural(text: str) -> bool:
    return bool(_VERSION.match(text) or _PLAN.match(text) or _SUBTEST.match(text)
                or _RESULT.match(text) or text.startswith("Bail out!"))


def _lines(raw: Iterable[str]) -> list[_Line]:
    """The KTAP lines of a log: from its first version line on, console prefixes taken
    off, tabs as eight columns of indentation. A last line that lacks the newline every
    other line has was cut mid-write (a truncated file): it is log, never a result."""
    given = list(raw)
    cut = len(given) > 1 and not given[-1].endswith("\n") and all(
        line.endswith("\n") for line in given[:-1])
    out: list[_Line] = []
    started = False
    for number, line in enumerate(given):
        line = _PREFIX.sub("", line.rstrip("\n"), count=1).expandtabs(8)
        text = line.lstrip(" ")
        if not started:
            started = bool(_VERSION.match(text))
        if started:
            text = text.rstrip()
            whole = not (cut and number == len(given) - 1)
            out.append(_Line(len(line) - len(text), text, whole and _structural(text)))
    return out


def _status(ok: bool, directive: str) -> Status:
    directive = directive.upper()
    if directive == "SKIP":
        return Status.SKIPPED
    if directive == "TODO":  # TAP: a test not expected to pass yet
        return Status.XPASSED if ok else Status.XFAILED
    if directive in ("XFAIL", "XPASS"):  # kselftest.h: an `ok` line, its own count
        return Status.XFAILED if directive == "XFAIL" else Status.XPASSED
    if directive in ("TIMEOUT", "ERROR"):
        return Status.ERROR
    return Status.PASSED if ok else Status.FAILED


def _result(text: str) -> KtapTest | None:
    found = _RESULT.match(text)
    if found is None:
        return None
    ok, number, rest = found.group(1) == "ok", int(found.group(2)), found.group(3) or ""
    directive = _DIRECTIVE.match(rest)
    name, word, reason = (directive.groups() if directive else (rest, "", ""))
    return KtapTest(name.strip(), number, _status(ok, word or ""), reason.strip())


class _Parser:
    def __init__(self, lines: list[_Line]) -> None:
        self.lines, self.at, self.bailed = lines, 0, False
        self.top = lines[0].indent if lines else 0
        """The top level's indent: once its plan is met, the rest of the log is not KTAP."""

    def block(self, indent: int) -> tuple[list[KtapTest], int | None, str]:
        """The tests of one level (lines indented `indent`), its plan and subtest name."""
        tests: list[KtapTest] = []
        plan, name, pending = None, "", None
        log: list[str] = []
        while self.at < len(self.lines) and not self.bailed:
            line = self.lines[self.at]
            if not line.structure:
                log.append(line.text)
                self.at += 1
                continue
            if line.indent < indent or (plan is not None and len(tests) >= plan
                                        and indent == self.top):
                break
            if line.indent > indent:
                pending = self.block(line.indent)
                continue
            self.at += 1
            text = line.text
            if (found := _PLAN.match(text)) is not None and plan is None:
                plan = int(found.group(1))
            elif (found := _SUBTEST.match(text)) is not None:
                name = found.group(1).strip()
            elif (test := _result(text)) is not None:
                if pending is not None:
                    test.subtests = _finished(*pending[:2])
                    pending = None
                test.log, log = log, []
                tests.append(test)
            elif text.startswith("Bail out!"):
                self.bailed = True
            elif not _VERSION.match(text):
                log.append(text)
        if pending is not None:
            sub_tests, sub_plan, sub_name = pending
            want = sub_plan if sub_plan is not None else plan
            if not tests and want is not None and len(sub_tests) == want:
                tests = sub_tests  # whole, one level too deep: this level's own (as kunit)
            else:  # a block with no result line for it: the log stopped
                tests.append(KtapTest(sub_name or f"#{len(tests) + 1}", len(tests) + 1,
                                      Status.ERROR, "did not report (the log ends)",
                                      _finished(sub_tests, sub_plan)))
        return tests, plan, name


def _finished(tests: list[KtapTest], plan: int | None) -> list[KtapTest]:
    """`tests` and an ERROR for each planned test that never reported."""
    reported = {t.number for t in tests}
    missing = [KtapTest(f"#{n}", n, Status.ERROR, "did not report (the log ends)")
               for n in range(1, (plan or 0) + 1) if n not in reported]
    return tests + missing


def parse(raw: Iterable[str]) -> list[KtapTest]:
    """The top-level tests of a KTAP log (a console, a kselftest output)."""
    lines = _lines(raw)
    if not lines:
        return [KtapTest("(no KTAP)", 0, Status.ERROR, "no KTAP or TAP version line: no test "
                         "ran, or its output is not in this log")]
    parser = _Parser(lines)
    tests, plan, _ = parser.block(lines[0].indent)
    found = _finished(tests, plan)
    if not found:
        return [KtapTest("(no tests)", 0, Status.ERROR, "a KTAP header and no test")]
    return found


def items(tests: Iterable[KtapTest]) -> list[tuple[str, KtapTest]]:
    """Each leaf as a pytest-like item id (`suite::case`) and its test."""
    return [("::".join(path), test) for top in tests for path, test in top.leaves()]


def summary(found: Iterable[KtapTest]) -> str:
    """pytest's closing words: `N passed, N failed, N skipped, N error` (and xfails)."""
    counts = Counter(test.status for _, test in items(found))
    words = [f"{counts[s]} {s.value}" for s in (Status.PASSED, Status.FAILED, Status.SKIPPED,
                                                Status.ERROR)]
    words += [f"{counts[s]} {s.value}" for s in (Status.XFAILED, Status.XPASSED) if counts[s]]
    return ", ".join(words)
