"""Build the default guest initramfs.

The image is two cpio archives concatenated (Linux unpacks each in turn):

  base      /init, busybox, dropbear and its libraries, the static helpers compiled from
            guests/helpers/*.c, the SSH public key. Depends only on guests/ and the keys.
  modules   the kernel modules named in guests/modules.txt with their dependencies,
            decompressed (busybox modprobe cannot read .ko.xz) and depmod'ed. Per kernel.

Each archive is cached under a hash of its inputs; a changed input makes a new archive. Builds
take a file lock, so parallel pytest-xdist workers build once.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cocolab import progress
from cocolab.errors import HostError, ImageError, present
from cocolab.kernel import Kernel
from cocolab.kernel.apt import PrivateApt
from cocolab.kernel.resolve import ensure_depmod
from cocolab.paths import GUESTS_DIR, cache_dir

LOG = logging.getLogger(__name__)

GUEST_SUITE = "bookworm"
"""Debian suite of the guest userland: fixed, so a guest is the same whatever the host runs."""

BUILDER_VERSION = "1"
"""Bump when this file changes what it puts into an image."""

_KEEP_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu", "lib64")


@dataclass(frozen=True)
class GuestKeys:
    client: Path
    """Private key (OpenSSH format) whose public half the guest authorizes for root."""
    host: str
    """The guest's host key, as an OpenSSH public-key line: the only key SSH accepts."""


@dataclass(frozen=True)
class GuestImage:
    initrd: Path
    keys: GuestKeys


def _read_list(path: Path) -> list[str]:
    return [line.split("#", 1)[0].strip() for line in path.read_text().splitlines()
            if line.split("#", 1)[0].strip()]


def read_modules_list() -> set[str]:
    """The module names of guests/modules.txt (in every default image), '-' as '_'."""
    return {m.replace("-", "_") for m in _read_list(GUESTS_DIR / "modules.txt")}


def _hash_files(paths: list[Path], *extra: str) -> str:
    h = hashlib.sha256()
    for part in extra:
        h.update(part.encode() + b"\0")
    for path in sorted(paths):
        h.update(str(path.relative_to(GUESTS_DIR)).encode() + b"\0")
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def ssh_keypair() -> tuple[Path, str]:
    """The cache's client keypair (the guest authorizes its public half for root)."""
    return _keypair("id_ed25519")


def host_keypair() -> tuple[Path, str]:
    """The guest's own host key, made on the host and baked into the image, so that the host
    pins it (an SSH server on the forwarded port that is not our guest is refused) and no
    guest spends boot time making one."""
    return _keypair("guest_host_ed25519")


def _keypair(name: str) -> tuple[Path, str]:
    """An Ed25519 keypair in the cache, made on first use (no key ever lives in the repo): the
    private key's path (OpenSSH format, 0600) and the public key's OpenSSH line."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    keydir = cache_dir("keys")
    private = keydir / name
    with FileLock(str(private) + ".lock"):
        if not private.exists():
            key = Ed25519PrivateKey.generate()
            data = key.private_bytes(serialization.Encoding.PEM,
                                     serialization.PrivateFormat.OpenSSH,
                                     serialization.NoEncryption())
            fd = os.open(private, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(fd, "wb") as f:
                f.write(data)
            pub = key.public_key().public_bytes(serialization.Encoding.OpenSSH,
                                                serialization.PublicFormat.OpenSSH)
            (keydir / f"{name}.pub").write_bytes(pub + b" cocolab\n")
    _check_private(private)
    return private, (keydir / f"{name}.pub").read_text()


def dropbear_host_key(private: Path) -> bytes:
    """An OpenSSH-format Ed25519 private key in dropbear's own key-file format:
    string "ssh-ed25519", uint32 64, the 32-byte seed, the 32-byte public key (dropbear's
    ed25519.c, buf_put_ed25519_priv_key)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    key = serialization.load_ssh_private_key(private.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ImageError(f"{private}: not an Ed25519 key; remove it and cocolab makes a new one")
    raw = serialization.Encoding.Raw
    seed = key.private_bytes(raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    public = key.public_key().public_bytes(raw, serialization.PublicFormat.Raw)
    name = b"ssh-ed25519"
    return struct.pack(">I", len(name)) + name + struct.pack(">I", 64) + seed + public


def _check_private(path: Path) -> None:
    """A cached key someone else owns, or others can read, is not trusted (nor fixed)."""
    st = path.stat()
    if st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise HostError(f"{path}: the guest SSH key must belong to you with mode 0600 (it is "
                        f"uid {st.st_uid}, mode {st.st_mode & 0o777:04o}); remove it and "
                        "cocolab makes a new one")


def write_cpio(staging: Path, out: Path) -> None:
    """A reproducible newc archive of `staging`, every file owned by root."""
    names = sorted(str(p.relative_to(staging)) for p in staging.rglob("*"))
    tmp = out.with_suffix(".tmp")
    with tmp.open("wb") as f:
        proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0",
                               "--reproducible"], input="\n".join(names).encode(),
                              cwd=staging, stdout=f, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise ImageError(f"cpio failed: {proc.stderr.decode().strip()}")
    tmp.rename(out)


def _compile_static(src: Path, out: Path, libs: tuple[str, ...] = ()) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise HostError("no C compiler: the guest helpers are built with gcc -static; "
                        "apt-get install gcc libc6-dev")
    proc = subprocess.run([cc, "-static", "-O2", "-Wall", "-Werror", "-s", "-o", str(out),
                           str(src), *libs], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        hint = (" (static libc missing? apt-get install libc6-dev)" if "-lc" in proc.stderr
                else " (static libcrypto missing? apt-get install libssl-dev)"
                if "openssl/" in proc.stderr or "-lcrypto" in proc.stderr else "")
        raise ImageError(f"compiling {src.name} failed{hint}:\n{proc.stderr.strip()}")


CMA_REQUESTER = GUESTS_DIR / "cma" / "cocolab-doe.c"


def cma_requester() -> Path:
    """guests/cma/cocolab-doe, built once per source: the in-guest SPDM requester. Static
    with libcrypto it is 4 MiB, so it stays out of the initramfs; a test copies it into the
    guest that needs it (VM.put)."""
    out = cache_dir("helpers") / f"cocolab-doe-{_hash_files([CMA_REQUESTER])}"
    with FileLock(str(out) + ".lock"):
        if not out.exists():
            tmp = out.with_suffix(".tmp")
            with progress.step("compiling the CMA requester (guests/cma/cocolab-doe.c)"):
                _compile_static(CMA_REQUESTER, tmp, ("-lcrypto",))
            tmp.rename(out)
    return out


def _compile_helpers(dest: Path) -> list[Path]:
    built = []
    for src in sorted((GUESTS_DIR / "helpers").glob("*.c")):
        _compile_static(src, dest / "bin" / src.stem)
        built.append(dest / "bin" / src.stem)
    return built


PROOF_INIT = GUESTS_DIR / "proof" / "init.c"


def build_proof_initrd() -> Path:
    """The accelerator proof's initramfs: guests/proof/init.c as /init, and an empty /dev."""
    out = cache_dir("guest") / f"proof-{_hash_files([PROOF_INIT], BUILDER_VERSION)}.cpio"
    with FileLock(str(out) + ".lock"):
        if not out.exists():
            with tempfile.TemporaryDirectory() as tmp:
                staging = Path(tmp)
                (staging / "dev").mkdir()
                _compile_static(PROOF_INIT, staging / "init")
                write_cpio(staging, out)
    return out


def _unpack_packages(staging: Path, packages: list[str]) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        apt = PrivateApt(cache_dir("apt", GUEST_SUITE), GUEST_SUITE)
        debs = cache_dir("guest", "debs")
        if not all(any(debs.glob(f"{p}_*.deb")) for p in packages):
            apt.update()
            apt.download(packages, debs)
        root = Path(tmp) / "root"
        for deb in sorted(debs.glob("*.deb")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        shutil.copy2(root / "bin/busybox", staging / "bin/busybox")
        for tool in ("usr/sbin/dropbear", "usr/bin/dbclient"):
            if (root / tool).exists():
                shutil.copy2(root / tool, staging / "bin" / Path(tool).name)
        for libdir in _KEEP_LIB_DIRS:
            src = root / libdir
            if not src.is_dir():
                continue
            for lib in src.iterdir():
                if ".so" in lib.name and not lib.is_dir():
                    target = staging / libdir / lib.name
                    target.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copy2(lib, target, follow_symlinks=False)


def _build_base(out: Path) -> None:
    _, pub = ssh_keypair()
    host_private, _ = host_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root/.ssh", "proc", "sys",
                  "dev", "tmp", "run", "lib", "lib64", "var/log", "usr/share/cocolab"):
            (s / d).mkdir(parents=True, exist_ok=True)
        _unpack_packages(s, _read_list(GUESTS_DIR / "packages.txt"))
        _compile_helpers(s)
        shutil.copy2(GUESTS_DIR / "init", s / "init")
        os.chmod(s / "init", 0o755)
        shutil.copy2(GUESTS_DIR / "profile", s / "etc/profile")
        (s / "etc/passwd").write_text("root:x:0:0:root:/root:/bin/sh\n")
        (s / "etc/shadow").write_text("root:*:19000:0:99999:7:::\n")
        (s / "etc/group").write_text("root:x:0:\n")
        (s / "etc/shells").write_text("/bin/sh\n")
        (s / "root/.ssh/authorized_keys").write_text(pub)
        os.chmod(s / "root/.ssh", 0o700)
        (s / "etc/dropbear").mkdir()
        hostkey = s / "etc/dropbear/dropbear_ed25519_host_key"
        hostkey.write_bytes(dropbear_host_key(host_private))
        os.chmod(hostkey, 0o600)
        (s / "usr/sbin/dropbear").symlink_to("/bin/dropbear")
        write_cpio(s, out)


def _module_index(modules: Path) -> tuple[dict[str, str], dict[str, list[str]]]:
    """(module name -> path, path -> dependency paths) from modules.dep."""
    by_name: dict[str, str] = {}
    deps: dict[str, list[str]] = {}
    for line in (modules / "modules.dep").read_text().splitlines():
        path, _, rest = line.partition(":")
        deps[path] = rest.split()
        by_name[_module_name(path)] = path
    return by_name, deps


def _module_name(path: str) -> str:
    name = Path(path).name
    for ext in (".xz", ".zst", ".gz"):
        name = name.removesuffix(ext)
    return name.removesuffix(".ko").replace("-", "_")


def module_closure(modules: Path, wanted: list[str]) -> list[str]:
    """Paths (relative to `modules`) of `wanted` and everything they depend on."""
    by_name, deps = _module_index(modules)
    out: list[str] = []
    todo = [by_name[w.replace("-", "_")] for w in wanted if w.replace("-", "_") in by_name]
    while todo:
        path = todo.pop()
        if path not in out:
            out.append(path)
            todo += deps.get(path, [])
    return sorted(out)


def _decompress(src: Path, dest: Path) -> None:
    if src.suffix == ".xz":
        dest.write_bytes(lzma.decompress(src.read_bytes()))
    elif src.suffix == ".zst":
        subprocess.run(["zstd", "-q", "-d", "-f", str(src), "-o", str(dest)], check=True)
    elif src.suffix == ".gz":
        import gzip
        dest.write_bytes(gzip.decompress(src.read_bytes()))
    else:
        shutil.copy2(src, dest)


def _strip_debug(module: Path) -> None:
    """What INSTALL_MOD_STRIP=1 does to a module: its debug sections dropped."""
    strip = shutil.which("strip")
    if strip is None:
        raise HostError("no strip (binutils, which gcc brings): apt-get install binutils, or "
                        "pass --module-debug to keep the modules as built")
    proc = subprocess.run([strip, "--strip-debug", str(module)], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"strip --strip-debug {module.name} failed: {proc.stderr.strip()}")


def _sign(signer: tuple[str, ...], module: Path) -> None:
    proc = subprocess.run([*signer, str(module)], capture_output=True, text=True, check=False)
    if proc.returncode != 0:
        raise ImageError(f"signing {module.name} with {signer[0]} failed: "
                         f"{proc.stderr.strip()}")


def _build_modules(kernel: Kernel, out: Path, wanted: list[str]) -> None:
    modules = present(kernel.modules, "the kernel's modules")
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp)
        dest = s / "lib/modules" / kernel.release
        dest.mkdir(parents=True)
        for rel in module_closure(modules, wanted):
            target = dest / rel
            for ext in (".xz", ".zst", ".gz"):
                target = target.with_name(target.name.removesuffix(ext))
            target.parent.mkdir(parents=True, exist_ok=True)
            _decompress(modules / rel, target)
            if kernel.strip_modules:
                _strip_debug(target)
            if kernel.sign_modules:  # after stripping, which would drop the signature
                _sign(kernel.sign_modules, target)
        for extra in ("modules.builtin", "modules.builtin.modinfo", "modules.order"):
            if (modules / extra).exists():
                shutil.copy2(modules / extra, dest / extra)
        ensure_depmod(dest, kernel.release)
        write_cpio(s, out)


def missing_modules(kernel: Kernel, names: tuple[str, ...]) -> list[str]:
    """The names among `names` this kernel neither builds in nor has as a module."""
    if kernel.modules is None:
        return []  # no module support: /init counts every module as built in
    by_name, _ = _module_index(kernel.modules)
    builtin_file = kernel.modules / "modules.builtin"
    builtin = {_module_name(line) for line in builtin_file.read_text().split()} \
        if builtin_file.exists() else set()
    return [n for n in names if n.replace("-", "_") not in by_name
            and n.replace("-", "_") not in builtin]


def build_guest_image(kernel: Kernel, extra_modules: tuple[str, ...] = ()) -> GuestImage:
    """The initramfs for `kernel`, from the cache when its inputs are unchanged; with the
    modules guests/modules.txt names, plus `extra_modules` (a test's `modules` marker), each
    with what it depends on."""
    outdir = cache_dir("guest")
    private, pub = ssh_keypair()
    _, host = host_keypair()
    base_inputs = [p for p in GUESTS_DIR.rglob("*") if p.is_file()
                   and p.name != "modules.txt" and p.parent != PROOF_INIT.parent]
    base_hash = _hash_files(base_inputs, BUILDER_VERSION, GUEST_SUITE, pub, host)
    wanted = list(dict.fromkeys([*_read_list(GUESTS_DIR / "modules.txt"), *extra_modules]))
    mod_hash = _hash_files([], BUILDER_VERSION, kernel.identity(),
                           f"strip={kernel.strip_modules}", *kernel.sign_modules, *wanted)
    base = outdir / f"base-{base_hash}.cpio"
    mods = outdir / f"modules-{mod_hash}.cpio"
    initrd = outdir / f"initrd-{base_hash}-{mod_hash}.cpio"
    with FileLock(str(outdir / "build.lock")):
        if not initrd.exists():
            if not base.exists():
                with progress.step("building the guest image (busybox, dropbear, helpers)"
                                   ) as step:
                    _build_base(base)
                    step.done = progress.mib(base.stat().st_size)
            parts = [base]
            if kernel.modules is not None:
                if not mods.exists():
                    with progress.step(f"packing {len(wanted)} modules and their dependencies "
                                       f"for {kernel.release}") as step:
                        _build_modules(kernel, mods, wanted)
                        step.done = progress.mib(mods.stat().st_size)
                parts.append(mods)
            tmp = initrd.with_suffix(".tmp")
            with tmp.open("wb") as f:
                for part in parts:
                    f.write(part.read_bytes())
            tmp.rename(initrd)
    return GuestImage(initrd, GuestKeys(private, host.strip()))
