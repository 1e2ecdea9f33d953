"""`htekd serve`: every enabled listener around one resolver, on Twisted's reactor.

Events go to stderr as "htekd: ..." lines (journald under systemd); requests go to the request
log. SIGHUP reloads configuration and content off the reactor thread; SIGTERM/SIGINT stop cleanly.
"""

from __future__ import annotations

import dataclasses
import gc
import os
import signal
import socket
import time
from pathlib import Path

from htekd import reuseport
from htekd.events import say
from htekd.config import Config, ConfigError, load
from htekd.listeners import ListenError
from htekd.requestlog import RequestLog
from htekd.resolver import Resolver
from htekd.state import PhoneStore, StateError
from htekd.store import open_database
from htekd.tree import TreeError

LISTENERS = ("tftp", "ftp", "http", "https", "admin")
# Sections a reload cannot change: the sockets bound at start keep them until a restart.
RESTART_SECTIONS = (*LISTENERS, "pnp")


def notify_systemd(*fields: str) -> None:
    """sd_notify(3): one datagram to $NOTIFY_SOCKET ("@name" = abstract namespace); no-op without it."""
    address = os.environ.get("NOTIFY_SOCKET", "")
    if not address:
        return
    if address.startswith("@"):
        address = "\0" + address[1:]
    elif not address.startswith("/"):
        say(f"cannot notify systemd: unsupported NOTIFY_SOCKET {address!r}")
        return
    try:
        with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM | socket.SOCK_CLOEXEC) as channel:
            channel.connect(address)
            channel.sendall("\n".join(fields).encode())
    except OSError as exc:
        say(f"cannot notify systemd at {os.environ['NOTIFY_SOCKET']}: {exc.strerror or exc}")


def _monotonic_usec() -> str:
    return f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}"


def _secrets(config: Config, resolver: Resolver) -> tuple[str, ...]:
    """Every password and key the daemon knows: from htekd.conf, and from the content tree (SIP
    passwords and keys of the settings and phones.csv, per-phone AES keys), longest first."""
    found = {config.server.aes_key, config.sip.password}
    for section in (config.ftp, config.http, config.https, config.admin):
        found |= {section.password, section.password.removeprefix("md5-ha1:")}
    snapshot = resolver.snapshot
    layers = [snapshot.common, *snapshot.models.values(), *snapshot.groups.values(), *snapshot.phone_layers.values(),
              *snapshot.phones.values()]
    for layer in layers:
        found |= {value.value for code, value in layer.values.items() if code in snapshot.secrets}
    found |= {phone.aes_key for phone in snapshot.phones.values()}
    # Short values would blank out ordinary text; keys and passwords that short are no secret anyway.
    return tuple(sorted((value for value in found if len(value) >= 4), key=len, reverse=True))


def _settle_memory() -> None:
    """Free what the last load left behind, then keep the cyclic garbage collector away from what
    is left: a 10,000-phone tree is millions of objects, and every full collection over them
    would stop all transfers for tens of milliseconds. Objects made later are collected as usual."""
    gc.unfreeze()
    gc.collect()
    gc.freeze()


def _phone_count(resolver: Resolver) -> str:
    count = len(resolver.snapshot.phones)
    return f"{count} phone" if count == 1 else f"{count} phones"


def _log_twisted_problems() -> None:
    """Route Twisted's own warnings and errors (e.g. an unhandled error in a listener) to stderr."""
    from twisted.logger import LogLevel, formatEvent, globalLogBeginner

    def observer(event: dict) -> None:
        if event.get("log_level", LogLevel.info) < LogLevel.warn:
            return
        text = formatEvent(event)
        failure = event.get("log_failure")
        if failure is not None:
            text = f"{text}\n{failure.getTraceback()}"
        for line in text.rstrip().splitlines():
            say(line)

    globalLogBeginner.beginLoggingTo([observer], redirectStandardIO=False)


@dataclasses.dataclass
class Daemon:
    """The running daemon: what it started, and how it reloads and stops."""

    config: Config
    resolver: Resolver
    log: RequestLog
    store: PhoneStore
    reactor: object
    ports: list = dataclasses.field(default_factory=list)  # IListeningPort of TFTP, HTTP, HTTPS
    ftp: object = None  # FtpListener
    watcher: object = None  # htekd.watch.RootWatcher while [htekd] watch = yes
    worker: object = None  # htekd.workers.Worker in a daemon of several processes, else None
    reloading: bool = False
    reload_again: bool = False
    last_reload: tuple[float, str] | None = None  # when, and the line said (for the console)
    reloads: dict = dataclasses.field(default_factory=lambda: {"ok": 0, "failed": 0})

    def start_listeners(self) -> None:
        """Bind every enabled listener; on any failure stop what was started and raise."""
        from htekd.listeners import ftp, http, sip, tftp

        config = self.config
        try:
            if config.tftp.enabled:
                self.ports += tftp.listen(self.reactor, config.tftp, self.resolver, self.log)
            if config.ftp.enabled:
                listener = ftp.FtpListener(config.ftp, self.resolver, self.log)
                listener.start()
                self.ftp = listener
            if config.http.enabled:
                self.ports += http.listen(self.reactor, config.http, self.resolver, self.log, tls=False)
            if config.https.enabled:
                self.ports += http.listen(self.reactor, config.https, self.resolver, self.log, tls=True)
            if config.admin.enabled and self.primary:
                from htekd.console import site

                self.ports += site.listen(self.reactor, self)
            if config.pnp.enabled and self.primary:
                pnp = config.pnp
                options = sip.PnpOptions(interface=pnp.interface, port=pnp.port, vendors=pnp.vendors, ouis=pnp.ouis,
                                         rate=pnp.rate, burst=pnp.burst)
                # self.config, read at each exchange: a reloaded server_url applies to the next phone
                self.ports += sip.listen_pnp(self.reactor, options, lambda: self.config.provisioning_url, self.log)
        except BaseException:
            self.stop_listeners_now()
            raise

    @property
    def primary(self) -> bool:
        """Alone, or the first of several workers: the one that answers SIP PnP (multicast reaches
        every process on the port) and watches the root."""
        return self.worker is None or self.worker.first

    def stop_listeners_now(self) -> None:
        for port in self.ports:
            port.stopListening()
        self.ports = []
        if self.ftp is not None:
            self.ftp.stop()
            self.ftp = None

    def follow_root(self) -> None:
        """Reactor thread: watch the root of the configuration in force, if it says watch = yes."""
        server = self.config.server
        wanted = server.root if server.watch and self.primary else None
        if self.watcher is not None and self.watcher.root != wanted:
            self.watcher.stop()
            self.watcher = None
        if wanted is not None and self.watcher is None:
            from htekd.watch import RootWatcher

            log = () if server.log == "-" else (Path(server.log),)
            # A worker leaves the reload to the main process, which reloads every worker.
            settled = self.request_reload if self.worker is None else self.worker.ask_reload
            self.watcher = RootWatcher(self.reactor, wanted, settled, ignored=(server.state_dir, *log))

    def announce(self) -> None:
        for protocol in LISTENERS:
            section = getattr(self.config, protocol)
            if section.enabled:
                for address in section.listen:
                    say(f"listening {protocol} {address}")
        if self.config.pnp.enabled and self.primary:
            say(f"listening pnp 224.0.1.75:{self.config.pnp.port} on {self.config.pnp.interface}")
        say("ready")
        notify_systemd("READY=1", f"STATUS=serving {self.config.server.root}")

    # -- SIGHUP ------------------------------------------------------------------------------------
    def request_reload(self) -> None:
        """Reactor thread. One reload at a time; a SIGHUP during one runs one more afterwards."""
        if self.reloading:
            self.reload_again = True
            return
        from twisted.internet.threads import deferToThread

        self.reloading = True
        notify_systemd("RELOADING=1", _monotonic_usec())
        deferred = deferToThread(self._reload)
        deferred.addErrback(self._reload_crashed)
        deferred.addCallback(self._reloaded)

    def _reload(self) -> str:
        """Worker thread: re-read the file, swap in the new snapshot, reopen the request log."""
        try:
            config = load(self.config.source)
            self.resolver.reload(config)
        except (ConfigError, TreeError) as exc:  # a broken edit: the last good state keeps serving
            # logrotate sent this SIGHUP perhaps: the log file is reopened all the same.
            return f"reload failed: {_one_line(exc)}{self._reopen_log(self.log.destination, None)}"
        notes = self._reopen_log(config.server.log, config.server.log_format)
        self.log.secrets = _secrets(config, self.resolver)
        self.store.inventory = frozenset(self.resolver.snapshot.phones)
        _settle_memory()
        restart = [f"[{name}]" for name in RESTART_SECTIONS if getattr(config, name) != getattr(self.config, name)]
        restart += [f"[htekd] {key}" for key in ("state_dir", "state", "workers")
                    if getattr(config.server, key) != getattr(self.config.server, key)]
        # Listener settings stay as started; keep comparing against those until a restart.
        self.config = dataclasses.replace(config, **{name: getattr(self.config, name) for name in RESTART_SECTIONS})
        if restart:
            notes += f"; restart htekd to apply {', '.join(restart)}"
        return f"reloaded ({_phone_count(self.resolver)}){notes}"

    def _reopen_log(self, destination: str, fmt: str | None) -> str:
        """Reopen the request log; "" or a note for the reload line when that fails."""
        try:
            self.log.reopen(destination, fmt)
        except OSError as exc:
            return f"; request log {destination}: {exc.strerror}, still writing to {self.log.destination}"
        return ""

    def _reload_crashed(self, failure) -> str:
        """A bug, not a broken edit: the traceback goes to stderr, the daemon keeps serving."""
        for line in failure.getTraceback().rstrip().splitlines():
            say(line)
        return f"reload failed: {_one_line(failure.value)}"

    def _reloaded(self, message: str) -> None:
        say(message)
        self.follow_root()
        self.last_reload = (time.time(), message)
        self.reloads["failed" if message.startswith("reload failed") else "ok"] += 1
        notify_systemd("READY=1", f"STATUS={message}")
        self.reloading = False
        if self.reload_again:
            self.reload_again = False
            self.request_reload()

    # -- SIGTERM / SIGINT --------------------------------------------------------------------------
    def shutting_down(self):
        """Before reactor shutdown: stop accepting; transfers in flight end with the reactor."""
        from twisted.internet.defer import DeferredList
        from twisted.internet.threads import deferToThread

        notify_systemd("STOPPING=1")
        say("stopping")
        if self.watcher is not None:
            self.watcher.stop()
            self.watcher = None
        waits = [port.stopListening() for port in self.ports]
        self.ports = []
        if self.ftp is not None:
            waits.append(deferToThread(self.ftp.stop))
            self.ftp = None
        return DeferredList([wait for wait in waits if wait is not None], consumeErrors=True)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


def serve(config_path: Path | str) -> int:
    from htekd import workers

    try:
        config = load(config_path)
        worker = workers.this_worker()
        if worker is None and config.server.workers > 1:
            return workers.supervise(config)  # the workers load the tree; this process only watches them
        if worker is not None:
            reuseport.workers = worker.count
            reuseport.prefixes = (config.access.throttle_ipv4_prefix, config.access.throttle_ipv6_prefix)
        resolver = Resolver.from_config(config)
    except (ConfigError, TreeError) as exc:
        say(_one_line(exc))
        return 1

    try:
        log = RequestLog.open(config.server.log, config.server.log_format)
    except OSError as exc:
        say(f"{config.source}: [htekd] log: cannot open {config.server.log}: {exc.strerror}")
        return 1
    log.secrets = _secrets(config, resolver)
    _settle_memory()
    try:
        store = PhoneStore(open_database(config.server), config.admin.history)
    except StateError as exc:
        log.close()
        say(str(exc))
        return 1
    store.inventory = frozenset(resolver.snapshot.phones)
    # Where phones completed transfers of their own file before this start (confirmed addresses only).
    try:
        resolver.remember_homes({phone.mac: phone.address for phone in store.phones_seen()})
    except StateError:
        pass  # a database away at start: the writer says so once; phones are learned again as they fetch
    log.observers += [store.observe, resolver.observe]

    from twisted.internet import reactor

    log.flush_each_turn(lambda flush: reactor.callLater(0, flush))
    _log_twisted_problems()
    daemon = Daemon(config, resolver, log, store, reactor, worker=worker)
    # Installed before binding so an early SIGHUP queues a reload instead of killing the process.
    signal.signal(signal.SIGHUP, lambda *_: reactor.callFromThread(daemon.request_reload))
    try:
        daemon.start_listeners()
    except Exception as exc:  # a port in use, an unreadable certificate...: one line, nothing left running
        say(_one_line(exc) if isinstance(exc, ListenError) else f"cannot start listeners: {_one_line(exc)}")
        _close(store, log)
        return 1

    daemon.follow_root()
    reactor.addSystemEventTrigger("before", "shutdown", daemon.shutting_down)
    reactor.callWhenRunning(daemon.announce)
    reactor.run()
    _close(store, log)
    say("stopped")
    return 0


def _close(store: PhoneStore, log: RequestLog) -> None:
    store.close()
    log.close()
