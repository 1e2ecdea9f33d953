"""Daemon events: one `htekd: ...` line each on standard error (the journal under systemd)."""

from __future__ import annotations

import sys


def say(message: str) -> None:
    print(f"htekd: {message}", file=sys.stderr, flush=True)
