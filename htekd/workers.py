"""`[htekd] workers = N`: N processes serve the same ports, one main process looks after them.

Each worker is `htekd serve` itself (HTEKD_WORKER=i/N in its environment): it loads the tree, binds
every listener with SO_REUSEPORT (htekd.reuseport keeps each client on one worker) and serves. The
workers start one after the other, so worker i holds index i of every port's group. The main
process loads no tree and serves nothing: it owns the signals and systemd's notifications, passes
SIGHUP to every worker and says the outcome once, stops them on SIGTERM, and starts again a worker
that died. The workers' standard output (the request log when `log = -`) and their event lines
come through the main process whole line by whole line, so lines never interleave; a log file is
written by each worker with O_APPEND, one whole-line write() at a time.
"""

from __future__ import annotations

import ctypes
import os
import selectors
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field

from htekd.daemon import notify_systemd
from htekd.events import say

ENVIRONMENT = "HTEKD_WORKER"
STOP_TIMEOUT = 10.0  # seconds the workers get to stop before they are killed (systemd waits 15)
RESTART_DELAY = 1.0  # seconds before a worker that died is started again
RELOAD_RESULTS = ("htekd: reloaded", "htekd: reload failed")
# A worker's lines that the main process says once for all of them, or not at all.
OWN_LINES = ("htekd: listening ", "htekd: ready", "htekd: stopping", "htekd: stopped")
PR_SET_PDEATHSIG = 1


@dataclass(frozen=True)
class Worker:
    """What a worker process knows of itself."""

    index: int  # 1..count
    count: int

    @property
    def first(self) -> bool:
        return self.index == 1

    def ask_reload(self) -> None:
        """The main process reloads every worker (used by watch = yes)."""
        os.kill(os.getppid(), signal.SIGHUP)


def this_worker() -> Worker | None:
    index, _, count = os.environ.get(ENVIRONMENT, "").partition("/")
    if not (index.isdigit() and count.isdigit()):
        return None
    return Worker(int(index), int(count))


def supervise(config) -> int:
    return Supervisor(config).run()


def _die_with_parent() -> None:
    """In the child before exec: a main process killed outright takes its workers with it."""
    ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class _Process:
    index: int
    popen: subprocess.Popen
    ready: bool = False
    partial: dict = field(default_factory=dict)  # file descriptor -> bytes after the last newline


class Supervisor:
    def __init__(self, config):
        self.config = config
        self.count = config.server.workers
        self.processes: dict[int, _Process] = {}
        self.selector = selectors.DefaultSelector()
        self.signals: list[int] = []
        self.starting = True  # until every worker has said it is ready
        self.stopping = False
        self.reload_results: dict[int, str | None] | None = None  # worker -> its line, while reloading
        self.restarts: dict[int, float] = {}  # worker -> when to start it again

    # -- the loop ----------------------------------------------------------------------------------
    def run(self) -> int:
        wakeup_read, wakeup_write = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        signal.set_wakeup_fd(wakeup_write, warn_on_full_buffer=False)
        for number in (signal.SIGHUP, signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
            signal.signal(number, lambda number, _frame: self.signals.append(number))
        self.selector.register(wakeup_read, selectors.EVENT_READ, None)
        for index in range(1, self.count + 1):  # one after the other: worker i is index i-1 of each port
            self._spawn(index)
            while not self.processes[index].ready:
                if self._turn() is not None:
                    return self._stop(1)
                if self.stopping:
                    return self._stop(0)
        self.starting = False
        say(f"workers: {self.count} ({', '.join(str(p.popen.pid) for p in self.processes.values())})")
        say("ready")
        notify_systemd("READY=1", f"STATUS=serving {self.config.server.root} with {self.count} workers",
                       f"MAINPID={os.getpid()}")
        while not self.stopping:
            self._turn()
        return self._stop(0)

    def _turn(self) -> int | None:
        """Wait for something and handle it; while starting, the exit status of a worker that died."""
        timeout = None
        if self.restarts:
            timeout = max(0.0, min(self.restarts.values()) - time.monotonic())
        for key, _ in self.selector.select(timeout):
            if key.data is None:
                _drain(key.fd)
            else:
                self._read(*key.data)
        for number in self._take_signals():
            if number in (signal.SIGTERM, signal.SIGINT):
                self.stopping = True
            elif number == signal.SIGHUP:
                self._reload()
        failed = self._reap()
        now = time.monotonic()
        for index, when in list(self.restarts.items()):
            if when <= now and not self.stopping:
                del self.restarts[index]
                self._spawn(index)
        return failed

    def _take_signals(self) -> list[int]:
        taken, self.signals[:] = list(self.signals), []
        return taken

    # -- workers ---------------------------------------------------------------------------------
    def _spawn(self, index: int) -> None:
        environment = dict(os.environ, **{ENVIRONMENT: f"{index}/{self.count}"})
        environment.pop("NOTIFY_SOCKET", None)  # systemd hears from the main process only
        popen = subprocess.Popen(
            [sys.executable, "-m", "htekd", "serve", "-c", str(self.config.source)],
            stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=environment,
            preexec_fn=_die_with_parent,
        )
        process = _Process(index, popen)
        self.processes[index] = process
        for stream, output in ((popen.stdout, sys.stdout.buffer), (popen.stderr, None)):
            os.set_blocking(stream.fileno(), False)
            self.selector.register(stream.fileno(), selectors.EVENT_READ, (process, stream, output))

    def _read(self, process: _Process, stream, output) -> None:
        descriptor = stream.fileno()
        try:
            data = os.read(descriptor, 65536)
        except BlockingIOError:
            return
        if not data:  # the worker closed it: it is ending
            self.selector.unregister(descriptor)
            rest = process.partial.pop(descriptor, b"")
            if rest:
                self._lines(process, output, rest + b"\n")
            return
        data = process.partial.pop(descriptor, b"") + data
        whole, newline, rest = data.rpartition(b"\n")
        if rest:
            process.partial[descriptor] = rest
        if newline:
            self._lines(process, output, whole + b"\n")

    def _lines(self, process: _Process, output, data: bytes) -> None:
        if output is not None:  # the request log on standard output: whole lines, one write
            _write_all(output, data)
            return
        for line in data.decode("utf-8", "replace").splitlines():
            self._event(process, line)

    def _event(self, process: _Process, line: str) -> None:
        """One line a worker said on standard error."""
        if line == "htekd: ready":
            process.ready = True
            if not self.starting:
                say(f"worker {process.index} ready (pid {process.popen.pid})")
            return
        if line.startswith(RELOAD_RESULTS) and self.reload_results is not None:
            if process.index in self.reload_results:
                self.reload_results[process.index] = line
                self._reload_finished()
            return
        if line.startswith(OWN_LINES):
            if self.starting and process.index == 1 and line.startswith("htekd: listening "):
                print(line, file=sys.stderr, flush=True)
            return
        print(line, file=sys.stderr, flush=True)

    def _reap(self) -> int | None:
        """Workers that ended: started again after a moment (while starting: their status)."""
        for index, process in list(self.processes.items()):
            status = process.popen.poll()
            if status is None:
                continue
            self._close_streams(process)
            del self.processes[index]
            if self.reload_results is not None and index in self.reload_results:
                del self.reload_results[index]
                self._reload_finished()
            if self.starting:
                return status or 1
            if not self.stopping:
                how = f"signal {-status}" if status < 0 else f"status {status}"
                say(f"worker {index} (pid {process.popen.pid}) ended with {how}; starting it again")
                self.restarts[index] = time.monotonic() + RESTART_DELAY
        return None

    def _close_streams(self, process: _Process) -> None:
        for stream, output in ((process.popen.stdout, sys.stdout.buffer), (process.popen.stderr, None)):
            descriptor = stream.fileno()
            if descriptor in self.selector.get_map():
                while True:  # what it said last, before it ended
                    try:
                        data = os.read(descriptor, 65536)
                    except BlockingIOError:
                        break
                    if not data:
                        break
                    process.partial[descriptor] = process.partial.get(descriptor, b"") + data
                self.selector.unregister(descriptor)
            rest = process.partial.pop(descriptor, b"")
            if rest:
                self._lines(process, output, rest if rest.endswith(b"\n") else rest + b"\n")
            stream.close()

    # -- SIGHUP ----------------------------------------------------------------------------------
    def _reload(self) -> None:
        """Every ready worker reloads; one line says how it went (each reloads the same files, so a
        broken edit fails in all of them and each keeps its last good state)."""
        if self.starting:
            return  # the workers still starting read the files as they are now
        notify_systemd("RELOADING=1", f"MONOTONIC_USEC={time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000}")
        results = self.reload_results if self.reload_results is not None else {}
        for process in self.processes.values():
            if process.ready:
                results.setdefault(process.index, None)
                process.popen.send_signal(signal.SIGHUP)  # one arriving mid-reload queues one more there
        self.reload_results = results
        self._reload_finished()

    def _reload_finished(self) -> None:
        results = self.reload_results
        if results is None or any(line is None for line in results.values()):
            return
        self.reload_results = None
        lines = sorted(set(results.values()))
        if len(lines) == 1:
            print(lines[0], file=sys.stderr, flush=True)
        for line in lines if len(lines) > 1 else ():
            workers = ", ".join(str(index) for index, said in sorted(results.items()) if said == line)
            print(f"{line} (worker {workers})", file=sys.stderr, flush=True)
        notify_systemd("READY=1", f"STATUS={lines[0].removeprefix('htekd: ') if lines else 'reloaded'}")

    # -- SIGTERM ---------------------------------------------------------------------------------
    def _stop(self, status: int) -> int:
        if status == 0:
            notify_systemd("STOPPING=1")
            say("stopping")
        for process in self.processes.values():
            if process.popen.poll() is None:
                process.popen.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + STOP_TIMEOUT
        for process in list(self.processes.values()):
            try:
                process.popen.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                say(f"worker {process.index} (pid {process.popen.pid}) did not stop: killed")
                process.popen.kill()
                process.popen.wait()
            self._close_streams(process)
        self.processes.clear()
        if status == 0:
            say("stopped")
        return status


def _drain(descriptor: int) -> None:
    try:
        while os.read(descriptor, 512):
            pass
    except BlockingIOError:
        pass


def _write_all(output, data: bytes) -> None:
    try:
        output.write(data)
        output.flush()
    except (OSError, ValueError):  # a closed or full standard output must not stop the workers
        pass
