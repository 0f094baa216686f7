"""The cocolab command: thin over the same layers the pytest plugin uses. Each subcommand's
options and help are its own (cli_parser.py); `cocolab COMMAND --help` says them.

  cocolab doctor   what this host offers: QEMU, accelerator (and why), the lane's kernel
  cocolab setup    fetch the kernel and build the guest image now (pre-warms the cache)
  cocolab shell    boot the VM a test would boot and give you a root shell in it
  cocolab kconfig  the kernel config fragment the rig and the suites need (--check, --apply)
  cocolab build    a kernel from source (debian:X.Y or a tree), patched, ccache'd
  cocolab results merge   join the shards of one --shard I/N run
  cocolab kcidb    a KCIDB v5.3 report of results, validated
  cocolab report   one self-contained page of results
  cocolab lab      a KernelCI pull lab
  cocolab ktap     the items a KTAP log becomes, as `kunit.py parse` reads one
  cocolab coverage the lines of the virtio drivers a GCOV kernel's guests reached
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import select
import shutil
import subprocess
import sys
import tempfile
import termios
import tty
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cocolab import progress
from cocolab.cli_parser import parser
from cocolab.errors import CocolabError, ConfigError, KernelError, present
from cocolab.guest import Guest
from cocolab.guest_image.build import pin_guest_packages
from cocolab.kconfig_tool import apply as apply_fragment
from cocolab.kconfig_tool import check, check_tree, collect_gates, fragment
from cocolab.kernel import coverage
from cocolab.kernel.build import (
    BuildRequest,
    check_source,
    list_debian_sources,
    read_patch,
)
from cocolab.kernel.build import build as build_kernel
from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, Kconfig, parse_requirement
from cocolab.kernel.needs import rig_lacks
from cocolab.lab.agent import Api, Lab, Limits, read_token, read_tokens
from cocolab.paths import REPO_ROOT
from cocolab.qemu.policy import check_qemu_args
from cocolab.results import ktap
from cocolab.results import load as load_results
from cocolab.results import merge as merge_results
from cocolab.results.kcidb import SUBMIT as KCIDB_SUBMIT
from cocolab.results.kcidb import counts as kcidb_counts
from cocolab.results.kcidb import report as kcidb_report
from cocolab.results.report import render as render_report
from cocolab.rig import Rig, RigOptions


def _rig(args: argparse.Namespace) -> Rig:
    options = RigOptions.parsed(lambda dest: getattr(args, dest))
    rig = Rig(dataclasses.replace(options, refresh=getattr(args, "refresh", False)))
    rig.check_inputs()
    return rig


def doctor(rig: Rig) -> int:
    print(f"lane:        {rig.lane.name} ({rig.lane.source})")
    print(f"QEMU:        {rig.qemu_info.binary} {rig.qemu_info.version}")
    print(f"accelerator: {rig.accel.accel} ({rig.accel.reason})")
    print(f"kernel:      {rig.kernel_setting.value} (from {rig.kernel_setting.source})")
    print(f"             {rig.kernel.release}: {rig.kernel.image}")
    rig.preflight()
    print(f"guest image: {rig.image.initrd}")
    return 0


def _interactive(vm: Guest) -> int:
    """A root shell in the guest: OpenSSH if installed, else a paramiko pty."""
    port = present(vm.ssh_port, "the SSH port")
    ssh = shutil.which("ssh")
    if ssh:
        known = vm.workdir / "known_hosts"  # the image's host key, pinned as cocolab pins it
        known.write_text(f"[127.0.0.1]:{port} {vm.keys.host}\n")
        return subprocess.call([ssh, "-i", str(vm.keys.client), "-p", str(port),
                                "-o", "StrictHostKeyChecking=yes", "-o",
                                f"UserKnownHostsFile={known}", "-o", "LogLevel=ERROR",
                                "root@127.0.0.1"])
    size = shutil.get_terminal_size()
    chan = vm.ssh.client.invoke_shell(term=os.environ.get("TERM", "vt100"),
                                      width=size.columns, height=size.lines)
    saved = termios.tcgetattr(sys.stdin) if sys.stdin.isatty() else None
    try:
        if saved:
            tty.setraw(sys.stdin.fileno())
        while not chan.exit_status_ready():
            ready, _, _ = select.select([chan, sys.stdin], [], [], 0.5)
            if chan in ready:
                data = chan.recv(4096)
                if not data:
                    break
                os.write(sys.stdout.fileno(), data)
            if sys.stdin in ready:
                data = os.read(sys.stdin.fileno(), 1024)
                if not data:
                    break
                chan.sendall(data)
    finally:
        if saved:
            termios.tcsetattr(sys.stdin, termios.TCSADRAIN, saved)
    return 0


def _puts(specs: list[str]) -> list[tuple[Path, str, int]]:
    """--put FILE[:PATH] as (file, guest path, mode), each file checked before any boot."""
    out = []
    for spec in specs:
        local, _, remote = spec.partition(":")
        path = Path(local)
        if not path.is_file():
            raise ConfigError(f"--put {spec}: {local} is not a file")
        mode = 0o755 if os.access(path, os.X_OK) else 0o644
        out.append((path, remote or f"/root/{path.name}", mode))
    return out


def shell(rig: Rig, qemu_args: list[str], machine: str | None, topology: str | None,
          puts: Sequence[tuple[Path, str, int]] = ()) -> int:
    config, view = rig.plan(qemu_args=tuple(qemu_args), machine=machine, topology=topology)
    workdir = Path(tempfile.mkdtemp(prefix="cocolab-shell-"))
    print(f"booting {rig.kernel.release} ({rig.accel.accel}); logs in {workdir}",
          file=sys.stderr)
    with rig.guest(config, workdir, "shell", view) as vm:
        if view is not None:
            vm.topology.verify()
            print(f"topology {view.topology.name} verified: " + ", ".join(
                f"{i}={p.bdf}" for i, p in view.placed.items()), file=sys.stderr)
        for local, remote, mode in puts:
            vm.put(local, remote, mode)
            print(f"copied {local} to {remote}", file=sys.stderr)
        print(f"ready in {vm.boot_seconds:.1f}s; exit the shell to stop the VM", file=sys.stderr)
        return _interactive(vm)


OPT_IN_SUITES = ("kselftest", "kunit")
"""Suites whose options a kernel gets only when they are named: the kernel's own tests
(IOMMUFD_TEST's mock domain, KUnit at every boot) are not what a kernel under test carries."""


def kconfig(suites: list[str], check_path: str | None, apply_tree: str | None = None,
            bare: bool = False, kernel: str | None = None) -> int:
    """The config fragment for `suites` (default: every suite but the opt-in ones); with
    `check_path` what that .config lacks; with `apply_tree` the fragment merged into that
    tree's .config. `kernel`: the kernel whose tree the selftest targets' `config` files
    are read from."""
    tests = REPO_ROOT / "tests"
    known = sorted(p.name for p in tests.iterdir() if p.is_dir() and p.name != "unit"
                   and not p.name.startswith((".", "_")))
    unknown = [s for s in suites if s not in known]
    if unknown:
        raise ConfigError(f"kconfig: no suite {', '.join(unknown)}; choose from "
                          f"{', '.join(known)}")
    if check_path and apply_tree:
        raise ConfigError("kconfig: give --check CONFIG or --apply TREE, not both")
    if apply_tree is not None:
        check_tree(Path(apply_tree).expanduser())
    chosen = suites or [s for s in known if s not in OPT_IN_SUITES]
    gates = collect_gates([str(tests / s) for s in chosen]
                          + (["--kernel", kernel] if kernel else []))
    if apply_tree is not None:
        config = apply_fragment(Path(apply_tree).expanduser(), fragment(gates, why=False))
        check_path = str(Path(apply_tree) / ".config")
    elif check_path is None:
        sys.stdout.write(fragment(gates, why=not bare))
        return 0
    else:
        try:
            config = Kconfig.from_file(Path(check_path))
        except KernelError as exc:
            raise ConfigError(f"kconfig --check {check_path}: {exc}") from None
    lines, skipping = check(config, gates)
    for line in lines:
        print(line)
    lacks = len(rig_lacks(config))
    print(f"{check_path}: {lacks} option(s) missing for the rig, {skipping} test(s) will "
          "skip; `cocolab kconfig` prints the fragment")
    return 1 if lacks else 0


def build_command(args: argparse.Namespace) -> int:
    """`cocolab build [SOURCE]`: the lane's patches and options come with it (--lane
    cc-sim-tdx builds the cc-sim kernel), and --patch/--kconfig add to them."""
    if args.list:
        for line in list_debian_sources():
            print(line)
        return 0
    lane = Rig(RigOptions(lane=args.lane)).lane
    source = args.source or lane.build_source
    if source is None:
        raise ConfigError(f"build: give a SOURCE (debian:X.Y or a kernel tree); lane "
                          f"{lane.name} builds none (`cocolab build --list`)")
    check_source(source, "build")
    for option in args.kconfig:
        if parse_requirement(option) is None:
            raise ConfigError(f"--kconfig {option!r}: not {REQUIREMENT_SYNTAX}")
    patches = (*lane.patch_paths, *(Path(p).expanduser() for p in args.patch))
    for patch in patches:
        read_patch(patch)  # a bad one is one line before anything is fetched
    request = BuildRequest(source, patches, (*lane.kconfig, *args.kconfig), args.base,
                           jobs=args.jobs or len(os.sched_getaffinity(0)))
    built = build_kernel(request)
    how = "cached" if built.cached else f"{built.compiled} objects compiled"
    print(f"built {built.release} in {built.seconds:.1f}s ({how}): --kernel {built.out}")
    return 0


def lab_command(args: argparse.Namespace) -> int:
    logging.getLogger("cocolab.lab").setLevel(logging.INFO)  # a service says what it does
    lane = args.lane or os.environ.get("COCOLAB_LANE") or "default"
    api = Api(args.api.rstrip("/"), read_token(args.token_file), backoff_s=args.backoff,
              insecure_http=args.insecure_http)
    limits = Limits(args.max_download, args.max_unpacked, args.allow_unverified,
                    args.insecure_http)
    lab = Lab(api, args.runtime, lane, args.workdir.resolve(),
              read_tokens(args.callback_token), poll_s=args.poll, state=args.state,
              callback_format=args.callback_format, limits=limits)
    return lab.serve(once=args.once)


def merge_command(args: argparse.Namespace) -> int:
    """`results merge`: the shards of one --shard I/N run as one results file."""
    merged = merge_results([load_results(Path(p)) for p in args.results], args.results)
    merged.write(Path(args.output))
    outcomes = Counter(t.outcome for t in merged.tests)
    print(f"{args.output}: {len(merged.tests)} tests from shards {', '.join(merged.shards)}: "
          + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())))
    return 0


def report_command(args: argparse.Namespace) -> int:
    runs = [load_results(Path(p)) for p in args.results]
    since = [load_results(Path(p)) for p in args.since]
    out = Path(args.output)
    out.write_text(render_report(runs, out, since))
    print(f"{out}: {len(runs)} run(s)" + (f", changes against {len(since)} earlier"
                                            if since else ""))
    return 0


def kcidb_command(args: argparse.Namespace) -> int:
    document = kcidb_report([load_results(Path(p)) for p in args.results], args.origin)
    out = Path(args.output)
    out.write_text(json.dumps(document, indent=1) + "\n")
    said = ", ".join(f"{n} {kind}" for kind, n in kcidb_counts(document).items())
    print(f"{out}: KCIDB v{document['version']['major']}.{document['version']['minor']}, "
          f"valid: {said}")
    print("submit it with: " + KCIDB_SUBMIT.format(file=out))
    return 0


def pin_guest() -> int:
    """Rewrite guests/packages.lock to the versions (and their digests) the mirror serves."""
    lock, pins = pin_guest_packages()
    for pin in pins:
        print(f"{pin.name} {pin.version}")
    print(f"pinned in {lock}")
    return 0


def doctor_command(args: argparse.Namespace) -> int:
    return doctor(_rig(args))


def setup_command(args: argparse.Namespace) -> int:
    if args.pin_guest:
        return pin_guest()
    rig = _rig(args)
    print(f"kernel {rig.kernel.release}: {rig.kernel.image}")
    rig.preflight()
    print(f"guest image: {rig.image.initrd}")
    return 0


def shell_command(args: argparse.Namespace) -> int:
    rig = _rig(args)
    check_qemu_args(tuple(args.qemu_arg), "--qemu-arg", tuple(args.allow_host_path))
    puts = _puts(args.put)
    rig.layout(args.machine, args.topology)
    rig.preflight()
    return shell(rig, args.qemu_arg, args.machine, args.topology, puts)


def kconfig_command(args: argparse.Namespace) -> int:
    return kconfig(args.suites, args.check, args.apply, args.bare, args.kernel)


def ktap_command(args: argparse.Namespace) -> int:
    """`cocolab ktap LOG...`: each log's items, a line each, then pytest's closing counts;
    exit 1 when one failed or erred (as a test run would)."""
    found = []
    for name in args.logs:
        try:
            with open(name, errors="replace") as log:
                found += ktap.parse(log)
        except OSError as exc:
            raise ConfigError(f"ktap {name}: {exc.strerror}") from None
    for nodeid, test in ktap.items(found):
        print(f"{test.status.value.upper():8} {nodeid}" + (f" ({test.reason})" if test.reason
                                                           else ""))
    print(ktap.summary(found))
    bad = {ktap.Status.FAILED, ktap.Status.ERROR}
    return 1 if any(test.status in bad for _, test in ktap.items(found)) else 0


def coverage_command(args: argparse.Namespace) -> int:
    """`cocolab coverage DIR`: lines of the virtio drivers the guests under DIR reached."""
    root = Path(args.dir)
    gcdas = sorted(root.rglob("*.gcda")) if root.is_dir() else []
    if not gcdas:
        raise ConfigError(f"coverage {args.dir}: no .gcda files (run pytest with --gcov-dir "
                          f"{args.dir} on the hardening lane first)")
    build = Path(args.build) if args.build else next(
        (found for g in gcdas for s in coverage.DRIVERS if g.name == Path(s).stem + ".gcda"
         and (found := coverage.build_dir(g, s)) is not None), None)
    if build is None or not (build / "cocolab-build.json").is_file():
        raise ConfigError(f"coverage: the guests' build directory ({build}) is not a cocolab "
                          "build on this host; give it with --build")
    tree = Path(json.loads((build / "cocolab-build.json").read_text())["tree"])
    guests = len({g.parent for g in gcdas if g.name == "virtio_ring.gcda"})
    print(f"{guests} guests, build {build}")
    for line in coverage.report([root], build, tree, tuple(args.sources) or coverage.DRIVERS):
        print(line)
    return 0


RUNS = {"doctor": doctor_command, "setup": setup_command, "shell": shell_command,
        "kconfig": kconfig_command, "build": build_command, "results merge": merge_command,
        "kcidb": kcidb_command, "report": report_command, "lab": lab_command,
        "ktap": ktap_command, "coverage": coverage_command}


def main(argv: list[str] | None = None) -> int:
    args = parser(RUNS).parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    if not args.verbose:  # with -v the log says it already
        progress.set_sink(lambda line: print(line, file=sys.stderr, flush=True))
    try:
        return int(args.run(args))
    except CocolabError as exc:
        print(f"cocolab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
