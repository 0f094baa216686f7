"""The markers a test uses to say what VM it needs, parsed and checked."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import pytest

from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, parse_requirement
from cocolab.qemu.policy import qemu_args_problem

MARKERS = {
    "cmdline(*words)": "extra kernel command-line words for this test's VM",
    "qemu_args(*args)": "extra QEMU arguments for this test's VM (host files under @vmdir@/, "
                        "the VM's own directory, or under an allow_host_paths path)",
    "allow_host_paths(*paths)": "host paths (files, or directories and what is below them) "
                                "this test's qemu_args may name",
    "modules(*names)": "kernel modules the guest's /init loads before sshd",
    "kconfig(*options)": "skip unless the kernel config has each option: 'NAME' (=y or =m), "
                         "'NAME=y', 'NAME=m' or 'NAME=n' (not set)",
    "topology(name)": "boot on this topology from qemu-configs/topologies/ (verified in the "
                      "guest before the test runs)",
    "topology_under_test": "the test verifies its VM's topology itself: the plugin does not at "
                           "boot, so a mismatch is the test's failure, not a setup error",
    "machine(name)": "boot this machine from qemu-configs/machines/ (default: the topology's, "
                     "else the lane's)",
    "fresh_vm": "boot a VM for this test alone instead of sharing one",
    "destructive": "the test kills its guest on purpose; runs only with --destructive",
    "cc_hardware(why)": "with cc_guest: the test needs a hardware TDX/SNP guest (attestation, "
                        "the TDX module, a CC misc device) and skips on a simulated lane",
    "allow_kernel_reports(*kinds, reason)": "reports of these denial-of-service kinds "
                                             "('hung task', 'RCU stall', 'soft lockup') "
                                             "during the test are recorded, not failed: for "
                                             "tests that provoke a denial of service",
    "finding(kind, reason)": "a known kernel weakness the test shows: its assertion fails "
                             "(strict xfail, raises=AssertionError only), classed by kind: "
                             "memory-safety, info-leak or dos",
}

FINDING_KINDS = ("memory-safety", "info-leak", "dos")
"""The threat model's classes (linux-coco: a hardened driver allows no memory-safety issue
and no information leak; a denial of service is allowed, the host can stop the guest
anyway, and recorded)."""
FINDING = "cocolab.finding"
"""The user property a finding's class is recorded under."""
KTAP_PATH = "cocolab.ktap_path"
"""The user property a kernel test's KTAP path is recorded under (KCIDB's test path)."""


def apply_finding(item: pytest.Item, kind: str, reason: str) -> None:
    """Mark `item` as showing a finding of `kind`: only an AssertionError (the kernel failing
    the test's assertion) is the finding; anything else raised is an error, a pass is red
    (strict). Tests call it where the finding depends on the kernel they meet."""
    if kind not in FINDING_KINDS:
        raise pytest.UsageError(f"{item.nodeid}: finding kind {kind!r}: choose one of "
                                f"{', '.join(FINDING_KINDS)}")
    item.add_marker(pytest.mark.xfail(reason=f"finding ({kind}): {reason}", strict=True,
                                      raises=AssertionError))
    item.user_properties.append((FINDING, kind))


def finding_marker(item: pytest.Item) -> None:
    """@pytest.mark.finding(kind, reason), applied at collection."""
    mark = item.get_closest_marker("finding")
    if mark is None:
        return
    args = (*mark.args, *(mark.kwargs[k] for k in ("kind", "reason") if k in mark.kwargs))
    if len(args) != 2 or not all(isinstance(a, str) for a in args):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.finding takes a kind and a "
                                "reason: @pytest.mark.finding(kind, reason)")
    apply_finding(item, args[0], args[1])


DOS_REPORTS = ("hung task", "RCU stall", "soft lockup")
"""The kernel reports that say a task or CPU waited too long: what a denial of service looks
like, which the threat model allows (never a memory-safety report, KASAN and the like)."""


def allowed_kernel_reports(item: pytest.Item) -> frozenset[str]:
    """The report kinds @pytest.mark.allow_kernel_reports lets pass, checked: only the
    denial-of-service ones, with a reason."""
    mark = item.get_closest_marker("allow_kernel_reports")
    if mark is None:
        return frozenset()
    kinds = frozenset(mark.args)
    if not kinds or not kinds <= set(DOS_REPORTS) or not mark.kwargs.get("reason"):
        raise pytest.UsageError(
            f"{item.nodeid}: @pytest.mark.allow_kernel_reports takes kinds among "
            f"{', '.join(repr(k) for k in DOS_REPORTS)} and a reason=: a memory-safety "
            "report is never allowed")
    return kinds


@dataclass(frozen=True)
class VMRequest:
    """What one test asks of its VM. Equal requests share a booted VM."""

    cmdline: tuple[str, ...] = ()
    qemu_args: tuple[str, ...] = ()
    modules: tuple[str, ...] = ()
    machine: str | None = None
    topology: str | None = None
    fresh: bool = False
    verify: bool = True
    """Verify the topology at boot (False: the test does, see topology_under_test)."""

    def key(self) -> str:
        text = repr((self.cmdline, self.qemu_args, self.modules, self.machine, self.topology,
                     *(() if self.verify else ("unverified",))))
        return hashlib.sha256(text.encode()).hexdigest()[:10]

    def describe(self) -> str:
        parts = []
        if self.topology:
            parts.append(f"topology: {self.topology}")
        if self.machine:
            parts.append(f"machine: {self.machine}")
        if self.cmdline:
            parts.append("cmdline: " + " ".join(self.cmdline))
        if self.qemu_args:
            parts.append("qemu: " + " ".join(self.qemu_args))
        if self.modules:
            parts.append("modules: " + ",".join(self.modules))
        return "; ".join(parts) or "default VM"


def _strings(item: pytest.Item, name: str) -> tuple[str, ...]:
    words: list[str] = []
    # closest marker last: module-level words come first, the function's own after them
    for mark in reversed(list(item.iter_markers(name))):
        if mark.kwargs or not all(isinstance(a, str) for a in mark.args):
            sig = next(s for s in MARKERS if s.startswith(name + "("))
            raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes strings only: "
                                    f"@pytest.mark.{sig}")
        words += mark.args
    return tuple(words)


def _one(item: pytest.Item, name: str) -> str | None:
    mark = item.get_closest_marker(name)
    if mark is None:
        return None
    if len(mark.args) != 1 or mark.kwargs or not isinstance(mark.args[0], str):
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.{name} takes one name: "
                                f"@pytest.mark.{name}(\"NAME\")")
    return mark.args[0]


def vm_request(item: pytest.Item) -> VMRequest:
    qemu_args = _strings(item, "qemu_args")
    problem = qemu_args_problem(qemu_args, _strings(item, "allow_host_paths"))
    if problem:
        raise pytest.UsageError(f"{item.nodeid}: @pytest.mark.qemu_args: {problem}")
    return VMRequest(
        cmdline=_strings(item, "cmdline"),
        qemu_args=qemu_args,
        modules=_strings(item, "modules"),
        machine=_one(item, "machine"),
        topology=_one(item, "topology"),
        fresh=item.get_closest_marker("fresh_vm") is not None,
        verify=item.get_closest_marker("topology_under_test") is None,
    )


def kconfig_requirements(item: pytest.Item) -> list[tuple[str, str | None]]:
    """(CONFIG_NAME, wanted) pairs; wanted is 'y', 'm', 'n' or None for 'y or m'."""
    reqs = []
    for opt in _strings(item, "kconfig"):
        req = parse_requirement(opt)
        if req is None:
            raise pytest.UsageError(f"{item.nodeid}: kconfig option {opt!r} is not "
                                    f"{REQUIREMENT_SYNTAX}")
        reqs.append(req)
    return reqs
