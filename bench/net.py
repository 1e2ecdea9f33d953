"""The one network rule of the benchmark: loopback only, checked on every address it uses."""

from __future__ import annotations

import collections
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


def _below_ephemeral() -> tuple[int, int]:
    """Ports the kernel never hands out by itself: below the ephemeral range (clients' own ports), so a
    port found free here is not taken by some connection in the moment before the server binds it."""
    try:
        with open("/proc/sys/net/ipv4/ip_local_port_range") as ranges:
            low = int(ranges.read().split()[0])
    except (OSError, ValueError, IndexError):
        low = 32768
    return (10000, low - 1) if low > 20000 else (low + 20000, 65000)


def free_port(host: str, kind: int = socket.SOCK_STREAM, also: tuple[str, ...] = ()) -> int:
    """A port free a moment ago on `host` (and on each address of `also`), outside the ephemeral range."""
    return free_port_range(host, 1, kind, also)[0]


# Ports handed out lately: free until their server binds them, so a caller choosing several (a daemon's
# listeners and its passive range) must not get one twice.
_handed_out: collections.deque = collections.deque(maxlen=1024)


def free_port_range(host: str, count: int, kind: int = socket.SOCK_STREAM, also: tuple[str, ...] = ()) -> tuple[int, int]:
    """`count` consecutive ports free a moment ago (FTP passive ranges), none handed out lately; 200 tries at most."""
    import random

    hosts = [loopback(address) for address in (host, *also)]
    low_limit, high_limit = _below_ephemeral()
    for _ in range(200):
        low = random.randrange(low_limit, high_limit - count)
        if any(port in _handed_out for port in range(low, low + count)):
            continue
        probes = []
        try:
            for port in range(low, low + count):
                for address in hosts:
                    probe = socket.socket(socket.AF_INET6 if ":" in address else socket.AF_INET, kind)
                    probes.append(probe)
                    probe.bind((address, port))
            _handed_out.extend(range(low, low + count))
            return low, low + count - 1
        except OSError:
            continue
        finally:
            for probe in probes:
                probe.close()
    raise RuntimeError(f"no {count} free consecutive ports on {', '.join(hosts)}")
