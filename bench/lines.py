"""The output of a child process as a list of lines, read by a thread so a full pipe never blocks it."""

from __future__ import annotations

import threading
import time
from typing import Callable


class LineReader(threading.Thread):
    def __init__(self, stream):
        super().__init__(daemon=True)
        self.stream = stream
        self.lines: list[str] = []
        self.changed = threading.Condition()
        self.closed = False
        self.start()

    def run(self) -> None:
        for raw in iter(self.stream.readline, b""):
            with self.changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self.changed.notify_all()
        with self.changed:
            self.closed = True
            self.changed.notify_all()

    def wait_for(self, predicate: Callable[[str], bool], start: int = 0, timeout: float = 10.0,
                 gone: Callable[[], bool] = lambda: False) -> str | None:
        """The first line from index `start` on that satisfies `predicate`; None after `timeout`, at the
        end of the stream, or once `gone()` says the process has exited (its children may keep the pipe)."""
        deadline = time.monotonic() + timeout
        with self.changed:
            index = start
            while True:
                while index < len(self.lines):
                    if predicate(self.lines[index]):
                        return self.lines[index]
                    index += 1
                remaining = deadline - time.monotonic()
                if self.closed or remaining <= 0 or gone():
                    return None
                self.changed.wait(min(remaining, 0.5))

    def text(self) -> str:
        with self.changed:
            return "\n".join(self.lines)
