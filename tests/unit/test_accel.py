from __future__ import annotations

from pathlib import Path

import pytest

from cocolab.errors import ConfigError
from cocolab.host.accel import canary_firmware, choose_accel, kvm_canary


def test_canary_firmware_is_64k_with_the_reset_vector_last() -> None:
    fw = canary_firmware()
    assert len(fw) == 65536
    assert fw[-16:-13] == bytes.fromhex("baf803")  # mov dx, 0x3f8 at F000:FFF0


def test_tcg_needs_no_probe() -> None:
    assert choose_accel("/nonexistent/qemu", "tcg").accel == "tcg"


def test_unknown_accel_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="choose one of auto, kvm, tcg"):
        choose_accel("/nonexistent/qemu", "hvf")


def test_missing_kvm_device_says_so(tmp_path: Path) -> None:
    works, why = kvm_canary("/nonexistent/qemu", dev=tmp_path / "kvm")
    assert not works
    assert "does not exist" in why
