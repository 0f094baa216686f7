"""The cache is private (0700; key material 0600, checked on read) and the guest's packages
are pinned by version and sha256 (no apt, no network: a stand-in apt serves files)."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from cocolab.errors import ConfigError, HostError, ImageError, KernelError
from cocolab.guest_image.pins import Pin, pinned_debs, read_pins
from cocolab.paths import cache_dir, cache_root, check_private, private_file
from cocolab.vm.snapshot import SnapshotStore


def test_the_cache_root_is_made_private_and_a_loose_one_tightened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "cache"
    monkeypatch.setenv("COCOLAB_CACHE", str(root))
    old = os.umask(0o022)
    try:
        assert cache_root() == root
        assert root.stat().st_mode & 0o777 == 0o700
        assert cache_dir("guest").stat().st_mode & 0o777 == 0o700
        root.chmod(0o755)  # a cache made before it was private
        cache_root()
        assert root.stat().st_mode & 0o777 == 0o700
    finally:
        os.umask(old)


def test_a_directory_that_is_not_a_cache_is_refused_not_tightened(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    home = tmp_path / "home"  # COCOLAB_CACHE=~
    home.mkdir(mode=0o755)
    home.chmod(0o755)
    (home / ".bashrc").write_text("")
    (home / "src").mkdir()
    monkeypatch.setenv("COCOLAB_CACHE", str(home))
    with pytest.raises(HostError, match=r"holds \.bashrc, src, so it is not a cache of "
                                        r"cocolab's; .* set COCOLAB_CACHE to a new or empty"):
        cache_root()
    assert home.stat().st_mode & 0o777 == 0o755


def test_a_cache_made_before_its_mark_is_still_one(tmp_path: Path,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    old = tmp_path / "old-cache"
    (old / "kernels").mkdir(parents=True)
    (old / "build").mkdir()
    monkeypatch.setenv("COCOLAB_CACHE", str(old))
    assert cache_root() == old and (old / ".cocolab-cache").exists()


def test_private_files_are_0600_whatever_the_umask_or_their_old_mode(tmp_path: Path) -> None:
    path = tmp_path / "initrd.cpio"
    path.write_bytes(b"old")
    path.chmod(0o644)
    old = os.umask(0)
    try:
        with private_file(path) as f:
            f.write(b"new")
    finally:
        os.umask(old)
    assert path.stat().st_mode & 0o777 == 0o600
    assert path.read_bytes() == b"new"
    check_private(path, "the guest image")


def test_a_file_others_may_read_is_refused_naming_its_mode(tmp_path: Path) -> None:
    path = tmp_path / "key"
    path.write_bytes(b"k")
    path.chmod(0o640)
    with pytest.raises(HostError) as caught:
        check_private(path, "the guest SSH key")
    assert str(caught.value) == (f"{path}: the guest SSH key must belong to you with mode 0600 "
                                 f"(it is uid {os.getuid()}, mode 0640); remove it and cocolab "
                                 "makes a new one")


def _snapshot(store: SnapshotStore, key: str, mode: int) -> Path:
    state = store.root / f"{key}.mig"
    with private_file(state) as f:
        f.write(b"stream")
    state.chmod(mode)
    (store.root / f"{key}.json").write_text(json.dumps({"token": "t", "pci": ""}))
    return state


def test_a_snapshot_others_may_read_is_refused_and_deleted(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    state = _snapshot(store, "k1", 0o644)
    with pytest.raises(HostError) as caught:
        store.find("k1")
    assert str(caught.value) == (
        f"{state}: a snapshot (the guest's memory, its SSH host key in it) must belong to you "
        f"with mode 0600 (it is uid {os.getuid()}, mode 0644); deleted, the VM boots cold")
    assert not state.exists()
    assert store.find("k1") is None


def test_a_private_snapshot_is_found(tmp_path: Path) -> None:
    store = SnapshotStore(tmp_path)
    _snapshot(store, "k2", 0o600)
    found = store.find("k2")
    assert found is not None and found.token == "t"


# --- pins ------------------------------------------------------------------------------------

def _deb(debs: Path, name: str, version: str, body: bytes) -> tuple[Path, str]:
    path = debs / f"{name}_{version.replace(':', '%3a')}_amd64.deb"
    path.write_bytes(body)
    return path, hashlib.sha256(body).hexdigest()


class Apt:
    """What pinned_debs asks of apt: a mirror that serves `served` (name: (version, body))."""

    def __init__(self, served: dict[str, tuple[str, bytes]]):
        self.served, self.fetched = served, []

    def update(self) -> None:
        pass

    def version(self, name: str) -> str:
        return self.served[name][0]

    def download(self, packages: list[str], dest: Path) -> list[Path]:
        for spec in packages:
            name, _, version = spec.partition("=")
            if self.served[name][0] != version:
                raise KernelError(f"E: Version '{version}' for '{name}' was not found")
            _deb(dest, name, version, self.served[name][1])
            self.fetched.append(spec)
        return []


def test_of_two_cached_versions_the_pinned_one_is_used(tmp_path: Path) -> None:
    newer, digest = _deb(tmp_path, "dropbear-bin", "2022.83-1+deb12u10", b"ten")
    _deb(tmp_path, "dropbear-bin", "2022.83-1+deb12u9", b"nine")  # lexically last
    lock = tmp_path / "packages.lock"
    lock.write_text(f"dropbear-bin 2022.83-1+deb12u10 {digest}\n")
    assert pinned_debs(lock, Apt({}), tmp_path) == [newer]  # type: ignore[arg-type]


def test_a_missing_pin_is_fetched_by_version_and_an_epoch_spelled_as_apt_does(
        tmp_path: Path) -> None:
    body = b"busybox"
    lock = tmp_path / "packages.lock"
    lock.write_text(f"busybox-static 1:1.35.0-4+deb12u1+b1 {hashlib.sha256(body).hexdigest()}\n")
    apt = Apt({"busybox-static": ("1:1.35.0-4+deb12u1+b1", body)})
    debs = tmp_path / "debs"
    debs.mkdir()
    got = pinned_debs(lock, apt, debs)  # type: ignore[arg-type]
    assert apt.fetched == ["busybox-static=1:1.35.0-4+deb12u1+b1"]
    assert [p.name for p in got] == ["busybox-static_1%3a1.35.0-4+deb12u1+b1_amd64.deb"]


def test_a_deb_whose_digest_differs_is_refused(tmp_path: Path) -> None:
    deb, _ = _deb(tmp_path, "zlib1g", "1:1.2.13.dfsg-1+deb12u1", b"tampered")
    lock = tmp_path / "packages.lock"
    lock.write_text(f"zlib1g 1:1.2.13.dfsg-1+deb12u1 {'0' * 64}\n")
    with pytest.raises(ImageError) as caught:
        pinned_debs(lock, Apt({}), tmp_path)  # type: ignore[arg-type]
    assert str(caught.value) == (f"{deb}: sha256 {hashlib.sha256(b'tampered').hexdigest()}, but "
                                 f"{lock} pins {'0' * 64}; remove the file, or re-pin with "
                                 "`cocolab setup --pin-guest`")


def test_a_pin_the_mirror_no_longer_serves_says_how_to_re_pin(tmp_path: Path) -> None:
    lock = tmp_path / "packages.lock"
    lock.write_text(f"libc6 2.36-9+deb12u13 {'0' * 64}\n")
    apt = Apt({"libc6": ("2.36-9+deb12u14", b"libc")})
    with pytest.raises(ImageError) as caught:
        pinned_debs(lock, apt, tmp_path)  # type: ignore[arg-type]
    assert str(caught.value) == (f"{lock} pins libc6 2.36-9+deb12u13, which this host's mirror "
                                 "does not serve (it has 2.36-9+deb12u14): `cocolab setup "
                                 "--pin-guest` pins what it serves now")


def test_a_malformed_lock_line_is_one_line(tmp_path: Path) -> None:
    lock = tmp_path / "packages.lock"
    lock.write_text("# comment\nlibc6 2.36\n")
    with pytest.raises(ConfigError, match=r":2: give NAME VERSION SHA256, not 'libc6 2.36'$"):
        read_pins(lock)


def test_the_shipped_lock_pins_every_listed_package() -> None:
    guests = Path(__file__).resolve().parents[2] / "guests"
    listed = {line.strip() for line in (guests / "packages.txt").read_text().splitlines()
              if line.strip() and not line.startswith("#")}
    pins = read_pins(guests / "packages.lock")
    assert sorted(pin.name for pin in pins) == sorted(listed)
    assert all(isinstance(pin, Pin) and pin.version for pin in pins)
