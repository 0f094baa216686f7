"""An in-process SSH server on 127.0.0.1 for the SSH client's unit tests (no QEMU).

`AcceptingSshd` accepts any public key and any session; a test's subclass decides what an
exec does. `serve()` answers connections on a listener with a fresh server object each.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable
from pathlib import Path

import paramiko
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class AcceptingSshd(paramiko.ServerInterface):
    def check_auth_publickey(self, username: str, key: paramiko.PKey) -> int:
        return paramiko.AUTH_SUCCESSFUL

    def get_allowed_auths(self, username: str) -> str:
        return "publickey"

    def check_channel_request(self, kind: str, chanid: int) -> int:
        return paramiko.OPEN_SUCCEEDED


def ed25519(path: Path) -> paramiko.Ed25519Key:
    """A new Ed25519 key, written to `path` in OpenSSH format."""
    path.write_bytes(Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.OpenSSH,
        serialization.NoEncryption()))
    return paramiko.Ed25519Key.from_private_key_file(str(path))


def serve(host_key: paramiko.PKey, server: Callable[[], paramiko.ServerInterface],
          channels: int = 16) -> socket.socket:
    """A listener on 127.0.0.1 whose connections are served, each by a new `server()`, in
    daemon threads; close it to stop."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(4)

    def accept() -> None:
        while True:
            try:
                conn, _ = listener.accept()
            except OSError:
                return
            transport = paramiko.Transport(conn)
            transport.add_server_key(host_key)
            try:
                transport.start_server(server=server())
            except (paramiko.SSHException, OSError):
                continue  # a client that hung up mid-handshake (the host-key test's does)
            threading.Thread(target=lambda t=transport: [t.accept(5) for _ in range(channels)],
                             daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()
    return listener


def pinned(key: paramiko.PKey) -> str:
    """The key as the OpenSSH public-key line SSH pins."""
    return f"{key.get_name()} {key.get_base64()}"
