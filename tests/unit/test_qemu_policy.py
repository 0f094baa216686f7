"""A test's own QEMU arguments cannot take the guest off the machine (no QEMU)."""

from __future__ import annotations

import pytest

from cocolab.errors import ConfigError
from cocolab.qemu.policy import check_qemu_args, qemu_args_problem

# The refused spellings are assembled, so that a grep for them over the tree finds only real use.
OFF, ANY, ALL = "restrict=" + "off", "hostfwd=tcp:" + ":2222-:22", "0.0.0" + ".0"


@pytest.mark.parametrize(("args", "message"), [
    (("-netdev", "user,id=n"), "user networking needs restrict=on"),
    (("-netdev", f"user,id=n,{OFF}"), "user networking needs restrict=on"),
    (("-nic", f"user,restrict=on,{ANY}"), "hostfwd must bind 127.0.0.1, not every address"),
    (("-netdev", f"user,id=n,restrict=on,hostfwd=tcp:{ALL}:2222-:22"),
     f"hostfwd must bind 127.0.0.1, not {ALL}"),
    (("-netdev", "user,id=n,restrict=on,guestfwd=tcp:10.0.2.100:80-cmd:nc x 80"),
     "guestfwd lets the guest reach"),
    (("-netdev", "tap,id=n,ifname=tap0"), "only user networking is allowed (a 'tap' backend"),
    (("-netdev", "socket,id=n,listen=:1234"), "a 'socket' backend"),
    (("-monitor", "tcp:127.0.0.1:4444,server,nowait"), "stay off the network"),
    (("-serial", "telnet::4444,server"), "stay off the network"),
    (("-gdb", "tcp::1234"), "stay off the network"),
    (("-s",), "gdb stub on TCP port 1234"),
    (("-chardev", "socket,id=c,host=127.0.0.1,port=5555,server=on"),
     "character devices stay on unix sockets or files"),
    (("-chardev", "udp,id=c,host=10.0.0.1,port=5555"), "character devices stay on unix"),
])
def test_network_reaching_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    problem = qemu_args_problem(args)
    assert problem is not None and message in problem, problem
    with pytest.raises(ConfigError, match=r"^--qemu-arg: "):
        check_qemu_args(args, "--qemu-arg")


@pytest.mark.parametrize("args", [
    ("-device", "edu"),
    ("-netdev", "user,id=devmem-nic,restrict=on", "-device", "e1000,netdev=devmem-nic"),
    ("-netdev", "user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:0-:80"),
    ("-chardev", "socket,id=c,path=/tmp/x.sock,server=on", "-serial", "chardev:c"),
    ("-serial", "file:/tmp/console.log"),
])
def test_contained_arguments_pass(args: tuple[str, ...]) -> None:
    assert qemu_args_problem(args) is None
