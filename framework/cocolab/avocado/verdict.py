"""pytest's reports of one test item, turned into avocado's status for it (pure: no avocado).

The mapping, phase by phase, as a kernel CI reader expects it:

  setup   failed                  ERROR   (a fixture, or a VM that did not boot: the rig)
          skipped                 SKIP    (a skip mark, or a kernel/host gate before the body)
  call    failed, a rig failure   ERROR   (the VM misbehaved while the body ran)
          failed                  FAIL    (the kernel's assertion)
          skipped                 CANCEL  (the body itself gave up, pytest.skip() inside it)
          passed                  PASS
  xfail   (skipped with wasxfail) PASS
  xpass   (passed with wasxfail)  WARN    (a strict xpass is reported by pytest as failed: FAIL)
  teardown failed                 ERROR   unless the body already FAILed
"""

from __future__ import annotations

from dataclasses import dataclass

PASS, FAIL, ERROR, SKIP, CANCEL, WARN = "pass", "fail", "error", "skip", "cancel", "warn"


@dataclass(frozen=True)
class Phase:
    """One pytest TestReport, reduced to what decides the verdict."""

    when: str  # setup, call or teardown
    outcome: str  # passed, failed or skipped
    reason: str = ""  # the skip reason, the failure's one line, or the xfail reason
    xfail: bool = False  # pytest's wasxfail: the test is marked xfail
    rig_failure: bool = False  # cocolab marked the failure as the VM's, not the kernel's

    @classmethod
    def from_json(cls, data: dict[str, object]) -> Phase:
        return cls(str(data["when"]), str(data["outcome"]), str(data.get("reason", "")),
                   bool(data.get("xfail")), bool(data.get("rig_failure")))

    def to_json(self) -> dict[str, object]:
        return {"when": self.when, "outcome": self.outcome, "reason": self.reason,
                "xfail": self.xfail, "rig_failure": self.rig_failure}


def verdict(phases: list[Phase]) -> tuple[str, str]:
    """(avocado status, reason) of one item from its reports, in the order pytest made them.
    An item pytest never ran (no reports) is an ERROR: the caller knows why."""
    by_when = {p.when: p for p in phases}
    setup, call, teardown = (by_when.get(w) for w in ("setup", "call", "teardown"))
    if setup is None:
        return ERROR, "pytest ran no setup for this item"
    if setup.outcome == "failed":
        status, reason = ERROR, setup.reason
    elif setup.outcome == "skipped":
        status, reason = (PASS, f"xfail: {setup.reason}") if setup.xfail else (SKIP, setup.reason)
    elif call is None:
        return ERROR, "pytest ran the setup but not the test body"
    else:
        status, reason = _call(call)
    if teardown is not None and teardown.outcome == "failed" and status != FAIL:
        return ERROR, f"teardown: {teardown.reason}"
    return status, reason


def outcome(nodeid: str, reports: list[dict[str, object]], returncode: int, output: str
            ) -> tuple[str, str, str | None]:
    """(status, reason, failure bundle) of `nodeid` from the bridge's reports of its pytest
    run; `returncode` and `output` (pytest's) say why, when pytest never ran it."""
    mine = [r for r in reports if r.get("nodeid") == nodeid]
    if not mine:
        return (ERROR, f"pytest ran no test {nodeid} (exit {returncode}): {pytest_said(output)}",
                None)
    status, reason = verdict([Phase.from_json(r) for r in mine])
    bundle = next((str(r["bundle"]) for r in mine if r.get("bundle")), None)
    return status, reason, bundle


def pytest_said(output: str) -> str:
    """What pytest said when it ran nothing: its error lines, else its last line."""
    lines = [line.strip() for line in output.splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith(("ERROR", "E "))]
    return "; ".join(errors[:3]) if errors else (lines[-1] if lines else "no output")


def _call(call: Phase) -> tuple[str, str]:
    if call.outcome == "failed":
        return (ERROR if call.rig_failure else FAIL), call.reason
    if call.outcome == "skipped":
        return (PASS, f"xfail: {call.reason}") if call.xfail else (CANCEL, call.reason)
    if call.xfail:
        return WARN, f"xpass: marked xfail ({call.reason}) but passed"
    return PASS, ""
