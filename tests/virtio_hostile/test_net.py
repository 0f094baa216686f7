"""A virtio-net NIC the test serves (topology virtio-net-backend: QEMU's virtio-net-pci on
-netdev vhost-user, its data path a cocolab back-end): the guest's driver receives the frames
the test injects, and its stack answers an ICMP echo, which the back-end sees transmitted.

Sources: drivers/net/virtio_net.c (7.3, 6.12): receive_mergeable() reads num_buffers from
the header and pulls that many buffers ("%s: rx error: %d buffers out of %d missing" and
dev->stats.rx_length_errors when fewer come); receive_buf() drops a len below the header
("%s: short packet %i"); a len beyond the buffer is "rx error: len %u exceeds truesize"
(receive_mergeable) and is dropped. Since 5.16 virtio_ring leaves the used len to drivers.

What must hold, whatever the length or num_buffers (the threat model): no kernel report,
an echo reply, if the guest sends one, carries exactly the payload it was sent (bytes from
elsewhere in the guest would be an information leak), and a frame the driver drops is
counted. A NIC that stops receiving afterwards is a recorded `dos`.
"""

from __future__ import annotations

import time

import pytest
from frames import GUEST_IP, HOST_IP, HOST_MAC, echo_reply, echo_request
from guest_side import record_dos

from cocolab.assertions import require
from cocolab.devices.backend import USED_LENGTHS, Personality
from cocolab.devices.net import NetBackend
from cocolab.guest import Guest
from cocolab.guest.virtio import ServedDevice

pytestmark = [pytest.mark.topology("virtio-net-backend"),
              pytest.mark.usefixtures("hostile_lane")]
# No kconfig gate: virtio_net is what the rig itself needs for SSH (kernel/needs.py); a gate
# would only repeat the line in every build's fragment, and so change every build's key.

PAYLOAD = b"cocolab echo payload, one frame " * 4
REPLY_S = 5.0


def up(vm: Guest, nic: ServedDevice) -> tuple[str, bytes]:
    """Bind the driver and configure the interface: (its name, its MAC)."""
    require(nic.bind() == (True, ""), "virtio_net did not bind the served NIC")
    name = nic.interface()
    vm.run(f"ip addr flush dev {name} && ip addr add {GUEST_IP}/24 dev {name} && "
           f"ip link set {name} up && arp -i {name} -s {HOST_IP} {HOST_MAC.hex(':')}",
           check=True)
    mac = vm.run(f"cat /sys/class/net/{name}/address", check=True).stdout.strip()
    return name, bytes.fromhex(mac.replace(":", ""))


def counter(vm: Guest, name: str, what: str) -> int:
    return int(vm.run(f"cat /sys/class/net/{name}/statistics/{what}", check=True).stdout)


def replies(backend: NetBackend, ident: int) -> list[tuple[int, int, bytes]]:
    return [r for f in backend.sent if (r := echo_reply(f)) is not None and r[0] == ident]


def ping_the_guest(backend: NetBackend, mac: bytes, ident: int) -> list[tuple[int, int, bytes]]:
    backend.inject(echo_request(mac, ident, 1, PAYLOAD))
    deadline = time.monotonic() + REPLY_S
    while time.monotonic() < deadline and not replies(backend, ident):
        time.sleep(0.05)
    return replies(backend, ident)


def test_the_guest_answers_a_frame_the_test_injected(vm: Guest, nic: ServedDevice) -> None:
    backend = nic.backend
    assert isinstance(backend, NetBackend)
    name, mac = up(vm, nic)
    before = counter(vm, name, "rx_packets")
    answered = ping_the_guest(backend, mac, 0x1234)
    assert answered == [(0x1234, 1, PAYLOAD)], [f.hex()[:80] for f in backend.sent]
    assert counter(vm, name, "rx_packets") > before


@pytest.mark.parametrize("personality", [*USED_LENGTHS, Personality.NUM_BUFFERS_0,
                                         Personality.NUM_BUFFERS_HUGE],
                         ids=lambda p: p.value)
def test_a_hostile_receive_is_dropped_or_delivered_intact(
        vm: Guest, nic: ServedDevice, personality: Personality,
        request: pytest.FixtureRequest) -> None:
    backend = nic.backend
    assert isinstance(backend, NetBackend)
    name, mac = up(vm, nic)
    backend.personality = personality
    errors_before = sum(counter(vm, name, c) for c in ("rx_length_errors", "rx_dropped",
                                                        "rx_errors"))
    answered = ping_the_guest(backend, mac, 0x4321)
    require(any(s.what.startswith("received") for s in backend.requests),
            "the device never received the frame into a buffer")
    for _, _, payload in answered:
        assert payload == PAYLOAD, (f"{personality.value}: the guest echoed {len(payload)} "
                                    f"bytes that are not what it was sent")
    if not answered:  # dropped: the driver says so in its counters
        errors = sum(counter(vm, name, c) for c in ("rx_length_errors", "rx_dropped",
                                                    "rx_errors"))
        assert errors > errors_before, (f"{personality.value}: the frame vanished without "
                                        "the driver counting an error")
    backend.personality = Personality.GOOD
    if not ping_the_guest(backend, mac, 0x5678):  # allowed: recorded, the VM not reused
        record_dos(vm, request, f"the NIC stopped receiving after {personality.value}")
