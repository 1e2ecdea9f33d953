"""Listeners: thin protocol adapters over the resolver. They know nothing of Htek."""

from __future__ import annotations

import errno
import os
import socket
import time
from collections import Counter
from typing import Callable

from twisted.protocols.policies import WrappingFactory

from htekd.events import say

# Errors that mean "not now" (out of descriptors, socket buffers or memory), never "never again".
RESOURCE_ERRORS = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM})
RETRY_AFTER = 0.5  # seconds a listener waits before it tries again after a resource error

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


class Shortage:
    """A listening socket that could not take a connection or datagram for want of resources.

    The listener stops reading for RETRY_AFTER seconds and tries again until it works: one line
    when the shortage starts and one when it ends, however many attempts fail in between (a
    listener that retried at once would spin and write a line per attempt). Connections that
    arrive meanwhile wait in the kernel's queue.
    """

    def __init__(self, what: str, pause, resume, call_later):
        self.what, self.pause, self.resume, self.call_later = what, pause, resume, call_later
        self.since: float | None = None
        self.failures = 0

    def failed(self, exc: OSError) -> None:
        self.failures += 1
        if self.since is None:
            self.since = time.monotonic()
            name = errno.errorcode.get(exc.errno, str(exc.errno))
            say(f"{self.what}: {os.strerror(exc.errno)} ({name}); retrying every {RETRY_AFTER:g}s until it works")
        self.pause()
        self.call_later(RETRY_AFTER, self.resume)

    def worked(self) -> None:
        if self.since is not None:
            say(f"{self.what}: working again after {time.monotonic() - self.since:.1f}s "
                f"({self.failures} attempts failed)")
            self.since, self.failures = None, 0


def shortage_of(exc: OSError) -> bool:
    return exc.errno in RESOURCE_ERRORS


class _AcceptingSocket(socket.socket):
    """A listening socket whose accept() turns a resource error into "nothing to accept" (EAGAIN),
    remembered for the port to act on: Twisted would otherwise drop the waiting clients (EMFILE)
    or be woken again at once, forever (ENFILE, ENOBUFS, ENOMEM)."""

    shortage: OSError | None = None

    def accept(self):
        try:
            return super().accept()
        except OSError as exc:
            if not shortage_of(exc):
                raise
            self.shortage = exc
            raise BlockingIOError(errno.EAGAIN, os.strerror(errno.EAGAIN)) from None


class SurvivesShortage(IPv6Only):
    """For Twisted listening ports (TCP and UDP): a resource error pauses the port, never ends it."""

    shortage: Shortage | None = None
    listener_name = "listener"

    def createInternetSocket(self):
        sock = super().createInternetSocket()
        if self.socketType != socket.SOCK_STREAM:
            return sock
        return _AcceptingSocket(sock.family, sock.type, sock.proto, fileno=sock.detach())

    def startListening(self):
        super().startListening()
        reuseport.attach(self.socket)
        host, port = self.getHost().host, self.getHost().port
        address = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        self.shortage = Shortage(f"{self.listener_name} {address}: cannot accept", self.stopReading,
                                 self._resume_reading, self.reactor.callLater)

    def _resume_reading(self):
        if self.connected and not self.disconnecting:
            self.startReading()

    def doRead(self):
        try:
            super().doRead()  # UDP raises a resource error of recvfrom(); TCP's accept() keeps it
        except OSError as exc:
            if not shortage_of(exc):
                raise
            self.shortage.failed(exc)
            return
        refused = getattr(self.socket, "shortage", None)
        if refused is not None:
            self.socket.shortage = None
            self.shortage.failed(refused)
        else:
            self.shortage.worked()


class Refusals:
    """The line said when a client reaches its limit of connections: once, however many refusals
    follow, until one of its connections closes."""

    def __init__(self, listener: str, limit: int):
        self.listener, self.limit = listener, limit
        self._refusing: set[str] = set()

    def refused(self, client: str) -> None:
        if client not in self._refusing:
            self._refusing.add(client)
            say(f"{self.listener}: {client} has {self.limit} connections open, the most one client may have; "
                f"refusing more until one closes")

    def closed(self, client: str) -> None:
        self._refusing.discard(client)


class ConnectionsPerAddress(WrappingFactory):
    """At most `limit` open connections from one client (0 = no limit); one over the limit is closed
    at once, and the first refusal of a run is one line on stderr. A client is what `network` makes
    of its address: an IPv6 host may use every address of its /64, so it is counted as one."""

    def __init__(self, factory, listener: str, limit: int, network: Callable[[str], str] = str):
        super().__init__(factory)
        self.listener, self.limit, self.network = listener, limit, network
        self.open: Counter[str] = Counter()
        self.refusals = Refusals(listener, limit)

    def logPrefix(self):
        return self.listener

    def buildProtocol(self, addr):
        host = self.network(addr.host)
        if self.limit and self.open[host] >= self.limit:
            self.refusals.refused(host)
            return None
        self.open[host] += 1
        wrapper = super().buildProtocol(addr)
        wrapper.counted_host = host
        return wrapper

    def unregisterProtocol(self, protocol):
        super().unregisterProtocol(protocol)
        host = protocol.counted_host
        self.open[host] -= 1
        if self.open[host] <= 0:
            del self.open[host]
        self.refusals.closed(host)
