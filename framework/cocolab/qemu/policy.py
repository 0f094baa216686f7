"""What a test's own QEMU arguments may not do: reach outside the machine.

Guests never reach outside: user networking only, always `restrict=on`, host forwards bound to
127.0.0.1; no monitor, serial port, chardev or gdb stub on the network. cocolab's own argv
keeps these rules by construction; `@pytest.mark.qemu_args` and `--qemu-arg` are checked here.
"""

from __future__ import annotations

import re

from cocolab.errors import ConfigError

_NET_OPTIONS = ("-netdev", "-nic")
_CHAR_OPTIONS = ("-monitor", "-serial", "-parallel", "-qmp", "-qmp-pretty", "-gdb",
                 "-debugcon", "-mon")
_NETWORK_CHAR = re.compile(r"^(tcp|udp|telnet|websocket):|(^|,)(host|port)=")
_HOSTFWD = re.compile(r"hostfwd=(?:tcp|udp)?:([^:,]*):")


def qemu_args_problem(args: tuple[str, ...]) -> str | None:
    """Why `args` break the networking rules, or None."""
    for i, arg in enumerate(args):
        value = args[i + 1] if i + 1 < len(args) else ""
        if arg == "-s":
            return "-s opens a gdb stub on TCP port 1234; the guest's stubs stay off the network"
        if arg in _NET_OPTIONS:
            backend = value.split(",", 1)[0]
            if backend != "user":
                return (f"{arg} {value!r}: only user networking is allowed (a {backend!r} "
                        "backend reaches outside)")
            opts = value.split(",")
            if "restrict=on" not in opts and "restrict=yes" not in opts:
                return f"{arg} {value!r}: user networking needs restrict=on"
            if any(o.startswith("guestfwd=") for o in opts):
                return f"{arg} {value!r}: guestfwd lets the guest reach the host's network"
            for addr in _HOSTFWD.findall(value):
                if addr != "127.0.0.1":
                    return (f"{arg} {value!r}: hostfwd must bind 127.0.0.1, not "
                            f"{addr or 'every address'}")
        if arg in _CHAR_OPTIONS and _NETWORK_CHAR.search(value):
            return f"{arg} {value!r}: monitors, serial ports and gdb stay off the network"
        if arg == "-chardev" and (value.split(",", 1)[0] in ("udp", "ringbuf-tcp")
                                  or _NETWORK_CHAR.search(value.partition(",")[2])):
            return f"-chardev {value!r}: character devices stay on unix sockets or files"
    return None


def check_qemu_args(args: tuple[str, ...], source: str) -> None:
    """ConfigError naming `source` (the marker and its test, or the option) if `args` break
    the rules."""
    problem = qemu_args_problem(args)
    if problem:
        raise ConfigError(f"{source}: {problem}")
