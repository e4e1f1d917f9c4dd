"""Loopback ports for the servers the tests start (PostgreSQL, Synapse, nginx, sshd, Redis, stand-ins)."""

from __future__ import annotations

import socket

# A port is chosen long before its server binds it (a fleet picks every port, then starts its servers), and
# the kernel may offer a port again until something listens on it: never hand the same one out twice.
_HANDED_OUT: set = set()


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on now and that this process has not handed out before
    (the kernel's choice, so parallel runs differ)."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
