"""The TFTP listener alone under a reactor, over a resolver that can be made slow or broken.

Run as `python tests/tftp_harness.py FOLDER LOG TIMEOUT RETRIES`: it listens on 127.0.0.1 (an
ephemeral port), prints "ready PORT" on stderr and serves FOLDER's files by name. Names starting
with "slow-" resolve after SLOW_SECONDS, "raise-" make the resolver raise, "open-fails-" make
open() raise, "read-fails-" serve a reader that raises after READ_FAILS_AFTER bytes.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

SLOW_SECONDS = 3.0
READ_FAILS_AFTER = 2048


def build_resolver(folder: Path):
    from htekd.resolution import Kind, Resolution, Status

    class FailingReader:
        def __init__(self, size: int):
            self.left = size

        def readinto(self, target) -> int:
            if self.left <= 0:
                raise OSError("disk read error")
            count = min(len(target), self.left)
            target[:count] = b"r" * count
            self.left -= count
            return count

        def close(self) -> None:
            pass

    class OpenFails(Resolution):
        def open(self):
            raise OSError("cannot open")

    class ReadFails(Resolution):
        def open(self):
            return FailingReader(READ_FAILS_AFTER)

    class FolderResolver:
        def resolve(self, name: str, client):
            path = name.lstrip("/")
            if path.startswith("slow-"):
                time.sleep(SLOW_SECONDS)
                path = path[len("slow-"):]
            if path.startswith("raise-"):
                raise RuntimeError("resolver failure")
            if path.startswith("open-fails-"):
                return OpenFails(name, path, Kind.STATIC, Status.OK, size=10)
            if path.startswith("read-fails-"):
                return ReadFails(name, path, Kind.STATIC, Status.OK, size=10 * READ_FAILS_AFTER)
            candidate = folder / path
            if "/" not in path and candidate.is_file():
                return Resolution(name, path, Kind.STATIC, Status.OK, file=candidate,
                                  size=candidate.stat().st_size)
            return Resolution(name, path, Kind.NONE, Status.NOT_FOUND, reason="no such file")

    return FolderResolver()


def main(argv: list[str]) -> None:
    from twisted.internet import reactor

    from htekd.config import Address, TftpConfig
    from htekd.listeners import tftp
    from htekd.requestlog import RequestLog

    folder, log_path, timeout, retries = Path(argv[0]), argv[1], float(argv[2]), int(argv[3])
    log = RequestLog(open(log_path, "a", encoding="utf-8"))
    config = TftpConfig(True, (Address("127.0.0.1", 0),), timeout, retries)
    ports = tftp.listen(reactor, config, build_resolver(folder), log)
    print(f"ready {ports[0].getHost().port}", file=sys.stderr, flush=True)
    reactor.run()


if __name__ == "__main__":
    main(sys.argv[1:])
