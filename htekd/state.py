"""Phones seen, learned device codes and recent requests, kept across restarts in the state store.

The daemon feeds PhoneStore.observe from the request log; a writer thread batches the rows so a
request never waits for the database, nor wakes the writer: it only appends to a deque. The
database is one of htekd.store's (SQLite in the state folder, or PostgreSQL shared by several
servers); the SQL here is written once for both. While the database cannot be written, rows wait
merged per phone and the writer tries again, so phones are served all the same. The request
history (for the console) is bounded: the oldest requests beyond `history` go as new ones come.
"""

from __future__ import annotations

import re
import threading
from collections import deque
from dataclasses import dataclass

from htekd.events import say
from htekd.requestlog import RequestRecord
from htekd.resolution import Client

# Rows waiting for the writer; beyond this (a disk that stalls for minutes) new rows are dropped.
QUEUE_LIMIT = 100_000
# After the first row of a burst the writer waits this long, so the burst becomes one transaction.
BATCH_WINDOW = 0.2
# While the database cannot be written, the writer tries again this often.
RETRY_INTERVAL = 2.0
# A stopping daemon waits this long for the last write (a database that does not answer).
CLOSE_TIMEOUT = 10.0
# Rows kept for MACs outside the inventory (anyone can name any MAC); the least recently seen go first.
MAX_OTHER_PHONES = 10_000
# What a phone's address is learned from: a transfer of its own file, completed, from a client that
# showed it receives at that address. Anything else (a firmware fetch naming a MAC in its User-Agent,
# a PnP SUBSCRIBE, a UDP request never acknowledged) could come from someone else.
OWN_FILES = ("phone-config", "unknown-phone")

SCHEMA = """
CREATE TABLE IF NOT EXISTS phones (
    mac TEXT PRIMARY KEY,
    model TEXT,
    devcode TEXT,
    firmware TEXT,
    address TEXT,
    protocol TEXT,
    last_file TEXT,
    outcome TEXT,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL,
    requests BIGINT NOT NULL DEFAULT 0,
    known INTEGER NOT NULL DEFAULT 1
);
CREATE TABLE IF NOT EXISTS requests (
    id {id_column},
    time DOUBLE PRECISION NOT NULL,
    protocol TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bytes BIGINT NOT NULL,
    duration DOUBLE PRECISION NOT NULL,
    mac TEXT,
    model TEXT,
    firmware TEXT,
    devcode TEXT,
    reason TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS requests_by_mac ON requests (mac, id);
CREATE INDEX IF NOT EXISTS requests_by_time ON requests (time);
CREATE TABLE IF NOT EXISTS devcodes (
    devcode TEXT PRIMARY KEY,
    model TEXT NOT NULL,
    first_seen DOUBLE PRECISION NOT NULL,
    last_seen DOUBLE PRECISION NOT NULL
);
"""

# SQL that SQLite and PostgreSQL both run (parameters as :name). Facts a request did not carry
# keep their last known value; several servers may write one phone, so the times only widen.
UPSERT_PHONE = """
INSERT INTO phones (mac, model, devcode, firmware, address, protocol, last_file, outcome,
                    first_seen, last_seen, requests, known)
VALUES (:mac, :model, :devcode, :firmware, :address, :protocol, :name, :outcome, :first, :time, :requests, :known)
ON CONFLICT (mac) DO UPDATE SET
    model = COALESCE(excluded.model, phones.model),
    devcode = COALESCE(excluded.devcode, phones.devcode),
    firmware = COALESCE(excluded.firmware, phones.firmware),
    address = COALESCE(excluded.address, phones.address),
    known = excluded.known,
    protocol = excluded.protocol,
    last_file = excluded.last_file,
    outcome = excluded.outcome,
    first_seen = CASE WHEN excluded.first_seen < phones.first_seen THEN excluded.first_seen ELSE phones.first_seen END,
    last_seen = CASE WHEN excluded.last_seen > phones.last_seen THEN excluded.last_seen ELSE phones.last_seen END,
    requests = phones.requests + excluded.requests
"""

UPSERT_DEVCODE = """
INSERT INTO devcodes (devcode, model, first_seen, last_seen) VALUES (:devcode, :model, :first, :time)
ON CONFLICT (devcode) DO UPDATE SET model = excluded.model,
    last_seen = CASE WHEN excluded.last_seen > devcodes.last_seen THEN excluded.last_seen ELSE devcodes.last_seen END
"""

SELECT_PHONES = """
SELECT mac, model, devcode, firmware, address, protocol, last_file, outcome, first_seen, last_seen, requests
FROM phones ORDER BY last_seen DESC, mac
"""
SELECT_DEVCODES = "SELECT devcode, model, first_seen, last_seen FROM devcodes ORDER BY devcode"
REQUEST_FIELDS = ("time", "protocol", "address", "port", "name", "kind", "outcome", "bytes", "duration", "mac",
                  "model", "firmware", "devcode", "reason")
INSERT_REQUEST = (f"INSERT INTO requests ({', '.join(REQUEST_FIELDS)}) "
                  f"VALUES ({', '.join(':' + field for field in REQUEST_FIELDS)})")
TRIM_REQUESTS = "DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - :history"
HISTORY = 100_000  # requests kept by default
# Requests waiting for the writer to enter the history; beyond (a flood) they are left out of it:
# the history is for people reading the console, the request log keeps every line.
HISTORY_QUEUE_LIMIT = 2_000  # 10,000 requests a second at the writer's pace
# Rows of MACs outside the inventory seen before the one at :oldest_kept (0 = the newest); ties stay.
TRIM_OTHER_PHONES = """
DELETE FROM phones WHERE known = 0 AND last_seen < (
    SELECT last_seen FROM phones WHERE known = 0 ORDER BY last_seen DESC LIMIT 1 OFFSET :oldest_kept)
"""



class StateError(Exception):
    """The state folder or database cannot be used; str() is one line naming the path."""


class Unavailable(Exception):
    """The database cannot be written now (down, unreachable, disk full); str() is one line."""


@dataclass(frozen=True)
class PhoneSeen:
    mac: str
    model: str | None
    devcode: str | None
    firmware: str | None
    address: str | None
    protocol: str | None
    last_file: str | None
    outcome: str | None
    first_seen: float
    last_seen: float
    requests: int


@dataclass(frozen=True)
class LearnedDevcode:
    devcode: str
    model: str
    first_seen: float
    last_seen: float


class PhoneStore:
    """The daemon's writer: observe() queues, a thread commits in batches, close() flushes.

    `database` is an htekd.store database: open() creates the tables (StateError: cannot start;
    Unavailable: start anyway and write once it is back), write(phones, devcodes, keep_others,
    requests, history) commits one batch, keeping at most `keep_others` rows of MACs outside the
    inventory (None: no trim needed) and the last `history` requests, or raises Unavailable;
    query(sql, values) reads; close() lets it go; `where` names it without a password.

    `inventory` (the MACs of phones.csv, set by the daemon) decides which rows are bounded: only
    confirmed requests make rows for other MACs, and at most MAX_OTHER_PHONES are kept. The last
    `history` requests are kept too (0: none). The read methods (for the console) go through the
    database's query(), from any thread."""

    def __init__(self, database, history: int = HISTORY):
        self.database = database
        self.history = history
        self._rows: deque[dict] = deque()  # append and popleft are atomic: no lock on the request path
        self._requests: deque[tuple] = deque()  # REQUEST_FIELDS of requests for the history
        self._unwritten: list[dict] = []  # merged rows the database refused, tried again first
        self._pending = threading.Event()  # set by the first row after the writer took the last batch
        self._closing = threading.Event()
        self._dropped = 0
        self._failing = False
        self.inventory: frozenset[str] = frozenset()
        self.max_other_phones = MAX_OTHER_PHONES
        self.commits = 0  # batches written: what was read before is stale once it changes
        try:
            database.open()
        except Unavailable as exc:
            self._unreachable(exc)
        self._writer = threading.Thread(target=self._write_loop, name="htekd-state", daemon=True)
        self._writer.start()

    def observe(self, record: RequestRecord, client: Client) -> None:
        """RequestLog observer: remembers the request and the phone behind it. Never blocks, never raises."""
        if self.history and len(self._requests) < HISTORY_QUEUE_LIMIT:
            # A tuple, not the record: a flood of requests must not keep a record object each alive.
            self._requests.append(tuple(getattr(record, name) for name in REQUEST_FIELDS))
            self._wake()
        if not record.mac and not (record.devcode and record.model):
            return
        known = record.mac in self.inventory
        if record.mac and not record.confirmed and not known:
            return  # a forged UDP request would make a row for every MAC it names
        if len(self._rows) >= QUEUE_LIMIT:
            self._dropped += 1
            return
        self._rows.append({
            "mac": record.mac,
            "model": record.model,
            "devcode": record.devcode,
            "firmware": record.firmware,
            "address": record.address if (record.confirmed and record.outcome == "ok"
                                           and record.kind in OWN_FILES) else None,
            "protocol": record.protocol,
            "name": record.name,
            "outcome": record.outcome,
            "first": record.time,
            "time": record.time,
            "requests": 1,
            "known": int(known),
        })
        self._wake()

    def _wake(self) -> None:
        """The writer's signal, set only by the first row after it took the last batch (no lock taken)."""
        if not self._pending.is_set():
            self._pending.set()

    def close(self) -> None:
        """Write what is queued and close the database."""
        self._closing.set()
        self._pending.set()
        self._writer.join(CLOSE_TIMEOUT)
        if self._writer.is_alive():
            say(f"phones seen: {self.database.where} does not answer; the last requests are not recorded")
            return
        if self._unwritten:
            say(f"phones seen: {len(self._unwritten)} rows not written, {self.database.where} unavailable")
        self.database.close()

    def _write_loop(self) -> None:
        while True:
            self._pending.wait(RETRY_INTERVAL if self._failing else None)
            self._closing.wait(BATCH_WINDOW)  # gather the rest of the burst (at once when closing)
            self._pending.clear()  # before taking the rows: one appended from now on sets it again
            rows, self._unwritten = self._unwritten, []
            requests = []
            while self._rows:
                rows.append(self._rows.popleft())
            while self._requests:
                requests.append(self._requests.popleft())
            if rows or requests:
                self._commit(rows, requests)
            if self._closing.is_set() and not self._rows and not self._requests:
                return

    @staticmethod
    def _merged(rows: list[dict], key: str) -> list[dict]:
        """One row per `key` value, in order: the latest facts (a missing fact keeps the one before),
        the first and last time, and how many requests it stands for."""
        merged: dict[str, dict] = {}
        for row in rows:
            value = row[key]
            if not value:
                continue
            before = merged.get(value)
            if before is None:
                merged[value] = dict(row)
                continue
            for fact in ("model", "devcode", "firmware", "address"):
                if row[fact] is None:
                    row = {**row, fact: before[fact]}
            merged[value] = {**row, "first": min(before["first"], row["first"]), "time": max(before["time"], row["time"]),
                             "requests": before["requests"] + row["requests"]}
        return list(merged.values())

    def _commit(self, rows: list[dict], requests: list[tuple]) -> None:
        phones = self._merged(rows, "mac")
        devcodes = self._merged([row for row in rows if row["model"]], "devcode")
        others = any(row["mac"] and not row["known"] for row in rows)
        history = [dict(zip(REQUEST_FIELDS, map(_storable, request))) for request in requests]
        try:
            self.database.write(phones, devcodes, self.max_other_phones if others else None, history, self.history)
        except Unavailable as exc:  # the history of an outage is let go: the request log has it
            self._unreachable(exc)
            # Kept merged (one row per phone, and per code seen without a phone) within the queue's bound.
            kept = phones + [row for row in devcodes if not row["mac"]]
            self._dropped += max(0, len(kept) - QUEUE_LIMIT)
            self._unwritten = kept[:QUEUE_LIMIT]
            return
        self.commits += 1
        if self._failing:
            say(f"phones seen: writing {self.database.where} again")
        self._failing = False
        if self._dropped:
            say(f"phones seen: {self._dropped} requests not recorded (writer too slow)")
            self._dropped = 0

    def _unreachable(self, exc: Unavailable) -> None:
        """One line when the database goes away, none while it stays away."""
        if not self._failing:
            say(f"phones seen: cannot write {self.database.where}: {exc}; serving on, writing again when it is back")
        self._failing = True

    # -- reading, for the console --------------------------------------------------------------

    def phones_seen(self) -> list[PhoneSeen]:
        return [PhoneSeen(*row) for row in self.database.query(SELECT_PHONES, {})]

    def phones_seen_count(self) -> int:
        return self.database.query("SELECT COUNT(*) FROM phones", {})[0][0]

    def requests(self, limit: int = 100, mac: str = "", address: str = "", protocol: str = "", outcome: str = "",
                 kind: str = "", since: float = 0.0) -> list[RequestRecord]:
        """The most recent requests first, each filter applied when given (`address` matches a prefix)."""
        where, values = ["time >= :since"], {"since": since, "limit": limit}
        for column, value in (("mac", mac), ("protocol", protocol), ("outcome", outcome), ("kind", kind)):
            if value:
                where.append(f"{column} = :{column}")
                values[column] = value
        if address:
            where.append("address LIKE :address ESCAPE '\\'")
            values["address"] = re.sub(r"([\\%_])", r"\\\1", address) + "%"
        query = (f"SELECT {', '.join(REQUEST_FIELDS)} FROM requests WHERE {' AND '.join(where)} "
                 "ORDER BY id DESC LIMIT :limit")
        return [RequestRecord(*row) for row in self.database.query(query, values)]

    def requests_per_minute(self, since: float) -> dict[tuple[int, str], int]:
        """(minute since the epoch, protocol) -> requests, from `since` on."""
        rows = self.database.query("SELECT CAST(time AS BIGINT) / 60, protocol, COUNT(*) FROM requests "
                                   "WHERE time >= :since GROUP BY 1, 2", {"since": since})
        return {(int(minute), protocol): count for minute, protocol, count in rows}

    def problems(self, since: float, limit: int = 1000) -> list[tuple[str, str, str, str, int, float]]:
        """Requests since `since` that did not end well or came from an unknown phone or device code,
        grouped: (outcome, kind, reason, who, count, last time), most recent first. `who` is the MAC
        or device code, or the address for what is about an address (throttling, logins, access)."""
        who = ("CASE WHEN reason LIKE 'throttled%' OR reason LIKE 'refused%' OR reason LIKE 'address%' "
               "OR (mac IS NULL AND devcode IS NULL) "
               "OR reason IN ('authentication required', 'wrong credentials') THEN address ELSE COALESCE(mac, devcode) END")
        rows = self.database.query(
            f"SELECT outcome, kind, reason, {who}, COUNT(*), MAX(time) FROM requests "
            "WHERE time >= :since AND (outcome != 'ok' OR kind = 'unknown-phone' OR reason LIKE 'unknown device code%') "
            "GROUP BY 1, 2, 3, 4 ORDER BY 6 DESC LIMIT :limit", {"since": since, "limit": limit})
        return [tuple(row) for row in rows]


def _storable(value):
    """A name that was not UTF-8 arrives with surrogate escapes, which no database takes: kept visible
    as backslash escapes, as the request log writes them."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value
