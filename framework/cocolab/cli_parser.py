"""The `cocolab` command line: one parser per subcommand, each with its own options and help,
as git's and kci-dev's are. An unknown subcommand is a usage error (exit 2), and `cocolab
COMMAND --help` shows that command's options only.

    cocolab doctor | setup | shell        a host, its kernel and guest; a shell in a VM
    cocolab kconfig | build               what a kernel needs; a kernel built from source
    cocolab results merge | kcidb | report  results of runs: joined, for KCIDB, as a page
    cocolab lab                           a KernelCI pull lab
    cocolab ktap | coverage               a KTAP log as items; the drivers' lines reached
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Mapping
from pathlib import Path

from cocolab.kernel.build import BASES
from cocolab.lab.fetch import DOWNLOAD_CAP, UNPACKED_CAP
from cocolab.options import OPTIONS

Run = Callable[[argparse.Namespace], int]

SUMMARIES = {
    "doctor": "what this host offers: QEMU, the accelerator (and why), the lane's kernel",
    "setup": "fetch the lane's kernel and build the guest image now (pre-warms the cache)",
    "shell": "boot the VM a test would boot and give you a root shell in it",
    "kconfig": "the kernel config fragment the rig and the suites need, or what a .config "
               "lacks",
    "build": "a kernel from source (debian:X.Y or a tree), patched, minimal config, "
             "ccache'd; prints the path that boots it",
    "results": "results of runs: `results merge` joins the shards of one --shard I/N run",
    "kcidb": "a KCIDB v5.3 report of results, validated; prints how to submit it",
    "report": "one self-contained HTML page: runs across, tests down, what changed",
    "lab": "a KernelCI pull lab: run the jobs of a runtime on this host's lane",
    "ktap": "the items a KTAP log (a console, a kselftest output) becomes: one line each, "
            "then the counts",
    "coverage": "the lines of the virtio drivers the guests of a GCOV kernel reached "
                "(pytest --gcov-dir DIR on the hardening lane), per file and per path",
}


def _common() -> argparse.ArgumentParser:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("-v", "--verbose", action="store_true", help="log what happens")
    return common


def _rig_options(p: argparse.ArgumentParser) -> None:
    for opt in OPTIONS:
        p.add_argument(opt.flag, dest=opt.dest, help=opt.help, **dict(opt.kwargs))


def _doctor(p: argparse.ArgumentParser) -> None:
    _rig_options(p)
    p.add_argument("--refresh", action="store_true",
                   help="prove the accelerator and probe QEMU again instead of trusting cached "
                        "verdicts")


def _setup(p: argparse.ArgumentParser) -> None:
    _rig_options(p)
    p.add_argument("--pin-guest", action="store_true",
                   help="pin the guest's Debian packages (guests/packages.lock) to what the "
                        "mirror serves now")


def _shell(p: argparse.ArgumentParser) -> None:
    _rig_options(p)
    p.add_argument("--qemu-arg", action="append", default=[], metavar="ARG",
                   help="extra QEMU argument (repeatable), as @pytest.mark.qemu_args")
    p.add_argument("--allow-host-path", action="append", default=[], metavar="PATH",
                   help="a host path --qemu-arg may name (repeatable), as "
                        "@pytest.mark.allow_host_paths")
    p.add_argument("--topology", metavar="NAME",
                   help="a topology from qemu-configs/topologies/, as @pytest.mark.topology")
    p.add_argument("--machine", metavar="NAME",
                   help="a machine from qemu-configs/machines/, as @pytest.mark.machine")
    p.add_argument("--put", action="append", default=[], metavar="FILE[:PATH]",
                   help="copy FILE into the guest first (to PATH, default /root/NAME; "
                        "executable if it is here); repeatable")


def _kconfig(p: argparse.ArgumentParser) -> None:
    p.add_argument("suites", nargs="*", metavar="SUITE",
                   help="the suites to cover (default: all but kselftest and kunit, whose "
                        "options a kernel gets only when they are named), e.g. devmem")
    p.add_argument("--kernel", metavar="SPEC",
                   help="the kernel whose tree kselftest's targets are read from (their "
                        "`config` files), e.g. build:debian:7.3 (default: the lane's)")
    p.add_argument("--check", metavar="CONFIG",
                   help="what this .config lacks, and which tests it skips")
    p.add_argument("--apply", metavar="TREE",
                   help="merge the fragment into this kernel source tree's .config "
                        "(merge_config.sh, make olddefconfig), then --check it")
    p.add_argument("--bare", action="store_true",
                   help="the fragment without comments, as merge_config.sh takes it")


def _build(p: argparse.ArgumentParser) -> None:
    p.add_argument("source", nargs="?", metavar="SOURCE",
                   help="debian:X.Y or a kernel tree (default: the lane's)")
    p.add_argument("--lane", metavar="NAME",
                   help="the lane whose patches and options to build with (default: default)")
    p.add_argument("--patch", action="append", default=[], metavar="FILE",
                   help="apply this patch (git format-patch, a diff or an mbox of a series) "
                        "to a copy of the source first; repeatable, in order")
    p.add_argument("--kconfig", action="append", default=[], metavar="OPTION",
                   help="one more option (NAME, NAME=y|m|n); repeatable")
    p.add_argument("--base", default="minimal", choices=BASES,
                   help="the config to start from (default: minimal, tinyconfig + "
                        "kvm_guest.config + guests/kconfig/minimal.config)")
    p.add_argument("--jobs", type=int, default=None, metavar="N",
                   help="make -jN (default: one per core)")
    p.add_argument("--list", action="store_true",
                   help="list the Debian linux-source versions there are")


def _results_files(p: argparse.ArgumentParser) -> None:
    p.add_argument("results", nargs="+", metavar="RESULTS",
                   help="cocolab-results.json files, or the --results directories holding them")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="where to write")


def _kcidb(p: argparse.ArgumentParser) -> None:
    _results_files(p)
    p.add_argument("--origin", required=True, metavar="NAME",
                   help="your CI system's KCIDB origin (lowercase, digits, _)")


def _report(p: argparse.ArgumentParser) -> None:
    _results_files(p)
    p.add_argument("--since", action="append", default=[], metavar="RESULTS",
                   help="earlier results to mark changes against (repeatable)")


def _lab(p: argparse.ArgumentParser) -> None:
    p.add_argument("--api", required=True, metavar="URL",
                   help="the KernelCI API (its .../latest URL): https, or http on loopback")
    p.add_argument("--runtime", required=True, metavar="NAME",
                   help="the runtime whose jobs to take (one lab per runtime)")
    p.add_argument("--lane", metavar="NAME", help="the lane jobs run on (default: default)")
    p.add_argument("--token-file", type=Path, metavar="FILE",
                   help="the API token, sent to the API's origin only (default: "
                        "$COCOLAB_LAB_TOKEN)")
    p.add_argument("--callback-token", action="append", default=[], metavar="NAME=FILE",
                   help="the token for callbacks whose token_name is NAME, read from FILE "
                        "(repeatable); a job naming no such token is not posted")
    p.add_argument("--callback-format", choices=("pull_labs", "lava"), default="pull_labs",
                   help="the results body: the PULL_LABS protocol's (default), or the "
                        "LAVA-shaped one kernelci-pipeline's callback service parses today")
    p.add_argument("--state", default="available", metavar="STATE",
                   help="the job node state to poll (default: available, as "
                        "kernelci-pipeline's scheduler leaves pull-lab jobs)")
    p.add_argument("--allow-unverified", action="store_true",
                   help="run artifacts the job gives no sha256 for")
    p.add_argument("--insecure-http", action="store_true",
                   help="allow plain http beyond loopback (API, artifacts, callback)")
    p.add_argument("--max-download", type=int, default=DOWNLOAD_CAP, metavar="BYTES",
                   help=f"the most bytes one artifact may have (default {DOWNLOAD_CAP})")
    p.add_argument("--max-unpacked", type=int, default=UNPACKED_CAP, metavar="BYTES",
                   help=f"the most bytes a modules tarball may unpack to (default "
                        f"{UNPACKED_CAP})")
    p.add_argument("--once", action="store_true", help="run at most one job, then exit")
    p.add_argument("--backoff", type=float, default=1.0, metavar="SECONDS",
                   help="the first wait before retrying the API, doubled each time (5 tries; "
                        "default 1)")
    p.add_argument("--poll", type=float, default=30.0, metavar="SECONDS",
                   help="how often to poll when there is no job (default 30)")
    p.add_argument("--workdir", type=Path, default=Path("lab"), metavar="DIR",
                   help="where jobs' artifacts, results and the ledger go (default ./lab)")


def _ktap(p: argparse.ArgumentParser) -> None:
    p.add_argument("logs", nargs="+", metavar="LOG", help="a saved log holding KTAP output")


def _coverage(p: argparse.ArgumentParser) -> None:
    p.add_argument("dir", metavar="DIR", help="what pytest --gcov-dir DIR kept: a directory "
                                              "a guest")
    p.add_argument("sources", nargs="*", metavar="SOURCE",
                   help="source files of the kernel tree (default: virtio_ring.c, virtio.c, "
                        "virtio_blk.c, virtio_net.c, virtio-rng.c)")
    p.add_argument("--build", metavar="O_DIR",
                   help="the kernel's build directory (default: the one the guests' .gcda "
                        "paths name)")


ARGUMENTS: dict[str, Callable[[argparse.ArgumentParser], None]] = {
    "doctor": _doctor, "setup": _setup, "shell": _shell, "kconfig": _kconfig,
    "build": _build, "kcidb": _kcidb, "report": _report, "lab": _lab, "ktap": _ktap,
    "coverage": _coverage,
}


def parser(runs: Mapping[str, Run]) -> argparse.ArgumentParser:
    """The command line, each subcommand running `runs[NAME]` (`results merge` runs
    runs["results merge"])."""
    top = argparse.ArgumentParser(prog="cocolab", description=__doc__,
                                  formatter_class=argparse.RawDescriptionHelpFormatter)
    commands = top.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, summary in SUMMARIES.items():
        sub = commands.add_parser(name, help=summary, description=summary,
                                  parents=[_common()])
        if name == "results":
            merge = sub.add_subparsers(dest="action", required=True, metavar="ACTION")
            what = merge.add_parser("merge", parents=[_common()],
                                    help="join the shards of one --shard I/N run",
                                    description="join the shards of one --shard I/N run")
            _results_files(what)
            what.set_defaults(run=runs["results merge"])
            continue
        ARGUMENTS[name](sub)
        sub.set_defaults(run=runs[name])
    return top
