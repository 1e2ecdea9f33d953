"""The shared state store: one PostgreSQL database that several htekd servers write and read.

The daemon's writer thread holds one connection. A database that goes away (stopped, network
cut) is Unavailable: the daemon serves on, and the next write connects again. Times are bounded
so that neither the writer nor a stop waits long on a server that does not answer.
"""

from __future__ import annotations

import re
import urllib.parse

import psycopg
from psycopg.conninfo import conninfo_to_dict

from htekd.state import (INSERT_REQUEST, SCHEMA, TRIM_OTHER_PHONES, TRIM_REQUESTS, UPSERT_DEVCODE, UPSERT_PHONE,
                         LearnedDevcode, PhoneSeen, StateError, Unavailable)
from htekd.store import Database, fetch_all

CONNECT_TIMEOUT = 3  # seconds
OPTIONS = {
    "connect_timeout": CONNECT_TIMEOUT,
    "tcp_user_timeout": 10_000,  # ms without acknowledgement before a cut connection counts as lost
    "keepalives_idle": 30,  # and a silent one is probed
    "keepalives_interval": 10,
    "keepalives_count": 3,
    "options": "-c statement_timeout=10000",
    "application_name": "htekd",
}
# Servers that start together must not race to create the tables: they take this lock first.
SCHEMA_LOCK = 0x6874656B


def _pyformat(sql: str) -> str:
    """htekd.state's SQL names parameters :name; psycopg takes %(name)s (and a literal % as %%)."""
    return re.sub(r"(?<![:\w]):(\w+)", r"%(\1)s", sql.replace("%", "%%"))


UPSERT_PHONE_PG = _pyformat(UPSERT_PHONE)
UPSERT_DEVCODE_PG = _pyformat(UPSERT_DEVCODE)
TRIM_OTHER_PHONES_PG = _pyformat(TRIM_OTHER_PHONES)
INSERT_REQUEST_PG = _pyformat(INSERT_REQUEST)
TRIM_REQUESTS_PG = _pyformat(TRIM_REQUESTS)
SCHEMA_PG = SCHEMA.format(id_column="BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY")


def problem(url: str) -> str | None:
    """Why `url` is no PostgreSQL connection URL, or None."""
    try:
        conninfo_to_dict(url)
    except psycopg.Error as exc:
        return _one_line(exc)
    return None


def shown(url: str) -> str:
    """The URL without its password, for messages and logs."""
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc.rpartition("@")
    if netloc[1]:
        netloc = (netloc[0].partition(":")[0], "@", netloc[2])
    query = urllib.parse.urlencode([(key, value) for key, value in urllib.parse.parse_qsl(parts.query)
                                    if key != "password"], safe="/")
    return urllib.parse.urlunsplit((parts.scheme, "".join(netloc), parts.path, query, ""))


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class PostgresDatabase(Database):
    def __init__(self, url: str):
        self.url = url
        self.where = shown(url)

    def open(self) -> None:
        self._connected()

    def write(self, phones: list[dict], devcodes: list[dict], keep_others: int | None = None,
              requests: list[dict] = (), history: int = 0) -> None:
        connection = self._connected()
        try:
            with connection.transaction(), connection.cursor() as cursor:
                # The same order on every server, so two batches never wait on each other's rows.
                cursor.executemany(UPSERT_PHONE_PG, sorted(phones, key=lambda row: row["mac"]))
                cursor.executemany(UPSERT_DEVCODE_PG, sorted(devcodes, key=lambda row: row["devcode"]))
                if keep_others is not None:
                    cursor.execute(TRIM_OTHER_PHONES_PG, {"oldest_kept": max(keep_others - 1, 0)})
                if requests:
                    cursor.executemany(INSERT_REQUEST_PG, requests)
                    cursor.execute(TRIM_REQUESTS_PG, {"history": history})
        except psycopg.Error as exc:
            self.close()
            raise Unavailable(_one_line(exc)) from None

    def read(self) -> tuple[list[PhoneSeen], list[LearnedDevcode]]:
        """Tables not made yet (no server has started) mean nothing seen."""
        try:
            with psycopg.connect(self.url, **OPTIONS) as connection:
                try:
                    return fetch_all(connection)
                except psycopg.errors.UndefinedTable:
                    return [], []
        except psycopg.Error as exc:
            raise StateError(f"cannot read {self.where}: {_one_line(exc)}") from None

    def query(self, sql: str, values: dict) -> list[tuple]:
        """Rows of one read (StateError when the database cannot answer; no tables yet: no rows)."""
        try:
            with psycopg.connect(self.url, **OPTIONS) as connection:
                try:
                    return connection.execute(_pyformat(sql), values).fetchall()
                except psycopg.errors.UndefinedTable:
                    return []
        except psycopg.Error as exc:
            raise StateError(f"cannot read {self.where}: {_one_line(exc)}") from None

    def _connected(self) -> psycopg.Connection:
        """The open connection, or a new one with the tables made sure of; Unavailable if none."""
        if self._connection is not None and not self._connection.closed:
            return self._connection
        try:
            connection = psycopg.connect(self.url, autocommit=True, **OPTIONS)
        except psycopg.Error as exc:
            raise Unavailable(_one_line(exc)) from None
        try:
            with connection.transaction():
                connection.execute("SELECT pg_advisory_xact_lock(%s)", (SCHEMA_LOCK,))
                connection.execute(SCHEMA_PG)
        except psycopg.Error as exc:
            connection.close()
            raise Unavailable(_one_line(exc)) from None
        self._connection = connection
        return connection
