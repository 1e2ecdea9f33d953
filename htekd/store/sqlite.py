"""The embedded state store: one SQLite file in the state folder (WAL, so `htekd phones` reads
while the daemon writes)."""

from __future__ import annotations

import sqlite3
from pathlib import Path

from htekd.state import (INSERT_REQUEST, SCHEMA, TRIM_OTHER_PHONES, TRIM_REQUESTS, UPSERT_DEVCODE, UPSERT_PHONE,
                         LearnedDevcode, PhoneSeen, StateError, Unavailable)
from htekd.store import Database, fetch_all

DATABASE = "phones.sqlite"
# The database's user_version: 1, addresses come only from confirmed transfers of a phone's own
# file; 2, rows say whether their MAC was in the inventory (those outside are bounded).
VERSION = 2


class SqliteDatabase(Database):
    def __init__(self, state_dir: Path):
        self.state_dir = Path(state_dir)
        self.path = self.state_dir / DATABASE
        self.where = str(self.path)

    def open(self) -> None:
        """A state folder or file that cannot be made is no passing outage: StateError."""
        try:
            self.state_dir.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StateError(f"cannot create state folder {self.state_dir}: {exc.strerror}") from None
        try:
            connection = sqlite3.connect(self.path, check_same_thread=False)  # then used by the writer alone
            connection.execute("PRAGMA journal_mode=WAL")
            connection.execute("PRAGMA synchronous=NORMAL")
            connection.executescript(SCHEMA.format(id_column="INTEGER PRIMARY KEY"))
            _upgrade(connection)
        except sqlite3.Error as exc:
            raise StateError(f"cannot open {self.path}: {exc}") from None
        self._connection = connection

    def write(self, phones: list[dict], devcodes: list[dict], keep_others: int | None = None,
              requests: list[dict] = (), history: int = 0) -> None:
        try:
            with self._connection:
                self._connection.executemany(UPSERT_PHONE, phones)
                self._connection.executemany(UPSERT_DEVCODE, devcodes)
                if keep_others is not None:
                    self._connection.execute(TRIM_OTHER_PHONES, {"oldest_kept": max(keep_others - 1, 0)})
                if requests:
                    self._connection.executemany(INSERT_REQUEST, requests)
                    self._connection.execute(TRIM_REQUESTS, {"history": history})
        except sqlite3.Error as exc:
            raise Unavailable(str(exc)) from None

    def read(self) -> tuple[list[PhoneSeen], list[LearnedDevcode]]:
        """From a read-only connection; no database yet means nothing seen."""
        return self._reading(fetch_all, ([], []))

    def query(self, sql: str, values: dict) -> list[tuple]:
        """Rows of one read, from a read-only connection (any thread); no database yet: no rows."""
        return self._reading(lambda connection: connection.execute(sql, values).fetchall(), [])

    def _reading(self, read, nothing):
        if not self.path.exists():
            return nothing
        try:
            connection = sqlite3.connect(f"{self.path.resolve().as_uri()}?mode=ro", uri=True)
            try:
                return read(connection)
            finally:
                connection.close()
        except sqlite3.Error as exc:
            raise StateError(f"cannot read {self.path}: {exc}") from None


def _upgrade(connection: sqlite3.Connection) -> None:
    """Bring a database written by an earlier htekd to VERSION."""
    version = connection.execute("PRAGMA user_version").fetchone()[0]
    if version >= VERSION:
        return
    with connection:
        if version < 1:  # addresses written before were taken from any request, a forged one included
            connection.execute("UPDATE phones SET address = NULL")
        columns = {row[1] for row in connection.execute("PRAGMA table_info(phones)")}
        if "known" not in columns:
            connection.execute("ALTER TABLE phones ADD COLUMN known INTEGER NOT NULL DEFAULT 1")
        connection.execute(f"PRAGMA user_version = {VERSION}")

