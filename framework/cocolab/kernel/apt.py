"""A private apt for fetching Debian kernel packages without root.

The mirror is taken from the host's own apt sources, so no registry host name is ever written
into cocolab: whatever mirror (or proxy) this machine uses, the private apt uses too. Index
files and downloads live in cocolab's cache; the host's apt state is never touched.
"""

from __future__ import annotations

import logging
import os
import pwd
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cocolab.errors import HostError, KernelError
from cocolab.paths import write_atomic

LOG = logging.getLogger(__name__)
DEFAULT_KEYRING = Path("/usr/share/keyrings/debian-archive-keyring.gpg")
_NO_SECURITY = {"sid", "unstable", "experimental", "rc-buggy"}


@dataclass(frozen=True)
class AptSource:
    uri: str
    suites: tuple[str, ...]
    components: tuple[str, ...]
    signed_by: str | None = None


def parse_one_line_sources(text: str) -> list[AptSource]:
    """Parse sources.list 'deb [opts] URI SUITE COMP...' lines (deb-src and comments skipped)."""
    out = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line.startswith("deb "):
            continue
        signed_by = None
        if m := re.match(r"deb\s+\[([^\]]*)\]\s+(.*)$", line):
            opts, rest = m.group(1), m.group(2)
            for opt in opts.split():
                if opt.startswith("signed-by="):
                    signed_by = opt.split("=", 1)[1]
        else:
            rest = line[4:]
        fields = rest.split()
        if len(fields) >= 3:
            out.append(AptSource(fields[0], (fields[1],), tuple(fields[2:]), signed_by))
    return out


def parse_deb822_sources(text: str) -> list[AptSource]:
    """Parse a deb822 .sources file; entries with Enabled: no or no 'deb' type are skipped."""
    out = []
    for stanza in re.split(r"\n\s*\n", text):
        fields: dict[str, str] = {}
        key = None
        for raw in stanza.splitlines():
            if raw.startswith("#"):
                continue
            if raw[:1].isspace() and key:
                fields[key] += " " + raw.strip()
            elif ":" in raw:
                key, value = raw.split(":", 1)
                key = key.strip().lower()
                fields[key] = value.strip()
        if "deb" not in fields.get("types", "").split():
            continue
        if fields.get("enabled", "yes").lower() == "no":
            continue
        for uri in fields.get("uris", "").split():
            out.append(AptSource(
                uri,
                tuple(fields.get("suites", "").split()),
                tuple(fields.get("components", "").split()),
                fields.get("signed-by"),
            ))
    return out


def host_sources(etc: Path = Path("/etc/apt")) -> list[AptSource]:
    """All enabled 'deb' sources of the host, in apt's reading order."""
    sources: list[AptSource] = []
    main_list = etc / "sources.list"
    if main_list.is_file():
        sources += parse_one_line_sources(main_list.read_text())
    parts = etc / "sources.list.d"
    if parts.is_dir():
        for path in sorted(parts.iterdir()):
            if path.suffix == ".list":
                sources += parse_one_line_sources(path.read_text())
            elif path.suffix == ".sources":
                sources += parse_deb822_sources(path.read_text())
    return sources


def private_sources_list(suite: str, sources: list[AptSource]) -> str:
    """The sources.list for fetching `suite` from the host's own Debian mirror(s).

    The archive mirror is the first host source carrying a plain suite (no '-security') with
    component main; the security mirror, the first carrying a '*-security' suite.
    """
    def is_main(src: AptSource) -> bool:
        return "main" in src.components

    archive = next((s for s in sources if is_main(s)
                    and any(not x.endswith("-security") for x in s.suites)), None)
    security = next((s for s in sources if is_main(s)
                     and any(x.endswith("-security") for x in s.suites)), None)
    if archive is None:
        raise HostError(
            "cannot fetch Debian kernels: no Debian archive with component 'main' in the host's "
            "apt sources (/etc/apt/sources.list, /etc/apt/sources.list.d/); add one or pass "
            "--kernel PATH"
        )

    def line(src: AptSource, s: str) -> str:
        key = src.signed_by or (str(DEFAULT_KEYRING) if DEFAULT_KEYRING.exists() else None)
        opts = f"[signed-by={key}] " if key else ""
        return f"deb {opts}{src.uri} {s} main\n"

    text = line(archive, suite)
    if security and "-" not in suite and suite not in _NO_SECURITY:
        text += line(security, f"{suite}-security")
    return text


APT_SANDBOX_USER = "_apt"


def sandbox_user(root: Path, user: str = APT_SANDBOX_USER) -> tuple[str, int] | None:
    """(name, uid) of the user apt's fetchers should run as under root, or None: not root, no
    such user, or a directory on the way to `root` that the user cannot search (apt would
    then fetch as root after a warning; a cache under /root, mode 0700, is the usual case)."""
    if os.geteuid() != 0:
        return None
    try:
        uid = pwd.getpwnam(user).pw_uid
    except KeyError:
        return None
    for directory in (root, *root.parents):
        st = directory.stat()
        if not st.st_mode & 0o001 and st.st_uid != uid:
            return None
    return user, uid


class PrivateApt:
    """apt-get/apt-cache with their own state under `root`, for one suite."""

    def __init__(self, root: Path, suite: str, sources: list[AptSource] | None = None):
        self.root = root
        self.suite = suite
        root.mkdir(parents=True, exist_ok=True)
        # One lock for this apt state, whoever uses it (kernel fetches, the guest image, any
        # xdist worker): apt's own locking is off (Debug::NoLocking), since it wants root.
        self._lock = FileLock(str(root / "apt.lock"))
        text = private_sources_list(suite, sources if sources is not None else host_sources())
        self.sandbox = sandbox_user(root)
        """The user apt's fetchers run as when we are root (_apt), or None to keep them as
        root: when there is no _apt, or it cannot reach `root` (a cache under /root)."""
        with self._lock:
            for sub in ("state/lists/partial", "cache/archives/partial", "etc/parts",
                        "downloads"):
                (root / sub).mkdir(parents=True, exist_ok=True)
            if self.sandbox is not None:  # where the fetchers write, and nothing else
                for sub in ("state/lists/partial", "cache/archives/partial", "downloads"):
                    os.chown(root / sub, self.sandbox[1], -1)
            (root / "state/status").touch()
            listing = root / "etc/sources.list"
            if not listing.exists() or listing.read_text() != text:
                write_atomic(listing, text)

    def options(self) -> list[str]:
        r = self.root
        opts = {
            "Dir::State": r / "state",
            "Dir::State::status": r / "state/status",
            "Dir::Cache": r / "cache",
            "Dir::Etc::SourceList": r / "etc/sources.list",
            "Dir::Etc::SourceParts": r / "etc/parts",
            "Dir::Etc::Preferences": r / "etc/preferences",
            "Dir::Etc::PreferencesParts": r / "etc/parts",
            "Acquire::Languages": "none",
            "Debug::NoLocking": "1",
        }
        if os.geteuid() == 0:
            # As root apt runs its fetchers as _apt; where _apt cannot reach our cache, apt
            # would warn and fetch as root anyway, so say so instead (see sandbox_user).
            opts["APT::Sandbox::User"] = self.sandbox[0] if self.sandbox else "root"
        return [arg for k, v in opts.items() for arg in ("-o", f"{k}={v}")]

    def _run(self, tool: str, *args: str, cwd: Path | None = None) -> str:
        argv = [tool, *self.options(), *args]
        try:
            with self._lock:
                proc = subprocess.run(argv, cwd=cwd, capture_output=True, text=True,
                                      check=False)
        except FileNotFoundError as exc:
            raise HostError(f"{tool} not found: cocolab fetches Debian kernels with apt; "
                            "run it on a Debian/Ubuntu host or pass --kernel PATH") from exc
        if proc.returncode != 0:
            raise KernelError(f"{' '.join([tool, *args])} failed ({proc.returncode}) for suite "
                              f"{self.suite}:\n{proc.stderr.strip()[-2000:]}")
        return proc.stdout

    def update(self) -> None:
        try:
            self._run("apt-get", "-q", "update")
        except KernelError as exc:
            if "does not have a Release file" in str(exc) or " 404 " in str(exc):
                raise KernelError(f"this host's Debian mirror has no suite {self.suite!r}; use "
                                  "a suite it serves (bookworm, trixie, sid, experimental, "
                                  "bookworm-backports, ...)") from None
            raise

    def depends(self, package: str) -> list[str]:
        """First alternative of each Depends of `package`."""
        out = self._run("apt-cache", "depends", "--no-recommends", "--no-suggests",
                        "--no-conflicts", "--no-breaks", "--no-replaces", "--no-enhances",
                        package)
        deps = []
        for line in out.splitlines():
            m = re.match(r"^\s*\|?Depends: (\S+)", line)
            if m and not line.strip().startswith("|"):
                deps.append(m.group(1))
        return deps

    def search(self, pattern: str) -> str:
        """`apt-cache search --names-only PATTERN`: 'name - description' lines."""
        return self._run("apt-cache", "search", "--names-only", pattern)

    def version(self, package: str) -> str:
        out = self._run("apt-cache", "policy", package)
        m = re.search(r"Candidate: (\S+)", out)
        if not m or m.group(1) == "(none)":
            raise KernelError(f"package {package} has no candidate in Debian {self.suite}")
        return m.group(1)

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        """Fetch `packages` into `dest` (through the apt root's downloads/, the one place the
        sandboxed fetchers may write)."""
        dest.mkdir(parents=True, exist_ok=True)
        staging = self.root / "downloads"
        with self._lock:
            for stale in staging.glob("*.deb"):  # from a run that was cut short
                stale.unlink()
            self._run("apt-get", "-q", "download", *packages, cwd=staging)
            for deb in staging.glob("*.deb"):
                os.replace(deb, dest / deb.name)
        return sorted(dest.glob("*.deb"))


def kernel_closure(apt: PrivateApt, package: str, flavour: str = "amd64") -> list[str]:
    """`package` and the kernel packages it pulls in, through metapackages.

    Handles both layouts: 6.x (linux-image-amd64 -> linux-image-VER-amd64, which holds
    everything) and the split 7.x (-> linux-image-VER-amd64 -> linux-binary-*, linux-modules-*,
    linux-base-*). Only dependencies named linux-*-<flavour> are followed, which leaves out
    initramfs-tools, dracut and the unversioned linux-base scripts.
    """
    seen: list[str] = []
    todo = [package]
    while todo:
        name = todo.pop(0)
        if name in seen:
            continue
        seen.append(name)
        todo += [d for d in apt.depends(name)
                 if d.startswith("linux-") and d.endswith("-" + flavour) and d not in seen]
    return seen
