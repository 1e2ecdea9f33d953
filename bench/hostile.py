"""One host of the LAN against the listeners, while a phone at another loopback address fetches its
files: pipelined requests never read (the daemon's memory), and idle connections and unanswered
TFTP requests by the thousand (descriptor exhaustion). Every loop is bounded in count and time."""

from __future__ import annotations

import contextlib
import ipaddress
import resource
import socket
import struct
import subprocess
import time

from bench.servers import memory_kib

PIPELINED_REQUEST = b"GET /{name} HTTP/1.1\r\nHost: htekd\r\n\r\n"


def phone_address(host: str) -> str:
    """Another loopback address than the attacker's `host` (IPv4 only: IPv6 loopback is one address)."""
    address = ipaddress.ip_address(host)
    if address.version != 4:
        raise ValueError("the attack figures need an IPv4 --host (the phone takes another 127.x address)")
    return str(address + 1) if str(address) != "127.255.255.254" else "127.0.0.2"


def phone_fetch(phone: str, url: str, size: int) -> bool:
    """Whether the phone at `phone` gets all `size` bytes of `url` (curl, bound to that address)."""
    try:
        result = subprocess.run(["curl", "-sS", "--interface", phone, "--max-time", "30", "-o", "/dev/null",
                                 "-w", "%{size_download}", url], capture_output=True, timeout=40)
    except subprocess.TimeoutExpired:
        return False
    return result.returncode == 0 and result.stdout.strip() == str(size).encode()


def _connect(host: str, port: int, timeout: float) -> socket.socket | None:
    sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.connect((host, port))
    except OSError:
        sock.close()
        return None
    return sock


def pipelined_growth(host: str, port: int, pid: int, name: str, connections: int = 12,
                     total: int = 30_000_000, seconds: float = 10.0) -> tuple[float, int]:
    """(MB the daemon's RSS grew at its peak, bytes sent): `connections` connections from `host`
    send up to `total` bytes of pipelined GETs of `name` and never read an answer."""
    before = memory_kib(pid, "VmRSS")
    peak, sent = before, 0
    sockets = [sock for sock in (_connect(host, port, 2.0) for _ in range(connections)) if sock is not None]
    payload = PIPELINED_REQUEST.replace(b"{name}", name.encode()) * 1000
    deadline = time.monotonic() + seconds
    try:
        for sock in sockets:
            sock.setblocking(False)
        while sent < total and time.monotonic() < deadline:
            for sock in sockets:
                with contextlib.suppress(BlockingIOError, ConnectionError):
                    sent += sock.send(payload)
            peak = max(peak, memory_kib(pid, "VmRSS"))
            time.sleep(0.005)
        settle = time.monotonic() + 1.0
        while time.monotonic() < settle:
            peak = max(peak, memory_kib(pid, "VmRSS"))
            time.sleep(0.05)
    finally:
        for sock in sockets:
            sock.close()
    return (peak - before) * 1024 / 1e6, sent


def exhaustion(host: str, ports: dict[str, int], fetches: list[tuple[str, str, int]], connections: int = 1100,
               tftp_requests: int = 700, seconds: float = 120.0) -> tuple[int, int]:
    """(failed, total) phone fetches while `host` holds up to `connections` idle TCP connections to
    each of HTTP and FTP and sends `tftp_requests` TFTP requests it never answers, then once the
    attacker has let go. `fetches` are (protocol, name, size), fetched from another address."""
    phone = phone_address(host)
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = min(hard, 2 * connections + tftp_requests + 256)  # the attacker's own descriptors
    if soft < wanted:
        resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
    deadline = time.monotonic() + seconds
    held: list[socket.socket] = []
    failed = total = 0

    def fetch_all() -> None:
        nonlocal failed, total
        for protocol, name, size in fetches:
            total += 1
            host_part = f"{host}:{ports[protocol]}"
            failed += not phone_fetch(phone, f"{protocol}://{host_part}/{name}", size)

    try:
        for protocol in ("http", "ftp"):
            for _ in range(connections):
                if time.monotonic() > deadline:
                    break
                sock = _connect(host, ports[protocol], 0.2)
                if sock is not None:
                    held.append(sock)
        for _ in range(tftp_requests):
            forged = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            forged.bind((host, 0))
            forged.sendto(struct.pack("!H", 1) + fetches[-1][1].encode() + b"\0octet\0", (host, ports["tftp"]))
            held.append(forged)
        fetch_all()  # during
    finally:
        for sock in held:
            sock.close()
    fetch_all()  # after
    return failed, total
