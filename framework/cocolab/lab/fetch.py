"""What the lab takes from the network and unpacks, bounded and checked: a job definition, an
artifact, a modules tarball, and the config built into a kernel image.

Nothing here carries a credential: artifacts and job definitions live in KernelCI's storage,
which serves them to anyone. A redirect keeps to http(s) and drops an Authorization header
when it leaves the origin that was given one (urllib would carry it along).
"""

from __future__ import annotations

import hashlib
import ipaddress
import json
import logging
import lzma
import os
import re
import shutil
import subprocess
import tarfile
import urllib.error
import urllib.parse
import urllib.request
import zlib
from pathlib import Path, PurePosixPath
from typing import IO, Any

from cocolab.errors import CocolabError

LOG = logging.getLogger(__name__)

DOWNLOAD_CAP = 1 << 30
"""The most bytes one artifact may have (--max-download)."""
UNPACKED_CAP = 4 << 30
"""The most bytes a modules tarball may unpack to (--max-unpacked)."""
JSON_CAP = 16 << 20
"""The most bytes of a job definition or an API answer."""
MEMBERS_CAP = 100_000
HTTP_TIMEOUT_S = 60.0


class FetchError(CocolabError):
    """An artifact or definition that could not be had, or was refused: infrastructure."""


def origin(url: str) -> tuple[str, str, int | None]:
    """Where a URL goes, as a token's scope is judged: scheme, host (lower case), port."""
    parts = urllib.parse.urlsplit(url)
    return parts.scheme, (parts.hostname or "").lower(), parts.port


def loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


class _Redirects(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: urllib.request.Request, fp: IO[bytes], code: int,
                         msg: str, headers: Any, newurl: str) -> urllib.request.Request | None:
        if urllib.parse.urlsplit(newurl).scheme not in ("http", "https"):
            raise urllib.error.HTTPError(newurl, code, f"a redirect to {newurl[:200]!r}",
                                         headers, fp)
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is not None and origin(newurl) != origin(req.full_url):
            new.remove_header("Authorization")
        return new


OPENER = urllib.request.build_opener(_Redirects())
"""urllib, but a redirect never carries a token to another origin, nor leaves http(s)."""


def _open(url: str, what: str) -> Any:
    try:
        return OPENER.open(urllib.request.Request(url), timeout=HTTP_TIMEOUT_S)
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"{what} {url[:200]}: {getattr(exc, 'reason', exc)}") from None


def json_document(url: str, cap: int = JSON_CAP) -> object:
    with _open(url, "the job definition") as resp:
        data = resp.read(cap + 1)
    if len(data) > cap:
        raise FetchError(f"the job definition {url[:200]} is over {cap} bytes")
    try:
        return json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise FetchError(f"the job definition {url[:200]} is not JSON: {exc}") from None


def download(url: str, dest: Path, cap: int, what: str) -> str:
    """`url` into `dest` (0600), at most `cap` bytes; its sha256."""
    digest, size = hashlib.sha256(), 0
    fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    try:
        with _open(url, what) as resp, os.fdopen(fd, "wb") as out:
            length = resp.headers.get("Content-Length")
            if length and length.isdigit() and int(length) > cap:
                raise FetchError(f"{what} {url[:200]} is {length} bytes, over the "
                                 f"--max-download of {cap}")
            while chunk := resp.read(1 << 20):
                size += len(chunk)
                if size > cap:
                    raise FetchError(f"{what} {url[:200]} is over the --max-download of "
                                     f"{cap} bytes")
                digest.update(chunk)
                out.write(chunk)
    except (urllib.error.URLError, OSError) as exc:
        raise FetchError(f"downloading {what} {url[:200]}: "
                         f"{getattr(exc, 'reason', exc)}") from None
    return digest.hexdigest()


def unpack_modules(archive: Path, dest: Path, cap: int) -> Path:
    """A modules tarball (lib/modules/RELEASE/...) unpacked into `dest`, the directory
    --modules takes: files and directories only, owned by the lab, without setuid, setgid or
    sticky bits, at most `cap` bytes in all."""
    try:
        with tarfile.open(archive) as tar:
            members, links = _files_and_dirs(tar, archive.name, cap)
            tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError, zlib.error, lzma.LZMAError) as exc:
        raise FetchError(f"the modules artifact {archive.name}: {exc}") from None
    if links:
        LOG.info("modules artifact %s: %d link(s) left out (%s): modprobe needs none",
                 archive.name, len(links), ", ".join(links[:3]))
    if not any((dest / "lib/modules").glob("*/modules.dep")):
        raise FetchError(f"the modules artifact {archive.name} holds no "
                         "lib/modules/RELEASE/modules.dep")
    return dest


def _files_and_dirs(tar: tarfile.TarFile, name: str, cap: int
                    ) -> tuple[list[tarfile.TarInfo], list[str]]:
    """The archive's files and directories, made the lab's own, and the names of its links,
    left out: `make modules_install` links `build` to the tree it built in, which is not
    here, and with no links made no name can be led outside through one. A name that is
    absolute or climbs (`..`), a device or fifo, too many members or bytes refuse the
    archive. Checked here because tarfile's "data" filter, which does much of this, came in
    Python 3.11.4, after Debian 12's 3.11.2."""
    members, links, total = [], [], 0
    uid, gid = os.getuid(), os.getgid()
    for count, m in enumerate(tar, start=1):
        if count > MEMBERS_CAP:
            raise FetchError(f"the modules artifact {name}: over {MEMBERS_CAP} members")
        path = PurePosixPath(m.name)
        if path.is_absolute() or ".." in path.parts:
            raise FetchError(f"the modules artifact {name}: member {m.name[:200]!r} would land "
                             "outside the job's directory")
        if m.issym() or m.islnk():
            links.append(m.name)
            continue
        if not (m.isfile() or m.isdir()):
            raise FetchError(f"the modules artifact {name}: member {m.name[:200]!r} is not a "
                             "file, directory or link")
        total += m.size
        if total > cap:
            raise FetchError(f"the modules artifact {name} unpacks to over the --max-unpacked "
                             f"of {cap} bytes")
        m.mode = (m.mode & 0o755) | (0o700 if m.isdir() else 0o600)  # no set[ug]id, sticky
        m.uid, m.gid, m.uname, m.gname = uid, gid, "", ""
        members.append(m)
    return members, links


_IKCFG = re.compile(rb"IKCFG_ST(.*?)IKCFG_ED", re.DOTALL)
_PAYLOADS = ((b"\x1f\x8b\x08", "gzip"), (b"\xfd7zXZ\x00", "xz"), (b"\x28\xb5\x2f\xfd", "zstd"))
_TRIES = 8


def ikconfig(image: Path) -> bytes | None:
    """The .config built into a kernel image (CONFIG_IKCONFIG), found as the kernel's
    scripts/extract-ikconfig finds it: the IKCFG_ST..IKCFG_ED gzip in the image, or in its
    compressed payload (gzip, xz, zstd). None when there is none."""
    try:
        data = image.read_bytes()
    except OSError:
        return None
    found = _config_in(data)
    if found is not None:
        return found
    for magic, kind in _PAYLOADS:
        start = data.find(magic)
        for _ in range(_TRIES):
            if start < 0:
                break
            inner = _decompress(data[start:], kind)
            if inner and (found := _config_in(inner)) is not None:
                return found
            start = data.find(magic, start + 1)
    return None


def _config_in(data: bytes) -> bytes | None:
    match = _IKCFG.search(data)
    if match is None:
        return None
    try:
        text = zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(match.group(1))
    except zlib.error:
        return None
    return text if b"CONFIG_" in text else None


def _decompress(data: bytes, kind: str) -> bytes | None:
    try:
        if kind == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS).decompress(data, 512 << 20)
        if kind == "xz":
            return lzma.LZMADecompressor().decompress(data, 512 << 20)
    except (zlib.error, lzma.LZMAError, EOFError):
        return None
    zstd = shutil.which("zstd")
    if zstd is None:
        return None
    proc = subprocess.run([zstd, "-dc", "-q"], input=data, capture_output=True, check=False,
                          timeout=120)
    return proc.stdout or None

