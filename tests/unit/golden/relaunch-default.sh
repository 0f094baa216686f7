#!/bin/sh
# Boots the VM this test used, its console on this terminal (Ctrl-a x quits).
# Usage: relaunch.sh [SSH_PORT]; the SSH command to use from another terminal is
# printed first.
PORT=${1:-10022}
KEY=/KEY
VMDIR=$(cd "$(dirname "$0")" && pwd)
printf 'ssh: ssh -i %s -p %s -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1\n' "$KEY" "$PORT" >&2
exec /usr/bin/qemu-system-x86_64 \
    -nodefaults \
    -no-user-config \
    -display none \
    -no-reboot \
    -machine q35 \
    -accel tcg,thread=single \
    -cpu max \
    -m 1024M \
    -smp 2 \
    -kernel /KERNEL \
    -initrd /INITRD \
    -append 'console=ttyS0 panic=-1 cocolab.token=manual cocolab.mac=52:54:00:12:34:56 cocolab.modules=virtio_pci,virtio_net lockdown=integrity' \
    -serial mon:stdio \
    -netdev user,id=net0,restrict=on,hostfwd=tcp:127.0.0.1:"$PORT"-:22 \
    -device virtio-net-pci,netdev=net0,mac=52:54:00:12:34:56,romfile= \
    -device edu
