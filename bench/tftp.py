"""Many TFTP phones from one process: one state machine per fetch over non-blocking UDP sockets,
driven by one epoll loop. RRQ with blksize and tsize, OACK, block-number rollover, retransmission
on timeout, a bounded number of tries, and an overall deadline."""

from __future__ import annotations

import errno
import selectors
import socket
import struct
import time
from dataclasses import dataclass, field

from bench.net import loopback

OP_RRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 3, 4, 5, 6
RECV_SIZE = 65536 + 4
_ack = struct.Struct("!HH").pack


@dataclass
class Fetch:
    """One file asked for; filled in as it runs."""

    name: str
    started: float = 0.0
    ended: float = 0.0
    nbytes: int = 0
    error: str = ""  # "" when the whole file came, else the ERROR text or "timeout"
    error_code: int = -1
    content: bytearray | None = None  # kept when asked for (to check the bytes)

    @property
    def seconds(self) -> float:
        return self.ended - self.started


class _Transfer:
    __slots__ = ("fetch", "sock", "server", "tid", "blksize", "expected", "last", "sent_at", "tries", "keep", "done",
                 "owner")

    def __init__(self, fetch: Fetch, server, blksize: int | None, keep: bool, owner, source: str | None = None):
        self.fetch, self.server, self.keep, self.owner = fetch, server, keep, owner
        family = socket.AF_INET6 if ":" in server[0] else socket.AF_INET
        self.sock = socket.socket(family, socket.SOCK_DGRAM)
        self.sock.bind((source or server[0], 0))
        self.sock.setblocking(False)
        self.tid = None
        self.blksize = 512
        self.expected = 1
        options = b"tsize\x000\x00"
        if blksize:
            options += b"blksize\x00%d\x00" % blksize
        self.last = struct.pack("!H", OP_RRQ) + fetch.name.encode() + b"\x00octet\x00" + options
        self.tries = 1
        self.done = False
        if keep:
            fetch.content = bytearray()
        fetch.started = self.sent_at = time.monotonic()
        self.sock.sendto(self.last, server)

    def packet(self, data: bytes, source) -> None:
        if source[0] != self.server[0]:
            return
        if self.tid is None:
            self.tid = source
        elif source != self.tid:
            self.sock.sendto(struct.pack("!HH", OP_ERROR, 5) + b"Unknown transfer ID\x00", source)
            return
        opcode = (data[0] << 8) | data[1] if len(data) >= 2 else 0
        if opcode == OP_DATA and len(data) >= 4:
            block = (data[2] << 8) | data[3]
            if block == self.expected:
                payload = len(data) - 4
                self.fetch.nbytes += payload
                if self.keep:
                    self.fetch.content += data[4:]
                self.last = _ack(OP_ACK, block)
                self.sock.sendto(self.last, self.tid)
                self.sent_at = time.monotonic()
                self.tries = 1
                self.expected = (block + 1) & 0xFFFF
                if payload < self.blksize:
                    self.finish("")
            elif block == (self.expected - 1) & 0xFFFF:
                self.sock.sendto(self.last, self.tid)  # our ACK was lost: send it again
        elif opcode == OP_OACK:
            fields = data[2:].split(b"\x00")
            options = {fields[i].lower(): fields[i + 1] for i in range(0, len(fields) - 1, 2)}
            self.blksize = int(options.get(b"blksize", b"512"))
            self.last = _ack(OP_ACK, 0)
            self.sock.sendto(self.last, self.tid)
            self.sent_at = time.monotonic()
            self.tries = 1
        elif opcode == OP_ERROR and len(data) >= 4:
            self.fetch.error_code = (data[2] << 8) | data[3]
            self.finish(data[4:].split(b"\x00", 1)[0].decode("ascii", "replace") or f"error {self.fetch.error_code}")

    def tick(self, now: float, timeout: float, retries: int) -> None:
        if now - self.sent_at < timeout:
            return
        if self.tries >= retries:
            self.finish("timeout")
            return
        self.tries += 1
        self.sent_at = now
        self.sock.sendto(self.last, self.tid or self.server)

    def finish(self, error: str) -> None:
        self.fetch.error = error
        self.fetch.ended = time.monotonic()
        self.done = True


@dataclass
class Storm:
    """Phones that each fetch their files one after the other, `parallel` phones at a time."""

    host: str
    port: int
    phones: list  # of lists of names
    parallel: int = 50
    blksize: int | None = None
    keep: bool = False
    timeout: float = 1.0  # seconds before a packet is sent again
    retries: int = 5
    deadline: float = 300.0  # seconds for the whole storm
    sources: list | None = None  # an address of its own for each phone booting at once (else the host's)
    fetches: list = field(default_factory=list)
    seconds: float = 0.0

    def run(self) -> "Storm":
        server = (loopback(self.host), self.port)
        selector = selectors.EpollSelector()
        waiting = [list(names) for names in reversed(self.phones)]
        active: dict[int, _Transfer] = {}
        queues: dict[int, list] = {}
        started = time.monotonic()
        end = started + self.deadline
        last_tick = started

        def start(names: list, owner: int) -> None:
            fetch = Fetch(names.pop(0))
            self.fetches.append(fetch)
            source = self.sources[owner % len(self.sources)] if self.sources else None
            transfer = _Transfer(fetch, server, self.blksize, self.keep, owner, source)
            active[transfer.sock.fileno()] = transfer
            queues[transfer.sock.fileno()] = names
            selector.register(transfer.sock, selectors.EVENT_READ, transfer)

        def close(transfer: _Transfer) -> list:
            fd = transfer.sock.fileno()
            selector.unregister(transfer.sock)
            transfer.sock.close()
            del active[fd]
            return queues.pop(fd)

        def next_after(transfer: _Transfer) -> None:
            """The phone's next file, or a phone still waiting to boot, in the finished one's place."""
            names = close(transfer)
            if names:
                start(names, transfer.owner)
            elif waiting:
                start(waiting.pop(), transfer.owner)

        for owner in range(min(self.parallel, len(waiting))):
            start(waiting.pop(), owner)
        while active:
            now = time.monotonic()
            if now > end:
                for transfer in list(active.values()):
                    transfer.finish("deadline")
                    close(transfer)
                break
            for key, _ in selector.select(0.05):
                transfer = key.data
                for _ in range(64):  # drain what is queued, boundedly
                    try:
                        data, source = transfer.sock.recvfrom(RECV_SIZE)
                    except OSError as exc:
                        if exc.errno in (errno.EAGAIN, errno.EWOULDBLOCK):
                            break
                        transfer.finish(f"socket error: {exc.strerror}")
                        break
                    transfer.packet(data, source)
                    if transfer.done:
                        break
                if transfer.done:
                    next_after(transfer)
            now = time.monotonic()
            if now - last_tick > 0.05:
                last_tick = now
                for transfer in list(active.values()):
                    transfer.tick(now, self.timeout, self.retries)
                    if transfer.done:
                        next_after(transfer)
        selector.close()
        self.seconds = time.monotonic() - started
        return self


def fetch_one(host: str, port: int, name: str, blksize: int | None, deadline: float = 120.0) -> Fetch:
    """One whole file, alone (the throughput figures)."""
    return Storm(host, port, [[name]], parallel=1, blksize=blksize, deadline=deadline).run().fetches[0]
