from __future__ import annotations

import errno

import pytest

from cocolab.assertions import (
    assert_allowed,
    assert_denied,
    assert_faults,
    assert_real_data,
    assert_zero_filled,
)
from cocolab.guest.dmesg import DmesgLines
from cocolab.guest.iomem import IOMem
from cocolab.guest.probe import ProbeResult

IOMEM = """\
00000000-00000fff : Reserved
00001000-0009fbff : System RAM
0009fc00-0009ffff : Reserved
000f0000-000fffff : Reserved
  000f0000-000fffff : System ROM
00100000-3ffdffff : System RAM
  2a200000-2b1fffff : Kernel code
c0000000-febfffff : PCI Bus 0000:00
  fea00000-feafffff : 0000:00:02.0
  feb40000-feb5ffff : 0000:00:03.0
    feb40000-feb5ffff : e1000
"""


def test_iomem_tree() -> None:
    m = IOMem(IOMEM)
    assert m.ram_page_below_1mib() == 0x1000
    assert m.ram_page_above_1mib() == 0x100000
    assert (m.system_rom().start, m.system_rom().size) == (0xF0000, 0x10000)
    assert m.page0_name() == "Reserved"
    bar = m.find(0xFEB40000)
    assert bar is not None and bar.busy_child is not None and bar.busy_child.name == "e1000"
    idle = m.find(0xFEA00000)
    assert idle is not None and idle.busy_child is None


def test_iomem_read_without_root_is_refused() -> None:
    with pytest.raises(ValueError, match="as root"):
        IOMem("00000000-00000000 : System RAM\n")


def probe(line: str) -> ProbeResult:
    return ProbeResult.parse(line)


DENIED = probe('{"op":"mmap","path":"/dev/mem","offset":1048576,"length":4096,"ok":false,'
               '"stage":"mmap","errno":1,"errname":"EPERM"}')
ZEROS = probe('{"op":"read","path":"/dev/mem","offset":4096,"length":16,"ok":true,"count":16,'
              '"nonzero":0,"hex":"00000000000000000000000000000000"}')
DATA = probe('{"op":"read","path":"/dev/mem","offset":0,"length":4,"ok":true,"count":4,'
             '"nonzero":4,"hex":"53ff00f0"}')
BUS = probe('{"op":"hold-again","path":"/dev/mem","offset":0,"length":16,"ok":false,'
            '"stage":"load","signal":"SIGBUS"}')


def test_probe_results_parse_and_render() -> None:
    assert DENIED.errno == errno.EPERM and DENIED.stage == "mmap"
    assert str(DENIED) == "mmap /dev/mem @ 0x100000+0x1000: mmap failed EPERM (1)"
    assert DATA.data == bytes.fromhex("53ff00f0")
    assert str(BUS) == "hold-again /dev/mem @ 0x0+0x10: SIGBUS on load"
    extra = probe('{"op":"poke","ok":true,"readback":5}')
    assert extra.extra == {"readback": 5}


def test_assertions_pass_on_what_they_describe() -> None:
    assert_denied(DENIED, errno.EPERM, stage="mmap")
    assert_zero_filled(ZEROS)
    assert_real_data(DATA)
    assert_allowed(ZEROS)
    assert_faults(BUS, "SIGBUS")


@pytest.mark.parametrize("check", [
    lambda: assert_denied(DATA, errno.EPERM),
    lambda: assert_denied(DENIED, errno.EINVAL),
    lambda: assert_denied(DENIED, errno.EPERM, stage="open"),
    lambda: assert_denied(BUS, errno.EPERM),
    lambda: assert_zero_filled(DATA),
    lambda: assert_real_data(ZEROS),
    lambda: assert_allowed(DENIED),
    lambda: assert_faults(DATA, "SIGBUS"),
])
def test_assertions_fail_on_the_opposite(check) -> None:
    with pytest.raises(AssertionError):
        check()


def test_dmesg_lines() -> None:
    lines = DmesgLines(("a", "Lockdown: x: /dev/mem,kmem,port is restricted"))
    assert lines.contains("/dev/mem,kmem,port")
    assert lines.grep(r"^Lockdown: \w+:") == ["Lockdown: x: /dev/mem,kmem,port is restricted"]


def test_sysfs_attributes_parse_by_entry_though_a_bdf_holds_colons() -> None:
    from cocolab.guest.sysfs import parse_attributes
    text = ("0000:00:01.0/vendor:0x1234\n0000:00:1f.2/vendor:0x8086\n"
            "0000:00:01.0/device:0x11e8\n0000:00:1f.2/device:0x2922\n")
    assert parse_attributes(text) == {"0000:00:01.0": {"vendor": "0x1234", "device": "0x11e8"},
                                      "0000:00:1f.2": {"vendor": "0x8086", "device": "0x2922"}}


def test_the_topology_view_parses_the_grep_and_the_groups() -> None:
    from cocolab.guest.topology import GuestPCI
    text = ("0000:00:02.0/vendor:0x8086\n0000:00:02.0/device:0x10d3\n"
            "0000:00:02.0/class:0x020000\n0000:00:03.0/vendor:0x1234\n"
            "group 4 0000:00:02.0\n")
    view = GuestPCI.parse(text)
    assert view.functions == {"0000:00:02.0": (0x8086, 0x10D3, 0x020000)}  # 03.0 is partial
    assert view.groups == {"0000:00:02.0": "4"}
