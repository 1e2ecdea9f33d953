"""TFTP listener: read-only RFC 1350 with the blksize, tsize and timeout options (RFC 2347-2349).

Every request gets its own UDP socket (its transfer ID); the resolver runs in a thread, so a slow
resolution never holds up other transfers, and the content is streamed block by block.

A transfer's socket is a plain non-blocking one that the reactor watches directly: a Twisted port
per transfer costs its set-up and, on every datagram, a logging context and a second address
check, which together took about a fifth of the reactor's time in a boot storm.

A request's file name is read as UTF-8 (other bytes kept as surrogate escapes), as HTTP reads a
path, so every name HTTP serves TFTP serves too (the vendor's `1_Français(French).xml`); tftpy's
request decoder takes ASCII only, so requests are decoded here. tftpy encodes the OACK. DATA, ACK
and ERROR are packed with struct: tftpy's ERR encoder drops the message text and has no code 0, its
ERR decoder logs every packet at error level, and its DAT/ACK objects cost several times struct on
the per-block path. tftpy's server is not used: it runs all transfers in one select() thread (a
slow file callback stalls every phone), dies on an exception from that callback, has no IPv6 and
stops slowly.

A request's source address can be forged, so a peer that has not answered yet gets its first
packet twice at most (a real client that lost both sends its request again); and when the
transfers at once reach their limit, the oldest one still waiting for its first answer makes room.
"""

from __future__ import annotations

import resource
import socket
import struct
import time

from tftpy.TftpPacketTypes import TftpPacketOACK
from twisted.internet import error, udp
from twisted.internet.protocol import DatagramProtocol

from htekd.events import say
from htekd.listeners import ListenError, SurvivesShortage
from htekd.resolution import Client, Kind, Resolution, Status

OP_RRQ, OP_WRQ, OP_DATA, OP_ACK, OP_ERROR, OP_OACK = 1, 2, 3, 4, 5, 6

ERR_UNDEFINED, ERR_NOT_FOUND, ERR_ACCESS, ERR_ILLEGAL, ERR_UNKNOWN_TID = 0, 1, 2, 4, 5

DEFAULT_BLKSIZE = 512
MIN_BLKSIZE, MAX_BLKSIZE = 8, 65464  # RFC 2348; a larger request is answered with MAX_BLKSIZE
MIN_TIMEOUT, MAX_TIMEOUT = 1, 255  # RFC 2349
MAX_REQUEST = 512  # RFC 2347: a request with its options fits in 512 octets
MAX_ERROR_TEXT = 100
TRANSFER_MAX_PACKET = 516  # what a transfer port reads: ACKs, and ERRORs cut to a useful length
NETASCII_CHUNK = 65536
FIRST_PACKET_SENDS = 2  # sends of the first packet to a peer that has not answered yet


def listen(reactor, config, resolver, log) -> list:
    """Bind every configured address; ListenError (nothing left bound) if one fails."""
    ports = []
    for address in config.listen:
        server = TftpServer(reactor, address.host, config, resolver, log)
        # One byte more than a request may have, so that a longer one is seen to be too long.
        port = _ListeningPort(address.port, server, address.host, MAX_REQUEST + 1, reactor)
        try:
            port.startListening()
        except error.CannotListenError as exc:
            for bound in ports:
                bound.stopListening()
            raise ListenError("tftp", address, _strerror(exc.socketError)) from exc
        ports.append(port)
    return ports


class _ListeningPort(SurvivesShortage, udp.Port):
    """The port requests arrive on (each transfer then gets a port of its own)."""

    listener_name = "tftp"


def parse_request(data: bytes) -> tuple[str, str, dict[str, str]]:
    """(file name, mode in lower case, options) of an RRQ or WRQ; ValueError if it is malformed.

    The name is UTF-8, other bytes kept as surrogate escapes; mode and options are ASCII. Of an
    option given twice, the first counts."""
    fields = data[2:].split(b"\0")
    if len(fields) < 3 or fields[-1] or len(fields) % 2 == 0:
        raise ValueError("malformed request")
    name, mode, *rest = fields[:-1]
    if not all(rest):
        raise ValueError("empty option")
    options: dict[str, str] = {}
    for key, value in zip(rest[::2], rest[1::2]):
        options.setdefault(key.decode("ascii"), value.decode("ascii"))
    return name.decode("utf-8", "surrogateescape"), mode.decode("ascii").lower(), options


def transfer_limit(configured: int) -> int:
    """Transfers at once: as configured, and at most a quarter of the descriptor limit (each takes
    a socket and an open file), so that the other listeners keep theirs."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    return configured if soft == resource.RLIM_INFINITY else max(1, min(configured, soft // 4))


def _strerror(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


def error_packet(code: int, message: str) -> bytes:
    """ERROR with a short ASCII message (a client may print it)."""
    text = message.encode("ascii", "replace").replace(b"\0", b"?")[:MAX_ERROR_TEXT]
    return struct.pack("!HH", OP_ERROR, code) + text + b"\0"


def to_netascii(data: bytes) -> bytes:
    """RFC 764: CR -> CR NUL, then LF -> CR LF (the CRs this adds are not translated again)."""
    return data.replace(b"\r", b"\r\0").replace(b"\n", b"\r\n")


def netascii_size(reader) -> int:
    """Exact size of the reader's content once translated to netascii (reads it through once)."""
    total = 0
    while chunk := reader.read(NETASCII_CHUNK):
        total += len(chunk) + chunk.count(b"\r") + chunk.count(b"\n")
    return total


class NetasciiReader:
    """A binary reader that yields the netascii translation of another, converting as it streams."""

    def __init__(self, raw):
        self.raw = raw
        self.pending = b""
        self.offset = 0

    def readinto(self, target) -> int:
        want = len(target)
        while len(self.pending) - self.offset < want:
            chunk = self.raw.read(NETASCII_CHUNK)
            if not chunk:
                break
            self.pending = self.pending[self.offset:] + to_netascii(chunk)
            self.offset = 0
        count = min(want, len(self.pending) - self.offset)
        target[:count] = self.pending[self.offset:self.offset + count]
        self.offset += count
        return count

    def close(self) -> None:
        self.raw.close()


def _option_number(value: str, low: int, high: int | None) -> int | None:
    """The option's integer value if it is one and not below `low` (clamped to `high`), else None."""
    if not (value.isascii() and value.isdigit()):
        return None
    number = int(value)
    if number < low:
        return None
    return number if high is None else min(number, high)


def transfer_socket(family: int, address: tuple) -> socket.socket:
    """A non-blocking UDP socket on a free port of the listening address (OSError if none is left)."""
    sock = socket.socket(family, socket.SOCK_DGRAM)
    try:
        sock.setblocking(False)
        sock.bind(address)
    except BaseException:
        sock.close()
        raise
    return sock


class TftpServer(DatagramProtocol):
    """The listening port: decodes requests and starts one Transfer each."""

    def __init__(self, reactor, host: str, config, resolver, log):
        self.reactor, self.host, self.config, self.resolver, self.log = reactor, host, config, resolver, log
        self.family = socket.AF_INET
        self.transfer_address: tuple = (host, 0)  # the listening address with port 0, scope included
        # A resolver that can answer from what it has at hand (htekd's: cached generated files and
        # refusals) spares most requests the round trip through the thread pool.
        self.resolve_cached = getattr(resolver, "resolve_cached", None)
        self.transfers: dict[tuple, Transfer] = {}  # by client (host, port), oldest first
        self.max_transfers = transfer_limit(config.max_transfers)

    def startProtocol(self) -> None:
        handle = self.transport.getHandle()
        host, _, *scope = handle.getsockname()
        self.family = handle.family
        self.transfer_address = (host, 0, *scope)

    def datagramReceived(self, data: bytes, addr) -> None:
        try:
            self._request(data, addr)
        except Exception as exc:  # one bad request must never take the listener down
            self.send(error_packet(ERR_UNDEFINED, "internal error"), addr)
            say(f"tftp: request from {addr[0]}: internal error: {exc!r}")

    def _request(self, data: bytes, addr) -> None:
        if len(data) < 2:
            return
        opcode = (data[0] << 8) | data[1]
        if opcode in (OP_DATA, OP_ACK, OP_ERROR, OP_OACK):
            return  # belongs to a transfer port, or is a stray answer: never answered (no loops)
        if opcode not in (OP_RRQ, OP_WRQ):
            self.send(error_packet(ERR_ILLEGAL, "illegal operation"), addr)
            return
        if len(data) > MAX_REQUEST:
            self.send(error_packet(ERR_ILLEGAL, "request too long"), addr)
            return
        try:
            filename, mode, options = parse_request(data)
        except ValueError:  # UnicodeDecodeError of a mode or option too
            self.send(error_packet(ERR_ILLEGAL, "malformed request"), addr)
            return
        client = Client("tftp", _plain_address(addr[0]), addr[1], confirmed=False)
        if opcode == OP_WRQ:
            self.send(error_packet(ERR_ACCESS, "read-only server"), addr)
            refused = Resolution(filename, filename.lstrip("/"), Kind.NONE, Status.DENIED, reason="write refused")
            self.log.record(refused, client, "denied", 0, 0.0)
            return
        if mode not in ("octet", "netascii"):
            self.send(error_packet(ERR_ILLEGAL, f"unsupported mode {mode}"), addr)
            return
        running = self.transfers.get(addr)
        if running is not None:
            if running.request == data and not running.acknowledged:
                return  # the client sent its request again while we were still answering it
            running.finish("failed", "superseded by a new request from the same port")
        transfer = Transfer(self, addr, client, data, filename, mode, options)
        if len(self.transfers) >= self.max_transfers and not self._make_room():
            self.send(error_packet(ERR_UNDEFINED, "server busy"), addr)
            transfer.finish("failed", f"server busy: {self.max_transfers} transfers at once")
            return
        try:
            transfer.socket = transfer_socket(self.family, self.transfer_address)
        except OSError as exc:
            self.send(error_packet(ERR_UNDEFINED, "server busy"), addr)
            transfer.finish("failed", f"no transfer port: {_strerror(exc)}")
            return
        self.reactor.addReader(transfer)
        self.transfers[addr] = transfer
        transfer.begin()

    def _make_room(self) -> bool:
        """End the oldest transfer whose peer has not answered yet (perhaps a forged request);
        False if every peer is answering."""
        waiting = next((transfer for transfer in self.transfers.values() if not transfer.acknowledged), None)
        if waiting is None:
            return False
        waiting.finish("failed", f"no answer yet, and {self.max_transfers} transfers at once: made room for another")
        return True

    def send(self, packet: bytes, addr) -> None:
        try:
            self.transport.write(packet, addr)
        except (OSError, error.MessageLengthError):
            pass  # an answer lost on the way, as UDP may lose it anyway

    def stopProtocol(self) -> None:
        for transfer in list(self.transfers.values()):
            transfer.finish("failed", "server stopped", ERR_UNDEFINED, "server stopped")


class Transfer:
    """One read request on its own socket: resolve, negotiate, stream, log once.

    The reactor reads the socket through this object (fileno, doRead, connectionLost, logPrefix).
    """

    def __init__(self, server: TftpServer, peer, client: Client, request: bytes, filename: str, mode: str,
                 options: dict):
        self.server, self.peer, self.client, self.request = server, peer, client, request
        # Compared field by field: an IPv6 socket's recvfrom() gives a 4-tuple, never equal to `peer`.
        self.peer_host, self.peer_port = peer
        self.filename, self.mode, self.options = filename, mode, options
        self.reactor = server.reactor
        self.started = time.monotonic()
        self.socket: socket.socket | None = None
        self.resolution: Resolution | None = None
        self.reader = None
        self.done = False
        self.acknowledged = False  # any ACK seen: a repeated request is then a new one
        self.timeout = float(server.config.timeout)
        self.retries = server.config.retries
        self.timer = None
        self.sent_at = 0.0
        self.tries = 0
        self.packet = b""  # the last packet sent, for retransmission
        self.block = 0  # number of the last block sent (mod 65536), 0 = OACK
        self.final = False  # the last packet sent is the final DATA
        self.nbytes = 0
        self.blksize = DEFAULT_BLKSIZE
        self.buffer = bytearray()  # the DATA packet, reused for every block
        self.view = memoryview(self.buffer)
        self.payload = self.view[4:]

    # -- start -------------------------------------------------------------------------------------
    def begin(self) -> None:
        if self.server.resolve_cached is not None:
            try:
                resolution = self.server.resolve_cached(self.filename, self.client)
                # Generated content or a refusal: nothing to wait for. A file is opened in the thread.
                if resolution is not None and (not resolution.ok or resolution.content is not None):
                    self.resolution = resolution
                    self._prepared(self._open())
                    return
            except Exception as exc:
                self._internal_error(exc)
                return
        self.reactor.callInThread(self._prepare)

    def _prepare(self) -> None:
        """In a worker thread: resolve, open, and size the content, then go on in the reactor."""
        try:
            self.resolution = self.server.resolver.resolve(self.filename, self.client)
            result = self._open()
        except Exception as exc:
            self.reactor.callFromThread(self._internal_error, exc)
        else:
            self.reactor.callFromThread(self._prepared_safely, result)

    def _open(self):
        """(reader, size to announce as tsize) of the resolution; (None, 0) for a refusal."""
        if not self.resolution.ok:
            return None, 0
        reader = self.resolution.open()
        if self.mode != "netascii":
            return reader, self.resolution.size
        if not any(name.lower() == "tsize" for name in self.options):
            return NetasciiReader(reader), 0
        try:
            with self.resolution.open() as counted:
                size = netascii_size(counted)
        except BaseException:
            reader.close()
            raise
        return NetasciiReader(reader), size

    def _prepared(self, result) -> None:
        reader, size = result
        if self.done:
            if reader is not None:
                reader.close()
            return
        self.reader = reader
        self._start(size)

    def _prepared_safely(self, result) -> None:
        try:
            self._prepared(result)
        except Exception as exc:
            self._internal_error(exc)

    def _start(self, size: int) -> None:
        resolution = self.resolution
        if resolution.status is Status.NOT_FOUND:
            self.finish("not-found", "", ERR_NOT_FOUND, resolution.reason or "file not found")
            return
        if not resolution.ok:
            self.finish(resolution.status.value, "", ERR_ACCESS, resolution.reason or "access violation")
            return
        accepted = self._negotiate(size)
        self.buffer = bytearray(4 + self.blksize)
        self.view = memoryview(self.buffer)
        self.payload = self.view[4:]
        struct.pack_into("!H", self.buffer, 0, OP_DATA)
        self.timer = self.reactor.callLater(self.timeout, self._check)
        if accepted:
            oack = TftpPacketOACK()
            oack.options = accepted
            self._send_fresh(oack.encode().buffer)
        else:
            self._send_block()

    def _negotiate(self, size: int) -> dict:
        """Options accepted, in the client's order; the first of a repeated (any case) name counts."""
        accepted: dict[str, int] = {}
        seen = set()
        for name, value in self.options.items():
            name = name.lower()
            if name in seen:
                continue
            seen.add(name)
            if name == "blksize":
                number = _option_number(value, MIN_BLKSIZE, MAX_BLKSIZE)
                if number is not None:
                    accepted[name] = self.blksize = number
            elif name == "tsize":
                if _option_number(value, 0, None) is not None:
                    accepted[name] = size
            elif name == "timeout":
                number = _option_number(value, MIN_TIMEOUT, None)
                if number is not None and number <= MAX_TIMEOUT:
                    accepted[name] = number
                    self.timeout = float(number)
        return accepted

    # -- the per-block path: ACK in, next DATA out ---------------------------------------------------
    def fileno(self) -> int:
        return self.socket.fileno()

    def logPrefix(self) -> str:
        return "tftp"

    def doRead(self) -> None:
        # One datagram per wake-up: ACKs come one at a time, and reading on until EAGAIN would cost
        # a second recvfrom() and an exception per block. More waiting wakes the reactor again.
        try:
            data, addr = self.socket.recvfrom(TRANSFER_MAX_PACKET)
        except OSError:
            return  # nothing there after all, or an ICMP error: the timer decides
        if addr[1] != self.peer_port or addr[0] != self.peer_host:
            self._send_to(error_packet(ERR_UNKNOWN_TID, "Unknown transfer ID"), addr)
            return
        try:
            if len(data) >= 4 and data[1] == OP_ACK and data[0] == 0:
                if ((data[2] << 8) | data[3]) == self.block and self.packet and not self.done:
                    self.acknowledged = True
                    if self.final:
                        self.finish("ok")
                    else:
                        self._send_block()
                # Any other ACK is a duplicate or stale: ignored, only the timer retransmits.
            elif len(data) >= 4 and data[1] == OP_ERROR and data[0] == 0:
                message = data[4:].split(b"\0", 1)[0].decode("ascii", "replace")[:MAX_ERROR_TEXT]
                self.finish("failed", f"client error {(data[2] << 8) | data[3]}: {message}".rstrip(": "))
        except Exception as exc:
            self._internal_error(exc)

    def _send_block(self) -> None:
        block = (self.block + 1) & 0xFFFF  # rolls over to 0 after 65535
        payload = self.payload
        count = self.reader.readinto(payload)
        while 0 < count < self.blksize:  # a short read is only the end if the next one is empty
            more = self.reader.readinto(payload[count:])
            if not more:
                break
            count += more
        self.buffer[2] = block >> 8
        self.buffer[3] = block & 0xFF
        self.block = block
        self.nbytes += count
        if count == self.blksize:
            self._send_fresh(self.buffer)
        else:
            self.final = True
            self._send_fresh(self.view[:4 + count])

    def _send_fresh(self, packet) -> None:
        self.packet = packet
        self.tries = 1
        self.sent_at = time.monotonic()
        self._send_to(packet, self.peer)

    def _send_to(self, packet, addr) -> None:
        try:
            self.socket.sendto(packet, addr)
        except OSError:
            pass  # lost on the way, as UDP may lose it anyway; a DATA is sent again by the timer

    def _check(self) -> None:
        """Retransmission timer; re-armed here rather than on every block to keep that path light."""
        self.timer = None
        if self.done:
            return
        waited = time.monotonic() - self.sent_at
        if waited < self.timeout:
            self.timer = self.reactor.callLater(self.timeout - waited, self._check)
            return
        if self.tries >= (self.retries if self.acknowledged else min(self.retries, FIRST_PACKET_SENDS)):
            self.finish("failed", f"timeout after {self.tries} tries of block {self.block}")
            return
        self.tries += 1
        self.sent_at = time.monotonic()
        self._send_to(self.packet, self.peer)
        self.timer = self.reactor.callLater(self.timeout, self._check)

    # -- end -----------------------------------------------------------------------------------------
    def _internal_error(self, exc: BaseException) -> None:
        self.finish("failed", f"internal error: {type(exc).__name__}: {exc}", ERR_UNDEFINED, "internal error")

    def finish(self, outcome: str, reason: str = "", code: int | None = None, message: str = "") -> None:
        """End the transfer once: optional ERROR to the client, release everything, one log record."""
        if self.done:
            return
        self.done = True
        if code is not None and self.socket is not None:
            self._send_to(error_packet(code, message), self.peer)
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None
        if self.reader is not None:
            try:
                self.reader.close()
            except Exception:
                pass  # nothing more to read from it either way
            self.reader = None
        if self.socket is not None:
            self.reactor.removeReader(self)
            self.socket.close()
        if self.server.transfers.get(self.peer) is self:
            del self.server.transfers[self.peer]
        resolution = self.resolution or Resolution(self.filename, self.filename.lstrip("/"), Kind.NONE,
                                                   Status.NOT_FOUND)
        # An ACK from the peer's address and port shows the request was no forgery.
        self.server.log.record(resolution, self.client, outcome, self.nbytes,
                time.monotonic() - self.started, reason, confirmed=self.acknowledged)

    def connectionLost(self, reason) -> None:
        """The reactor is shutting down."""
        self.finish("failed", "server stopped")


def _plain_address(host: str) -> str:
    """An IPv4 client seen through a dual-stack IPv6 socket, written as plain IPv4."""
    return host[7:] if host.startswith("::ffff:") and "." in host else host
