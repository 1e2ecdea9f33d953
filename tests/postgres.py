"""A real PostgreSQL server for tests: Debian's binaries, a cluster in a temporary folder, listening
on a Unix socket there only (no TCP port), stopped and removed afterwards. Never the system's
cluster, never a service."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

BINARIES = sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=lambda path: int(path.parent.name))
TIMEOUT = 60


def available() -> bool:
    return bool(BINARIES) and (os.geteuid() != 0 or shutil.which("runuser") is not None)


class Postgres:
    """initdb (trust on the socket, superuser "postgres"), then start(); stop() and start() again
    play an outage; remove() ends it for good."""

    def __init__(self):
        self.bin = BINARIES[-1]
        self.folder = Path(tempfile.mkdtemp(prefix="htekd-pg-"))
        self.data = self.folder / "data"
        # initdb refuses to run as root: the cluster then belongs to the postgres account.
        self.as_owner = ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []
        if self.as_owner:
            shutil.chown(self.folder, "postgres", "postgres")
        self._run("initdb", "-D", str(self.data), "-U", "postgres", "--auth=trust", "-E", "UTF8", "--no-sync")

    def url(self, database: str, password: str = "") -> str:
        login = f"postgres:{password}" if password else "postgres"
        return f"postgresql://{login}@/{database}?host={self.folder}"

    def start(self) -> None:
        options = f"-k {self.folder} -c listen_addresses='' -c fsync=off"
        self._run("pg_ctl", "-D", str(self.data), "-l", str(self.folder / "server.log"), "-o", options, "-w", "start")

    def stop(self) -> None:
        self._run("pg_ctl", "-D", str(self.data), "-m", "fast", "-w", "stop")

    def create_database(self, name: str) -> str:
        self._run("createdb", "-h", str(self.folder), "-U", "postgres", name)
        return self.url(name)

    def remove(self) -> None:
        if (self.data / "postmaster.pid").exists():
            self.stop()
        shutil.rmtree(self.folder, ignore_errors=True)

    def _run(self, program: str, *args: str) -> None:
        done = subprocess.run([*self.as_owner, str(self.bin / program), *args], capture_output=True, text=True,
                              timeout=TIMEOUT, cwd=self.folder)
        if done.returncode != 0:
            raise RuntimeError(f"{program} failed: {done.stderr or done.stdout}")
