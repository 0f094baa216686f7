#!/bin/sh
# Sets up cocolab on a Debian (or Ubuntu) machine: the host packages it needs, then a virtualenv
# in .venv with cocolab installed in it. Safe to run again. Needs root or sudo for apt-get.
set -eu
cd "$(dirname "$0")"

PACKAGES="gcc libc6-dev libssl-dev cpio kmod zstd xz-utils python3-venv ca-certificates"
# cocolab build (kernels from source, the cc-sim lane): kbuild's tools, and ccache.
PACKAGES="$PACKAGES make flex bison bc libelf-dev ccache git"
# the unit tests run the SSH session against the guest's own shell, busybox's ash
PACKAGES="$PACKAGES busybox-static"
# tests/virtio_hostile makes the filesystem image its vhost-user disk serves (mke2fs -d)
PACKAGES="$PACKAGES e2fsprogs"
# tests/kselftest builds the kernel's selftests: their installer copies with rsync, and the
# iommu target links libcap statically
PACKAGES="$PACKAGES rsync libcap-dev"
QEMU=qemu-system-x86

if [ "$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi

installed() { dpkg-query -W -f='${Status}\n' "$1" 2>/dev/null | grep -q "install ok installed"; }
enabled() { grep -hqs "^[^#]*$1" /etc/apt/sources.list /etc/apt/sources.list.d/*; }

# The URI of the first deb source for suite $1, from one-line or deb822 apt sources.
mirror_of() {
    { awk -v suite="$1" '/^deb / { for (i = 2; i < NF; i++)
                  if ($i !~ /^\[/ && $(i + 1) == suite) { print $i; exit } }' \
          /etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true; } | head -n1
    { awk -v suite="$1" '/^$/ { types = uris = found = "" }
          /^Types:/ { for (i = 2; i <= NF; i++) if ($i == "deb") types = 1 }
          /^URIs:/ { uris = $2 }
          /^Suites:/ { for (i = 2; i <= NF; i++) if ($i == suite) found = 1 }
          types && uris && found { print uris; exit }' \
          /etc/apt/sources.list.d/*.sources 2>/dev/null || true; } | head -n1
}

# The CMA tests need QEMU 9.1 or later (nvme spdm_port). Debian 12's own QEMU is 7.2, and its
# backports suite has 10.0: enable that suite from the mirror this host already uses.
BACKPORTS=
codename=$(. /etc/os-release && echo "${VERSION_CODENAME:-}")
have=$(dpkg-query -W -f='${Version}' $QEMU 2>/dev/null || true)
if [ "$codename" = bookworm ] && ! dpkg --compare-versions "${have:-0}" ge 1:9.1; then
    if ! enabled bookworm-backports; then
        mirror=$(mirror_of bookworm | head -n1)
        if [ -n "$mirror" ]; then
            echo "setup: enabling bookworm-backports from $mirror (QEMU 10, for the CMA tests)"
            echo "deb $mirror bookworm-backports main" |
                $SUDO tee /etc/apt/sources.list.d/cocolab-bookworm-backports.list >/dev/null
        else
            echo "setup: no apt source for bookworm to take a mirror from: QEMU stays at" \
                 "${have:-none}, and the CMA tests skip (add bookworm-backports to apt's sources)" >&2
        fi
    fi
    enabled bookworm-backports && BACKPORTS=bookworm-backports
fi

missing=$(for p in $PACKAGES; do installed "$p" || echo "$p"; done)
[ -n "$BACKPORTS" ] || installed $QEMU || missing="$missing $QEMU"
if [ -n "$BACKPORTS" ] || [ -n "$(echo $missing)" ]; then
    $SUDO apt-get update -q
fi
if [ -n "$(echo $missing)" ]; then
    echo "setup: installing $(echo $missing)"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends $missing
fi
if [ -n "$BACKPORTS" ]; then
    echo "setup: installing $QEMU from $BACKPORTS (have ${have:-none})"
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends \
        -t "$BACKPORTS" $QEMU
fi

if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
fi
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev,avocado,kcidb]'
echo "setup: done. Run: .venv/bin/pytest tests/devmem/"
