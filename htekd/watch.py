"""`[htekd] watch = yes`: a change under the root (a `git pull`, an rsync, an editor's save) reloads
the daemon by itself once the change has settled, with the same guarantees as SIGHUP.

inotify through Twisted. Every folder under the root is watched, but not hidden ones (`.git`, an
editor's `.file.swp`: htekd never serves hidden names) nor the state folder or request log when an
administrator put them under the root. Each event restarts the settle timer, so a deployment that
writes a hundred files is one reload. Twisted drops the whole inotify descriptor when one watched
folder is deleted or moved, so such an event rebuilds the watches before the reload.
"""

from __future__ import annotations

import os
from pathlib import Path

from twisted.internet import inotify
from twisted.python.filepath import FilePath

from htekd.events import say

# Seconds without a further change before the reload starts.
SETTLE = 1.0
CHANGES = (inotify.IN_MODIFY | inotify.IN_ATTRIB | inotify.IN_CLOSE_WRITE | inotify.IN_MOVED_FROM
           | inotify.IN_MOVED_TO | inotify.IN_CREATE | inotify.IN_DELETE | inotify.IN_DELETE_SELF
           | inotify.IN_MOVE_SELF)
LOST = inotify.IN_DELETE_SELF | inotify.IN_MOVE_SELF
NEW_FOLDER = inotify.IN_CREATE | inotify.IN_MOVED_TO


class RootWatcher:
    """Calls `settled()` on the reactor once changes under `root` have stopped for SETTLE seconds."""

    def __init__(self, reactor, root: Path, settled, ignored: tuple[Path, ...] = ()):
        self.reactor, self.root, self.settled = reactor, Path(root), settled
        self.ignored = tuple(Path(path) for path in ignored)
        self._notifier = None
        self._timer = None
        self._lost = False
        self._start()

    def stop(self) -> None:
        if self._timer is not None and self._timer.active():
            self._timer.cancel()
        self._timer = None
        self._close()

    def _start(self) -> None:
        self._close()
        self._notifier = inotify.INotify(self.reactor)
        self._notifier.startReading()
        self._lost = False
        self._watch_tree(self.root)

    def _close(self) -> None:
        if self._notifier is not None and self._notifier.connected:
            self._notifier.loseConnection()
        self._notifier = None

    def _watch_tree(self, top: Path) -> None:
        for folder, subfolders, _ in os.walk(top):
            subfolders[:] = [name for name in subfolders if not self._skipped(Path(folder) / name)]
            try:
                self._notifier.watch(FilePath(folder), mask=CHANGES, callbacks=[self._changed])
            except (inotify.INotifyError, OSError) as exc:  # e.g. fs.inotify.max_user_watches reached
                say(f"watch: cannot watch {folder}: {exc}; changes there need a SIGHUP")

    def _skipped(self, path: Path) -> bool:
        relative = path.relative_to(self.root) if path.is_relative_to(self.root) else path
        if any(part.startswith(".") for part in relative.parts):
            return True
        return any(path == ignored or path.is_relative_to(ignored) for ignored in self.ignored)

    def _changed(self, _watch, filepath: FilePath, mask: int) -> None:
        path = Path(os.fsdecode(filepath.path))
        if mask & LOST:
            self._lost = True
        elif self._skipped(path):
            return
        elif mask & inotify.IN_ISDIR and mask & NEW_FOLDER:
            self._watch_tree(path)
        if self._timer is not None and self._timer.active():
            self._timer.reset(SETTLE)
        else:
            self._timer = self.reactor.callLater(SETTLE, self._settle)

    def _settle(self) -> None:
        self._timer = None
        if self._lost:
            self._start()  # before the reload reads the tree: a change from now on is seen
        say("root changed, reloading")
        self.settled()
