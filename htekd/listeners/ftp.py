"""FTP listener: pyftpdlib over the resolver, read-only, on its own IO loop in its own thread.

pyftpdlib keeps the protocol (FTPHandler) apart from the filesystem (AbstractedFS); here the
filesystem is the resolver, so every name a client can list, size or fetch is what the resolver
serves, and nothing on the real disk is reachable through any other path. Write commands are
refused by pyftpdlib's permission system (read-only permissions "elr": 550).
"""

from __future__ import annotations

import hmac
import logging
import os
import socket
import stat
import sys
import threading
import time
import zlib

from pyftpdlib.authorizers import AuthenticationFailed, DummyAuthorizer
from pyftpdlib.filesystems import AbstractedFS, FilesystemError
from pyftpdlib.handlers import DTPHandler, FTPHandler
from pyftpdlib.ioloop import AsyncChat, IOLoop
from pyftpdlib.servers import FTPServer

from htekd import reuseport
from htekd.config import ha1, login_ha1
from htekd.escape import quoted
from htekd.events import say
from htekd.listeners import ListenError, Refusals, Shortage, shortage_of
from htekd.resolution import Client, Kind, Resolution, Status

READ_ONLY = "elr"  # pyftpdlib permissions: change directory, list, retrieve
ANONYMOUS = ("anonymous", "ftp")
# pyftpdlib's default is 512; each connection holds a descriptor or two of the unit's 65,536.
MAX_CONNECTIONS = 4096
BACKLOG = 128  # listen() queue of the control sockets and of passive data sockets
STOP_TIMEOUT = 5.0  # seconds stop() waits for the loop thread

_pyftpdlib_log = logging.getLogger("pyftpdlib")


class _StderrLines(logging.Formatter):
    """pyftpdlib's errors as daemon event lines ("htekd: ftp: ..."), one prefix per line."""

    def format(self, record: logging.LogRecord) -> str:
        return "\n".join(f"htekd: ftp: {line}" for line in super().format(record).splitlines())


def _route_pyftpdlib_logging() -> None:
    """Per-command and per-session chatter is dropped (the request log is ours); errors reach stderr.

    A handler on the "pyftpdlib" logger also stops pyftpdlib from installing its own stderr logger.
    """
    if not any(isinstance(handler.formatter, _StderrLines) for handler in _pyftpdlib_log.handlers):
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(_StderrLines())
        _pyftpdlib_log.addHandler(handler)
    _pyftpdlib_log.setLevel(logging.ERROR)
    _pyftpdlib_log.propagate = False


class _ResolverFailed(FilesystemError):
    """The resolver raised: the client gets "550 Internal error.", stderr and the request log the why."""

    def __init__(self, path: str, exc: Exception):
        super().__init__("Internal error")
        self.reason = f"{type(exc).__name__}: {exc}"
        self.resolution = Resolution(path, path.lstrip("/"), Kind.NONE, Status.NOT_FOUND, reason=self.reason)


def _printable(text: str) -> str:
    """A reason fit for one FTP reply line: no CR, LF or other control characters."""
    return "".join(char if char.isprintable() else " " for char in text).strip()


def _refusal(resolution: Resolution) -> str:
    if resolution.status is Status.DENIED:
        return _printable(f"Access denied: {resolution.reason}" if resolution.reason else "Access denied")
    return "No such file or directory"


class _Authorizer(DummyAuthorizer):
    """Read-only for everyone. Without a configured login any login works (phones keep whatever
    credentials they were given); with one, only that user and password."""

    def __init__(self, user: str, password: str):
        super().__init__()
        self._user = user
        self._ha1 = login_ha1(user, password).encode("ascii") if user else b""  # so the hashed form works too

    def validate_authentication(self, username, password, handler):
        if not self._user:
            return
        if username.lower() in ANONYMOUS:
            raise AuthenticationFailed("Anonymous access not allowed.")
        same_user = hmac.compare_digest(username.encode(), self._user.encode())
        same_password = hmac.compare_digest(ha1(username, password).encode("ascii"), self._ha1)
        if not (same_user and same_password):
            raise AuthenticationFailed("Authentication failed.")

    def get_home_dir(self, username):
        return "/"

    def has_perm(self, username, perm, path=None):
        return perm in READ_ONLY

    def get_perms(self, username):
        return READ_ONLY

    def get_msg_login(self, username):
        return "Login successful."

    def get_msg_quit(self, username):
        return "Goodbye."


class _Download:
    """The file object pyftpdlib streams for one RETR. Closing it writes the request's one log line,
    however the transfer ended (complete, aborted, broken off, or never connected).

    Everything else goes to the reader, so a static file keeps its fileno() and pyftpdlib sends it
    with sendfile(); generated content is a BytesIO and goes through send().
    """

    def __init__(self, reader, resolution: Resolution, client: Client, log):
        self._reader, self._resolution, self._client, self._log = reader, resolution, client, log
        self.name = resolution.name
        self._started = time.monotonic()
        self._nbytes, self._complete = 0, False

    def __getattr__(self, name):
        return getattr(self._reader, name)

    def transferred(self, nbytes: int, complete: bool) -> None:
        """What the data channel sent, told just before it closes this file."""
        self._nbytes, self._complete = nbytes, complete

    def close(self) -> None:
        if self._reader.closed:
            return
        self._reader.close()
        outcome = "ok" if self._complete else "failed"
        self._log.record(self._resolution, self._client, outcome, self._nbytes, time.monotonic() - self._started)


def _stat(mode: int, size: int, mtime: float, path: str) -> os.stat_result:
    # st_ino feeds MLSD's "unique" fact: stable per path.
    return os.stat_result((mode, zlib.crc32(path.encode()), 0, 1, 0, 0, size, int(mtime), int(mtime), int(mtime)))


class ResolverFS(AbstractedFS):
    """The served tree as FTP sees it: folders from resolver.listdir(), files from resolver.resolve().

    Paths are virtual: root "/" is the resolver's root, so pyftpdlib's "real" paths are FTP paths
    and no call here touches the disk except through a Resolution.
    """

    def __init__(self, root, cmd_channel):
        super().__init__("/", cmd_channel)
        host = cmd_channel.remote_ip
        if host.startswith("::ffff:") and "." in host:
            host = host[7:]
        self.client = Client("ftp", host, int(cmd_channel.remote_port or 0))
        self._listed: dict[str, os.stat_result] = {}  # entries of the last listing, for LIST/MLSD lines
        # LIST, NLST, MLSD and STAT ask isdir() and then listdir() of the same path: one listing.
        self._checked: tuple[str, list | None] | None = None
        # A file's MDTM/SIZE/RETR are one request: resolved once, logged once, counted once by the
        # resolver's throttle, and the size announced is the size sent even if a reload comes between.
        self._pending: tuple[str, Resolution] | None = None
        self._pending_logged = False

    # -- the resolver --------------------------------------------------------------------------
    @property
    def _resolver(self):
        return self.cmd_channel.resolver

    @property
    def _log(self):
        return self.cmd_channel.request_log

    def resolve(self, path: str) -> Resolution:
        try:
            return self._resolver.resolve(path, self.client)
        except Exception as exc:  # the resolver promises not to raise; if it does, one request fails
            failure = _ResolverFailed(path, exc)
            say(f"ftp: {quoted(path)} failed: {failure.reason}")
            raise failure from None

    def entries(self, path: str):
        try:
            return self._resolver.listdir(path)
        except Exception as exc:
            say(f"ftp: listing {quoted(path)} failed: {type(exc).__name__}: {exc}")
            return None

    def _requested(self, path: str) -> Resolution:
        """The resolution of the file the client is asking about (see _pending)."""
        if self._pending is None or self._pending[0] != path:
            self._pending, self._pending_logged = None, False
            try:
                resolution = self.resolve(path)
            except _ResolverFailed as failure:
                self._log.record(failure.resolution, self.client, "failed", reason=failure.reason)
                raise
            self._pending = (path, resolution)
        return self._pending[1]

    def _refuse(self, resolution: Resolution) -> FilesystemError:
        """The error for a refused SIZE or RETR, logged once per request."""
        if not self._pending_logged:
            self._log.record(resolution, self.client)
            self._pending_logged = True
        return FilesystemError(_refusal(resolution))

    # -- reading -------------------------------------------------------------------------------
    def open(self, filename, mode):
        if set(mode) - set("rb"):
            raise FilesystemError("Read-only server")
        resolution = self._requested(filename)
        self._pending = None  # RETR ends the request; the next one resolves afresh
        if not resolution.ok:
            raise self._refuse(resolution)
        try:
            reader = resolution.open()
        except OSError as exc:  # removed or unreadable since the snapshot was taken
            self._log.record(resolution, self.client, "failed", reason=exc.strerror or str(exc))
            raise FilesystemError(exc.strerror or "Cannot read file") from None
        return _Download(reader, resolution, self.client, self._log)

    def getsize(self, path):
        # Clients such as curl ask SIZE first and give up at a 550 without RETR: a refused SIZE
        # is then the request's log line.
        resolution = self._requested(path)
        if not resolution.ok:
            raise self._refuse(resolution)
        return resolution.size

    def getmtime(self, path):
        return self._served(path).mtime

    def _served(self, path: str) -> Resolution:
        """The file for MDTM, MLST, LIST: refused without a log line (they fetch nothing)."""
        resolution = self._requested(path)
        if not resolution.ok:
            raise FilesystemError(_refusal(resolution))
        return resolution

    def isfile(self, path):
        # Anything but a folder: SIZE and MDTM then ask getsize()/getmtime(), which answer a missing
        # or denied name with the resolver's reason (and SIZE logs it).
        return not self.isdir(path)

    def isdir(self, path):
        entries = self.entries(path)
        self._checked = (path, entries)
        return entries is not None

    def lexists(self, path):
        return False  # asked only by RNFR, which the permissions refuse first; never the real disk

    def islink(self, path):
        return False

    def realpath(self, path):
        return path

    # -- folders -------------------------------------------------------------------------------
    def chdir(self, path):
        if not self.isdir(path):
            raise FilesystemError("No such directory")
        self.cwd = self.fs2ftp(path)

    def listdir(self, path):
        checked, self._checked = self._checked, None
        entries = checked[1] if checked is not None and checked[0] == path else self.entries(path)
        if entries is None:
            raise FilesystemError("No such directory")
        self._listed = {
            os.path.join(path, entry.name): self._entry_stat(os.path.join(path, entry.name), entry)
            for entry in entries
        }
        return [entry.name for entry in entries]

    listdirinfo = listdir

    def _entry_stat(self, path, entry) -> os.stat_result:
        if entry.is_dir:
            return _stat(stat.S_IFDIR | 0o555, 0, entry.mtime, path)
        return _stat(stat.S_IFREG | 0o444, entry.size, entry.mtime, path)

    def stat(self, path):
        listed = self._listed.get(path)
        if listed is not None:
            return listed
        entries = self.entries(path)
        if entries is not None:
            return _stat(stat.S_IFDIR | 0o555, 0, max((entry.mtime for entry in entries), default=0.0), path)
        resolution = self._served(path)
        return _stat(stat.S_IFREG | 0o444, resolution.size, resolution.mtime, path)

    lstat = stat

    def get_user_by_uid(self, uid):
        return "ftp"

    def get_group_by_gid(self, gid):
        return "ftp"

    # -- writes and links: refused here too, so no path through pyftpdlib reaches the real disk ---------
    def _read_only(self, *args, **kwargs):
        raise FilesystemError("Read-only server")

    mkstemp = mkdir = rmdir = remove = rename = chmod = utime = readlink = _read_only


class _DataChannel(DTPHandler):
    """Tells the file being sent how far the transfer got before it is closed."""

    # The most one sendfile() may send per wake-up (pyftpdlib's default is 64 KiB). The kernel
    # copies no more than the socket takes, so this costs no memory, and a 32 MiB firmware takes
    # a few dozen turns of the loop instead of 512.
    ac_out_buffer_size = 1024 * 1024

    def close(self):
        if not self._closed and isinstance(self.file_obj, _Download):
            self.file_obj.transferred(self.get_transmitted_bytes(), self.transfer_finished)
        super().close()


class _ActiveConnector(FTPHandler.active_dtp):  # pyftpdlib's ActiveDTP, wherever this version keeps it
    """PORT/EPRT: connects to the client, then hands the socket to the data channel.

    pyftpdlib keeps the connector after the hand-over and closes it at the next PORT, QUIT or
    disconnect; that close unregisters the connector's old file descriptor *number*, which by then
    often belongs to another client's connection (closed data socket, number reused by accept()).
    That client's connection then silently leaves the IO loop and stalls. Once the socket is handed
    over, the connector owns nothing, so it is marked closed.
    """

    def handle_connect(self):
        super().handle_connect()
        self._closed = True
        self._fileno = None


class _Handler(FTPHandler):
    """Protocol settings shared by every listener; FtpListener makes a subclass with its own."""

    abstracted_fs = ResolverFS
    dtp_handler = _DataChannel
    active_dtp = _ActiveConnector
    banner = "htekd FTP ready."
    resolver = None
    request_log = None
    connections_per_address = 0  # 0 = no limit

    def ftp_STOU(self, line):
        # pyftpdlib checks STOU's permission only after trying to create the file (450 on failure).
        self.respond("550 Not enough privileges.")

    def handle_max_cons_per_ip(self):
        self.server.refusals.refused(self.server.ip_map.network(self.remote_ip))
        super().handle_max_cons_per_ip()

    def handle_max_cons(self):
        self.server.full()
        super().handle_max_cons()

    def close(self):
        super().close()  # takes this connection out of the server's count by address
        self.server.closed(self.remote_ip)


class _Server(FTPServer):
    """One listening socket. A resource error of accept() (pyftpdlib would close the socket for good
    on EMFILE) pauses accepting instead; connections over the limit of one address get 421."""

    max_cons = MAX_CONNECTIONS

    def __init__(self, sock, handler, ioloop, what: str):
        super().__init__(sock, handler, ioloop=ioloop, backlog=BACKLOG)
        self.max_cons_per_ip = handler.connections_per_address
        self.ip_map = _CountedByNetwork(handler.resolver.client_network)
        self.shortage = Shortage(f"{what}: cannot accept", self._pause, self._resume, ioloop.call_later)
        self.refusals = Refusals("ftp", self.max_cons_per_ip)
        self._full = False

    def handle_accept(self):
        try:
            super().handle_accept()
        except OSError as exc:
            if not shortage_of(exc):
                raise
            self.shortage.failed(exc)
        else:
            self.shortage.worked()

    def _pause(self):
        self.ioloop.modify(self._fileno, 0)

    def _resume(self):
        if not self._closed:
            self.ioloop.modify(self._fileno, self.ioloop.READ)

    def full(self) -> None:
        if not self._full:
            self._full = True
            say(f"ftp: {self.max_cons} connections open, the most the server takes; refusing more until one closes")

    def closed(self, ip: str) -> None:
        if self.ip_map.count(ip) < self.max_cons_per_ip:  # a refused connection closes too: not a freed one
            self.refusals.closed(self.ip_map.network(ip))
        if len(self.ip_map) < self.max_cons:
            self._full = False


class _CountedByNetwork(list):
    """pyftpdlib's list of the connected clients' addresses, holding each one's network instead, so
    its limit per address is a limit per client: an IPv6 host may use every address of its /64."""

    def __init__(self, network):
        super().__init__()
        self.network = network

    def append(self, ip):
        super().append(self.network(ip))

    def count(self, ip):
        return super().count(self.network(ip))

    def remove(self, ip):
        super().remove(self.network(ip))

    def __contains__(self, ip):
        return super().__contains__(self.network(ip))


class _Doorbell(AsyncChat):
    """One end of a socket pair in the IO loop: stop() rings it from another thread, and the loop
    thread itself then closes every socket, because the loop may be asleep in epoll() with nothing
    scheduled and its scheduler is not meant to be touched from another thread."""

    def __init__(self, sock, ioloop, on_ring):
        super().__init__(sock, ioloop=ioloop)
        self._on_ring = on_ring

    def handle_read(self):
        self._on_ring()


def _bind(address) -> socket.socket:
    family = socket.AF_INET6 if ":" in address.host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        reuseport.allow(sock)
        if family == socket.AF_INET6:
            # "[::]:21" is IPv6 only, so "0.0.0.0:21 [::]:21" can both be listed.
            sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
        sock.bind((address.host, address.port))
        sock.listen(BACKLOG)
        sock.setblocking(False)
    except OSError as exc:
        sock.close()
        raise ListenError("ftp", address, exc.strerror or str(exc)) from None
    return sock


class FtpListener:
    """The FTP server: start() binds every configured address, then serves from its own thread."""

    def __init__(self, config, resolver, log):
        self.config, self.resolver, self.log = config, resolver, log
        self._ioloop = None
        self._servers: list[_Server] = []
        self._bell: socket.socket | None = None
        self._thread: threading.Thread | None = None

    @property
    def addresses(self) -> list[tuple]:
        """(host, port) actually bound, in config order (port 0 in the config gives a real port here)."""
        return [server.address for server in self._servers]

    def connections_open(self) -> int:
        """Control connections open now (read from any thread: a list's length)."""
        return sum(len(server.ip_map) for server in self._servers)

    def _handler_class(self) -> type:
        config = self.config
        authorizer = _Authorizer(config.user, config.password)
        low, high = config.passive_ports
        return type("HtekdFTPHandler", (_Handler,), {
            "resolver": self.resolver,
            "request_log": self.log,
            "authorizer": authorizer,
            "passive_ports": list(range(low, high + 1)),
            "masquerade_address": config.masquerade_address or None,
            "timeout": config.timeout,  # idle control connection
            "connections_per_address": config.connections_per_address,
            "dtp_handler": type("HtekdDTPHandler", (_DataChannel,), {"timeout": config.timeout}),  # stalled transfer
        })

    def start(self) -> None:
        _route_pyftpdlib_logging()
        sockets: list[socket.socket] = []
        try:
            for address in self.config.listen:
                sockets.append(_bind(address))
        except ListenError:
            for sock in sockets:
                sock.close()
            raise
        self._ioloop = IOLoop()
        handler = self._handler_class()
        self._servers = [_Server(sock, handler, self._ioloop, f"ftp {address}")
                         for sock, address in zip(sockets, self.config.listen)]
        for sock in sockets:
            reuseport.attach(sock)
        self._bell, inside = socket.socketpair()
        _Doorbell(inside, self._ioloop, self._ioloop.close)  # what FTPServer.close_all() does
        self._thread = threading.Thread(target=self._serve, name="htekd-ftp", daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        # loop() returns once close_all() has emptied the socket map; anything else is a bug in a
        # handler that must not end FTP service for everyone.
        while self._ioloop.socket_map:
            try:
                self._ioloop.loop()
            except Exception:
                _pyftpdlib_log.exception("error in the FTP loop; still serving")

    def stop(self) -> None:
        """Close every socket (transfers in flight end as "failed") and wait for the thread."""
        if self._thread is None:
            return
        try:
            self._bell.send(b"x")
        except OSError:
            pass  # the loop already closed its end
        self._thread.join(STOP_TIMEOUT)
        self._bell.close()
        if self._thread.is_alive():
            say(f"ftp: loop did not stop within {STOP_TIMEOUT:g}s")
        self._thread = None
