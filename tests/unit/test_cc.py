from __future__ import annotations

from cocolab.guest.cc import cc_proof, judge, judge_simulated, lane_proof

TDX_DMESG = "[0.0] tdx: Guest detected\n[0.1] Memory Encryption Features active: Intel TDX\n"
SNP_OLD = "[0.0] AMD Memory Encryption Features active: SEV SEV-ES SEV-SNP\n"
SNP_NEW = "[0.0] Memory Encryption Features active: AMD SEV SEV-ES SEV-SNP\n"


def test_tdx_needs_message_and_interface() -> None:
    assert judge("tdx", TDX_DMESG, {"/dev/tdx_guest"}, "", set()).kind == "tdx"
    assert judge("tdx", TDX_DMESG, set(), "tdx_guest", set()).kind == "tdx"
    assert judge("tdx", TDX_DMESG, set(), "", set()).kind is None  # message alone
    assert judge("tdx", "", {"/dev/tdx_guest"}, "", {"tdx_guest"}).kind is None  # no message


def test_snp_wordings_across_versions() -> None:
    for dmesg in (SNP_OLD, SNP_NEW):
        assert judge("snp", dmesg, {"/dev/sev-guest"}, "", set()).kind == "snp"


def test_sev_es_alone_is_not_snp() -> None:
    dmesg = "Memory Encryption Features active: AMD SEV SEV-ES\n"
    assert judge("snp", dmesg, {"/dev/sev-guest"}, "", set()).kind is None


def test_a_plain_guest_says_what_it_lacks() -> None:
    proof = judge("snp", "Linux version 6.12\n", set(), "", {"fpu", "vme"})
    assert proof.kind is None
    assert "not proven confidential" in str(proof)


# What a cc-sim-tdx kernel (guests/cc-sim/cc-sim-tdx.patch, booted with cc_sim=tdx) prints.
SIM_DMESG = ("[0.0] cc_sim: simulated TDX guest: cc_platform_has() answers as in a TD "
             "(cc_vendor=intel, cc_mask=0); memory is not encrypted, nothing is attested, no "
             "TDCALL is made\n[0.2] Memory Encryption Features active: Intel TDX\n")


def test_a_simulated_guest_fails_the_hardware_proof() -> None:
    hardware = judge("tdx", SIM_DMESG, set(), "", {"fpu", "hypervisor"})
    assert hardware.kind is None
    assert hardware.messages  # it prints the TD's line: a message alone never proves hardware


def test_a_simulated_guest_proves_the_simulation() -> None:
    proof = judge_simulated("tdx", SIM_DMESG, judge("tdx", SIM_DMESG, set(), "", set()))
    assert (proof.kind, proof.simulated) == ("tdx", True)
    assert str(proof).startswith("simulated TDX guest (cc_platform_has forced by the cc-sim "
                                 "patch; memory is not encrypted, nothing is attested)")


def test_the_simulation_needs_the_patch_line_and_the_decision_it_caused() -> None:
    patch_only = SIM_DMESG.splitlines()[0]
    policy_only = SIM_DMESG.splitlines()[1]
    for dmesg in (patch_only, policy_only, "Linux version 7.3.4\n"):
        assert judge_simulated("tdx", dmesg, judge("tdx", dmesg, set(), "", set())).kind is None


def test_hardware_evidence_is_never_a_simulation() -> None:
    """A real TD that somehow printed the cc-sim line (a patched kernel in a TD, which the
    patch itself refuses) is not a simulated guest: a simulated lane there is misconfigured."""
    hardware = judge("tdx", SIM_DMESG + TDX_DMESG, {"/dev/tdx_guest"}, "", {"tdx_guest"})
    assert hardware.kind == "tdx"
    assert judge_simulated("tdx", SIM_DMESG, hardware).kind is None


class Shell:
    """A guest stood in for: each command's answer from a table of (prefix, rc, stdout)."""

    def __init__(self, answers: list[tuple[str, int, str]]) -> None:
        self.answers = answers
        self.asked: list[str] = []
        self.cc = None

    def run(self, command: str) -> object:
        self.asked.append(command)
        for prefix, rc, out in self.answers:
            if command.startswith(prefix):
                return type("R", (), {"ok": rc == 0, "stdout": out})()
        return type("R", (), {"ok": False, "stdout": ""})()


def test_the_tdx_device_must_be_a_character_device() -> None:
    """`test -e` was met by any file at /dev/tdx_guest; the proof asks `test -c`."""
    guest = Shell([("dmesg", 0, TDX_DMESG), ("test -c /dev/tdx_guest", 1, ""),
                   ("test -e /dev/tdx_guest", 0, "")])
    assert cc_proof(guest, "tdx").kind is None  # type: ignore[arg-type]
    real = Shell([("dmesg", 0, TDX_DMESG), ("test -c /dev/tdx_guest", 0, "")])
    assert cc_proof(real, "tdx").kind == "tdx"  # type: ignore[arg-type]


def test_a_lane_proof_is_asked_once_per_vm_and_kept() -> None:
    guest = Shell([("dmesg", 0, TDX_DMESG), ("test -c /dev/tdx_guest", 0, "")])
    first = lane_proof(guest, "tdx", simulated=False)  # type: ignore[arg-type]
    asked = len(guest.asked)
    assert lane_proof(guest, "tdx", simulated=False) is first  # type: ignore[arg-type]
    assert len(guest.asked) == asked and first.kind == "tdx"


def test_a_simulated_lane_guest_without_the_simulation_line_is_not_proven() -> None:
    plain = Shell([("dmesg", 0, "[0.0] Linux version 7.3.4\n")])
    assert lane_proof(plain, "tdx", simulated=True).kind is None  # type: ignore[arg-type]
