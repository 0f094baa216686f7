#!/usr/bin/env python3
"""A stand-in for qemu-system-x86_64 that acts out one outcome of a boot, for unit tests.

It reads the few arguments that matter (the QMP chardev socket, `-serial file:PATH`), connects
to the QMP socket as QEMU does, speaks enough QMP (greeting, qmp_capabilities, query-status,
quit), and then plays FAKE_QEMU_OUTCOME:

  clean           the /init's line on the serial port, SHUTDOWN, exit 0 (after FAKE_QEMU_DELAY)
  internal-error  QEMU's KVM internal error text on stderr, STOP, run state internal-error,
                  and stays alive, as QEMU does
  pause           STOP, run state paused, stays alive
  crawl           nothing at all, alive, until killed
  abort           QEMU's MSR assertion on stderr, exit -6 before QMP is up

Started as cocolab's capability probe (`-machine none`), it answers query-version,
query-machines and qom-list-types instead, and waits for quit.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import sys
import threading
import time

KVM_INTERNAL_ERROR = """\
KVM internal error. Suberror: 1
extra data[0]: 0x0000000000000001
extra data[1]: 0x8d49c0f76942c40f
emulation failure
RAX=0000000001ad2b90 RBX=0000000004794b64 RCX=0000000001ad2b90 RDX=0000000000000005
Code=05 83 fa 0f 77 b5 4d 01 fd 41 b8 01 00 00 00 89 c8 89 55 00 <c4> 42 69 f7 c0 49 8d 55
"""


PROBE_REPLIES: dict[str, object] = {  # what cocolab's capability probe asks
    "query-version": {"qemu": {"major": 7, "minor": 2, "micro": 0}, "package": "fake"},
    "query-machines": [{"name": "q35"}, {"name": "pc"}, {"name": "microvm"}],
    "qom-list-types": [{"name": n} for n in ("edu", "e1000", "virtio-net-pci", "nvme")],
    # QEMU 7.2's nvme: no spdm_port (FAKE_QEMU_SPDM=1 gives it one, as 9.1+ has)
    "device-list-properties": [{"name": n, "type": "str"} for n in ("drive", "serial")],
}


def _arg_after(flag: str, prefix: str) -> str | None:
    args = sys.argv[1:]
    for i, arg in enumerate(args[:-1]):
        if arg == flag and args[i + 1].startswith(prefix):
            return args[i + 1]
    return None


class FakeMonitor:
    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.status = "running"
        self.lock = threading.Lock()
        self.negotiated = threading.Event()  # QEMU sends no event before qmp_capabilities
        self.send({"QMP": {"version": {"qemu": {"major": 10, "minor": 0, "micro": 0},
                                       "package": "fake"}, "capabilities": []}})
        threading.Thread(target=self.serve, daemon=True).start()

    def send(self, message: dict[str, object]) -> None:
        with self.lock:
            self.sock.sendall(json.dumps(message).encode() + b"\r\n")

    def event(self, name: str, **data: object) -> None:
        self.negotiated.wait()
        self.send({"event": name, "data": data,
                   "timestamp": {"seconds": int(time.time()), "microseconds": 0}})

    def requests(self):  # QMP clients need not end a command with a newline: a JSON stream
        decoder, buffer = json.JSONDecoder(), ""
        while data := self.sock.recv(4096):
            buffer += data.decode()
            while buffer.strip():
                try:
                    request, end = decoder.raw_decode(buffer.lstrip())
                except ValueError:
                    break
                buffer = buffer.lstrip()[end:]
                yield request

    def serve(self) -> None:
        for request in self.requests():
            name, ident = request.get("execute"), request.get("id")
            reply: dict[str, object] = {"return": {}}
            if name == "query-status":
                reply = {"return": {"status": self.status,
                                    "running": self.status == "running"}}
            elif name == "device-list-properties" and os.environ.get("FAKE_QEMU_SPDM") == "1":
                props = [*PROBE_REPLIES[name], {"name": "spdm_port", "type": "uint16"}]
                reply = {"return": props}
            elif name in PROBE_REPLIES:
                reply = {"return": PROBE_REPLIES[name]}
            self.send({**reply, "id": ident} if ident is not None else reply)
            if name == "qmp_capabilities":
                self.negotiated.set()
            if name == "quit":
                os._exit(0)


def main() -> int:
    outcome = os.environ.get("FAKE_QEMU_OUTCOME", "clean")
    delay = float(os.environ.get("FAKE_QEMU_DELAY", "0.2"))
    if _arg_after("-machine", "none") is not None:  # the capability probe: answer, then wait
        qmp = _arg_after("-chardev", "socket,id=qmp0,path=")
        assert qmp is not None, "no QMP chardev in the argv"
        FakeMonitor(qmp.split("path=", 1)[1])
        while True:
            time.sleep(1)
    if outcome == "abort":
        sys.stderr.write("qemu-system-x86_64: error: failed to set MSR 0x10a to 0x69\n"
                         "qemu-system-x86_64: ../../target/i386/kvm/kvm.c:3183: "
                         "kvm_buf_set_msrs: Assertion `ret == cpu->kvm_msr_buf->nmsrs' "
                         "failed.\n")
        sys.stderr.flush()
        signal.signal(signal.SIGABRT, signal.SIG_DFL)
        os.abort()
    qmp = _arg_after("-chardev", "socket,id=qmp0,path=")
    assert qmp is not None, "no QMP chardev in the argv"
    monitor = FakeMonitor(qmp.split("path=", 1)[1])
    serial = _arg_after("-serial", "file:")
    time.sleep(delay)
    if outcome == "clean":
        if serial:
            with open(serial.removeprefix("file:"), "ab") as f:
                f.write(b"[    0.9] Run /init as init process\n"
                        b"\ncocolab-proof: userspace reached\n")
        monitor.status = "shutdown"
        monitor.event("SHUTDOWN", guest=True, reason="guest-shutdown")
        time.sleep(0.05)
        return 0
    if outcome == "internal-error":
        sys.stderr.write(KVM_INTERNAL_ERROR)
        sys.stderr.flush()
        monitor.status = "internal-error"
        monitor.event("STOP")
    elif outcome == "pause":
        monitor.status = "paused"
        monitor.event("STOP")
    while True:  # alive, the guest going nowhere, until killed
        time.sleep(1)


if __name__ == "__main__":
    sys.exit(main())
