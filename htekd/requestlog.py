"""The request log: one line per request, whatever the protocol."""

from __future__ import annotations

import functools
import json
import re
import sys
import threading
import time
from dataclasses import dataclass
from typing import Callable, TextIO

from htekd.escape import quoted, shown
from htekd.events import say
from htekd.resolution import Client, Resolution

# Outcomes a listener reports. "failed" = the transfer started and broke off (bytes tells how far).
OUTCOMES = ("ok", "not-found", "denied", "failed")


@dataclass(frozen=True)
class RequestRecord:
    time: float
    protocol: str
    address: str
    port: int
    name: str
    kind: str
    outcome: str
    bytes: int
    duration: float
    mac: str | None = None
    model: str | None = None
    firmware: str | None = None
    devcode: str | None = None
    reason: str = ""
    confirmed: bool = True  # the client has shown it receives at `address` (see Client.confirmed)

    def as_dict(self) -> dict:
        return {
            "time": _iso(self.time),
            "protocol": self.protocol,
            "client": f"{self.address}:{self.port}" if ":" not in self.address else f"[{self.address}]:{self.port}",
            "name": self.name,
            "kind": self.kind,
            "outcome": self.outcome,
            "mac": self.mac,
            "model": self.model,
            "firmware": self.firmware,
            "devcode": self.devcode,
            "bytes": self.bytes,
            "duration_ms": round(self.duration * 1000, 1),
            "reason": self.reason,
        }

    def text(self) -> str:
        client = f"{self.address}:{self.port}" if ":" not in self.address else f"[{self.address}]:{self.port}"
        # The name is quoted as JSON so a hostile name cannot forge a second log line.
        parts = [_iso(self.time), self.protocol, client, quoted(self.name), self.kind, self.outcome]
        if self.mac:
            parts.append(f"mac={_bare(self.mac)}")
        if self.model:
            parts.append(f"model={_bare(self.model)}")
        if self.firmware:
            parts.append(f"firmware={_bare(self.firmware)}")
        parts.append(f"bytes={self.bytes}")
        parts.append(f"ms={round(self.duration * 1000, 1)}")
        if self.reason:
            parts.append(f"reason={quoted(self.reason)}")
        return " ".join(parts)

    def json(self) -> str:
        # Outside its strings a JSON text has only printable ASCII: whatever shown() escapes is inside
        # one, where \\uXXXX is the same character to a JSON reader.
        return shown(json.dumps(self.as_dict(), ensure_ascii=False))


_BARE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._:+-]*")  # what MACs, models and firmware versions look like


def _bare(text: str) -> str:
    """A field written unquoted when it looks like one (UC924, 2.0.4.2), quoted like a name otherwise."""
    return text if (text.isascii() and text.isalnum()) or _BARE.fullmatch(text) else quoted(text)


def _iso(moment: float) -> str:
    return _iso_second(int(moment // 1)) + f".{int(moment * 1000) % 1000:03d}Z"


@functools.lru_cache(maxsize=4)  # records come in time order: the same second, line after line
def _iso_second(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))


SECRET_PREFIX = 4  # secrets are indexed by this many leading characters
# Redacted texts remembered: names, MACs, models and reasons repeat from request to request.
REDACTED_CACHE = 4096


class RequestLog:
    """Writes records as text or JSON lines and hands each to the observers (phones seen).

    Thread-safe: the FTP listener records from its own thread. Each line is flushed at once,
    except on an event loop thread given to flush_each_turn().
    """

    def __init__(self, stream: TextIO = sys.stdout, fmt: str = "text", destination: str | None = None):
        self.stream, self.fmt = stream, fmt
        self.destination = destination  # "-" or a file path when made by open(); reopen() needs it
        self.observers: list[Callable[[RequestRecord, Client], None]] = []
        self.secrets = ()  # never written: replaced by "***" wherever they appear
        self._lock = threading.Lock()
        self._write_failed = False
        self._loop_thread: int | None = None
        self._call_soon: Callable[[Callable[[], None]], object] | None = None
        self._flush_due = False

    def flush_each_turn(self, call_soon: Callable[[Callable[[], None]], object]) -> None:
        """Lines recorded on the calling thread (an event loop's) are flushed by one write() per turn
        of the loop, `call_soon(flush)` running at the start of the next turn, instead of one each:
        under load a turn ends many requests. A line still reaches the file before the loop next
        waits for anything."""
        self._loop_thread = threading.get_ident()
        self._call_soon = call_soon

    @classmethod
    def open(cls, destination: str, fmt: str = "text") -> RequestLog:
        """The log of a config's `log` key: "-" is standard output, anything else a file appended to.

        Raises OSError when the file cannot be opened."""
        return cls(_open_stream(destination), fmt, destination)

    def reopen(self, destination: str | None = None, fmt: str | None = None) -> None:
        """Open the file again (after logrotate moved it), or switch to a new destination/format.

        Raises OSError and keeps the current stream when the new one cannot be opened."""
        destination = destination or self.destination
        if destination is None:
            return
        stream = _open_stream(destination)
        with self._lock:
            old, self.stream, self.destination = self.stream, stream, destination
            self.fmt = fmt or self.fmt
            self._write_failed = False
        if old is not sys.stdout:
            old.close()

    def close(self) -> None:
        with self._lock:
            if self.stream is sys.stdout:
                self._guarded(self.stream.flush)
            else:
                self.stream.close()

    def record(
        self,
        resolution: Resolution,
        client: Client,
        outcome: str | None = None,
        nbytes: int = 0,
        duration: float = 0.0,
        reason: str = "",
        confirmed: bool | None = None,
    ) -> RequestRecord:
        """Log one finished request. `outcome` defaults to the resolution's status, `confirmed` to the client's."""
        entry = RequestRecord(
            time=time.time(),
            protocol=client.protocol,
            address=client.address,
            port=client.port,
            name=self._redact(resolution.name),
            kind=resolution.kind.value,
            outcome=outcome or resolution.status.value,
            bytes=nbytes,
            duration=duration,
            mac=self._redact(resolution.mac),
            model=self._redact(resolution.model),
            firmware=self._redact(resolution.firmware),
            devcode=self._redact(resolution.devcode),
            reason=self._redact(reason or resolution.reason),
            confirmed=client.confirmed if confirmed is None else confirmed,
        )
        line = entry.json() if self.fmt == "json" else entry.text()
        # A name that was not UTF-8 arrives with surrogate escapes: keep them visible, never lose the line.
        line = line.encode("utf-8", "backslashreplace").decode("utf-8")
        with self._lock:
            on_loop = threading.get_ident() == self._loop_thread
            self._write(line, flush=not on_loop)
            if on_loop and not self._flush_due:
                self._flush_due = True
                self._call_soon(self._flush)
            for observer in self.observers:
                try:
                    observer(entry, client)
                except Exception as exc:  # a broken observer (phones seen) must not fail the request logged
                    say(f"request log: {type(exc).__name__}: {exc}")
        return entry

    def _flush(self) -> None:
        with self._lock:
            self._flush_due = False
            self._guarded(self.stream.flush)

    @property
    def secrets(self) -> tuple[str, ...]:
        return self._secrets

    @secrets.setter
    def secrets(self, values) -> None:
        """Indexed by their first SECRET_PREFIX characters: a line is checked against the few secrets
        that start somewhere in it, not against every password of a 10,000-phone inventory."""
        self._secrets = tuple(secret for secret in values if secret)
        index: dict[str, list[str]] = {}
        for secret in self._secrets:
            if len(secret) >= SECRET_PREFIX:
                index.setdefault(secret[:SECRET_PREFIX], []).append(secret)
        self._secret_index = index
        self._short_secrets = tuple(secret for secret in self._secrets if len(secret) < SECRET_PREFIX)
        self._redacted = {}  # a fresh dict: a record under way may still fill the old one

    def _redact(self, text: str | None) -> str | None:
        """`text` with every secret replaced, worked out once per distinct text."""
        if not text:
            return text
        redacted = self._redacted
        known = redacted.get(text)
        if known is None:
            if len(redacted) >= REDACTED_CACHE:
                redacted.clear()  # names from a scan must not grow it without bound
            known = redacted[text] = self._redact_now(text)
        return known

    def _redact_now(self, text: str) -> str:
        """`text` with every secret replaced (longest first, so no part of one is left)."""
        index = self._secret_index
        present = {secret for start in range(len(text) - SECRET_PREFIX + 1)
                   for secret in index.get(text[start:start + SECRET_PREFIX], ()) if secret in text}
        present.update(secret for secret in self._short_secrets if secret in text)
        for secret in sorted(present, key=len, reverse=True):
            text = text.replace(secret, "***")
        return text

    def _write(self, line: str, flush: bool) -> None:
        self._guarded(self.stream.write, line + "\n")
        if flush:
            self._guarded(self.stream.flush)

    def _guarded(self, action, *args) -> None:
        # A full disk must not fail the request being logged: say so once on stderr and go on.
        try:
            action(*args)
        except (OSError, ValueError) as exc:
            if not self._write_failed:
                self._write_failed = True
                say(f"request log: cannot write to {self.destination or 'stream'}: {exc}")
        else:
            self._write_failed = False


def _open_stream(destination: str) -> TextIO:
    if destination == "-":
        return sys.stdout
    return open(destination, "a", encoding="utf-8")
