"""HTTP load: wrk for request rates, and a keep-alive client of our own for whole-file downloads
(one at a time for throughput, hundreds at once on one epoll loop for memory)."""

from __future__ import annotations

import re
import selectors
import shutil
import socket
import subprocess
import time

from bench.net import loopback

BUFFER = bytearray(1 << 20)


class HttpError(RuntimeError):
    pass


def wrk(url_host: str, port: int, name: str, seconds: float, user_agent: str, threads: int = 2,
        connections: int = 50) -> float:
    """Requests per second wrk measures; HttpError if any answer was not 2xx/3xx or a socket failed."""
    loopback(url_host)
    host = f"[{url_host}]" if ":" in url_host else url_host
    binary = shutil.which("wrk")
    if not binary:
        raise HttpError("wrk is not installed (run bench/setup)")
    result = subprocess.run(
        [binary, f"-t{threads}", f"-c{connections}", f"-d{seconds:g}s", "-H", f"User-Agent: {user_agent}",
         f"http://{host}:{port}/{name}"],
        capture_output=True, text=True, timeout=seconds + 30)
    output = result.stdout
    rate = re.search(r"Requests/sec:\s+([0-9.]+)", output)
    if result.returncode != 0 or not rate:
        raise HttpError(f"wrk failed: {output}{result.stderr}")
    bad = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    errors = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", output)
    if bad or (errors and any(int(n) for n in errors.groups())):
        raise HttpError(f"wrk saw failures: {output}")
    return float(rate.group(1))


def _request(host: str, port: int, name: str, user_agent: str) -> bytes:
    return (f"GET /{name} HTTP/1.1\r\nHost: {host}:{port}\r\nUser-Agent: {user_agent}\r\n"
            f"Connection: keep-alive\r\n\r\n").encode()


def _content_length(head: bytes) -> int:
    status = head.split(b"\r\n", 1)[0]
    if b" 200 " not in status + b" ":
        raise HttpError(f"answer {status!r}")
    match = re.search(rb"\r\ncontent-length:\s*(\d+)", head, re.IGNORECASE)
    if not match:
        raise HttpError("no Content-Length")
    return int(match.group(1))


def download(host: str, port: int, name: str, times: int, user_agent: str = "", timeout: float = 60.0) -> list[float]:
    """`times` downloads of one file over one keep-alive connection; seconds each."""
    loopback(host)
    seconds = []
    view = memoryview(BUFFER)
    with socket.create_connection((host, port), timeout=timeout) as sock:
        for _ in range(times):
            began = time.monotonic()
            sock.sendall(_request(host, port, name, user_agent))
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = sock.recv(65536)
                if not chunk or len(head) > 65536:
                    raise HttpError("connection closed in the headers")
                head += chunk
            head, _, body = head.partition(b"\r\n\r\n")
            remaining = _content_length(head) - len(body)
            while remaining > 0:
                count = sock.recv_into(view, min(len(BUFFER), remaining))
                if not count:
                    raise HttpError("connection closed in the body")
                remaining -= count
            seconds.append(time.monotonic() - began)
    return seconds


class _Download:
    __slots__ = ("sock", "head", "remaining", "done", "error")

    def __init__(self, host, port, request):
        self.sock = socket.create_connection((host, port), timeout=10)
        self.sock.sendall(request)
        self.sock.setblocking(False)
        self.head = b""
        self.remaining = -1
        self.done = False
        self.error = ""


def parallel_downloads(host: str, port: int, name: str, count: int, deadline: float = 300.0,
                       during=None) -> tuple[int, float]:
    """`count` connections download `name` at once; (completed downloads, seconds).
    `during()` is called about every 50 ms (to sample the server's memory)."""
    loopback(host)
    request = _request(host, port, name, "")
    selector = selectors.EpollSelector()
    downloads = []
    started = time.monotonic()
    for _ in range(count):
        download_ = _Download(host, port, request)
        downloads.append(download_)
        selector.register(download_.sock, selectors.EVENT_READ, download_)
    view = memoryview(BUFFER)
    open_count = count
    last = 0.0
    while open_count and time.monotonic() - started < deadline:
        for key, _ in selector.select(0.05):
            current = key.data
            try:
                if current.remaining < 0:
                    chunk = current.sock.recv(65536)
                    if not chunk:
                        raise HttpError("closed in the headers")
                    current.head += chunk
                    if b"\r\n\r\n" in current.head:
                        head, _, body = current.head.partition(b"\r\n\r\n")
                        current.remaining = _content_length(head) - len(body)
                else:
                    got = current.sock.recv_into(view, min(len(BUFFER), current.remaining))
                    if not got:
                        raise HttpError("closed in the body")
                    current.remaining -= got
            except BlockingIOError:
                continue
            except (OSError, HttpError) as exc:
                current.error = str(exc)
                current.remaining = 0
            if current.remaining == 0:
                current.done = True
                selector.unregister(current.sock)
                current.sock.close()
                open_count -= 1
        now = time.monotonic()
        if during and now - last > 0.05:
            last = now
            during()
    for current in downloads:
        if not current.done:
            current.error = "deadline"
            selector.unregister(current.sock)
            current.sock.close()
    selector.close()
    return sum(1 for d in downloads if d.done and not d.error), time.monotonic() - started
