"""The one network rule of the benchmark: loopback only, checked on every address it uses."""

from __future__ import annotations

import ipaddress
import socket


class NotLoopback(ValueError):
    pass


def loopback(host: str) -> str:
    """`host` if it is a loopback address (127.0.0.0/8, ::1), else NotLoopback."""
    try:
        address = ipaddress.ip_address(host.split("%", 1)[0].strip("[]"))
    except ValueError:
        raise NotLoopback(f"{host!r} is not an IP address: the benchmark takes loopback addresses only") from None
    if not address.is_loopback:
        raise NotLoopback(f"{host} is not a loopback address: the benchmark runs on 127.0.0.0/8 or ::1 only")
    return host


def free_port(host: str, kind: int = socket.SOCK_STREAM) -> int:
    family = socket.AF_INET6 if ":" in loopback(host) else socket.AF_INET
    with socket.socket(family, kind) as probe:
        probe.bind((host, 0))
        return probe.getsockname()[1]


def free_port_range(host: str, count: int) -> tuple[int, int]:
    """`count` consecutive TCP ports free a moment ago (FTP passive ranges); 200 tries at most."""
    import random

    loopback(host)
    for _ in range(200):
        low = random.randrange(30000, 60000 - count)
        probes = []
        try:
            for port in range(low, low + count):
                probe = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
                probes.append(probe)
                probe.bind((host, port))
            return low, low + count - 1
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {count} free consecutive ports on {host}")
