"""Asking the console for pages: one timed request, or a thread that asks non-stop (bounded)."""

from __future__ import annotations

import http.client
import threading
import time

from bench.net import loopback


def get(host: str, port: int, path: str, timeout: float = 30.0) -> float:
    """Seconds until the whole page of `path` is read; RuntimeError unless it is 200."""
    loopback(host)
    began = time.perf_counter()
    connection = http.client.HTTPConnection(host, port, timeout=timeout)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        body = response.read()
    finally:
        connection.close()
    if response.status != 200 or not body:
        raise RuntimeError(f"console {path}: {response.status}")
    return time.perf_counter() - began


class Hammer(threading.Thread):
    """Asks for `path` again and again until stopped, at most `limit` times and `deadline` seconds;
    `rate` pages per second at most (0: one after the other, without a pause)."""

    def __init__(self, host: str, port: int, path: str, rate: float = 0.0, limit: int = 10_000, deadline: float = 300.0):
        super().__init__(daemon=True)
        self.host, self.port, self.path, self.limit, self.deadline = host, port, path, limit, deadline
        self.interval = 1 / rate if rate else 0.0
        self.done = 0
        self.error: Exception | None = None
        self._halt = threading.Event()

    def run(self) -> None:
        began = time.monotonic()
        end = began + self.deadline
        while not self._halt.is_set() and self.done < self.limit and time.monotonic() < end:
            try:
                get(self.host, self.port, self.path)
            except Exception as exc:  # reported by the figure, which must not hang on it
                self.error = exc
                return
            self.done += 1
            self._halt.wait(max(0.0, began + self.done * self.interval - time.monotonic()))

    def __enter__(self) -> Hammer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self._halt.set()
        self.join(self.deadline)
