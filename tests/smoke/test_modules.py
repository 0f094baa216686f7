"""A test's own modules reach its guest, loaded before the test runs; a module the kernel does
not have is refused at plan time, in one line, before any boot."""

from __future__ import annotations

import pytest

pytest_plugins = ["pytester"]


@pytest.mark.kconfig("DUMMY")
@pytest.mark.modules("dummy")  # drivers/net/dummy.c: not in guests/modules.txt
def test_a_marker_module_is_packed_and_loaded(vm) -> None:
    assert "dummy" in vm.run("cut -d' ' -f1 /proc/modules", check=True).stdout.split()
    assert vm.run("ls /sys/class/net", check=True).stdout.split().count("dummy0") == 1


def test_a_module_the_kernel_lacks_is_refused_before_boot(inner, cocolab_rig) -> None:
    kernel = cocolab_rig.kernel
    if kernel.modules is None:
        pytest.skip(f"kernel {kernel.release} ({kernel.spec}) has no modules (CONFIG_MODULES "
                    "is not set): a marker module there counts as built in, so none can be "
                    "told missing before boot; choose a kernel with module support")
    result = inner("""
        import pytest
        @pytest.mark.modules("cocolab_no_such_module")
        def test_x(vm): pass
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*has no module cocolab_no_such_module (neither built in nor "
                                 "built as a module)*"])
    assert "cocolab VMs:" not in result.stdout.str()  # nothing booted


def test_a_module_that_will_not_load_ends_the_boot_at_once(inner, cocolab_rig) -> None:
    kernel = cocolab_rig.kernel
    if kernel.kconfig.get("DUMMY") != "m":  # the inner VM loads dummy as a module
        pytest.skip(f"kernel {kernel.release} ({kernel.spec}): needs CONFIG_DUMMY=m, kernel "
                    f"has {kernel.kconfig.get('DUMMY') or 'it not set'}; choose a kernel "
                    "that builds dummy as a module (every Debian one does)")
    result = inner("""
        import pytest
        @pytest.mark.modules("dummy")
        @pytest.mark.cmdline("dummy.numdummies=notanumber")  # modprobe: Invalid argument
        def test_x(vm): pass
    """)
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*the guest's /init gave up: modprobe dummy: modprobe: "
                                 "can't load*"])
