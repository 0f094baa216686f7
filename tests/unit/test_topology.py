from __future__ import annotations

import time

import pytest

from cocolab.errors import ConfigError
from cocolab.guest.topology import GuestPCI, compare
from cocolab.qemu.argv import BackendSpec
from cocolab.qemu.topology import backend_specs, topology_args, viommu_args
from cocolab.topology import expected_view, load_machine, load_topology, topology_names
from cocolab.topology.schema import parse_machine, parse_topology

SRC = "/cfg/topologies/t.toml"


def dev(**kw):
    return kw


def bridge(ident="br0", **kw):
    return dev(id=ident, model="pci-bridge", chassis=1, **kw)


def port(ident="rp1", chassis=1, slot=1, **kw):
    return dev(id=ident, model="pcie-root-port", chassis=chassis, slot=slot, **kw)


BAD_TOPOLOGIES = [
    ({"colour": "red"}, "unknown key 'colour'"),
    ({"device": {"id": "x"}}, "key 'device' must be list"),
    ({"device": ["x"]}, r"device\[0\]: must be a table"),
    ({"device": [dev(model="e1000")]}, r"device\[0\]: key 'id' is missing"),
    ({"device": [dev(id="Nic", model="e1000")]}, "key 'id' must be lower-case"),
    ({"device": [dev(id="a", model="e1000"), dev(id="a", model="edu")]},
     "repeats an earlier device's id"),
    ({"device": [dev(id="a", model="e1001")]}, "key 'model' is 'e1001'; choose one of"),
    ({"device": [dev(id="a", model="e1000", speed=1)]}, "unknown key 'speed'"),
    ({"device": [dev(id="a", model="e1000", chassis=1)]},
     "key 'chassis' does not apply to e1000; its properties: none"),
    ({"device": [dev(id="a", model="e1000", addr="32")]}, "key 'addr' is '32'"),
    ({"device": [dev(id="a", model="e1000", addr="05.8")]}, "key 'addr' is '05.8'"),
    ({"device": [dev(id="a", model="e1000", addr=5)]}, "key 'addr' must be str"),
    ({"device": [dev(id="br", model="pci-bridge")]}, "a pci-bridge needs key 'chassis'"),
    ({"device": [dev(id="rp", model="pcie-root-port")]}, "needs key 'chassis'"),
    ({"device": [dev(id="a", model="e1000", bus="br9")]},
     "key 'bus' is 'br9', which is no device here"),
    ({"device": [dev(id="a", model="edu"), dev(id="b", model="e1000", bus="a")]},
     "key 'bus' is 'a', a edu, which has no bus"),
    ({"device": [bridge(), port(bus="br0")]}, "a pcie-root-port goes on the root bus"),
    ({"device": [dev(id="up", model="x3130-upstream")]},
     "x3130-upstream must name a pcie-root-port or xio3130-downstream"),
    ({"device": [port(), dev(id="dp", model="xio3130-downstream", bus="rp1", chassis=2)]},
     "xio3130-downstream must name an x3130-upstream"),
    ({"device": [port(), dev(id="up", model="x3130-upstream", bus="rp1"),
                 dev(id="n", model="e1000", bus="up")]},
     "only xio3130-downstream ports go below an x3130-upstream"),
    ({"device": [port(), dev(id="n", model="e1000", bus="rp1", addr="01.0")]},
     "below a PCIe port the only slot is 00"),
    ({"device": [port("rp1", 1, 1), port("rp2", 1, 1)]}, r"'chassis'/'slot' \(1, 1\) repeat"),
    ({"device": [dev(id="a", model="e1000", addr="05.0", multifunction=True),
                 dev(id="b", model="e1000", addr="05.0")]}, "05.0 is already 'a''s"),
    ({"device": [dev(id="a", model="e1000", addr="05.1"), dev(id="b", model="e1000",
                                                            addr="05.2")]},
     "slot 05 has functions but no function 0"),
    ({"device": [dev(id="a", model="e1000", addr="05.0"), dev(id="b", model="e1000",
                                                            addr="05.1")]},
     "set multifunction = true on function 0"),
    ({"device": [dev(id="k", model="usb-kbd")]}, "must name a qemu-xhci controller"),
    ({"device": [bridge(), dev(id="ppb", model="pcie-pci-bridge", bus="br0")]},
     "a pcie-pci-bridge needs a PCIe bus"),
    ({"device": [dev(id="v", model="virtio-net-pci", iommu_platform="yes")]},
     "key 'iommu_platform' must be bool"),
    ({}, r"no \[\[device\]\] entries"),
    ({"device": [dev(id="n", model="e1000", spdm=True)]},
     "key 'spdm' does not apply to e1000; its properties: none"),
    ({"device": [dev(id="a", model="e1000", bus="")]}, "key 'bus' is empty; leave it out"),
    ({"device": [bridge("b1", bus="b1")]}, r"key 'bus' makes a loop \(b1 -> b1\)"),
    ({"device": [bridge("b1", bus="b2"), dev(id="b2", model="pci-bridge", bus="b1",
                                              chassis=2)]},
     r"makes a loop \(b1 -> b2 -> b1\)"),
    ({"device": [dev(id=f"b{i}", model="pci-bridge", chassis=i,
                     **({"bus": f"b{i - 1}"} if i > 1 else {})) for i in range(1, 52)]},
     "sits 50 bridges deep; QEMU nests at most 49"),
    ({"device": [dev(id=f"b{i}", model="pci-bridge", chassis=i) for i in range(1, 301)]},
     "300 bridges and ports make 300 buses; bus numbers allow at most 255"),
]


@pytest.mark.parametrize("data, message", BAD_TOPOLOGIES,
                         ids=[str(i) for i in range(len(BAD_TOPOLOGIES))])
def test_malformed_topologies_name_file_and_key(data, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_topology("t", data, SRC)
    assert str(info.value).startswith(SRC + ": ")
    assert str(info.value).count("\n") == 0, "one clear error, one line"


BAD_MACHINES = [
    ({"type": "virt"}, "key 'type' is 'virt'; choose one of q35, pc, microvm"),
    ({"viommu": "smmu"}, "key 'viommu' is 'smmu'"),
    ({"type": "pc", "viommu": "intel-iommu"}, "intel-iommu needs type q35, not pc"),
    ({"options": "kernel-irqchip=split"}, "key 'options' must be list"),
    ({"cmdline": [1]}, "key 'cmdline' must be a list of strings"),
    ({"iommu": "x"}, "unknown key 'iommu'"),
]


@pytest.mark.parametrize("data, message", BAD_MACHINES)
def test_malformed_machines_name_file_and_key(data, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_machine("m", data, "/cfg/machines/m.toml")
    assert str(info.value).startswith("/cfg/machines/m.toml: ")


def test_unknown_names_list_the_choices() -> None:
    with pytest.raises(ConfigError, match=r"no such topology; choose one of .*shared-group"):
        load_topology("nope")
    with pytest.raises(ConfigError, match=r"no such machine; choose one of .*q35-intel-iommu"):
        load_machine("nope")


def test_pcie_only_devices_need_a_pcie_machine() -> None:
    topo = parse_topology("t", {"machine": "pc", "device": [port()]}, SRC)
    with pytest.raises(ConfigError, match="needs a PCIe root bus; machine pc is pc"):
        expected_view(topo, load_machine("pc"))


EXPECTED = {
    "flat": ({"nic": "0000:00:08.0", "edu": "0000:00:09.0", "disk": "0000:00:0a.0"},
             [{"nic"}, {"edu"}, {"disk"}]),
    "shared-group": ({"br0": "0000:00:08.0", "nic-a": "0000:01:01.0", "nic-b": "0000:01:02.0"},
                     [{"br0", "nic-a", "nic-b"}]),
    "multifunction": ({"rp": "0000:00:08.0", "fn0": "0000:01:00.0", "fn1": "0000:01:00.1"},
                      [{"rp"}, {"fn0", "fn1"}]),
    "root-ports-acs": ({"rp1": "0000:00:08.0", "nic1": "0000:01:00.0", "rp2": "0000:00:09.0",
                        "nic2": "0000:02:00.0", "rp3": "0000:00:0a.0", "nic3": "0000:03:00.0"},
                       [{"rp1"}, {"nic1"}, {"rp2"}, {"nic2"}, {"rp3", "nic3"}]),
    "pcie-switch": ({"rp1": "0000:00:08.0", "up": "0000:01:00.0", "dp1": "0000:02:00.0",
                     "nic1": "0000:03:00.0", "dp2": "0000:02:01.0", "nic2": "0000:04:00.0"},
                    [{"rp1"}, {"up"}, {"dp1", "nic1"}, {"dp2", "nic2"}]),
    "usb-xhci": ({"xhci": "0000:00:08.0"}, None),
    "virtio-restricted": ({"vnet-legacy": "0000:00:08.0", "vnet-noplat": "0000:00:09.0",
                           "vnet-plat": "0000:00:0a.0"}, None),
    "nvme-spdm": ({"spdm-disk": "0000:00:08.0", "plain-disk": "0000:00:09.0"}, None),
    "virtio-backends": ({"rng": "0000:00:08.0", "disk": "0000:00:09.0",
                         "disk-huge": "0000:00:0a.0", "disk-bs1000": "0000:00:0b.0",
                         "disk-seg0": "0000:00:0c.0", "disk-nq0": "0000:00:0d.0",
                         "disk-nq65535": "0000:00:0e.0"}, None),
    "virtio-backends-platform": ({"disk-plat": "0000:00:08.0", "disk-noplat": "0000:00:09.0"},
                                 None),
    "virtio-backends-packed": ({"rng": "0000:00:08.0", "disk": "0000:00:09.0"}, None),
    "virtio-net-backend": ({"nic": "0000:00:08.0"}, None),
}


def test_every_shipped_topology_has_an_expectation_here() -> None:
    assert sorted(EXPECTED) == topology_names()


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bdfs_and_groups(name: str) -> None:
    topo = load_topology(name)
    view = expected_view(topo, load_machine(topo.machine or "q35"))
    bdfs, groups = EXPECTED[name]
    assert {i: p.bdf for i, p in view.placed.items()} == bdfs
    if groups is None:
        assert view.groups is None
    else:
        assert view.groups is not None
        assert sorted(map(sorted, view.groups)) == sorted(map(sorted, groups))


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_qemu_args_golden(golden, name: str) -> None:
    topo = load_topology(name)
    machine = load_machine(topo.machine or "q35")
    args = viommu_args(machine) + topology_args(expected_view(topo, machine))
    golden(f"topology-{name}.txt", "\n".join(args) + "\n")


def test_virtio_below_a_port_is_modern_only() -> None:
    topo = parse_topology("t", {"device": [
        port(), dev(id="v1", model="virtio-net-pci", bus="rp1"),
        dev(id="v2", model="virtio-net-pci"),
        dev(id="v3", model="virtio-net-pci", **{"disable-legacy": True})]}, SRC)
    view = expected_view(topo, load_machine("q35"))
    assert view.expected_ids("v1")[1] == 0x1041
    assert view.expected_ids("v2")[1] == 0x1000
    assert view.expected_ids("v3")[1] == 0x1041


def _guest_for(name: str, groups: dict[str, str], ids: dict[str, tuple[int, int, int]]
               | None = None) -> tuple[object, GuestPCI]:
    topo = load_topology(name)
    view = expected_view(topo, load_machine(topo.machine or "q35"))
    functions = {p.bdf: view.expected_ids(i) for i, p in view.placed.items()}
    functions.update(ids or {})
    return view, GuestPCI(functions, {view.placed[i].bdf: g for i, g in groups.items()})


def test_compare_accepts_the_declared_view() -> None:
    view, guest = _guest_for("shared-group", {"br0": "7", "nic-a": "7", "nic-b": "7"})
    assert compare(view, guest) == []  # type: ignore[arg-type]


def test_compare_diffs_groups_readably() -> None:
    view, guest = _guest_for("shared-group", {"br0": "7", "nic-a": "8", "nic-b": "8"})
    assert compare(view, guest) == [  # type: ignore[arg-type]
        "IOMMU groups (declared devices only):\n"
        "    expected: {br0, nic-a, nic-b}\n"
        "    guest:    {br0} {nic-a, nic-b}"]


def test_compare_names_a_wrong_device() -> None:
    view, guest = _guest_for("flat", {"nic": "1", "edu": "2", "disk": "3"},
                             {"0000:00:08.0": (0x8086, 0x100E, 0x020000)})
    assert compare(view, guest) == [  # type: ignore[arg-type]
        "device nic (e1000e 8086:10d3 class 020000): expected at 0000:00:08.0, the guest has "
        "8086:100e class 020000"]


@pytest.mark.parametrize(("machine", "addr", "owner"), [
    ("q35", "00.0", "the host bridge"),
    ("q35", "1f.0", "the ICH9 LPC, SATA and SMBus functions"),
    ("pc", "01.0", "the PIIX3 ISA, IDE, USB and ACPI functions"),
])
def test_a_slot_the_machine_fills_itself_is_refused(machine: str, addr: str,
                                                    owner: str) -> None:
    topo = parse_topology("t", {"device": [dev(id="nic", model="e1000", addr=addr)]}, SRC)
    with pytest.raises(ConfigError, match=rf"device 'nic': key 'addr' {addr} is taken: {owner}"):
        expected_view(topo, load_machine(machine))


def test_a_served_device_is_qemus_vhost_user_model_on_a_chardev_placeholder() -> None:
    topo = load_topology("virtio-backends")
    view = expected_view(topo, load_machine("q35"))
    args = topology_args(view)
    assert args[:2] == ["-chardev", "socket,id=rng-vu,path=@vhost-user:rng@"]
    device = next(a for a in args if a.startswith("vhost-user-rng-pci,"))
    assert device.split(",")[-1] == "chardev=rng-vu" and "drive=" not in ",".join(args)
    assert backend_specs(view)[:3] == (
        BackendSpec("rng", "vhost-user-rng"), BackendSpec("disk", "vhost-user-blk"),
        BackendSpec("disk-huge", "vhost-user-blk", "capacity-huge"))
    # what the guest enumerates: vhost-user-rng-pci is modern-only (0x1044), the blk
    # transitional on the root bus (0x1001), as QEMU's own models
    assert view.expected_ids("rng") == (0x1AF4, 0x1044, 0x00FF00)
    assert view.expected_ids("disk") == (0x1AF4, 0x1001, 0x010000)


def test_a_huge_topology_is_read_in_linear_time() -> None:
    """26,000 devices (a 1 MB file): 17 s when every device rebuilt the set of the earlier
    ids, 0.15 s now; and a 26,000-bridge chain walks no further than QEMU nests."""
    flat = [{"id": f"d{i}", "model": "e1000"} for i in range(26000)]
    start = time.monotonic()
    parse_topology("flat", {"device": flat}, "flat.toml")
    deep = [{"id": "b0", "model": "pci-bridge", "chassis": 1}] + [
        {"id": f"b{i}", "model": "pci-bridge", "bus": f"b{i - 1}", "chassis": i + 1}
        for i in range(1, 26000)]
    with pytest.raises(ConfigError, match="sits 50 bridges deep"):
        parse_topology("deep", {"device": deep}, "deep.toml")
    assert time.monotonic() - start < 2.0
