"""Phones seen, learned device codes and recent requests, kept in SQLite in the state folder across restarts.

The daemon feeds PhoneStore.observe from the request log; a writer thread batches the rows so a
request never waits for the disk, nor wakes the writer: it only appends to a deque. Readers (`htekd phones`) open the database read-only, which
WAL mode allows while the daemon writes. The request history is bounded: the oldest requests
beyond `history` are deleted as new ones are written.
"""

from __future__ import annotations

import sqlite3
import threading
from collections import deque
from dataclasses import dataclass
from pathlib import Path

from htekd.events import say
from htekd.requestlog import RequestRecord
from htekd.resolution import Client

DATABASE = "phones.sqlite"
# Rows waiting for the writer; beyond this (a disk that stalls for minutes) new rows are dropped.
QUEUE_LIMIT = 100_000
# After the first row of a burst the writer waits this long, so the burst becomes one transaction.
BATCH_WINDOW = 0.2
# Rows kept for MACs outside the inventory (anyone can name any MAC); the least recently seen go first.
MAX_OTHER_PHONES = 10_000
# What a phone's address is learned from: a transfer of its own file, completed, from a client that
# showed it receives at that address. Anything else (a firmware fetch naming a MAC in its User-Agent,
# a PnP SUBSCRIBE, a UDP request never acknowledged) could come from someone else.
OWN_FILES = ("phone-config", "unknown-phone")
ADDRESSES_CONFIRMED = 1  # the database's user_version from which addresses come only from such transfers

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
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL,
    requests INTEGER NOT NULL DEFAULT 0
);
CREATE TABLE IF NOT EXISTS requests (
    id INTEGER PRIMARY KEY,
    time REAL NOT NULL,
    protocol TEXT NOT NULL,
    address TEXT NOT NULL,
    port INTEGER NOT NULL,
    name TEXT NOT NULL,
    kind TEXT NOT NULL,
    outcome TEXT NOT NULL,
    bytes INTEGER NOT NULL,
    duration REAL NOT NULL,
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
    first_seen REAL NOT NULL,
    last_seen REAL NOT NULL
);
"""

# Facts a request did not carry keep their last known value.
UPSERT_PHONE = """
INSERT INTO phones (mac, model, devcode, firmware, address, protocol, last_file, outcome,
                    first_seen, last_seen, requests)
VALUES (:mac, :model, :devcode, :firmware, :address, :protocol, :name, :outcome, :first, :time, :requests)
ON CONFLICT (mac) DO UPDATE SET
    model = COALESCE(excluded.model, model),
    devcode = COALESCE(excluded.devcode, devcode),
    firmware = COALESCE(excluded.firmware, firmware),
    address = COALESCE(excluded.address, address),
    protocol = excluded.protocol,
    last_file = excluded.last_file,
    outcome = excluded.outcome,
    last_seen = MAX(last_seen, excluded.last_seen),
    requests = requests + excluded.requests
"""

INSERT_REQUEST = """
INSERT INTO requests (time, protocol, address, port, name, kind, outcome, bytes, duration, mac, model, firmware,
                      devcode, reason)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
HISTORY = 100_000  # requests kept by default
# Requests waiting for the writer to enter the history; beyond (a flood) they are left out of it:
# the history is for people reading the console, the request log keeps every line.
HISTORY_QUEUE_LIMIT = 2_000  # 10,000 requests a second at the writer's pace
REQUEST_FIELDS = ("time", "protocol", "address", "port", "name", "kind", "outcome", "bytes", "duration", "mac",
                  "model", "firmware", "devcode", "reason")
PHONE_FIELDS = ("mac", "model", "devcode", "firmware", "address", "protocol", "last_file", "outcome",
                "first_seen", "last_seen", "requests")

UPSERT_DEVCODE = """
INSERT INTO devcodes (devcode, model, first_seen, last_seen) VALUES (:devcode, :model, :first, :time)
ON CONFLICT (devcode) DO UPDATE SET model = excluded.model, last_seen = MAX(last_seen, excluded.last_seen)
"""


class StateError(Exception):
    """The state folder or database cannot be used; str() is one line naming the path."""


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


def database_path(state_dir: Path) -> Path:
    return Path(state_dir) / DATABASE


TRIM_OTHER_PHONES = """
DELETE FROM phones WHERE mac IN (
    SELECT mac FROM phones WHERE mac NOT IN (SELECT mac FROM temp.inventory)
    ORDER BY last_seen DESC LIMIT -1 OFFSET ?)
"""


class PhoneStore:
    """The daemon's writer: observe() queues, a thread commits in batches, close() flushes.

    `inventory` (the MACs of phones.csv, set by the daemon) decides which rows are bounded: only
    confirmed requests make rows for other MACs, and at most MAX_OTHER_PHONES are kept.
    Its read methods (for the console) open their own read-only connection, from any thread."""

    def __init__(self, state_dir: Path, history: int = HISTORY):
        self.path = database_path(state_dir)
        self.history = history
        try:
            Path(state_dir).mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state folder {state_dir}: {exc.strerror}") from None
        try:
            connection = sqlite3.connect(self.path, check_same_thread=False)
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(SCHEMA)
            if connection.execute("PRAGMA user_version").fetchone()[0] < ADDRESSES_CONFIRMED:
                # Addresses written before were taken from any request, a forged one included.
                with connection:
                    connection.execute("UPDATE phones SET address = NULL")
                    connection.execute(f"PRAGMA user_version = {ADDRESSES_CONFIRMED}")
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {self.path}: {exc}") from None
        self._connection = connection
        self._rows: deque[dict] = deque()  # append and popleft are atomic: no lock on the request path
        self._requests: deque[tuple] = deque()  # REQUEST_FIELDS of requests for the history
        self._pending = threading.Event()  # set by the first row after the writer took the last batch
        self._closing = threading.Event()
        self._dropped = 0
        self._failing = False
        self.inventory: frozenset[str] = frozenset()
        self._inventory_written: frozenset[str] | None = None  # what temp.inventory holds
        self.max_other_phones = MAX_OTHER_PHONES
        self.commits = 0  # batches written: what was read before is stale once it changes
        self._writer = threading.Thread(target=self._write_loop, name="htekd-state", daemon=True)
        self._writer.start()

    def observe(self, record: RequestRecord, client: Client) -> None:
        """RequestLog observer: remembers the request and the phone behind it. Never blocks, never raises."""
        if len(self._rows) >= QUEUE_LIMIT:
            self._dropped += 1
            return
        if self.history and len(self._requests) < HISTORY_QUEUE_LIMIT:
            # A tuple, not the record: a flood of requests must not keep a record object each alive.
            self._requests.append(tuple(getattr(record, name) for name in REQUEST_FIELDS))
            if not self._pending.is_set():
                self._pending.set()
        if not record.mac and not (record.devcode and record.model):
            return
        if record.mac and not record.confirmed and record.mac not in self.inventory:
            return  # a forged UDP request would make a row for every MAC it names
        self._rows.append({
            "mac": record.mac,
            "model": record.model,
            "devcode": record.devcode,
            "firmware": record.firmware,
            "address": record.address if (record.confirmed and record.outcome == "ok"
                                           and record.kind in OWN_FILES) else None,
            "protocol": record.protocol,
            "name": _storable(record.name),
            "outcome": record.outcome,
            "first": record.time,
            "time": record.time,
            "requests": 1,
        })
        if not self._pending.is_set():
            self._pending.set()

    def close(self) -> None:
        """Write what is queued and close the database."""
        self._closing.set()
        self._pending.set()
        self._writer.join()
        self._connection.close()

    def _write_loop(self) -> None:
        while True:
            self._pending.wait()
            self._closing.wait(BATCH_WINDOW)  # gather the rest of the burst (at once when closing)
            self._pending.clear()  # before taking the rows: one appended from now on sets it again
            rows, requests = [], []
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
        try:
            with self._connection:
                self._connection.executemany(UPSERT_PHONE, self._merged(rows, "mac"))
                self._connection.executemany(UPSERT_DEVCODE, self._merged([row for row in rows if row["model"]], "devcode"))
                inventory = self.inventory
                if any(row["mac"] and row["mac"] not in inventory for row in rows):
                    self._trim_other_phones(inventory)
                if requests:
                    self._connection.executemany(INSERT_REQUEST, (tuple(map(_storable, row)) for row in requests))
                    self._connection.execute("DELETE FROM requests WHERE id <= (SELECT MAX(id) FROM requests) - ?",
                                             (self.history,))
        except sqlite3.Error as exc:
            self._inventory_written = None  # rolled back with the rest
            if not self._failing:
                say(f"phones seen: cannot write {self.path}: {exc}")
            self._failing = True
            return
        self.commits += 1
        if self._failing:
            say(f"phones seen: writing {self.path} again")
        self._failing = False
        if self._dropped:
            say(f"phones seen: {self._dropped} requests not recorded (writer too slow)")
            self._dropped = 0

    def _trim_other_phones(self, inventory: frozenset[str]) -> None:
        """Inside the writer's transaction: keep the MAX_OTHER_PHONES most recent rows outside `inventory`."""
        connection = self._connection
        if inventory is not self._inventory_written:
            connection.execute("CREATE TEMP TABLE IF NOT EXISTS inventory (mac TEXT PRIMARY KEY)")
            connection.execute("DELETE FROM temp.inventory")
            connection.executemany("INSERT INTO temp.inventory VALUES (?)", ((mac,) for mac in inventory))
            self._inventory_written = inventory
        connection.execute(TRIM_OTHER_PHONES, (self.max_other_phones,))

    # -- reading, for the console --------------------------------------------------------------

    def phones_seen(self) -> list[PhoneSeen]:
        return read(self.path.parent)[0]

    def phones_seen_count(self) -> int:
        return self._query("SELECT COUNT(*) FROM phones", ())[0][0]

    def requests(self, limit: int = 100, mac: str = "", address: str = "", protocol: str = "", outcome: str = "",
                 kind: str = "", since: float = 0.0) -> list[RequestRecord]:
        """The most recent requests first, each filter applied when given (`address` matches a prefix)."""
        where, values = ["time >= ?"], [since]
        for column, value in (("mac", mac), ("protocol", protocol), ("outcome", outcome), ("kind", kind)):
            if value:
                where.append(f"{column} = ?")
                values.append(value)
        if address:
            where.append("address >= ? AND address < ?")
            values += [address, address + "\U0010ffff"]
        query = (f"SELECT {', '.join(REQUEST_FIELDS)} FROM requests WHERE {' AND '.join(where)} "
                 "ORDER BY id DESC LIMIT ?")
        return [RequestRecord(*row) for row in self._query(query, (*values, limit))]

    def requests_per_minute(self, since: float) -> dict[tuple[int, str], int]:
        """(minute since the epoch, protocol) -> requests, from `since` on."""
        rows = self._query("SELECT CAST(time / 60 AS INTEGER), protocol, COUNT(*) FROM requests WHERE time >= ? "
                           "GROUP BY 1, 2", (since,))
        return {(minute, protocol): count for minute, protocol, count in rows}

    def problems(self, since: float, limit: int = 1000) -> list[tuple[str, str, str, str, int, float]]:
        """Requests since `since` that did not end well or came from an unknown phone or device code,
        grouped: (outcome, kind, reason, who, count, last time), most recent first. `who` is the MAC
        or device code, or the address for what is about an address (throttling, logins, access)."""
        who = ("CASE WHEN reason LIKE 'throttled%' OR reason LIKE 'address%' OR (mac IS NULL AND devcode IS NULL) "
               "OR reason IN ('authentication required', 'wrong credentials') THEN address ELSE COALESCE(mac, devcode) END")
        rows = self._query(
            f"SELECT outcome, kind, reason, {who}, COUNT(*), MAX(time) FROM requests "
            "WHERE time >= ? AND (outcome != 'ok' OR kind = 'unknown-phone' OR reason LIKE 'unknown device code%') "
            f"GROUP BY 1, 2, 3, 4 ORDER BY 6 DESC LIMIT ?", (since, limit))
        return [tuple(row) for row in rows]

    def _query(self, query: str, values: tuple) -> list[tuple]:
        try:
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                return connection.execute(query, values).fetchall()
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from None


def _storable(value):
    """A name that was not UTF-8 arrives with surrogate escapes, which SQLite cannot take: kept visible
    as backslash escapes, as the request log writes them."""
    if isinstance(value, str) and not value.isascii():
        return value.encode("utf-8", "backslashreplace").decode("utf-8")
    return value


def read(state_dir: Path) -> tuple[list[PhoneSeen], list[LearnedDevcode]]:
    """Phones seen (most recent first) and learned device codes, from a read-only connection.

    Raises StateError when there is a database that cannot be read; no database means nothing seen."""
    path = database_path(state_dir)
    if not path.exists():
        return [], []
    try:
        connection = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
        try:
            phones = [PhoneSeen(*row) for row in connection.execute(
                "SELECT mac, model, devcode, firmware, address, protocol, last_file, outcome,"
                " first_seen, last_seen, requests FROM phones ORDER BY last_seen DESC, mac"
            )]
            devcodes = [LearnedDevcode(*row) for row in connection.execute(
                "SELECT devcode, model, first_seen, last_seen FROM devcodes ORDER BY devcode"
            )]
        finally:
            connection.close()
    except sqlite3.Error as exc:
        raise StateError(f"cannot read {path}: {exc}") from None
    return phones, devcodes
