"""sendfile(2) on plain TCP connections: a file's bytes go from the page cache to the socket without
passing through Python, so a firmware download holds no buffer and costs little CPU.

Twisted has no sendfile; this connection class adds it where Twisted writes: doWrite() first sends
what write() buffered (the response headers), then the file, one sendfile() call each time the
socket can take more. TLS connections never use it (their bytes must pass through OpenSSL).
"""

from __future__ import annotations

import os

from twisted.internet import main, tcp

# Bytes asked of one sendfile() call; the kernel sends what the socket buffer takes.
CHUNK = 1024 * 1024


class SendfileConnection(tcp.Server):
    """A server-side TCP connection that can send part of a file after what write() buffered."""

    _file = None  # [descriptor, offset, remaining, progress, done] while a file is being sent

    def send_file(self, descriptor: int, offset: int, count: int, progress, done) -> None:
        """Send `count` bytes of the open file from `offset`: progress(sent) after each piece,
        done(None) at the end, done(reason) when the connection is lost before."""
        self._file = [descriptor, offset, count, progress, done]
        self.startWriting()

    def doWrite(self):
        if self._file is None or self._buffered():
            result = super().doWrite()  # stops writing once the buffer is empty...
            if self._file is not None and result is None and self.connected and not self.disconnecting:
                self.startWriting()  # ...but the file comes next
            return result
        descriptor, offset, remaining, progress, done = self._file
        try:
            sent = os.sendfile(self.socket.fileno(), descriptor, offset, min(remaining, CHUNK))
        except BlockingIOError:
            return None
        except OSError:  # the peer reset the connection, or the file cannot be read
            return main.CONNECTION_LOST
        if sent == 0:  # the file shrank under us: the promised length cannot be kept
            return main.CONNECTION_LOST
        self._file[1:3] = offset + sent, remaining - sent
        progress(sent)
        if remaining == sent:
            self._file = None
            done(None)
            if not self._buffered() and self.connected:
                self.stopWriting()
        return None

    def connectionLost(self, reason):
        pending, self._file = self._file, None
        super().connectionLost(reason)
        if pending is not None:
            pending[4](reason)

    def _buffered(self) -> bool:
        return len(self.dataBuffer) > self.offset or self._tempDataLen > 0
