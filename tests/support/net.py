"""Loopback ports for the servers the tests start (PostgreSQL, Synapse, nginx, sshd, Redis, stand-ins)."""

from __future__ import annotations

import os
import random
import socket

# A port is chosen long before its server binds it (a fleet picks every port, then starts its servers; a stopped
# MAS stand-in is started again on its port). Two things can take it in between (CI saw a stand-in's restart
# fail with "Address already in use"):
# - the kernel, which takes the local port of every outgoing connection (psycopg2, ssh, urllib) from its
#   ephemeral range, the very range bind(0) hands out;
# - the other pytest-xdist worker, whose own bind(0) may be offered the same port.
# So ports come from below the ephemeral range, where the kernel never picks, each worker from its own slice,
# and this process never hands one out twice.
_HANDED_OUT: set = set()
_LOWEST = 10000


def _ephemeral_low() -> int:
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as handle:
            return int(handle.read().split()[0])
    except (OSError, ValueError, IndexError):
        return 32768  # Linux's default


def _slice() -> range:
    """This worker's ports: a share of [_LOWEST, the ephemeral range's start), by its pytest-xdist number."""
    top = _ephemeral_low()
    if top - _LOWEST < 1000:
        return range(0)  # an unusual ephemeral range: leave the choice to the kernel
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    count = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1") or 1)
    index = int(worker[2:]) if worker[2:].isdigit() else 0
    width = (top - _LOWEST) // max(count, 1)
    start = _LOWEST + (index % max(count, 1)) * width
    return range(start, start + width)


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing holds now, that this process has not handed out before, and that
    neither the kernel (for an outgoing connection) nor another test worker will take before its server binds it."""
    ports = _slice()
    if ports:
        offset = random.randrange(len(ports))  # consecutive runs start apart
        for step in range(len(ports)):
            port = ports[(offset + step) % len(ports)]
            if port not in _HANDED_OUT and _bindable(port):
                _HANDED_OUT.add(port)
                return port
    while True:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
