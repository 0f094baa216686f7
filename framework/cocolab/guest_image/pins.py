"""The guest's Debian packages, pinned: guests/packages.lock names each one's version and the
sha256 of its .deb. The lock is part of the base image's hash (it lives in guests/), only the
pinned files are unpacked (two cached versions of a package once meant the lexically last
one won: deb12u9 over deb12u10), and a .deb whose digest differs is refused.

`cocolab setup --pin-guest` rewrites the lock to what the mirror serves now: the one step
when Debian has moved on (a security update replaces a version in its suite).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

from cocolab.errors import ConfigError, ImageError, KernelError
from cocolab.kernel.apt import PrivateApt

HEADER = """\
# The guest's Debian packages (guests/packages.txt), pinned: name, version, sha256 of the .deb.
# Written by `cocolab setup --pin-guest`; a change here is a new guest image.
"""


@dataclass(frozen=True)
class Pin:
    name: str
    version: str
    sha256: str

    def line(self) -> str:
        return f"{self.name} {self.version} {self.sha256}"

    def deb(self, debs: Path) -> Path | None:
        """The cached .deb of exactly this version (apt names it NAME_VERSION_ARCH.deb, the
        epoch's colon written %3a), or None."""
        version = self.version.replace(":", "%3a")
        found = sorted(debs.glob(f"{self.name}_{version}_*.deb"))
        return found[0] if found else None


def read_pins(path: Path) -> list[Pin]:
    pins = []
    for number, raw in enumerate(path.read_text().splitlines(), 1):
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        words = line.split()
        if len(words) != 3 or len(words[2]) != 64:
            raise ConfigError(f"{path}:{number}: give NAME VERSION SHA256, not {raw.strip()!r}")
        pins.append(Pin(*words))
    return pins


def sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def pinned_debs(lock: Path, apt: PrivateApt, debs: Path) -> list[Path]:
    """The .debs `lock` pins, fetched into `debs` if need be, each checked against its sha256."""
    pins = read_pins(lock)
    missing = [pin for pin in pins if pin.deb(debs) is None]
    if missing:
        apt.update()
        for pin in missing:
            try:
                apt.download([f"{pin.name}={pin.version}"], debs)
            except KernelError:
                raise ImageError(
                    f"{lock} pins {pin.name} {pin.version}, which this host's mirror does not "
                    f"serve (it has {apt.version(pin.name)}): `cocolab setup --pin-guest` pins "
                    "what it serves now") from None
    out = []
    for pin in pins:
        deb = pin.deb(debs)
        if deb is None:
            raise ImageError(f"{pin.name} {pin.version} was fetched but is not in {debs}")
        got = sha256(deb)
        if got != pin.sha256:
            raise ImageError(f"{deb}: sha256 {got}, but {lock} pins {pin.sha256}; remove the "
                             "file, or re-pin with `cocolab setup --pin-guest`")
        out.append(deb)
    return out


def pin_current(names: list[str], apt: PrivateApt, debs: Path) -> list[Pin]:
    """Pins of what the mirror serves now for `names`, fetched into `debs`."""
    apt.update()
    pins = []
    for name in names:
        pin = Pin(name, apt.version(name), "")
        if pin.deb(debs) is None:
            apt.download([f"{name}={pin.version}"], debs)
        deb = pin.deb(debs)
        if deb is None:
            raise ImageError(f"{name} {pin.version} was fetched but is not in {debs}")
        pins.append(Pin(name, pin.version, sha256(deb)))
    return pins
