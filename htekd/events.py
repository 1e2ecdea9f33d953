"""Daemon events: one `htekd: ...` line each on standard error (the journal under systemd)."""

from __future__ import annotations

import sys
import threading

_one_at_a_time = threading.Lock()  # FTP's thread and the reactor's: print() writes text and newline apart


def say(message: str) -> None:
    with _one_at_a_time:
        sys.stderr.write(f"htekd: {message}\n")
        sys.stderr.flush()
