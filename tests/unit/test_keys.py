"""The guest's keys: made on the host, the host key in dropbear's own file format."""

from __future__ import annotations

import base64
import struct

from cocolab.guest_image.build import dropbear_host_key, host_keypair, ssh_keypair


def test_the_host_key_is_written_as_dropbear_reads_it() -> None:
    """string "ssh-ed25519", uint32 64, seed, public key (dropbear's ed25519.c); checked once
    against dropbear 2022.83's own `dropbearkey -y`, which printed the same public key."""
    private, public = host_keypair()
    data = dropbear_host_key(private)
    (name_len,) = struct.unpack_from(">I", data)
    name = data[4:4 + name_len]
    (blob_len,) = struct.unpack_from(">I", data, 4 + name_len)
    blob = data[8 + name_len:]
    assert (name, blob_len, len(blob)) == (b"ssh-ed25519", 64, 64)
    kind, b64 = public.split()[:2]
    wire = base64.b64decode(b64)  # string "ssh-ed25519", string pub
    assert kind == "ssh-ed25519" and blob[32:] == wire[-32:]


def test_host_and_client_keys_differ_and_persist() -> None:
    (client, client_pub), (host, host_pub) = ssh_keypair(), host_keypair()
    assert client != host and client_pub != host_pub
    assert host_keypair() == (host, host_pub)  # made once, then reused
    assert host.stat().st_mode & 0o777 == 0o600
