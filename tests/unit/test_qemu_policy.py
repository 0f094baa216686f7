"""A test's own QEMU arguments cannot take the guest off the machine (no QEMU): an allowlist,
and every qemu_args marker the suites ship passes it."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from cocolab.errors import ConfigError
from cocolab.qemu.policy import check_qemu_args, qemu_args_problem, qemu_opts

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
    (("-monitor", "tcp:127.0.0.1:4444,server,nowait"), "-monitor: not a QEMU option"),
    (("-serial", "telnet::4444,server"), "serial ports are chardev:ID, file:PATH"),
    (("-gdb", "tcp::1234"), "-gdb: not a QEMU option cocolab allows"),
    (("-s",), "-s: not a QEMU option cocolab allows"),
    (("-chardev", "socket,id=c,host=127.0.0.1,port=5555,server=on"),
     "character devices stay on unix sockets or files (a socket needs path=)"),
    (("-chardev", "udp,id=c,host=10.0.0.1,port=5555"), "not a 'udp' backend"),
    # the review's six: each passed the old denylist
    (("-vnc", ":0"), "-vnc: not a QEMU option cocolab allows a test to add"),
    (("-display", "vnc=:1"), "-display: not a QEMU option cocolab allows"),
    (("-spice", "port=5900"), "-spice: not a QEMU option cocolab allows"),
    (("-net", "socket,listen=:1234"), "-net: not a QEMU option cocolab allows"),
    (("-incoming", "tcp:" + ALL + ":4444"), "-incoming: not a QEMU option cocolab allows"),
    (("-object", "input-barrier,id=b,name=guest,server=10.0.0.1"),
     "object type 'input-barrier' is not one cocolab allows"),
    # and the rest of the allowlist's edges
    (("-device",), "-device needs a value"),
    (("edu",), "edu: not a QEMU word (each option takes one value)"),
    (("-machine", "pc"), "the machine type comes from the `machine` marker"),
    (("-drive", "file=nbd://10.0.0.1/disk,if=none"), "names a protocol; give a local path"),
    (("-drive", "driver=nbd,server.host=10.0.0.1"), "drive driver 'nbd' is not a local one"),
    # the second review: parsed as QemuOpts parses, `,,` is a comma inside hostname's value
    (("-netdev", "user,id=n,hostname=x,,restrict=on,,=user"), "needs restrict=on"),
    (("-netdev", "user,id=n,restrict=on,restrict=off"), "needs restrict=on"),  # the last wins
    (("-netdev", "user,id=n,norestrict"), "needs restrict=on"),
    (("-netdev", "user,id=n,restrict=on,smb=/"), "smb serves host files to the guest"),
    (("-netdev", "user,id=n,restrict=on,hostfwd=tcp::2222-:22,,x"), "not every address"),
    (("-device", '{"driver":"loader","file":"/etc/shadow"}'), "JSON syntax is not judged"),
    # and the host's files, which every one of these passed before
    (("-drive", "file=/etc/shadow,if=none,format=raw"), "file '/etc/shadow' is a host path"),
    (("-chardev", "file,id=c,path=/root/.ssh/authorized_keys"), "path '/root/.ssh/"),
    (("-serial", "file:/etc/cron.d/x"), "file '/etc/cron.d/x' is a host path"),
    (("-object", "rng-random,id=r,filename=/dev/sda"), "filename '/dev/sda' is a host path"),
    (("-object", "memory-backend-file,id=m,size=1M,mem-path=/etc/passwd"), "mem-path"),
    (("-machine", "firmware=/home/u/evil.bin"), "firmware '/home/u/evil.bin' is a host path"),
    (("-device", "loader,file=/etc/shadow,addr=0x100000"), "file '/etc/shadow' is a host"),
    (("-device", "e1000,romfile=/etc/shadow"), "romfile '/etc/shadow' is a host path"),
    (("-chardev", "socket,id=c,path=/run/docker.sock"), "path '/run/docker.sock' is a host"),
    (("-drive", "file=@vmdir@/../../etc/shadow,if=none"), "is a host path"),
    (("-drive", "file.filename=/etc/shadow,if=none"), "file.filename '/etc/shadow' is a host"),
])
def test_network_reaching_arguments_are_refused(args: tuple[str, ...], message: str) -> None:
    problem = qemu_args_problem(args)
    assert problem is not None and message in problem, problem
    with pytest.raises(ConfigError, match=r"^--qemu-arg: "):
        check_qemu_args(args, "--qemu-arg")


@pytest.mark.parametrize("args", [
    ("-device", "edu"),
    ("-netdev", "user,id=devmem-nic,restrict=on", "-device", "e1000,netdev=devmem-nic"),
    ("-netdev", "user,id=n,restrict"),  # a bare flag is on
    ("-netdev", "user,id=n,restrict=on,hostfwd=tcp:127.0.0.1:0-:80"),
    ("-chardev", "socket,id=c,path=@vmdir@/x.sock,server=on", "-serial", "chardev:c"),
    ("-serial", "file:@vmdir@/console.log"),
    ("-object", "memory-backend-ram,id=m,size=64M", "-global", "ICH9-LPC.disable_s3=1"),
    ("-machine", "kernel-irqchip=split", "-drive", "file=@vmdir@/disk.img,if=none,format=raw"),
    ("-device", "virtio-net-pci,netdev=n,romfile="),  # no ROM at all
])
def test_contained_arguments_pass(args: tuple[str, ...]) -> None:
    assert qemu_args_problem(args) is None


def test_a_declared_host_path_passes_and_only_below_it() -> None:
    ok = ("-drive", "file=/srv/images/a.img,if=none,format=raw")
    assert qemu_args_problem(ok, ("/srv/images",)) is None
    assert qemu_args_problem(("-drive", "file=/srv/images/../../etc/shadow,if=none"),
                             ("/srv/images",)) is not None
    assert qemu_args_problem(("-drive", "file=/srv/imagesX/a.img,if=none"),
                             ("/srv/images",)) is not None


@pytest.mark.parametrize(("text", "implied", "pairs"), [
    ("user,id=n,hostname=x,,restrict=on,,=user", "type",
     [("type", "user"), ("id", "n"), ("hostname", "x,restrict=on,=user")]),
    ("e1000,,x,netdev=n", "driver", [("driver", "e1000,x"), ("netdev", "n")]),
    ("a=1,flag,noother,b=", None, [("a", "1"), ("flag", "on"), ("other", "off"), ("b", "")]),
    ("first", None, [("first", "on")]),
    ("", "type", []),
    ("x=a,,,y=b", None, [("x", "a,"), ("y", "b")]),
])
def test_options_are_read_as_qemus_qemuopts_reads_them(text: str, implied: str | None,
                                                       pairs: list[tuple[str, str]]) -> None:
    assert qemu_opts(text, implied) == pairs


def _shipped_markers() -> list[tuple[str, ...]]:
    """The arguments of every `qemu_args` marker under tests/ (outside the unit tests)."""
    found = []
    for path in sorted(Path(__file__).parents[1].rglob("*.py")):
        if "unit" in path.parts:
            continue
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "qemu_args":
                found.append(tuple(ast.literal_eval(a) for a in node.args))
    return found


def test_every_shipped_qemu_args_marker_is_allowed() -> None:
    markers = _shipped_markers()
    assert len(markers) >= 2  # tests/devmem's and tests/device_filter's
    for args in markers:
        assert qemu_args_problem(args) is None, args
