"""FTP load: whole-file downloads with ftplib, passive or active, one client or many in threads."""

from __future__ import annotations

import ftplib
import threading
import time

from bench.net import loopback

BUFFER_SIZE = 1 << 20


class _Client(ftplib.FTP):
    """ftplib, with every address it is told to connect to checked (a PASV reply names one)."""

    def makepasv(self):
        host, port = super().makepasv()
        return loopback(host), port


def download(host: str, port: int, name: str, times: int, passive: bool = True, timeout: float = 60.0) -> list[float]:
    """`times` RETRs of `name` in one session; seconds each. Raises on any failure or short file."""
    loopback(host)
    seconds = []
    buffer = memoryview(bytearray(BUFFER_SIZE))
    with _Client(timeout=timeout) as ftp:
        ftp.connect(host, port)
        ftp.login()
        ftp.set_pasv(passive)
        ftp.voidcmd("TYPE I")
        size = ftp.size(name)
        for _ in range(times):
            began = time.monotonic()
            total = 0
            with ftp.transfercmd(f"RETR {name}") as data:
                while count := data.recv_into(buffer):
                    total += count
            ftp.voidresp()
            if total != size:
                raise ftplib.Error(f"{name}: {total} bytes of {size}")
            seconds.append(time.monotonic() - began)
    return seconds


def parallel(host: str, port: int, name: str, clients: int, passive: bool, deadline: float = 300.0) -> tuple[int, int]:
    """`clients` sessions at once, each downloading `name` once; (succeeded, failed)."""
    loopback(host)
    results: list[str] = []
    lock = threading.Lock()

    def one():
        try:
            download(host, port, name, 1, passive, timeout=min(60.0, deadline))
            outcome = ""
        except Exception as exc:  # counted as a failed transfer
            outcome = f"{type(exc).__name__}: {exc}"
        with lock:
            results.append(outcome)

    workers = [threading.Thread(target=one, daemon=True) for _ in range(clients)]
    for worker in workers:
        worker.start()
    end = time.monotonic() + deadline
    for worker in workers:
        worker.join(max(0.0, end - time.monotonic()))
    failed = sum(1 for r in results if r) + (clients - len(results))
    return clients - failed, failed
