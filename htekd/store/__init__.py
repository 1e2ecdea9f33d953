"""Where phones seen and learned device codes are kept: `[htekd] state`.

`sqlite` (the default) is a file in state_dir, embedded, for one server. A `postgresql://` URL is
one database that several servers write and read, so `htekd phones` on any of them shows what all
of them saw. Both take the same SQL (htekd.state); each module here only connects and commits.
"""

from __future__ import annotations

from htekd.state import SELECT_DEVCODES, SELECT_PHONES, LearnedDevcode, PhoneSeen


class Database:
    """What every store has: the daemon writer's one connection, let go by close()."""

    _connection = None

    def close(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None


def fetch_all(connection) -> tuple[list[PhoneSeen], list[LearnedDevcode]]:
    """Phones seen and learned device codes through an open connection (sqlite3's or psycopg's)."""
    phones = [PhoneSeen(*row) for row in connection.execute(SELECT_PHONES)]
    return phones, [LearnedDevcode(*row) for row in connection.execute(SELECT_DEVCODES)]


def is_postgresql(state: str) -> bool:
    return state.startswith(("postgresql://", "postgres://"))


def open_database(server):
    """The database `server` (a ServerConfig) names, not yet opened."""
    if is_postgresql(server.state):
        from htekd.store.postgresql import PostgresDatabase

        return PostgresDatabase(server.state)
    from htekd.store.sqlite import SqliteDatabase

    return SqliteDatabase(server.state_dir)


def read(server) -> tuple[list[PhoneSeen], list[LearnedDevcode]]:
    """Phones seen (most recent first) and learned device codes; StateError when they cannot be read."""
    return open_database(server).read()
