"""Build the default guest initramfs.

The image is two cpio archives concatenated (Linux unpacks each in turn):

  base      /init, busybox with a link per applet, dropbear and the libraries it links
            (nothing else of the packages), the helpers compiled from guests/helpers/*.c into
            one static multi-call binary, the SSH public key. Depends only on guests/ and
            the keys.
  modules   depmod's index of the modules named in guests/modules.txt (and a test's
            marker) with their dependencies, and the files of those the VM's /init loads:
            the rest wait, decompressed, in a per-kernel store on the host, and
            Guest.modprobe copies them in when a test loads them. (busybox's modprobe reads a
            .ko.xz, but only after the kernel refused it: "Invalid ELF header magic: != ELF"
            in dmesg, each load; so they are decompressed.)

Every byte of the image is unpacked by the guest kernel under TCG at each cold boot, and kept
twice in a snapshot (the rootfs and the freed initrd's pages), so the image holds only what
/init, dropbear, the helpers and the tests use.

Each archive is cached under a hash of its inputs; a changed input makes a new archive. Builds
take a file lock, so parallel pytest-xdist workers build once.
"""

from __future__ import annotations

import hashlib
import logging
import lzma
import os
import re
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from filelock import FileLock

from cocolab import progress
from cocolab.errors import HostError, ImageError, present
from cocolab.guest_image.pins import HEADER, Pin, pin_current, pinned_debs, read_pins
from cocolab.kernel import Kernel
from cocolab.kernel.apt import PrivateApt
from cocolab.kernel.modules import module_closure, module_index, module_name
from cocolab.kernel.resolve import ensure_depmod
from cocolab.paths import GUESTS_DIR, cache_dir, check_private, private_file
from cocolab.vm.ssh import GuestKeys

LOG = logging.getLogger(__name__)

GUEST_SUITE = "bookworm"
"""Debian suite of the guest userland: fixed, so a guest is the same whatever the host runs."""

BUILDER_VERSION = "5"  # 5: images are 0600, packages pinned
"""Bump when this file changes what it puts into an image."""

_LIB_DIRS = ("lib/x86_64-linux-gnu", "usr/lib/x86_64-linux-gnu")
_DYNAMIC_LOADER = "lib64/ld-linux-x86-64.so.2"
_DLOPENED = ("libnss_files.so.2",)
"""Libraries glibc loads by name rather than by DT_NEEDED: dropbear's getpwnam reads
/etc/passwd through NSS."""


@dataclass(frozen=True)
class GuestImage:
    initrd: Path
    keys: GuestKeys
    modules: Path | None = None
    """The module store (module_store) this image's modules come from; None for a kernel
    without module support."""
    boot: tuple[str, ...] = ()
    """The modules whose files (with their dependencies') the image carries."""


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
    check_private(private, "the guest SSH key")
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


def write_cpio(staging: Path, out: Path) -> None:
    """A reproducible newc archive of `staging`, every file owned by root."""
    names = sorted(str(p.relative_to(staging)) for p in staging.rglob("*"))
    tmp = out.with_suffix(".tmp")
    with private_file(tmp) as f:  # the base image holds the guest's SSH host key
        proc = subprocess.run(["cpio", "--quiet", "-o", "-H", "newc", "-R", "0:0",
                               "--reproducible"], input="\n".join(names).encode(),
                              cwd=staging, stdout=f, stderr=subprocess.PIPE, check=False)
    if proc.returncode != 0:
        raise ImageError(f"cpio failed: {proc.stderr.decode().strip()}")
    tmp.rename(out)


def _compile_static(src: Path, out: Path, libs: tuple[str, ...] = ()) -> None:
    _cc(["-static", "-s", "-o", str(out), str(src), *libs], src.name)


def _cc(args: list[str], what: str) -> None:
    cc = shutil.which("gcc") or shutil.which("cc")
    if not cc:
        raise HostError("no C compiler: the guest helpers are built with gcc -static; "
                        "apt-get install gcc libc6-dev")
    proc = subprocess.run([cc, "-O2", "-Wall", "-Werror", *args], capture_output=True,
                          text=True, check=False)
    if proc.returncode != 0:
        hint = (" (static libc missing? apt-get install libc6-dev)" if "-lc" in proc.stderr
                else " (static libcrypto missing? apt-get install libssl-dev)"
                if "openssl/" in proc.stderr or "-lcrypto" in proc.stderr else "")
        raise ImageError(f"compiling {what} failed{hint}:\n{proc.stderr.strip()}")


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


HELPERS = "cocolab-helpers"
"""guests/helpers/*.c linked into one static binary: a static glibc is 0.8 MB, once, not once
per helper. Each helper is a link to it named as the helper, and the name picks its main."""


def _compile_helpers(dest: Path) -> None:
    sources = sorted((GUESTS_DIR / "helpers").glob("*.c"))
    with tempfile.TemporaryDirectory() as tmp:
        objects = []
        for src in sources:
            objects.append(str(Path(tmp) / f"{src.stem}.o"))
            _cc(["-c", f"-Dmain={_entry(src)}", "-o", objects[-1], str(src)], src.name)
        dispatch = Path(tmp) / "dispatch.c"
        dispatch.write_text(_dispatcher([src.stem for src in sources]))
        _cc(["-static", "-s", "-o", str(dest / "bin" / HELPERS), str(dispatch), *objects],
            f"{HELPERS} ({', '.join(src.name for src in sources)})")
    for src in sources:
        (dest / "bin" / src.stem).symlink_to(HELPERS)


def _entry(src: Path) -> str:
    return src.stem.replace("-", "_") + "_main"


def _dispatcher(names: list[str]) -> str:
    """The multi-call binary's main: the helper named by argv[0]'s last component."""
    table = "".join(f'    {{"{n}", {_entry(Path(n))}}},\n' for n in names)
    declarations = "".join(f"int {_entry(Path(n))}(int, char **);\n" for n in names)
    return f"""#include <stdio.h>
#include <string.h>
{declarations}
static const struct {{ const char *name; int (*main)(int, char **); }} helpers[] = {{
{table}}};

int main(int argc, char **argv)
{{
    const char *name = strrchr(argv[0], '/') ? strrchr(argv[0], '/') + 1 : argv[0];
    for (size_t i = 0; i < sizeof(helpers) / sizeof(helpers[0]); i++)
        if (strcmp(name, helpers[i].name) == 0)
            return helpers[i].main(argc, argv);
    fprintf(stderr, "{HELPERS}: no helper is called %s\\n", name);
    return 127;
}}
"""


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
        lock = GUESTS_DIR / "packages.lock"
        pinned = {pin.name for pin in read_pins(lock)}
        if pinned != set(packages):
            raise ImageError(f"{lock} pins {', '.join(sorted(pinned)) or 'nothing'}, but "
                             f"guests/packages.txt lists {', '.join(sorted(packages))}: "
                             "`cocolab setup --pin-guest` pins the list")
        root = Path(tmp) / "root"
        for deb in pinned_debs(lock, apt, cache_dir("guest", "debs")):
            subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
        busybox = staging / "bin/busybox"
        shutil.copy2(root / "bin/busybox", busybox)
        _link_applets(busybox)
        shutil.copy2(root / "usr/sbin/dropbear", staging / "bin/dropbear")
        _copy_libraries(root, staging, [staging / "bin/dropbear"])


def pin_guest_packages() -> tuple[Path, list[Pin]]:
    """Pin guests/packages.txt to what the mirror serves now, in guests/packages.lock."""
    apt = PrivateApt(cache_dir("apt", GUEST_SUITE), GUEST_SUITE)
    pins = pin_current(_read_list(GUESTS_DIR / "packages.txt"), apt, cache_dir("guest", "debs"))
    lock = GUESTS_DIR / "packages.lock"
    lock.write_text(HEADER + "".join(pin.line() + "\n" for pin in pins))
    return lock, pins


def _link_applets(busybox: Path) -> None:
    """bin/NAME -> busybox for every applet, as `busybox --install -s /bin` would at boot
    (a fork per applet under TCG: 0.3 s of every cold boot)."""
    applets = subprocess.run([str(busybox), "--list"], capture_output=True, text=True,
                             check=True).stdout.split()
    for name in applets:
        link = busybox.parent / name
        if not link.exists():
            link.symlink_to("busybox")


def _needed(binary: Path) -> list[str]:
    """The DT_NEEDED names of an ELF file (readelf, which binutils brings with gcc)."""
    readelf = shutil.which("readelf")
    if readelf is None:
        raise HostError("no readelf (binutils, which gcc brings): apt-get install binutils")
    out = subprocess.run([readelf, "-d", "--wide", str(binary)], capture_output=True,
                         text=True, check=True).stdout
    return re.findall(r"\(NEEDED\)\s+Shared library: \[([^\]]+)\]", out)


def _copy_libraries(root: Path, staging: Path, binaries: list[Path]) -> None:
    """The shared libraries `binaries` load, transitively, and the dynamic loader, each with
    the symlinks on the way to it, from the unpacked packages under `root`."""
    todo = [name for b in binaries for name in _needed(b)] + list(_DLOPENED)
    done: set[str] = set()
    while todo:
        name = todo.pop()
        if name in done:
            continue
        done.add(name)
        found = [root / d / name for d in _LIB_DIRS if (root / d / name).exists()]
        if not found:
            raise ImageError(f"the guest packages (guests/packages.txt) have no {name}, "
                             f"which {', '.join(b.name for b in binaries)} need")
        todo += _needed(_copy_through_links(root, staging, found[0]))
    _copy_through_links(root, staging, root / _DYNAMIC_LOADER)


def _copy_through_links(root: Path, staging: Path, path: Path) -> Path:
    """Copy `path` (under `root`) to the same place under `staging`, and if it is a symlink
    what it points to, and so on; return the file at the end."""
    while True:
        target = staging / path.relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(path, target, follow_symlinks=False)
        if not path.is_symlink():
            return path
        link = os.readlink(path)
        path = root / link.lstrip("/") if link.startswith("/") else path.parent / link


def _build_base(out: Path) -> None:
    _, pub = ssh_keypair()
    host_private, _ = host_keypair()
    with tempfile.TemporaryDirectory() as tmp:
        s = Path(tmp)
        for d in ("bin", "sbin", "usr/bin", "usr/sbin", "etc", "root/.ssh", "proc", "sys",
                  "dev", "tmp", "run", "lib", "lib64", "var/log", "usr/share/cocolab",
                  "etc/modprobe.d"):
            (s / d).mkdir(parents=True, exist_ok=True)
        _unpack_packages(s, _read_list(GUESTS_DIR / "packages.txt"))
        _compile_helpers(s)
        shutil.copy2(GUESTS_DIR / "init", s / "init")
        os.chmod(s / "init", 0o755)
        shutil.copy2(GUESTS_DIR / "profile", s / "etc/profile")
        shutil.copy2(GUESTS_DIR / "fstab", s / "etc/fstab")
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


def module_store(kernel: Kernel, wanted: list[str]) -> Path:
    """The modules `wanted` and all they depend on, decompressed (stripped and signed where
    the kernel asks), and depmod's index of them: `lib/modules/RELEASE` under the returned
    directory, cached per kernel and set. Images carry the part their /init loads; Guest.
    modprobe copies in the rest."""
    modules = present(kernel.modules, "the kernel's modules")
    key = _hash_files([], BUILDER_VERSION, kernel.identity(), f"strip={kernel.strip_modules}",
                      *kernel.sign_modules, *sorted(wanted))
    store = cache_dir("guest", "modules") / key
    with FileLock(str(store) + ".lock"):
        if store.is_dir():
            return store
        tmp = Path(tempfile.mkdtemp(dir=store.parent, prefix=".tmp-"))
        try:
            dest = tmp / "lib/modules" / kernel.release
            dest.mkdir(parents=True)
            for rel in module_closure(modules, wanted):
                target = dest / _uncompressed(rel)
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
            tmp.rename(store)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return store


def _uncompressed(rel: str) -> str:
    for ext in (".xz", ".zst", ".gz"):
        rel = rel.removesuffix(ext)
    return rel


def carried_modules(store: Path, release: str, boot: tuple[str, ...]) -> list[str]:
    """The module files (relative to lib/modules/RELEASE) an image for `boot` carries: what
    /init loads, with what it depends on."""
    return module_closure(store / "lib/modules" / release, list(boot))


def _build_modules(kernel: Kernel, out: Path, store: Path, boot: tuple[str, ...]) -> None:
    """depmod's index of the whole store, and the module files of `boot` (the others are
    copied in when a test loads them: every byte of the image costs every cold boot)."""
    tree = store / "lib/modules" / kernel.release
    with tempfile.TemporaryDirectory() as tmp:
        dest = Path(tmp) / "lib/modules" / kernel.release
        dest.mkdir(parents=True)
        for index in tree.iterdir():
            if index.is_file():
                shutil.copy2(index, dest / index.name)
        for rel in carried_modules(store, kernel.release, boot):
            (dest / rel).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(tree / rel, dest / rel)
        write_cpio(Path(tmp), out)


def missing_modules(kernel: Kernel, names: tuple[str, ...]) -> list[str]:
    """The names among `names` this kernel neither builds in nor has as a module."""
    if kernel.modules is None:
        return []  # no module support: /init counts every module as built in
    by_name, _ = module_index(kernel.modules)
    builtin_file = kernel.modules / "modules.builtin"
    builtin = {module_name(line) for line in builtin_file.read_text().split()} \
        if builtin_file.exists() else set()
    return [n for n in names if n.replace("-", "_") not in by_name
            and n.replace("-", "_") not in builtin]


def module_store_for(kernel: Kernel, boot: tuple[str, ...]) -> Path | None:
    """The module store of the image for `boot`: guests/modules.txt and `boot` (which holds a
    test's `modules` marker), each with its dependencies. None without module support."""
    if kernel.modules is None:
        return None
    return module_store(kernel, list(dict.fromkeys([*_read_list(GUESTS_DIR / "modules.txt"),
                                                    *boot])))


def build_guest_image(kernel: Kernel, boot: tuple[str, ...] = ()) -> GuestImage:
    """The initramfs for `kernel`, from the cache when its inputs are unchanged. Its module
    index covers guests/modules.txt and `boot` (what /init loads, a test's `modules` marker
    among it), each with what it depends on; of their files it carries those of `boot`."""
    outdir = cache_dir("guest")
    private, pub = ssh_keypair()
    _, host = host_keypair()
    base_inputs = [p for p in GUESTS_DIR.rglob("*") if p.is_file()
                   and p.name != "modules.txt" and p.parent != PROOF_INIT.parent]
    base_hash = _hash_files(base_inputs, BUILDER_VERSION, GUEST_SUITE, pub, host)
    store = module_store_for(kernel, boot)
    # without module support every boot set has the same (module-less) image
    mod_hash = _hash_files([], str(store), *(sorted(boot) if store else ()))
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
            if store is not None:
                if not mods.exists():
                    with progress.step(f"packing the modules for {kernel.release} "
                                       f"(/init loads {', '.join(boot) or 'none'})") as step:
                        _build_modules(kernel, mods, store, boot)
                        step.done = progress.mib(mods.stat().st_size)
                parts.append(mods)
            tmp = initrd.with_suffix(".tmp")
            with private_file(tmp) as f:
                for part in parts:
                    f.write(part.read_bytes())
            tmp.rename(initrd)
    check_private(initrd, "the guest image (it holds the guest's SSH host key)")
    return GuestImage(initrd, GuestKeys(private, host.strip()), store, boot)
