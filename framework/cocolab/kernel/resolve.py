"""Turn a KernelSpec into a Kernel: an image, its .config, its release, and its modules."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import mmap
import os
import shutil
import struct
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from cocolab import progress
from cocolab.errors import ConfigError, KernelError
from cocolab.kernel import inuse
from cocolab.kernel.apt import PrivateApt, kernel_closure
from cocolab.kernel.kconfig import Kconfig
from cocolab.kernel.spec import BuildTreeSpec, DebianSpec, ImageSpec, KernelSpec, SourceSpec
from cocolab.paths import cache_dir, write_atomic

LOG = logging.getLogger(__name__)


@dataclass(frozen=True)
class Kernel:
    """A kernel ready to boot.

    `modules` is the directory lib/modules/<release> (or None for a kernel without modules);
    it carries a modules.dep.
    """

    spec: str
    image: Path
    config_path: Path
    release: str
    modules: Path | None
    strip_modules: bool = False
    """Strip debug info from the modules the guest carries (a build tree's, unless
    --module-debug)."""
    sign_modules: tuple[str, ...] = ()
    """The argv that signs one module (the module's path follows), as `make modules_install`
    does under CONFIG_MODULE_SIG_ALL: a build tree's modules are unsigned until then, and a
    kernel under lockdown refuses an unsigned module (EPERM)."""
    patches: tuple[str, ...] = ()
    """The patches `cocolab build` applied, in order, each "SHA256 PATH" (its stamp says)."""

    @property
    def kconfig(self) -> Kconfig:
        return Kconfig.from_file(self.config_path)

    def identity(self) -> str:
        """A short hash that changes when the image or any of its modules change: a
        module-only rebuild (same modules.dep, new .ko) is a new identity, so the guest
        carries the new module."""
        st = self.image.stat()
        h = hashlib.sha256(f"{self.image}:{st.st_size}:{st.st_mtime_ns}:{self.release}".encode())
        if self.modules:
            dep = self.modules / "modules.dep"
            if dep.exists():
                text = dep.read_text()
                h.update(text.encode())
                h.update(_stat_key(self.modules, [line.partition(":")[0]
                                                  for line in text.splitlines()]))
        return h.hexdigest()[:16]


def _stat_key(root: Path, names: list[str]) -> bytes:
    """Size and mtime of each file (a missing one counts too): cheap, and changed by any
    rebuild that rewrites it."""
    parts = []
    for name in names:
        try:
            st = (root / name).stat()
            parts.append(f"{name}:{st.st_size}:{st.st_mtime_ns}")
        except OSError:
            parts.append(f"{name}:missing")
    return "\n".join(parts).encode()


def bzimage_release(image: Path) -> str:
    """The release string embedded in a bzImage's setup header (x86 boot protocol >= 2.00).

    The header's kernel_version field (offset 0x20e) points at a NUL-terminated string,
    relative to 0x200, that begins with the release ('6.12.57+deb13-amd64 (debian-kernel@...)').
    """
    with image.open("rb") as f:
        head = f.read(0x10000)
    if head[0x202:0x206] != b"HdrS":
        raise KernelError(f"{image} is not an x86 bzImage (no HdrS boot header)")
    (ptr,) = struct.unpack_from("<H", head, 0x20E)
    start = ptr + 0x200
    end = head.find(b"\0", start)
    text = head[start:end].decode(errors="replace")
    if not text:
        raise KernelError(f"{image}: empty kernel_version in the boot header")
    return text.split()[0]


ELF_MAGIC = b"\x7fELF"
PT_NOTE = 4
XEN_ELFNOTE_PHYS32_ENTRY = 18  # include/xen/interface/elfnote.h: the PVH entry point


def _elf_notes(data: bytes | mmap.mmap) -> list[tuple[bytes, int]]:
    """(name, type) of every note in an ELF64 little-endian file's PT_NOTE segments."""
    if data[4] != 2 or data[5] != 1:
        raise KernelError("not a 64-bit little-endian ELF file")
    phoff, = struct.unpack_from("<Q", data, 0x20)
    phentsize, phnum = struct.unpack_from("<HH", data, 0x36)
    notes = []
    for i in range(phnum):
        p_type, _, p_offset, _, _, p_filesz = struct.unpack_from("<IIQQQQ", data,
                                                                 phoff + i * phentsize)
        if p_type != PT_NOTE:
            continue
        at, end = p_offset, p_offset + p_filesz
        while at + 12 <= end:
            namesz, descsz, n_type = struct.unpack_from("<III", data, at)
            name = data[at + 12:at + 12 + namesz].rstrip(b"\0")
            notes.append((name, n_type))
            at += 12 + (namesz + 3) // 4 * 4 + (descsz + 3) // 4 * 4
    return notes


def vmlinux_release(image: Path) -> str:
    """The release of an ELF vmlinux (from its linux_banner, "Linux version <release> ..."),
    which QEMU boots only through PVH: the file must carry the PVH entry note, which
    CONFIG_PVH=y puts in (arch/x86/platform/pvh/head.S)."""
    with image.open("rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if data[:4] != ELF_MAGIC:
            raise KernelError(f"{image} is not an ELF file")
        try:
            notes = _elf_notes(data)
        except (struct.error, IndexError):
            raise KernelError(f"{image}: its ELF program headers are cut short") from None
        if (b"Xen", XEN_ELFNOTE_PHYS32_ENTRY) not in notes:
            raise KernelError(f"{image} is an ELF vmlinux without a PVH entry note, and QEMU "
                              "boots an ELF kernel only through PVH: build it with "
                              "CONFIG_PVH=y, or give arch/x86/boot/bzImage")
        at = data.find(b"Linux version ")
        if at < 0:
            raise KernelError(f"{image}: an ELF file with no 'Linux version' banner; not a "
                              "kernel?")
        words = data[at + 14:at + 14 + 200].split(maxsplit=1)
    return words[0].decode(errors="replace")


def image_release(image: Path) -> str:
    """The release of a kernel image QEMU can boot: an x86 bzImage or an ELF vmlinux (PVH)."""
    with image.open("rb") as f:
        magic = f.read(4)
    return vmlinux_release(image) if magic == ELF_MAGIC else bzimage_release(image)


def ensure_depmod(modules: Path, release: str) -> None:
    """Run depmod on a tree lacking modules.dep (Debian packages ship none)."""
    if (modules / "modules.dep").exists():
        return
    base = modules.parent.parent  # .../lib/modules/<release> -> ...
    if modules.parent.parent.name == "lib" and modules.parent.parent.parent.name == "usr":
        # depmod -b reads <base>/lib/modules; give the merged-/usr layout a lib/ link.
        root = modules.parents[3]
        if not (root / "lib").exists():
            (root / "lib").symlink_to("usr/lib")
        base = root
    else:
        base = modules.parents[2]
    depmod = shutil.which("depmod") or "/sbin/depmod"
    proc = subprocess.run([depmod, "-b", str(base), release], capture_output=True, text=True,
                          check=False)
    if proc.returncode != 0:
        raise KernelError(f"depmod -b {base} {release} failed: {proc.stderr.strip()} "
                          "(install the kmod package)")


def _find_modules(root: Path, release: str) -> Path | None:
    for cand in (root / "lib/modules" / release, root / "usr/lib/modules" / release,
                 root / release, root):
        if (cand / "kernel").is_dir() or (cand / "modules.dep").is_file():
            return cand
    return None


def check_image_spec(spec: ImageSpec, source: str) -> None:
    """The files a bzImage spec names are what they claim to be (read, never run): a bzImage,
    a kernel .config, a modules directory. One ConfigError naming the option at fault."""
    try:
        image_release(spec.image)
    except (KernelError, OSError) as exc:
        raise ConfigError(f"{source}: {exc}; give an x86 bzImage (arch/x86/boot/bzImage, "
                          "/boot/vmlinuz-*), an ELF vmlinux built with CONFIG_PVH=y, or a "
                          "build tree") from None
    if spec.config is not None:
        if not spec.config.is_file():
            raise ConfigError(f"--kernel-config {spec.config}: no such file; give the "
                              "build's .config or /boot/config-<release>")
        try:
            Kconfig.from_file(spec.config)
        except KernelError:
            raise ConfigError(f"--kernel-config {spec.config}: not a kernel .config (no CONFIG_ "
                              "lines); give the build's .config or /boot/config-<release>"
                              ) from None
    if spec.modules is not None and not spec.modules.is_dir():
        raise ConfigError(f"--modules {spec.modules}: not a directory; give the "
                          "INSTALL_MOD_PATH of `make modules_install` (it holds lib/modules/"
                          "<release>)")


def resolve_image(spec: ImageSpec) -> Kernel:
    release = image_release(spec.image)
    beside = spec.image.parent
    config = spec.config
    if config is None:
        for name in (f"config-{release}", "config", ".config"):
            if (beside / name).is_file():
                config = beside / name
                break
        else:
            raise KernelError(
                f"no kernel config for {spec.image}: looked for config-{release}, config and "
                f".config beside it; pass --kernel-config FILE (cocolab gates tests on it)")
    Kconfig.from_file(config)  # a file that is no kernel config is refused now, not skipped on
    modules = None
    if spec.modules:
        modules = _find_modules(spec.modules, release)
        if modules is None:
            raise KernelError(f"--modules {spec.modules}: no lib/modules/{release} in it")
    else:
        for cand in (beside / "lib/modules" / release, beside / "modules" / release,
                     beside / "modules"):
            if cand.is_dir():
                modules = _find_modules(cand, release)
                break
    if modules:
        ensure_depmod(modules, release)
    return Kernel(str(spec), spec.image, config, release, modules)


def resolve_build_tree(spec: BuildTreeSpec) -> Kernel:
    tree = spec.tree
    image = tree / "arch/x86/boot/bzImage"
    config = tree / ".config"
    if not config.is_file():
        raise KernelError(f"{tree} has a bzImage but no .config")
    release_file = tree / "include/config/kernel.release"
    release = (release_file.read_text().strip() if release_file.exists()
               else bzimage_release(image))
    if (tree / "cocolab-build.json").exists():
        inuse.hold(tree)  # a `cocolab build` output: no build rewrites it while we boot it
    kconfig = Kconfig.from_file(config)
    modules = None
    if kconfig.builtin("MODULES") and (tree / "modules.order").exists():
        modules = _stage_tree_modules(tree, release)
    return Kernel(str(spec), image, config, release, modules,
                  strip_modules=not spec.module_debug,
                  sign_modules=_tree_signer(tree, kconfig) if modules else (),
                  patches=built_patches(tree))


def built_patches(out: Path) -> tuple[str, ...]:
    """What `cocolab build` applied to the kernel in O= directory `out` ("SHA256 PATH" each,
    in order), from its stamp; none for a tree cocolab did not build."""
    try:
        stamp = json.loads((out / "cocolab-build.json").read_text())
    except (OSError, ValueError):
        return ()
    found = stamp.get("patch_digests") if isinstance(stamp, dict) else None
    return tuple(str(p) for p in found) if isinstance(found, list) else ()


def _tree_signer(tree: Path, kconfig: Kconfig) -> tuple[str, ...]:
    """scripts/sign-file with the tree's hash, key and certificate, when the tree signs its
    modules at install time (CONFIG_MODULE_SIG_ALL); () when it does not."""
    if not kconfig.builtin("MODULE_SIG_ALL"):
        return ()
    key = (kconfig.get("MODULE_SIG_KEY") or "certs/signing_key.pem").strip('"')
    hash_algo = (kconfig.get("MODULE_SIG_HASH") or "sha512").strip('"')
    sign_file, cert = tree / "scripts/sign-file", tree / "certs/signing_key.x509"
    key_path = Path(key) if key.startswith(("/", "pkcs11:")) else tree / key
    missing = [p for p in (sign_file, key_path, cert) if not p.exists()]
    if missing:
        raise KernelError(f"{tree} signs its modules (CONFIG_MODULE_SIG_ALL=y) but has no "
                          f"{missing[0]}: run make modules (it makes the key and "
                          "scripts/sign-file)")
    return (str(sign_file), hash_algo, str(key_path), str(cert))


def _tree_module_paths(tree: Path) -> list[Path]:
    """The .ko files the build made, as modules.order lists them (relative to the tree)."""
    return [Path(line.strip()).with_suffix(".ko")
            for line in (tree / "modules.order").read_text().splitlines() if line.strip()]


def tree_modules_key(tree: Path) -> str:
    built = [str(p) for p in _tree_module_paths(tree)]
    return hashlib.sha256(f"{tree}\n".encode() + _stat_key(tree, built)).hexdigest()[:16]


def _stage_tree_modules(tree: Path, release: str) -> Path:
    """lib/modules/<release> for a build tree, without `make modules_install`: each module
    modules.order lists is linked where the build left it, beside the tree's modules.builtin
    files, and depmod runs over that staging directory. Keyed on the size and mtime of every
    module, so a module-only rebuild stages again; the guest image then copies only the
    closure it needs. Earlier stagings of the same tree are pruned."""
    key = tree_modules_key(tree)
    dest = cache_dir("tree-modules", key)
    with FileLock(str(dest) + ".lock"):
        modules = dest / "lib/modules" / release
        if (modules / "modules.dep").exists():
            return modules
        missing = [p for p in _tree_module_paths(tree) if not (tree / p).is_file()]
        if missing:
            raise KernelError(f"{tree}: {len(missing)} module(s) in modules.order are not "
                              f"built ({missing[0]}{', ...' if len(missing) > 1 else ''}): run "
                              "make modules")
        with progress.step(f"staging the modules of {tree}") as step:
            if modules.exists():
                shutil.rmtree(modules)
            modules.mkdir(parents=True)
            order = []
            for rel in _tree_module_paths(tree):
                link = modules / "kernel" / rel
                link.parent.mkdir(parents=True, exist_ok=True)
                link.symlink_to(tree / rel)
                order.append(f"kernel/{rel}")
            (modules / "modules.order").write_text("".join(f"{p}\n" for p in order))
            for name in ("modules.builtin", "modules.builtin.modinfo"):
                if (tree / name).exists():
                    shutil.copy2(tree / name, modules / name)
            ensure_depmod(modules, release)
            (dest / "tree").write_text(f"{tree}\n")
            step.done = f"{len(order)} modules linked"
        _prune_tree_modules(tree, keep=dest)
        return modules


def _prune_tree_modules(tree: Path, keep: Path) -> None:
    """Remove the stagings of `tree` other than `keep`: a rebuild supersedes them. One in
    use by another run (its lock held) is left for next time."""
    for other in keep.parent.iterdir():
        if other == keep or not other.is_dir():
            continue
        try:
            owner = (other / "tree").read_text().strip()
        except OSError:
            continue
        if owner != str(tree):
            continue
        lock = FileLock(str(other) + ".lock", timeout=0)
        try:
            with lock:
                shutil.rmtree(other)
        except TimeoutError:
            continue
        Path(str(other) + ".lock").unlink(missing_ok=True)


def resolve_debian(spec: DebianSpec, refresh: bool = False) -> Kernel:
    """Fetch (once, cached) and unpack a Debian kernel; never needs root."""
    dest = cache_dir("kernels", f"debian-{spec.suite}-{spec.package}")
    with FileLock(str(dest) + ".lock"):
        meta = dest / "kernel.json"
        if meta.exists() and not refresh:
            return _kernel_from_meta(spec, dest, json.loads(meta.read_text()))
        with progress.step(f"fetching kernel {spec} with apt") as step:
            apt = PrivateApt(cache_dir("apt", spec.suite), spec.suite)
            apt.update()
            packages = kernel_closure(apt, spec.package)
            root = dest / "root"
            if root.exists():
                shutil.rmtree(root)
            with tempfile.TemporaryDirectory(dir=dest) as tmp:
                debs = apt.download(packages, Path(tmp))
                for n, deb in enumerate(debs, 1):
                    step.part(n, len(debs), f"unpacking {deb.name}")
                    subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
                step.done = (f"{len(debs)} package(s), "
                             f"{progress.mib(sum(d.stat().st_size for d in debs))}")
            info = _inspect_debian_root(root)
        info["packages"] = {p: apt.version(p) for p in packages}
        write_atomic(meta, json.dumps(info, indent=2))
        return _kernel_from_meta(spec, dest, info)


def _inspect_debian_root(root: Path) -> dict[str, Any]:
    images = sorted(root.glob("boot/vmlinuz-*")) + sorted(root.glob("usr/lib/modules/*/vmlinuz"))
    if not images:
        raise KernelError(f"no vmlinuz in the unpacked packages under {root}")
    image = images[0]
    release = (image.name.removeprefix("vmlinuz-") if image.name != "vmlinuz"
               else image.parent.name)
    for cand in (root / f"boot/config-{release}", root / f"usr/lib/modules/{release}/config"):
        if cand.is_file():
            config = cand
            break
    else:
        raise KernelError(f"no config for {release} in the unpacked packages under {root}")
    modules = _find_modules(root, release)
    if modules:
        ensure_depmod(modules, release)
    return {
        "image": str(image.relative_to(root)),
        "config": str(config.relative_to(root)),
        "release": release,
        "modules": str(modules.relative_to(root)) if modules else "",
    }


def _kernel_from_meta(spec: DebianSpec, dest: Path, info: dict[str, Any]) -> Kernel:
    root = dest / "root"
    return Kernel(str(spec), root / info["image"], root / info["config"], info["release"],
                  root / info["modules"] if info["modules"] else None)


def resolve_kernel(spec: KernelSpec) -> Kernel:
    refresh = os.environ.get("COCOLAB_REFRESH_KERNELS") == "1"
    match spec:
        case DebianSpec():
            return resolve_debian(spec, refresh)
        case BuildTreeSpec():
            return resolve_build_tree(spec)
        case ImageSpec():
            return resolve_image(spec)
        case SourceSpec():
            return resolve_source_spec(spec)
    raise KernelError(f"unknown kernel spec {spec!r}")


def resolve_source_spec(spec: SourceSpec) -> Kernel:
    """Build it (kernel/build.py: a cache hit when nothing changed), then boot the O= tree."""
    from cocolab.kernel.build import BuildRequest, build
    built = build(BuildRequest(spec.source, spec.patches, spec.kconfig))
    kernel = resolve_build_tree(BuildTreeSpec(built.out))
    return dataclasses.replace(kernel, spec=str(spec))
