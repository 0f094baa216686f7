"""python -m cocolab.spdm: a responder on its own, for a VM booted by hand (relaunch.sh
starts one per SPDM device) or for any requester on this host.

    python -m cocolab.spdm [--port N] [--personality NAME] [--root-pem FILE] [--log FILE]
                           [--background]

It listens on 127.0.0.1 only. With --background it returns once it listens, printing the
PID of the process that serves; stop that with SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from cocolab.spdm.responder import Personality, Responder


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocolab.spdm",
                                     description="an SPDM responder on QEMU's SPDM socket")
    parser.add_argument("--port", type=int, default=0,
                        help="port on 127.0.0.1 (default: a free one, printed)")
    parser.add_argument("--personality", default="good",
                        choices=[p.value for p in Personality])
    parser.add_argument("--root-pem", type=Path, help="write the root to trust here")
    parser.add_argument("--log", type=Path, help="append every message, decoded, here")
    parser.add_argument("--background", action="store_true",
                        help="return once listening; print the serving PID")
    args = parser.parse_args(argv)
    # SIGTERM and SIGINT are taken by sigwait below; blocked first, so that no serving thread
    # (they inherit the mask) swallows one
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        responder = Responder(args.log, port=args.port)
    except OSError as exc:
        print(f"cocolab.spdm: cannot listen on 127.0.0.1:{args.port}: {exc.strerror}",
              file=sys.stderr)
        return 1
    responder.set_personality(args.personality)
    if args.root_pem:
        args.root_pem.write_bytes(responder.root_pem)
    if args.background:
        # the listening socket is made before the fork, so the caller may start QEMU at once;
        # the child serves (threads do not survive fork, so it starts its own)
        pid = os.fork()
        if pid:
            print(pid)
            return 0
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let the caller's $(...) end
            os.dup2(devnull, fd)
        responder.restart_threads()
    else:
        print(f"cocolab.spdm: listening on 127.0.0.1:{responder.port} as "
              f"{args.personality}; Ctrl-C stops", file=sys.stderr)
    signal.sigwait(stops)
    responder.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
