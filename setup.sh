#!/bin/sh
# Sets up cocolab on a Debian (or Ubuntu) machine: the host packages it needs, then a virtualenv
# in .venv with cocolab installed in it. Safe to run again. Needs root or sudo for apt-get.
set -eu
cd "$(dirname "$0")"

PACKAGES="qemu-system-x86 gcc libc6-dev cpio kmod zstd xz-utils python3-venv ca-certificates"

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi
missing=$(for p in $PACKAGES; do dpkg-query -W -f='${Status}\n' "$p" 2>/dev/null |
          grep -q "install ok installed" || echo "$p"; done)
if [ -n "$missing" ]; then
    echo "setup: installing $(echo $missing)"
    $SUDO apt-get update -q
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev,avocado]'
echo "setup: done. Run: .venv/bin/pytest tests/devmem/"
