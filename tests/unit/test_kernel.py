from __future__ import annotations

import struct
from pathlib import Path

import pytest

from cocolab.errors import ConfigError, KernelError
from cocolab.kernel import BuildTreeSpec, DebianSpec, ImageSpec, Kconfig, parse_kernel_spec
from cocolab.kernel.apt import kernel_closure
from cocolab.kernel.modules import module_closure
from cocolab.kernel.resolve import bzimage_release, image_release, resolve_image
from fake_kernel import fake_bzimage


@pytest.mark.parametrize("text, spec", [
    ("debian:trixie", DebianSpec("trixie")),
    ("debian:sid", DebianSpec("sid")),
    ("debian:bookworm:linux-image-6.12-amd64", DebianSpec("bookworm", "linux-image-6.12-amd64")),
    ("debian:bookworm-backports", DebianSpec("bookworm-backports")),
])
def test_debian_specs(text: str, spec: DebianSpec) -> None:
    assert parse_kernel_spec(text) == spec
    assert str(spec) == text


@pytest.mark.parametrize("text, message", [
    ("debian:", "not debian:<suite>"),
    ("debian:Trixie", "not debian:<suite>"),
    ("debian:sid:Bad_Name", "not a Debian package name"),
    ("debian:a:b:c", "not debian:<suite>"),
    ("/no/such/kernel", "neither debian:<suite> nor an existing"),
])
def test_bad_specs_name_the_option(text: str, message: str) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_kernel_spec(text, source="COCOLAB_KERNEL")
    assert "COCOLAB_KERNEL" in str(info.value)


def test_build_tree_needs_a_bzimage(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="without arch/x86/boot/bzImage"):
        parse_kernel_spec(str(tmp_path))
    (tmp_path / "arch/x86/boot").mkdir(parents=True)
    (tmp_path / "arch/x86/boot/bzImage").write_bytes(b"")
    assert parse_kernel_spec(str(tmp_path)) == BuildTreeSpec(tmp_path)


def test_config_and_modules_only_for_an_image(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="applies to a bzImage only"):
        parse_kernel_spec("debian:sid", config="x")
    image = tmp_path / "bzImage"
    image.write_bytes(b"")
    spec = parse_kernel_spec(str(image), config=str(tmp_path / "cfg"))
    assert spec == ImageSpec(image, tmp_path / "cfg", None)


def test_release_is_read_from_the_boot_header(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage", "6.18.0-rc1+")
    assert bzimage_release(image) == "6.18.0-rc1+"
    (tmp_path / "junk").write_bytes(b"\0" * 0x1000)
    with pytest.raises(KernelError, match="not an x86 bzImage"):
        bzimage_release(tmp_path / "junk")


def test_image_finds_config_beside_it(tmp_path: Path) -> None:
    image = fake_bzimage(tmp_path / "bzImage", "6.18.0")
    with pytest.raises(KernelError, match="--kernel-config"):
        resolve_image(ImageSpec(image))
    (tmp_path / "config-6.18.0").write_text("CONFIG_DEVMEM=y\n")
    kernel = resolve_image(ImageSpec(image))
    assert kernel.release == "6.18.0"
    assert kernel.kconfig.builtin("DEVMEM")
    assert kernel.modules is None


def test_kconfig_values() -> None:
    k = Kconfig.parse("CONFIG_A=y\nCONFIG_B=m\n# CONFIG_C is not set\nCONFIG_D=\"x\"\n")
    assert k.builtin("A") and k.enabled("CONFIG_B") and not k.builtin("B")
    assert k.get("C") is None and k.get("D") == '"x"'
    assert k.describe("C") == "CONFIG_C is not set"
    assert k.describe("A") == "CONFIG_A=y"


class FakeApt:
    def __init__(self, deps: dict[str, list[str]]):
        self.deps = deps

    def depends(self, package: str) -> list[str]:
        return self.deps.get(package, [])


def test_kernel_closure_6x_layout() -> None:
    apt = FakeApt({"linux-image-amd64": ["linux-image-6.12.57+deb13-amd64"],
                   "linux-image-6.12.57+deb13-amd64": ["kmod", "linux-base",
                                                       "initramfs-tools"]})
    assert kernel_closure(apt, "linux-image-amd64") == [  # type: ignore[arg-type]
        "linux-image-amd64", "linux-image-6.12.57+deb13-amd64"]


def test_kernel_closure_split_7x_layout() -> None:
    v = "7.2.13+deb14-amd64"
    apt = FakeApt({
        "linux-image-amd64": ["linux-base-amd64", f"linux-image-{v}"],
        "linux-base-amd64": [f"linux-base-{v}"],
        f"linux-image-{v}": ["dracut", f"linux-base-{v}", f"linux-binary-{v}",
                             f"linux-modules-{v}"],
    })
    got = kernel_closure(apt, "linux-image-amd64")  # type: ignore[arg-type]
    assert set(got) == {"linux-image-amd64", "linux-base-amd64", f"linux-image-{v}",
                        f"linux-base-{v}", f"linux-binary-{v}", f"linux-modules-{v}"}


def test_module_closure_follows_modules_dep(tmp_path: Path) -> None:
    (tmp_path / "modules.dep").write_text(
        "kernel/drivers/vfio/pci/vfio-pci.ko.xz: kernel/drivers/vfio/pci/vfio-pci-core.ko.xz "
        "kernel/drivers/vfio/vfio.ko.xz\n"
        "kernel/drivers/vfio/pci/vfio-pci-core.ko.xz: kernel/drivers/vfio/vfio.ko.xz\n"
        "kernel/drivers/vfio/vfio.ko.xz:\n"
        "kernel/drivers/net/e1000.ko.xz:\n")
    assert module_closure(tmp_path, ["vfio_pci", "absent"]) == [
        "kernel/drivers/vfio/pci/vfio-pci-core.ko.xz", "kernel/drivers/vfio/pci/vfio-pci.ko.xz",
        "kernel/drivers/vfio/vfio.ko.xz"]


def test_a_marker_module_must_be_built_in_or_built(tmp_path: Path) -> None:
    from cocolab.guest_image.build import missing_modules
    from cocolab.kernel import Kernel
    mods = tmp_path / "lib/modules/6.99.0"
    mods.mkdir(parents=True)
    (mods / "modules.dep").write_text("kernel/drivers/net/dummy.ko.xz:\n"
                                      "kernel/drivers/misc/lkdtm/lkdtm.ko.xz:\n")
    (mods / "modules.builtin").write_text("kernel/drivers/pci/pci-stub.ko\n")
    kernel = Kernel("x", tmp_path / "bzImage", tmp_path / "config", "6.99.0", mods)
    assert missing_modules(kernel, ("dummy", "lkdtm", "pci_stub", "pci-stub", "mydrv")) == [
        "mydrv"]
    no_modules = Kernel("x", tmp_path / "bzImage", tmp_path / "config", "6.99.0", None)
    assert missing_modules(no_modules, ("mydrv",)) == []  # MODULES=n: all built in


def test_a_module_only_rebuild_is_a_new_kernel_identity(tmp_path: Path) -> None:
    import os

    from cocolab.kernel import Kernel
    from cocolab.kernel.resolve import tree_modules_key
    mods = tmp_path / "lib/modules/6.99.0"
    (mods / "kernel").mkdir(parents=True)
    (mods / "modules.dep").write_text("kernel/e1000.ko:\n")
    ko = mods / "kernel/e1000.ko"
    ko.write_bytes(b"old module")
    (tmp_path / "bzImage").write_bytes(b"image")
    kernel = Kernel("x", tmp_path / "bzImage", tmp_path / "config", "6.99.0", mods)
    before = kernel.identity()
    ko.write_bytes(b"new module!")  # same modules.dep, a rebuilt .ko
    assert kernel.identity() != before

    tree = tmp_path / "tree"
    (tree / "drivers").mkdir(parents=True)
    (tree / "modules.order").write_text("drivers/e1000.o\n")
    (tree / "drivers/e1000.ko").write_bytes(b"built once")
    key = tree_modules_key(tree)
    os.utime(tree / "drivers/e1000.ko", ns=(1, 1))  # `touch`ed and rebuilt
    assert tree_modules_key(tree) != key


def fake_vmlinux(path: Path, version: str, notes: list[tuple[bytes, int]]) -> Path:
    """An ELF64 file laid out by hand (ELF spec: 64-byte header, phdrs at e_phoff, each
    PT_NOTE segment a run of namesz/descsz/type + padded name + padded desc)."""
    blob = b""
    for name, kind in notes:
        padded = name + b"\0" + bytes(-(len(name) + 1) % 4)
        blob += struct.pack("<III", len(name) + 1, 4, kind) + padded + b"\x00\x10\x00\x01"
    header = bytearray(64)
    header[:6] = b"\x7fELF\x02\x01"  # ELF64, little-endian
    struct.pack_into("<Q", header, 0x20, 64)  # e_phoff
    struct.pack_into("<HH", header, 0x36, 56, 1)  # e_phentsize, e_phnum
    note_at = 64 + 56
    phdr = struct.pack("<IIQQQQQQ", 4, 4, note_at, 0, 0, len(blob), len(blob), 4)  # PT_NOTE
    banner = f"Linux version {version} (dev@box) #1 SMP".encode() + b"\0"
    path.write_bytes(bytes(header) + phdr + blob + b"\0" * 64 + banner)
    return path


def test_an_elf_vmlinux_with_the_pvh_note_is_a_kernel(tmp_path: Path) -> None:
    image = fake_vmlinux(tmp_path / "vmlinux", "6.18.0-pvh", [(b"GNU", 3), (b"Xen", 18)])
    assert image_release(image) == "6.18.0-pvh"
    (tmp_path / "config-6.18.0-pvh").write_text("CONFIG_PVH=y\n")
    assert resolve_image(ImageSpec(image)).release == "6.18.0-pvh"


def test_an_elf_vmlinux_without_pvh_is_refused_naming_the_option(tmp_path: Path) -> None:
    # counterpart: the same file with a Xen note of another type (XEN_ELFNOTE_ENTRY, 1)
    image = fake_vmlinux(tmp_path / "vmlinux", "6.18.0", [(b"GNU", 3), (b"Xen", 1)])
    with pytest.raises(KernelError, match=r"without a PVH entry note.*CONFIG_PVH=y, or give "
                                          r"arch/x86/boot/bzImage"):
        image_release(image)


def test_a_tree_whose_modules_are_not_built_says_make_modules(tmp_path: Path) -> None:
    from cocolab.kernel.resolve import _stage_tree_modules
    tree = tmp_path / "linux"
    (tree / "drivers/net").mkdir(parents=True)
    (tree / "modules.order").write_text("drivers/net/e1000.o\ndrivers/net/e1000e.o\n")
    (tree / "drivers/net/e1000.ko").write_bytes(b"\x7fELF")
    with pytest.raises(KernelError, match=r"1 module\(s\) in modules.order are not built "
                                          r"\(drivers/net/e1000e.ko\): run make modules"):
        _stage_tree_modules(tree, "6.18.0")


def test_a_new_staging_of_a_tree_prunes_the_ones_it_supersedes(tmp_path: Path) -> None:
    from cocolab.kernel.resolve import _prune_tree_modules
    root = tmp_path / "tree-modules"
    tree, other_tree = Path("/src/linux"), Path("/src/other")
    for name, owner in (("old", tree), ("new", tree), ("theirs", other_tree)):
        (root / name).mkdir(parents=True)
        (root / name / "tree").write_text(f"{owner}\n")
    _prune_tree_modules(tree, keep=root / "new")
    assert sorted(p.name for p in root.iterdir()) == ["new", "theirs"]
