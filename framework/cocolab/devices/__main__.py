"""python -m cocolab.devices: one back-end on its own, for a VM booted by hand (relaunch.sh
starts one per device a topology gives a `backend`).

    python -m cocolab.devices --socket PATH --backend vhost-user-rng|vhost-user-blk
                              [--personality NAME] [--image FILE] [--log FILE] [--background]

QEMU connects with `-chardev socket,id=X,path=PATH -device vhost-user-rng-pci,chardev=X`
(guest RAM a shared memfd). With --background it returns once the socket exists, printing
the PID of the process that serves; stop that with SIGTERM.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

from cocolab.devices import BACKENDS, Backend, BlkBackend, Personality


def make(args: argparse.Namespace) -> Backend:
    cls = BACKENDS[args.backend]
    if cls is BlkBackend:
        return BlkBackend(args.socket, args.log, args.personality, image=args.image)
    return cls(args.socket, args.log, args.personality)


def _why(exc: OSError | ValueError, args: argparse.Namespace) -> str:
    """One line: the image that would not read, the socket that would not listen, or the
    personality the device type lacks."""
    if not isinstance(exc, OSError):
        return str(exc)
    if exc.filename is not None:  # read_bytes() of --image names its file
        return f"{exc.filename}: {exc.strerror}"
    return f"cannot listen on {args.socket}: {exc.strerror}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m cocolab.devices",
                                     description="a virtio device back-end over vhost-user")
    parser.add_argument("--socket", type=Path, required=True, help="unix socket to listen on")
    parser.add_argument("--backend", required=True, choices=sorted(BACKENDS))
    parser.add_argument("--personality", default="good",
                        choices=[p.value for p in Personality])
    parser.add_argument("--image", type=Path, help="vhost-user-blk: the medium's content")
    parser.add_argument("--log", type=Path, help="append every event, decoded, here")
    parser.add_argument("--background", action="store_true",
                        help="return once listening; print the serving PID")
    args = parser.parse_args(argv)
    stops = {signal.SIGTERM, signal.SIGINT}
    signal.pthread_sigmask(signal.SIG_BLOCK, stops)  # before any thread: sigwait takes them
    if args.background:
        ready_r, ready_w = os.pipe()
        pid = os.fork()
        if pid:
            os.close(ready_w)
            word = os.read(ready_r, 4096).decode()
            if word != "ready":
                print(f"cocolab.devices: {word or 'the back-end died starting'}", file=sys.stderr)
                return 1
            print(pid)
            return 0
        os.close(ready_r)
        os.setsid()
        devnull = os.open(os.devnull, os.O_RDWR)
        for fd in (0, 1, 2):  # let the caller's $(...) end
            os.dup2(devnull, fd)
    try:
        backend = make(args)
    except (OSError, ValueError) as exc:
        why = _why(exc, args)
        if args.background:
            os.write(ready_w, why.encode())
            os._exit(1)
        print(f"cocolab.devices: {why}", file=sys.stderr)
        return 1
    if args.background:
        os.write(ready_w, b"ready")
        os.close(ready_w)
    else:
        print(f"cocolab.devices: {args.backend} on {args.socket} as {args.personality}; "
              "Ctrl-C stops", file=sys.stderr)
    signal.sigwait(stops)
    backend.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
