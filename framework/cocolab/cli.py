"""The cocolab command: thin over the same layers the pytest plugin uses.

  cocolab doctor   what this host offers: QEMU, accelerator (and why), the lane's kernel;
                   --refresh proves the accelerator again
  cocolab setup    fetch the kernel and build the guest image now (pre-warms the cache)
  cocolab shell    boot the VM a test would boot and give you a root shell in it
  cocolab kconfig  the kernel config fragment the rig and the suites need;
                   --check .config says what a config lacks and which tests it skips;
                   --apply TREE merges it into a source tree's .config;
                   --bare prints the fragment alone, for Kconfig's own tools
  cocolab build    a kernel from source (debian:X.Y or a tree), --patch FILE applied, a
                   minimal config plus that fragment, ccache'd; prints what to pass to
                   --kernel. --list: the Debian sources there are
  cocolab results merge RESULTS... -o OUT
                   join the results of the shards of one --shard I/N run (each a
                   cocolab-results.json or the --results directory holding it)
  cocolab kcidb RESULTS... --origin NAME -o FILE
                   a KCIDB v5.3 report of those results, validated; prints how to submit it
  cocolab report RESULTS... -o report.html [--since EARLIER ...]
                   one self-contained page: runs across, tests down, what changed since
  cocolab lab --api URL --runtime NAME [--token-file F] [--once]
                   a KernelCI pull lab: poll for jobs of this runtime, run them on this
                   host's lane, post the results back as nodes
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
import urllib.parse
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from cocolab import progress
from cocolab.errors import CocolabError, ConfigError, KernelError, present
from cocolab.guest import Guest
from cocolab.guest_image.build import pin_guest_packages
from cocolab.kconfig_tool import apply as apply_fragment
from cocolab.kconfig_tool import check, check_tree, collect_gates, fragment
from cocolab.kernel.build import (
    BASES,
    BuildRequest,
    check_source,
    list_debian_sources,
    read_patch,
)
from cocolab.kernel.build import build as build_kernel
from cocolab.kernel.kconfig import REQUIREMENT_SYNTAX, Kconfig, parse_requirement
from cocolab.kernel.needs import rig_lacks
from cocolab.lab.agent import Api, Lab, Limits, read_token, read_tokens
from cocolab.lab.fetch import DOWNLOAD_CAP, UNPACKED_CAP
from cocolab.options import OPTIONS
from cocolab.paths import REPO_ROOT
from cocolab.qemu.policy import check_qemu_args
from cocolab.results import load as load_results
from cocolab.results import merge as merge_results
from cocolab.results.kcidb import SUBMIT as KCIDB_SUBMIT
from cocolab.results.kcidb import counts as kcidb_counts
from cocolab.results.kcidb import report as kcidb_report
from cocolab.results.report import render as render_report
from cocolab.rig import Rig, RigOptions


def _rig(args: argparse.Namespace) -> Rig:
    options = RigOptions.parsed(lambda dest: getattr(args, dest))
    rig = Rig(dataclasses.replace(options, refresh=args.refresh))
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


def kconfig(suites: list[str], check_path: str | None, apply_tree: str | None = None,
            bare: bool = False) -> int:
    """The config fragment for `suites` (default: every suite); with `check_path` what that
    .config lacks; with `apply_tree` the fragment merged into that tree's .config."""
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
    gates = collect_gates([str(tests / s) for s in suites or known])
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
    if len(args.suites) > 1:
        raise ConfigError(f"build: one SOURCE, not {len(args.suites)}: {' '.join(args.suites)}")
    lane = Rig(RigOptions(lane=args.lane)).lane
    source = args.suites[0] if args.suites else lane.build_source
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


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cocolab", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("command", choices=("doctor", "setup", "shell", "kconfig", "build",
                                            "results", "kcidb", "report", "lab"))
    parser.add_argument("suites", nargs="*", metavar="ARG",
                        help="kconfig: the suites to cover (default: all), e.g. devmem; "
                             "build: the SOURCE, debian:X.Y or a kernel tree (default: the "
                             "lane's)")
    parser.add_argument("--check", metavar="CONFIG",
                        help="kconfig: what this .config lacks, and which tests it skips")
    parser.add_argument("--apply", metavar="TREE",
                        help="kconfig: merge the fragment into this kernel source tree's "
                             ".config (merge_config.sh, make olddefconfig), then --check it")
    for opt in OPTIONS:
        parser.add_argument(opt.flag, dest=opt.dest, help=opt.help, **dict(opt.kwargs))
    parser.add_argument("--bare", action="store_true",
                        help="kconfig: the fragment without comments, as merge_config.sh takes it")
    parser.add_argument("--patch", action="append", default=[], metavar="FILE",
                        help="build: apply this patch (git format-patch, a diff or an mbox of a "
                             "series) to a copy of the source first; repeatable, in order")
    parser.add_argument("--kconfig", action="append", default=[], metavar="OPTION",
                        help="build: one more option (NAME, NAME=y|m|n); repeatable")
    parser.add_argument("--base", default="minimal", choices=BASES,
                        help="build: the config to start from (default: minimal, tinyconfig + "
                             "kvm_guest.config + guests/kconfig/minimal.config)")
    parser.add_argument("--jobs", type=int, default=None, metavar="N",
                        help="build: make -jN (default: one per core)")
    parser.add_argument("--list", action="store_true",
                        help="build: list the Debian linux-source versions there are")
    parser.add_argument("--qemu-arg", action="append", default=[], metavar="ARG",
                        help="extra QEMU argument (repeatable), as @pytest.mark.qemu_args")
    parser.add_argument("--topology", metavar="NAME",
                        help="a topology from qemu-configs/topologies/, as @pytest.mark.topology")
    parser.add_argument("--machine", metavar="NAME",
                        help="a machine from qemu-configs/machines/, as @pytest.mark.machine")
    parser.add_argument("--put", action="append", default=[], metavar="FILE[:PATH]",
                        help="shell: copy FILE into the guest first (to PATH, default "
                             "/root/NAME; executable if it is here); repeatable")
    parser.add_argument("--refresh", action="store_true",
                        help="doctor: prove the accelerator and probe QEMU again instead of "
                             "trusting cached verdicts")
    parser.add_argument("--pin-guest", action="store_true",
                        help="setup: pin the guest's Debian packages (guests/packages.lock) to "
                             "what the mirror serves now")
    parser.add_argument("-o", "--output", metavar="FILE",
                        help="results merge, kcidb: where to write")
    parser.add_argument("--since", action="append", default=[], metavar="RESULTS",
                        help="report: earlier results to mark changes against (repeatable)")
    parser.add_argument("--origin", metavar="NAME",
                        help="kcidb: your CI system's KCIDB origin (lowercase, digits, _)")
    parser.add_argument("--api", metavar="URL", help="lab: the KernelCI API (its .../latest URL)")
    parser.add_argument("--runtime", metavar="NAME", help="lab: the runtime whose jobs to take")
    parser.add_argument("--token-file", type=Path, metavar="FILE",
                        help="lab: the API token, sent to the API's origin only (default: "
                             "$COCOLAB_LAB_TOKEN)")
    parser.add_argument("--callback-token", action="append", default=[], metavar="NAME=FILE",
                        help="lab: the token for callbacks whose token_name is NAME, read from "
                             "FILE (repeatable); a job naming no such token is not posted")
    parser.add_argument("--callback-format", choices=("pull_labs", "lava"), default="pull_labs",
                        help="lab: the results body: the PULL_LABS protocol's (default), or the "
                             "LAVA-shaped one kernelci-pipeline's callback service parses today")
    parser.add_argument("--state", default="available", metavar="STATE",
                        help="lab: the job node state to poll (default: available, as "
                             "kernelci-pipeline's scheduler leaves pull-lab jobs)")
    parser.add_argument("--allow-unverified", action="store_true",
                        help="lab: run artifacts the job gives no sha256 for")
    parser.add_argument("--insecure-http", action="store_true",
                        help="lab: allow plain http beyond loopback (API, artifacts, callback)")
    parser.add_argument("--max-download", type=int, default=DOWNLOAD_CAP, metavar="BYTES",
                        help=f"lab: the most bytes one artifact may have (default {DOWNLOAD_CAP})")
    parser.add_argument("--max-unpacked", type=int, default=UNPACKED_CAP, metavar="BYTES",
                        help=f"lab: the most bytes a modules tarball may unpack to (default "
                             f"{UNPACKED_CAP})")
    parser.add_argument("--once", action="store_true",
                        help="lab: run at most one job, then exit")
    parser.add_argument("--backoff", type=float, default=1.0, metavar="SECONDS",
                        help="lab: the first wait before retrying the API, doubled each time "
                             "(5 tries; default 1)")
    parser.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                        help="lab: how often to poll when there is no job (default 30)")
    parser.add_argument("--workdir", type=Path, default=Path("lab"), metavar="DIR",
                        help="lab: where jobs' artifacts and results go (default ./lab)")
    parser.add_argument("-v", "--verbose", action="store_true")
    return parser


def lab_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    if not args.api or not args.runtime:
        parser.error("lab: --api URL and --runtime NAME are both needed")
    if urllib.parse.urlparse(args.api).scheme not in ("http", "https"):
        parser.error(f"lab: --api {args.api!r}: give an http(s) URL")
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


def results_command(args: argparse.Namespace, parser: argparse.ArgumentParser) -> int:
    """`results merge`, `kcidb` and `report`: read results files, write one file."""
    words = list(args.suites)
    if args.command == "results":
        if not words or words[0] != "merge":
            parser.error("results: say `results merge RESULTS... -o OUT`")
        words = words[1:]
    if not words:
        parser.error(f"{args.command}: name the results (files or --results directories)")
    if not args.output:
        parser.error(f"{args.command}: -o FILE: where to write")
    sources = [Path(w) for w in words]
    runs = [load_results(p) for p in sources]
    out = Path(args.output)
    if args.command == "results":
        merged = merge_results(runs, [str(p) for p in sources])
        merged.write(out)
        outcomes = Counter(t.outcome for t in merged.tests)
        print(f"{out}: {len(merged.tests)} tests from shards {', '.join(merged.shards)}: "
              + ", ".join(f"{n} {o}" for o, n in sorted(outcomes.items())))
        return 0
    if args.command == "report":
        since = [load_results(Path(p)) for p in args.since]
        out.write_text(render_report(runs, out, since))
        print(f"{out}: {len(runs)} run(s)" + (f", changes against {len(since)} earlier"
                                                if since else ""))
        return 0
    if not args.origin:
        parser.error("kcidb: --origin NAME: your CI system's name in KCIDB")
    document = kcidb_report(runs, args.origin)
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


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    args = parser.parse_intermixed_args(argv)  # `cocolab build --lane X SOURCE` too
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(name)s: %(message)s")
    if not args.verbose:  # with -v the log says it already
        progress.set_sink(lambda line: print(line, file=sys.stderr, flush=True))
    try:
        if args.command == "kconfig":
            return kconfig(args.suites, args.check, args.apply, args.bare)
        if args.command == "build":
            return build_command(args)
        if args.command == "setup" and args.pin_guest:
            return pin_guest()
        if args.command == "lab":
            return lab_command(args, parser)
        if args.command in ("results", "kcidb", "report"):
            return results_command(args, parser)
        if args.suites:
            parser.error(f"{args.command} takes no SUITE arguments")
        rig = _rig(args)
        if args.command == "doctor":
            return doctor(rig)
        if args.command == "setup":
            print(f"kernel {rig.kernel.release}: {rig.kernel.image}")
            rig.preflight()
            print(f"guest image: {rig.image.initrd}")
            return 0
        check_qemu_args(tuple(args.qemu_arg), "--qemu-arg")
        puts = _puts(args.put)
        rig.layout(args.machine, args.topology)
        rig.preflight()
        return shell(rig, args.qemu_arg, args.machine, args.topology, puts)
    except CocolabError as exc:
        print(f"cocolab: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
