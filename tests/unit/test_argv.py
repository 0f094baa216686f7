from __future__ import annotations

import dataclasses
import subprocess
from pathlib import Path

from cocolab.qemu import Runtime, VMConfig, build_argv, kernel_cmdline, relaunch_script
from cocolab.qemu.argv import BackendSpec

CONFIG = VMConfig(qemu="/usr/bin/qemu-system-x86_64", kernel=Path("/KERNEL"),
                  initrd=Path("/INITRD"), accel="tcg",
                  cmdline=("lockdown=integrity",), qemu_args=("-device", "edu"))
RUNTIME = Runtime(Path("/RUN/qmp.sock"), Path("/RUN/con.sock"), "TOKEN")


def test_argv_matches_golden(golden) -> None:
    golden("argv-default.txt", "\n".join(build_argv(CONFIG, RUNTIME)) + "\n")


def test_relaunch_script_matches_golden_and_parses(golden, tmp_path) -> None:
    script = relaunch_script(CONFIG, Path("/KEY"))
    golden("relaunch-default.sh", script)
    path = tmp_path / "r.sh"
    path.write_text(script)
    subprocess.run(["sh", "-n", str(path)], check=True)


def test_argv_is_a_pure_function_of_config_and_runtime() -> None:
    assert build_argv(CONFIG, RUNTIME) == build_argv(CONFIG, RUNTIME)


def test_guest_network_is_restricted_and_bound_to_loopback() -> None:
    argv = build_argv(CONFIG, RUNTIME)
    netdev = argv[argv.index("-netdev") + 1]
    assert "restrict=on" in netdev.split(",")
    assert "hostfwd=tcp:127.0.0.1:0-:22" in netdev


def test_crash_ends_qemu() -> None:
    argv = build_argv(CONFIG, RUNTIME)
    assert "-no-reboot" in argv
    assert "panic=-1" in kernel_cmdline(CONFIG, "T").split()


def test_tcg_uses_cpu_max_and_kvm_the_host_cpu() -> None:
    assert CONFIG.cpu == "max"
    kvm = VMConfig(qemu="q", kernel=Path("/k"), initrd=Path("/i"), accel="kvm")
    assert kvm.cpu == "host"


def test_cmdline_keeps_test_words_after_cocolab_words() -> None:
    words = kernel_cmdline(CONFIG, "T").split()
    assert words[-1] == "lockdown=integrity"
    assert "cocolab.token=T" in words


def test_config_key_ignores_labels_but_not_cmdline() -> None:
    a = VMConfig(qemu="q", kernel=Path("/k"), initrd=Path("/i"), labels=(("lane", "x"),))
    b = VMConfig(qemu="q", kernel=Path("/k"), initrd=Path("/i"))
    c = VMConfig(qemu="q", kernel=Path("/k"), initrd=Path("/i"), cmdline=("iomem=relaxed",))
    assert a.key() == b.key()
    assert a.key() != c.key()


BACKENDS = VMConfig(qemu="/usr/bin/qemu-system-x86_64", kernel=Path("/KERNEL"),
                    initrd=Path("/INITRD"), memory_mib=512,
                    qemu_args=("-chardev", "socket,id=d-vu,path=@vhost-user:d@",
                               "-device", "vhost-user-blk-pci,id=d,chardev=d-vu"),
                    backends=(BackendSpec("d", "vhost-user-blk", "bad-status"),))


def test_a_vm_with_back_ends_has_shared_memfd_ram_and_their_sockets() -> None:
    argv = build_argv(BACKENDS, Runtime(Path("/RUN/qmp.sock"), Path("/RUN/con.sock"), "T",
                                        {"d": "/RUN/vu-d.sock"}))
    assert argv[argv.index("-machine") + 1] == "q35,memory-backend=cocolab-ram"
    assert "memory-backend-memfd,id=cocolab-ram,size=512M,share=on" in argv
    assert "socket,id=d-vu,path=/RUN/vu-d.sock" in argv
    assert "-object" not in build_argv(CONFIG, RUNTIME)


def test_relaunch_starts_each_back_end_before_qemu_and_stops_it_after(golden, tmp_path) -> None:
    script = relaunch_script(BACKENDS, Path("/KEY"), python="/VENV/python")
    golden("relaunch-backends.sh", script)
    path = tmp_path / "r.sh"
    path.write_text(script)
    subprocess.run(["sh", "-n", str(path)], check=True)
    assert "path=\"$VU_DIR/d.sock\"" in script.replace("'", "")


def test_a_tests_vmdir_becomes_the_vms_own_directory() -> None:
    config = VMConfig(qemu="q", kernel=Path("/k"), initrd=Path("/i"),
                      qemu_args=("-serial", "file:@vmdir@/ttyS1.log"))
    argv = build_argv(config, Runtime(Path("/R/q"), Path("/R/c"), "T", vmdir=Path("/W/vm")))
    assert argv[-2:] == ["-serial", "file:/W/vm/ttyS1.log"]
    assert config.key() == dataclasses.replace(config).key()  # the key holds the placeholder


def test_relaunch_puts_its_own_directory_for_vmdir(tmp_path: Path) -> None:
    config = VMConfig(qemu="q", kernel=Path("/k"), initrd=Path("/i"),
                      qemu_args=("-serial", "file:@vmdir@/tty S1.log"))
    script = relaunch_script(config, Path("/KEY"))
    assert "-serial file:\"$VMDIR\"'/tty S1.log'" in script  # one word, in the shell too
