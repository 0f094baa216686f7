"""Host detection for TDX/SNP against fake sysfs trees, and the CC argv (golden)."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cocolab.host.accel import AccelChoice
from cocolab.host.cc import CBit, find_firmware, host_problems, parse_cpuid_8000001f
from cocolab.host.qemu import QemuInfo
from cocolab.qemu import Runtime, VMConfig, build_argv
from cocolab.qemu.cc import cc_machine_options, cc_platform_args

KVM = AccelChoice("kvm", "the KVM canary boot succeeded")
NO_KVM = AccelChoice("tcg", "KVM unusable, the KVM canary boot failed: MSR 0x10a")
QEMU_NEW = QemuInfo("/q", "10.1.0", frozenset({"q35"}), frozenset({"tdx-guest",
                                                                  "sev-snp-guest"}))
QEMU_OLD = QemuInfo("/q", "7.2.22", frozenset({"q35"}), frozenset({"intel-iommu"}))


def host(tmp_path: Path, *, tdx: str | None = None, snp: str | None = None,
         firmware: tuple[str, ...] = ()) -> Path:
    root = tmp_path / "root"
    for module, param, value in (("kvm_intel", "tdx", tdx), ("kvm_amd", "sev_snp", snp)):
        if value is not None:
            p = root / "sys/module" / module / "parameters" / param
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_text(value + "\n")
    for fw in firmware:
        p = root / fw.lstrip("/")
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_bytes(b"OVMF")
    root.mkdir(parents=True, exist_ok=True)
    return root


def problems(root: Path, kind: str, qemu: QemuInfo = QEMU_NEW,
             accel: AccelChoice = KVM) -> list[str]:
    return host_problems(kind, root=root, qemu=qemu, accel=accel,
                         firmware=find_firmware(kind, None, None, "lane", root=root))


def test_a_tdx_host_can_run_tdx_but_not_snp(tmp_path: Path) -> None:
    root = host(tmp_path, tdx="Y", firmware=("/usr/share/ovmf/OVMF.inteltdx.fd",))
    assert problems(root, "tdx") == []
    snp = problems(root, "snp")
    assert any("kvm_amd is not loaded" in p for p in snp)
    assert any("no SNP firmware" in p for p in snp)


def test_an_snp_host_can_run_snp_but_not_tdx(tmp_path: Path) -> None:
    root = host(tmp_path, snp="Y", firmware=("/usr/share/OVMF/OVMF.amdsev.fd",))
    assert problems(root, "snp") == []
    assert any("kvm_intel is not loaded" in p for p in problems(root, "tdx"))


def test_a_plain_host_lists_every_missing_piece(tmp_path: Path) -> None:
    got = problems(host(tmp_path), "tdx", qemu=QEMU_OLD, accel=NO_KVM)
    assert len(got) == 4
    assert got[0].startswith("kvm_intel is not loaded or has no tdx parameter")
    assert got[1].startswith("KVM is not usable (KVM unusable, the KVM canary")
    assert got[2] == ("QEMU 7.2.22 (/q) has no tdx-guest object (QEMU 10.1+ has it; "
                      "pass --qemu)")
    assert got[3].startswith("no TDX firmware: looked at /usr/share/ovmf/OVMF.inteltdx.fd, ")


def test_a_half_configured_host_says_how_to_finish(tmp_path: Path) -> None:
    root = host(tmp_path, tdx="N", firmware=("/usr/share/ovmf/OVMF.inteltdx.fd",))
    assert problems(root, "tdx") == [
        "/sys/module/kvm_intel/parameters/tdx is N: boot the host with kvm_intel.tdx=1 and "
        "TDX enabled in the BIOS"]


def test_firmware_search_order_and_sources(tmp_path: Path) -> None:
    root = host(tmp_path, firmware=("/usr/share/OVMF/OVMF.amdsev.fd",))
    given = tmp_path / "mine.fd"
    given.write_bytes(b"x")
    assert find_firmware("snp", str(given), None, "l", root=root).found == given
    lane = find_firmware("snp", None, "/nope.fd", "lanes/snp.toml", root=root)
    assert lane.found == root / "usr/share/OVMF/OVMF.amdsev.fd"
    assert lane.searched[0] == "lane key firmware (lanes/snp.toml): /nope.fd"
    none = find_firmware("snp", "/a.fd", None, "l", root=host(tmp_path / "x"))
    assert none.found is None
    assert none.why_not("snp").startswith("no SNP firmware: looked at --firmware /a.fd, "
                                          "/usr/share/ovmf/OVMF.amdsev.fd")


def test_cbit_from_cpuid() -> None:
    # EPYC: C-bit 51, 1 reduced physical bit -> EBX = 51 | (1 << 6)
    raw = struct.pack("<4I", 0x1B, 51 | (1 << 6), 0, 0)
    assert parse_cpuid_8000001f(raw) == CBit(51, 1)


@pytest.mark.parametrize("kind", ["tdx", "snp"])
def test_cc_lane_argv_golden(golden, kind: str) -> None:
    config = VMConfig(qemu="/usr/bin/qemu-system-x86_64", kernel=Path("/KERNEL"),
                      initrd=Path("/INITRD"), accel="kvm", memory_mib=2048,
                      machine_options=cc_machine_options(kind),
                      platform_args=cc_platform_args(kind, memory_mib=2048,
                                                     firmware=Path("/FIRMWARE.fd"),
                                                     cbit=CBit(51, 1)))
    runtime = Runtime(Path("/RUN/qmp.sock"), Path("/RUN/con.sock"), "TOKEN")
    golden(f"argv-{kind}.txt", "\n".join(build_argv(config, runtime)) + "\n")
