"""Which QEMU arguments a test may add: only what cocolab knows stays on the machine.

Guests never reach outside: user networking only, always `restrict=on`, host forwards bound to
127.0.0.1; no display server, monitor, serial port, chardev, migration or gdb stub on the
network. cocolab's own argv keeps these rules by construction; `@pytest.mark.qemu_args` and
`--qemu-arg` are checked here, by allowlist: an option is allowed only with a check of its
value below, and everything else (-vnc, -spice, -display, -net, -incoming, -s, a stray word)
is refused in one line.

A value is judged as QEMU reads it (`qemu_opts`, after util/qemu-option.c): `,,` is a comma
inside a value, a key ends at the first `=` or `,`, a bare first word is the option's implied
key (-device's driver, -netdev's type...), a later bare word is a flag set on (`noFLAG` off),
and a key given twice means its last value. So `hostname=x,,restrict=on` is one hostname,
not a restrict. JSON forms (`-device {...}`) are refused: they are not read here.

Host files are the other way out: a value that names one (a drive's file, a chardev's path,
a memory backend's mem-path, an rng's filename, a machine's firmware, a device's romfile,
`-serial file:`) must lie under the VM's own directory, written `@vmdir@/NAME` (cocolab puts
the directory in at launch), or under a path the test declares with
`@pytest.mark.allow_host_paths(PATH, ...)`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable
from dataclasses import dataclass

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
_HOSTFWD = re.compile(r"^(?:tcp|udp)?:([^:]*):")
VMDIR = "@vmdir@"
"""Stands for the VM's own directory in a test's QEMU arguments (qemu/argv.py puts it in)."""
HOST_PATH_KEYS = frozenset({"file", "filename", "path", "mem-path", "firmware", "romfile",
                            "input-path", "logfile", "dumpdtb", "bios", "kernel", "initrd",
                            "dtb", "sock_path", "x-igd-opregion"})
"""Keys (a dotted key's last part) whose value QEMU opens on the host."""


def _opt_value(text: str, i: int) -> tuple[str, int]:
    """A value from `i` to the first single comma; `,,` is a comma (get_opt_value)."""
    out = []
    while i < len(text):
        if text[i] == ",":
            if text[i + 1:i + 2] != ",":
                break
            i += 1
        out.append(text[i])
        i += 1
    return "".join(out), i


def qemu_opts(text: str, implied: str | None = None) -> list[tuple[str, str]]:
    """`text` as QEMU's QemuOpts reads it: (key, value) pairs in order. A bare first word is
    the `implied` key's value; a later bare word (or a first one with no implied key) is a
    flag, `on`, or `off` for `noNAME`."""
    pairs: list[tuple[str, str]] = []
    i = 0
    while i < len(text):
        end = i
        while end < len(text) and text[end] not in "=,":
            end += 1
        if end < len(text) and text[end] == "=":
            value, nxt = _opt_value(text, end + 1)
            pairs.append((text[i:end], value))
        elif not pairs and implied:
            value, nxt = _opt_value(text, i)
            pairs.append((implied, value))
        else:
            name, nxt = text[i:end], end
            pairs.append((name[2:], "off") if name.startswith("no") else (name, "on"))
        i = nxt + 1 if nxt < len(text) else nxt
    return pairs


def _last(pairs: list[tuple[str, str]]) -> dict[str, str]:
    return dict(pairs)  # a key given twice: QEMU reads the last


@dataclass(frozen=True)
class _Judge:
    allowed_paths: tuple[str, ...] = ()

    def path(self, what: str, value: str) -> str | None:
        """Why host path `value` is out of the test's reach, or None."""
        if value.startswith(VMDIR + "/") and ".." not in value.split("/"):
            return None
        if value == "":  # romfile= turns the ROM off
            return None
        here = os.path.normpath(os.path.abspath(value))
        for allowed in self.allowed_paths:
            root = os.path.normpath(os.path.abspath(allowed))
            if here == root or here.startswith(root.rstrip("/") + "/"):
                return None
        return (f"{what} {value!r} is a host path outside the VM's own directory; write "
                f"{VMDIR}/NAME, or declare it with @pytest.mark.allow_host_paths")

    def paths(self, pairs: list[tuple[str, str]]) -> str | None:
        for key, value in pairs:
            if key.rsplit(".", 1)[-1] in HOST_PATH_KEYS:
                problem = self.path(key, value)
                if problem:
                    return problem
        return None

    def device(self, value: str) -> str | None:
        pairs = qemu_opts(value, "driver")
        if not value or value.startswith(","):
            return "a device model comes first"
        return self.paths(pairs)

    def object(self, value: str) -> str | None:
        pairs = qemu_opts(value, "qom-type")
        kind = _last(pairs).get("qom-type", "")
        if kind not in OBJECT_TYPES:
            return (f"object type {kind!r} is not one cocolab allows "
                    f"({', '.join(sorted(OBJECT_TYPES))})")
        return self.paths(pairs)

    def machine(self, value: str) -> str | None:
        pairs = qemu_opts(value, "type")
        if "type" in _last(pairs):
            return "the machine type comes from the `machine` marker; give properties only (k=v)"
        return self.paths(pairs)

    def network(self, value: str) -> str | None:
        pairs = qemu_opts(value, "type")
        opts = _last(pairs)
        backend = opts.get("type", "")
        if backend == "none":
            return None
        if backend != "user":
            return f"only user networking is allowed (a {backend!r} backend reaches outside)"
        if opts.get("restrict") not in ("on", "yes", "true"):
            return "user networking needs restrict=on"
        for key, val in pairs:
            if key == "guestfwd":
                return "guestfwd lets the guest reach the host's network"
            if key == "hostfwd":
                found = _HOSTFWD.match(val)
                if found is None or found.group(1) != "127.0.0.1":
                    addr = found.group(1) if found else val
                    return f"hostfwd must bind 127.0.0.1, not {addr or 'every address'}"
            if key in ("smb", "tftp", "bootfile"):
                return f"{key} serves host files to the guest"
        return None

    def chardev(self, value: str) -> str | None:
        pairs = qemu_opts(value, "backend")
        opts = _last(pairs)
        backend = opts.get("backend", "")
        if backend not in CHARDEV_BACKENDS:
            return (f"character devices stay on unix sockets or files (not a {backend!r} "
                    "backend)")
        if backend == "socket" and ("path" not in opts or {"host", "port"} & opts.keys()):
            return "character devices stay on unix sockets or files (a socket needs path=)"
        return self.paths(pairs)

    def serial(self, value: str) -> str | None:
        if value in ("null", "none") or value.startswith("chardev:"):
            return None
        if value.startswith("file:"):
            return self.path("file", value.removeprefix("file:"))
        return "serial ports are chardev:ID, file:PATH, null or none: they stay off the network"

    def drive(self, value: str) -> str | None:
        pairs = qemu_opts(value)
        for key, val in pairs:
            if key in ("driver", "format", "file.driver") and val not in DRIVE_DRIVERS:
                return (f"drive driver {val!r} is not a local one "
                        f"({', '.join(sorted(DRIVE_DRIVERS))})")
            if key in ("file", "file.filename") and _PROTOCOL.search(val):
                return f"drive file {val!r} names a protocol; give a local path"
        return self.paths(pairs)

    def global_(self, value: str) -> str | None:
        return self.paths([(value.partition("=")[0], value.partition("=")[2])])


ALLOWED: dict[str, Callable[[_Judge, str], str | None]] = {
    "-device": _Judge.device,
    "-object": _Judge.object,
    "-global": _Judge.global_,
    "-machine": _Judge.machine,
    "-M": _Judge.machine,
    "-netdev": _Judge.network,
    "-nic": _Judge.network,
    "-chardev": _Judge.chardev,
    "-serial": _Judge.serial,
    "-drive": _Judge.drive,
}
"""Each option a test may give, with the check of its value (every one takes a value)."""


def qemu_args_problem(args: tuple[str, ...], allowed_paths: tuple[str, ...] = ()
                      ) -> str | None:
    """Why `args` are not all known to stay on the machine, or None. `allowed_paths`: the
    host paths the test declared (allow_host_paths)."""
    judge = _Judge(allowed_paths)
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
        if value.lstrip().startswith("{"):
            return f"{arg} {value[:80]!r}: JSON syntax is not judged here; give key=value"
        problem = check(judge, value)
        if problem:
            return f"{arg} {value!r}: {problem}"
    return None


def check_qemu_args(args: tuple[str, ...], source: str,
                    allowed_paths: tuple[str, ...] = ()) -> None:
    """ConfigError naming `source` (the marker and its test, or the option) if `args` are
    not all allowed."""
    problem = qemu_args_problem(args, allowed_paths)
    if problem:
        raise ConfigError(f"{source}: {problem}")
