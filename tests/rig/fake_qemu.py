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
  boot            a guest cocolab's VM can use: /init's READY line with the token of the
                  -append line on the console chardev, an SSH server (in this process, host
                  key FAKE_QEMU_HOST_KEY) whose commands run in /bin/sh with FAKE_QEMU_GUEST_BIN
                  first on PATH, found through 'info usernet'; `stop`, `cont`, `migrate` to
                  `exec:cat > FILE` (refused when FAKE_QEMU_MIGRATE=blocked), and with
                  `-incoming defer`, `migrate-incoming` of a stream the migrate wrote

Started as cocolab's capability probe (`-machine none`), it answers query-version,
query-machines and qom-list-types instead, and waits for quit.
"""

from __future__ import annotations

import json
import os
import shlex
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


def qmp_requests(sock: socket.socket):
    """The commands a QMP client sends on `sock`, until it hangs up. Clients need not end a
    command with a newline: it is a JSON stream."""
    decoder, buffer = json.JSONDecoder(), ""
    while data := sock.recv(4096):
        buffer += data.decode()
        while buffer.strip():
            try:
                request, end = decoder.raw_decode(buffer.lstrip())
            except ValueError:
                break
            buffer = buffer.lstrip()[end:]
            yield request


def _arg_after(flag: str, prefix: str) -> str | None:
    args = sys.argv[1:]
    for i, arg in enumerate(args[:-1]):
        if arg == flag and args[i + 1].startswith(prefix):
            return args[i + 1]
    return None


STREAM = b"fake-qemu migration stream\n"
"""What `migrate` writes and `migrate-incoming` insists on reading back."""


class FakeMonitor:
    def __init__(self, path: str):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.connect(path)
        self.status = "inmigrate" if _arg_after("-incoming", "defer") else "running"
        self.ssh_port = 0
        self.resumed = threading.Event()
        """Set when the guest first runs (at once, or on `cont` after an incoming stream)."""
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

    def requests(self):
        return qmp_requests(self.sock)

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
            else:
                reply = self.machine(name, request.get("arguments", {}))
            self.send({**reply, "id": ident} if ident is not None else reply)
            if name == "qmp_capabilities":
                self.negotiated.set()
            if name == "quit":
                os._exit(0)


    def machine(self, name: str, args: dict[str, str]) -> dict[str, object]:
        """The commands a boot, a save and a restore send."""
        if name == "stop":
            self.status = "paused"
            threading.Thread(target=self.event, args=("STOP",), daemon=True).start()
        elif name == "cont":
            self.status = "running"
            self.resumed.set()
            threading.Thread(target=self.event, args=("RESUME",), daemon=True).start()
        elif name == "migrate":
            if os.environ.get("FAKE_QEMU_MIGRATE") == "blocked":
                return {"error": {"class": "GenericError", "desc": "State blocked by "
                                  "non-migratable device '0000:00:04.0/nvme'"}}
            target = shlex.split(args["uri"].removeprefix("exec:cat > "))[0]
            with open(target, "wb") as f:
                f.write(STREAM)
        elif name == "query-migrate":
            return {"return": {"status": "completed"}}
        elif name == "migrate-incoming":
            uri = args["uri"]
            path = uri.removeprefix("file:") if uri.startswith("file:") else \
                shlex.split(uri.removeprefix("exec:cat "))[0]
            with open(path, "rb") as f:
                if f.read() != STREAM:  # QEMU takes the command, then fails the load and exits
                    sys.stderr.write("qemu-system-x86_64: load of migration failed: "
                                     "Invalid argument\n")
                    sys.stderr.flush()
                    os._exit(1)
            self.status = "paused"
        elif name == "human-monitor-command":
            return {"return": self.hmp(args["command-line"])}
        return {"return": {}}

    def hmp(self, command: str) -> str:
        if command == "info usernet":
            return ("VLAN -1 (net0):\r\n  Protocol[State]    FD  Source Address  Port   "
                    "Dest. Address  Port RecvQ SendQ\r\n  TCP[HOST_FORWARD]  12       "
                    f"127.0.0.1 {self.ssh_port:5d}       10.0.2.15    22     0     0\r\n")
        if command.startswith("i /w "):
            return "portw[0x0cf8] = 0x80000000\r\n"
        return ""  # `o /w PORT VALUE` says nothing when it works


def guest(monitor: FakeMonitor, console_path: str) -> None:
    """The guest side of the `boot` outcome: sshd up, then READY on the console (a cold
    boot), or nothing new on it (a restored guest, already READY when it was saved)."""
    import paramiko
    from fake_sshd import Sshd, serve

    host_key = paramiko.Ed25519Key.from_private_key_file(os.environ["FAKE_QEMU_HOST_KEY"])
    env = {**os.environ, "PATH": f"{os.environ['FAKE_QEMU_GUEST_BIN']}:{os.environ['PATH']}"}
    listener = serve(host_key, lambda: Sshd(["/bin/sh"], [], env))
    monitor.ssh_port = listener.getsockname()[1]
    console = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    console.connect(console_path)
    append = _arg_after("-append", "") or ""
    token = next(w.split("=", 1)[1] for w in append.split() if w.startswith("cocolab.token="))
    if monitor.status == "running":
        monitor.resumed.set()
    monitor.resumed.wait()
    if not _arg_after("-incoming", "defer"):
        console.sendall(b"[    0.9] Run /init as init process\r\n"
                        + f"COCOLAB READY {token}\r\n".encode())
    while True:
        time.sleep(1)


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
    if outcome == "boot":
        console = _arg_after("-chardev", "socket,id=con0,path=")
        assert console is not None, "no console chardev in the argv"
        guest(monitor, console.split("path=", 1)[1])
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
