"""Which QEMU arguments a test may add: only what cocolab knows stays on the machine.

Guests never reach outside: user networking only, always `restrict=on`, host forwards bound to
127.0.0.1; no display server, monitor, serial port, chardev, migration or gdb stub on the
network. cocolab's own argv keeps these rules by construction; `@pytest.mark.qemu_args` and
`--qemu-arg` are checked here, by allowlist: an option is allowed only with a check of its
value below, and everything else (-vnc, -spice, -display, -net, -incoming, -s, a stray word)
is refused in one line.
"""

from __future__ import annotations

import re
from collections.abc import Callable

from cocolab.errors import ConfigError

OBJECT_TYPES = frozenset({
    "memory-backend-ram", "memory-backend-memfd", "memory-backend-file", "rng-random",
    "rng-builtin", "iothread", "cryptodev-backend-builtin", "throttle-group", "secret",
})
"""QOM objects a test may create: memory, entropy and I/O plumbing, all local."""
CHARDEV_BACKENDS = frozenset({"socket", "file", "null", "ringbuf", "memory", "pipe"})
"""Character devices a test may create (a socket only on a unix path)."""
DRIVE_DRIVERS = frozenset({"raw", "qcow2", "file", "null-co", "null-aio"})
_PROTOCOL = re.compile(r"^[a-z][a-z0-9+.-]*:(?!/)|://")
_HOSTFWD = re.compile(r"hostfwd=(?:tcp|udp)?:([^:,]*):")


def _options(value: str) -> list[tuple[str, str]]:
    """QEMU's key=value list as (key, value) pairs; a bare first word is ('', word)."""
    return [(k, v) if sep else ("", k)
            for k, sep, v in (item.partition("=") for item in value.split(","))]


def _device(value: str) -> str | None:
    return None if value and not value.startswith(",") else "a device model comes first"


def _object(value: str) -> str | None:
    kind = value.split(",", 1)[0].removeprefix("qom-type=")
    if kind in OBJECT_TYPES:
        return None
    return f"object type {kind!r} is not one cocolab allows ({', '.join(sorted(OBJECT_TYPES))})"


def _machine(value: str) -> str | None:
    bare = [v for k, v in _options(value) if not k]
    if bare or any(k == "type" for k, _ in _options(value)):
        return "the machine type comes from the `machine` marker; give properties only (k=v)"
    return None


def _network(value: str) -> str | None:
    opts = dict(_options(value))
    backend = opts.get("", "")
    if backend == "none":
        return None
    if backend != "user":
        return f"only user networking is allowed (a {backend!r} backend reaches outside)"
    if opts.get("restrict") not in ("on", "yes"):
        return "user networking needs restrict=on"
    if "guestfwd" in opts:
        return "guestfwd lets the guest reach the host's network"
    for addr in _HOSTFWD.findall(value):
        if addr != "127.0.0.1":
            return f"hostfwd must bind 127.0.0.1, not {addr or 'every address'}"
    return None


def _chardev(value: str) -> str | None:
    opts = dict(_options(value))
    backend = opts.get("", "")
    if backend not in CHARDEV_BACKENDS:
        return (f"character devices stay on unix sockets or files (not a {backend!r} "
                "backend)")
    if backend == "socket" and ("path" not in opts or {"host", "port"} & opts.keys()):
        return "character devices stay on unix sockets or files (a socket needs path=)"
    return None


def _serial(value: str) -> str | None:
    if value in ("null", "none") or value.startswith(("chardev:", "file:")):
        return None
    return "serial ports are chardev:ID, file:PATH, null or none: they stay off the network"


def _drive(value: str) -> str | None:
    for key, val in _options(value):
        if key in ("driver", "format", "file.driver") and val not in DRIVE_DRIVERS:
            return f"drive driver {val!r} is not a local one ({', '.join(sorted(DRIVE_DRIVERS))})"
        if key in ("file", "file.filename") and _PROTOCOL.search(val):
            return f"drive file {val!r} names a protocol; give a local path"
    return None


def _anything(value: str) -> str | None:
    return None


ALLOWED: dict[str, Callable[[str], str | None]] = {
    "-device": _device,
    "-object": _object,
    "-global": _anything,
    "-machine": _machine,
    "-M": _machine,
    "-netdev": _network,
    "-nic": _network,
    "-chardev": _chardev,
    "-serial": _serial,
    "-drive": _drive,
}
"""Each option a test may give, with the check of its value (every one takes a value)."""


def qemu_args_problem(args: tuple[str, ...]) -> str | None:
    """Why `args` are not all known to stay on the machine, or None."""
    words = iter(args)
    for arg in words:
        check = ALLOWED.get(arg)
        if check is None:
            what = "option" if arg.startswith("-") else "word (each option takes one value)"
            return (f"{arg}: not a QEMU {what} cocolab allows a test to add "
                    f"(allowed: {', '.join(ALLOWED)})")
        value = next(words, None)
        if value is None:
            return f"{arg} needs a value"
        problem = check(value)
        if problem:
            return f"{arg} {value!r}: {problem}"
    return None


def check_qemu_args(args: tuple[str, ...], source: str) -> None:
    """ConfigError naming `source` (the marker and its test, or the option) if `args` are
    not all allowed."""
    problem = qemu_args_problem(args)
    if problem:
        raise ConfigError(f"{source}: {problem}")
