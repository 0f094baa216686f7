from __future__ import annotations

from cocolab.guest.cc import judge

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
