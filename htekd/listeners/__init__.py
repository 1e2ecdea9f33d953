"""Listeners: thin protocol adapters over the resolver. They know nothing of Htek."""

from __future__ import annotations


class ListenError(Exception):
    """A listener could not bind one of its addresses; str() names both."""

    def __init__(self, listener: str, address, reason: str):
        self.listener, self.address, self.reason = listener, address, reason
        super().__init__(f"{listener}: cannot listen on {address}: {reason}")
