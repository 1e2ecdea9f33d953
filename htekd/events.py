"""Daemon events: one `htekd: ...` line each on standard error (the journal under systemd)."""

from __future__ import annotations

import sys

from htekd.escape import shown


def say(message: str) -> None:
    # One line whatever the message quotes (a client's name inside an exception's text).
    print(f"htekd: {shown(message, markup=False)}", file=sys.stderr, flush=True)
