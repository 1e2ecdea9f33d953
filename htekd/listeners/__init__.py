"""Listeners: thin protocol adapters over the resolver. They know nothing of Htek."""

from __future__ import annotations

import socket

from htekd import reuseport


class ListenError(Exception):
    """A listener could not bind one of its addresses; str() names both."""

    def __init__(self, listener: str, address, reason: str):
        self.listener, self.address, self.reason = listener, address, reason
        super().__init__(f"{listener}: cannot listen on {address}: {reason}")


class IPv6Only:
    """For Twisted listening ports: an IPv6 address means IPv6 only, so "0.0.0.0:N [::]:N" can both bind."""

    def createInternetSocket(self):
        sock = super().createInternetSocket()
        reuseport.allow(sock)
        if self.addressFamily == socket.AF_INET6:
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        return sock
