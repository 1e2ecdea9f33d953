"""Daemon events: one `htekd: ...` line each on standard error (the journal under systemd)."""

from __future__ import annotations

import sys
import threading

from htekd.escape import shown

_one_at_a_time = threading.Lock()  # FTP's thread and the reactor's: print() writes text and newline apart


def say(message: str) -> None:
    # One line whatever the message quotes (a client's name inside an exception's text).
    with _one_at_a_time:
        sys.stderr.write(f"htekd: {shown(message, markup=False)}\n")
        sys.stderr.flush()
