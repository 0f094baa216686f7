from __future__ import annotations

import re
from pathlib import Path

import pytest

from cocolab.config import lane_names, load_lane
from cocolab.config.lane import parse_lane
from cocolab.errors import ConfigError
from cocolab.rig import Rig, RigOptions


def test_default_lane_loads() -> None:
    lane = load_lane("default")
    assert lane.kernel.startswith("debian:")
    assert "default" in lane_names()


@pytest.mark.parametrize("data, message", [
    ({"kernal": "debian:sid"}, "unknown key 'kernal'"),
    ({"cpus": "2"}, "key 'cpus' must be int"),
    ({"cpus": True}, "key 'cpus' must be int"),
    ({"accel": "hvf"}, "key 'accel' is 'hvf'; choose one of auto, kvm, tcg"),
    ({"machine": "virt"}, "key 'machine' is 'virt'"),
    ({"append": ["a", 1]}, "key 'append' must be a list of strings"),
    ({"append": "a b"}, "key 'append' must be list"),
])
def test_lane_errors_name_file_and_key(data, message) -> None:
    with pytest.raises(ConfigError, match=message) as info:
        parse_lane("x", data, "/lanes/x.toml")
    assert str(info.value).startswith("/lanes/x.toml: ")


def test_unknown_lane_lists_the_valid_ones() -> None:
    with pytest.raises(ConfigError, match=r"choose one of .*default"):
        load_lane("nosuchlane")


def test_broken_toml_names_the_file(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("kernel = \n")
    with pytest.raises(ConfigError, match=str(bad)):
        load_lane(str(bad))


def test_precedence_cli_over_env_over_lane(monkeypatch) -> None:
    rig = Rig(RigOptions())
    assert rig.kernel_setting.value == load_lane("default").kernel
    assert rig.kernel_setting.source.endswith("lanes/default.toml: key 'kernel'")
    monkeypatch.setenv("COCOLAB_KERNEL", "debian:sid")
    rig = Rig(RigOptions())
    assert (rig.kernel_setting.value, rig.kernel_setting.source) == ("debian:sid",
                                                                      "COCOLAB_KERNEL")
    rig = Rig(RigOptions(kernel="debian:bookworm"))
    assert (rig.kernel_setting.value, rig.kernel_setting.source) == ("debian:bookworm",
                                                                      "--kernel")


def test_rig_probes_nothing_until_asked(monkeypatch) -> None:
    monkeypatch.setenv("PATH", "/nonexistent")
    rig = Rig(RigOptions(qemu="definitely-not-qemu"))
    assert rig.qemu_setting.value == "definitely-not-qemu"  # constructing it found nothing


@pytest.mark.parametrize(("lane", "option", "strict"), [
    ("default", None, None),
    ("default", True, "--strict-lane"),
    ("tdx", None, "lane tdx is a confidential lane"),
    ("tdx", False, None),
])
def test_which_lanes_are_strict(lane: str, option: bool | None, strict: str | None) -> None:
    assert Rig(RigOptions(lane=lane, strict_lane=option)).strict == strict


def test_a_lane_can_declare_itself_strict(tmp_path: Path) -> None:
    path = tmp_path / "ci.toml"
    path.write_text("strict = true\n")
    assert Rig(RigOptions(lane=str(path))).strict == f"lane ci is strict ({path})"
    with pytest.raises(ConfigError, match="key 'strict' must be bool"):
        parse_lane("x", {"strict": "yes"}, "/lanes/x.toml")


@pytest.mark.parametrize(("data", "message"), [
    ({}, "the lane is empty"),
    ({"memory_mib": -1024}, "key 'memory_mib' is -1024; give a number from 128 to 1048576"),
    ({"memory_mib": 0}, "key 'memory_mib' is 0; give a number from 128"),
    ({"cpus": 0}, "key 'cpus' is 0; give a number from 1 to 64"),
])
def test_lane_numbers_have_ranges_and_empty_is_an_error(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lane("x", data, "/lanes/x.toml")


@pytest.mark.parametrize("seconds", [float("nan"), -1.0, 0.0, float("inf")])
def test_boot_timeout_must_be_a_positive_number_of_seconds(seconds: float) -> None:
    with pytest.raises(ConfigError, match=r"--boot-timeout .*: give seconds above 0"):
        Rig(RigOptions(boot_timeout=seconds))


def test_a_lane_file_that_is_not_utf8_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "latin1.toml"
    bad.write_bytes(b'description = "caf\xe9"\n')
    with pytest.raises(ConfigError, match=rf"{bad}: not UTF-8 text \(byte 18\)"):
        load_lane(str(bad))
    bom = tmp_path / "bom.toml"
    bom.write_bytes(b'\xef\xbb\xbfdescription = "with a BOM"\n')
    assert load_lane(str(bom)).description == "with a BOM"


@pytest.mark.parametrize(("values", "words"), [
    (["lockdown=integrity iomem=relaxed"], ("lockdown=integrity", "iomem=relaxed")),
    (['dyndbg="file vfio_pci_core.c +p"'], ("dyndbg=file vfio_pci_core.c +p",)),
])
def test_append_is_split_by_shell_rules(values, words) -> None:
    from cocolab.options import split_append
    assert split_append(values) == words


def test_an_unbalanced_append_is_one_clear_error() -> None:
    from cocolab.options import split_append
    with pytest.raises(ConfigError, match="--append 'x=\"a': No closing quotation"):
        split_append(['x="a'])


def test_a_cached_ssh_key_others_can_read_is_refused() -> None:
    from cocolab.errors import HostError
    from cocolab.guest_image.build import ssh_keypair

    private, _ = ssh_keypair()  # made with 0600 in this test's private cache
    private.chmod(0o644)
    with pytest.raises(HostError, match=r"id_ed25519: the guest SSH key must belong to you "
                                        r"with mode 0600 \(it is uid \d+, mode 0644\)"):
        ssh_keypair()


def test_firmware_on_a_plain_lane_is_an_error_not_ignored(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"--firmware /fw\.fd: applies to confidential lanes"):
        Rig(RigOptions(firmware="/fw.fd"))
    with pytest.raises(ConfigError, match="key 'firmware' applies to confidential lanes only"):
        parse_lane("x", {"firmware": "/fw.fd"}, "/lanes/x.toml")


def test_a_binary_kernel_config_is_refused(tmp_path: Path) -> None:
    from cocolab.errors import KernelError
    from cocolab.kernel.kconfig import Kconfig

    blob = tmp_path / "config"
    blob.write_bytes(b"\x7fELF\x00\x01" * 100)
    with pytest.raises(KernelError, match=r"is not a kernel \.config"):
        Kconfig.from_file(blob)


def test_a_kernel_that_cannot_be_had_is_tried_once_and_named(monkeypatch) -> None:
    import cocolab.rig
    from cocolab.errors import KernelError

    calls = []

    def fail(spec):
        calls.append(spec)
        raise KernelError("this host's Debian mirror has no suite 'bookwrom'")
    monkeypatch.setattr(cocolab.rig, "resolve_kernel", fail)
    rig = Rig(RigOptions(kernel="debian:bookwrom"))
    for _ in range(3):
        with pytest.raises(KernelError, match=r"^--kernel: kernel debian:bookwrom: this host's "
                                              r"Debian mirror has no suite 'bookwrom'$"):
            _ = rig.kernel
    assert len(calls) == 1


def test_an_unknown_accelerator_from_the_environment_names_the_variable(monkeypatch) -> None:
    monkeypatch.setenv("COCOLAB_ACCEL", "hvf")
    with pytest.raises(ConfigError, match=r"^COCOLAB_ACCEL=hvf: no such accelerator; choose "
                                          r"one of auto, kvm, tcg$"):
        Rig(RigOptions())


@pytest.mark.parametrize(("data", "message"), [
    ({"simulated": True}, "key 'simulated' says what kind of CC guest is simulated; set 'cc'"),
    ({"simulated": True, "cc": "snp"}, "an SNP guest cannot be simulated honestly"),
    ({"kernel": "build:debian:7.3", "patches": ["guests/no-such.patch"]},
     "key 'patches': guests/no-such.patch is no file in the checkout"),
    ({"kernel": "build:debian:7.3", "kconfig": ["not an option"]},
     "key 'kconfig': 'not an option' is not NAME, NAME=y, NAME=m or NAME=n"),
    ({"kernel": "debian:trixie", "kconfig": ["DEVMEM"]},
     "keys 'patches' and 'kconfig' describe a build; set 'kernel' to build:SOURCE"),
    ({"expected_failure": [{"test": "t.py::test_x", "reason": "r"}]},
     r"expected_failure\[0\]: missing until: a baseline says which test, why it fails"),
    ({"expected_failure": [{"test": "t", "reason": "r", "until": "u", "ticket": 1}]},
     r"expected_failure\[0\]: unknown key 'ticket'"),
    ({"expected_failure": ["t.py::test_x"]}, r"expected_failure\[0\]: must be a table"),
])
def test_simulated_and_built_lanes_are_checked(data, message) -> None:
    with pytest.raises(ConfigError, match=message):
        parse_lane("x", {"description": "d", **data}, "/lanes/x.toml")


def test_the_cc_sim_lane_is_simulated_strict_and_snapshotted() -> None:
    rig = Rig(RigOptions(lane="cc-sim-tdx"))
    lane = rig.lane
    assert (lane.cc, lane.simulated, lane.hardware_cc) == ("tdx", True, "")
    assert lane.build_source == "debian:7.3" and lane.patch_paths[0].is_file()
    assert rig.strict == "lane cc-sim-tdx is a simulated confidential lane"
    assert rig.snapshots_off is None  # its memory is plain: QEMU saves it
    with pytest.raises(ConfigError, match="applies to confidential lanes only; lane cc-sim-tdx "
                                          "boots simulated CC guests"):
        Rig(RigOptions(lane="cc-sim-tdx", firmware="/x.fd"))


def test_a_baseline_matches_its_test_by_the_tail_of_the_node_id() -> None:
    lane = Rig(RigOptions(lane="cc-sim-tdx")).lane
    nodeid = ("tests/devmem/test_confidential_guest.py::"
              "test_open_is_denied_in_a_confidential_guest[/dev/mem]")
    baseline = lane.expected_failure(nodeid)
    assert baseline is not None and "x86/devmem: Drop /dev/mem access" in str(baseline)
    assert lane.expected_failure(nodeid.replace("/dev/mem]", "/dev/port]")) is not None
    assert lane.expected_failure(nodeid.replace("[/dev/mem]", "")) is None
    assert lane.expected_failure("tests/devmem/xtest_confidential_guest.py::"
                                 "test_open_is_denied_in_a_confidential_guest[/dev/mem]") is None


def test_a_lane_that_builds_refuses_a_prebuilt_kernel(tmp_path: Path) -> None:
    image = tmp_path / "bzImage"
    image.write_bytes(b"\0" * 1024)
    rig = Rig(RigOptions(lane="cc-sim-tdx", kernel=str(image)))
    with pytest.raises(ConfigError, match=re.escape("lane cc-sim-tdx builds its kernel with "
                                                    "guests/cc-sim/cc-sim-tdx.patch, which a "
                                                    "prebuilt kernel lacks")):
        _ = rig.kernel_spec
    assert str(Rig(RigOptions(lane="cc-sim-tdx")).kernel_spec) == \
        "build:debian:7.3 + cc-sim-tdx.patch"


def test_on_a_building_lane_a_source_tree_is_built_with_the_lane_s_patches(tmp_path: Path
                                                                          ) -> None:
    tree = tmp_path / "linux"
    (tree / "scripts/kconfig").mkdir(parents=True)
    (tree / "Makefile").write_text("# no bzImage yet\n")
    spec = Rig(RigOptions(lane="cc-sim-tdx", kernel=str(tree))).kernel_spec
    assert str(spec) == f"build:{tree} + cc-sim-tdx.patch"
    out = tmp_path / "out"  # an O= directory is booted as it is
    (out / "arch/x86/boot").mkdir(parents=True)
    (out / "arch/x86/boot/bzImage").write_bytes(b"\0")
    (out / "source").symlink_to(tree)
    assert str(Rig(RigOptions(lane="cc-sim-tdx", kernel=str(out))).kernel_spec) == str(out)
