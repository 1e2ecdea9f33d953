"""The servers under test, each a child process on loopback ports, and what /proc says of them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from bench.lines import LineReader
from bench.net import free_port, loopback
from bench.site import Site

READY_TIMEOUT = 60.0
TICKS = os.sysconf("SC_CLK_TCK")


class ServerError(RuntimeError):
    pass


def _stat_fields(pid: int) -> list[str] | None:
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2:].split()  # the fields after "(comm)", from field 3 (state) on


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants now alive."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            fields = _stat_fields(int(entry))
            if fields:
                children.setdefault(int(fields[1]), []).append(int(entry))
    tree, queue = [], [pid]
    while queue and len(tree) < 10000:
        current = queue.pop()
        tree.append(current)
        queue.extend(children.get(current, ()))
    return tree


def cpu_seconds(pid: int) -> float:
    """User + system CPU of the process tree: the live processes' own time and, through cutime and
    cstime, that of every child they have reaped (in.tftpd and vsftpd fork per transfer)."""
    total = 0
    for member in process_tree(pid):
        fields = _stat_fields(member)
        if fields:
            total += sum(int(value) for value in fields[11:15])  # utime stime cutime cstime
    return total / TICKS


class CpuMeter:
    """CPU of a process tree over a stretch of time, sampled every `interval` seconds in a thread:
    each process's own and reaped children's time, the last value seen kept for processes that
    ended meanwhile. in.tftpd ignores SIGCHLD, so its children's time never reaches its cutime;
    sampling catches all of it but the last interval of each child."""

    def __init__(self, pid: int, interval: float = 0.005):
        self.pid, self.interval = pid, interval
        self.seen: dict[int, int] = {}
        self.start_ticks = 0
        self.running = threading.Event()
        self.thread = None

    def _sample(self) -> None:
        for member in process_tree(self.pid):
            fields = _stat_fields(member)
            if fields:
                self.seen[member] = max(self.seen.get(member, 0), sum(int(value) for value in fields[11:15]))

    def _loop(self) -> None:
        while self.running.is_set():
            self._sample()
            time.sleep(self.interval)

    def __enter__(self) -> "CpuMeter":
        self._sample()
        self.start_ticks = sum(self.seen.values())
        self.running.set()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self.running.clear()
        self.thread.join(5)
        self._sample()

    @property
    def seconds(self) -> float:
        return (sum(self.seen.values()) - self.start_ticks) / TICKS


def memory_kib(pid: int, field: str) -> int:
    """VmRSS / VmHWM of one process in KiB (0 if it is gone)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def reset_peak(pid: int) -> bool:
    """Start VmHWM afresh from the current RSS (Linux: clear_refs 5); False where not permitted."""
    try:
        Path(f"/proc/{pid}/clear_refs").write_text("5")
        return True
    except OSError:
        return False


class Server:
    """A child process; stop() ends it (and its process group) and waits, within seconds."""

    name = "server"

    def __init__(self, argv: list[str], ready, cwd: Path | None = None, env=None):
        self.argv = argv
        self.proc = subprocess.Popen(argv, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        self.output = LineReader(self.proc.stdout)
        if not ready(self):
            self.stop()
            raise ServerError(f"{' '.join(argv)} did not start:\n" + "\n".join(self.output.lines[-20:]))

    @property
    def pid(self) -> int:
        return self.proc.pid

    def wait_line(self, predicate, start: int = 0, timeout: float = READY_TIMEOUT) -> str | None:
        return self.output.wait_for(predicate, start, timeout, gone=lambda: self.proc.poll() is not None)

    def cpu(self) -> float:
        return cpu_seconds(self.pid)

    def stop(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        self.output.join(5)


def _port_open(host: str, port: int, timeout: float = READY_TIMEOUT) -> bool:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), timeout=1):
                return True
        except OSError:
            time.sleep(0.05)
    return False


def _udp_bound(port: int, timeout: float = 10.0) -> bool:
    """A UDP socket on `port` appears in /proc/net/udp (in.tftpd prints nothing when ready)."""
    hexport = f":{port:04X} "
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for table in ("/proc/net/udp", "/proc/net/udp6"):
            try:
                if any(hexport in line.split(None, 3)[1] + " " for line in Path(table).read_text().splitlines()[1:]):
                    return True
            except OSError:
                pass
        time.sleep(0.05)
    return False


class Htekd(Server):
    name = "htekd"

    def __init__(self, site: Site, config: Path | None = None, ports: dict | None = None):
        """htekd on the site's htekd.conf and ports, or on another `config` (with its `ports`)."""
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(Path(__file__).resolve().parent.parent),
                                                          env.get("PYTHONPATH")]))
        env.pop("NOTIFY_SOCKET", None)
        self.site = site
        self.ports = ports or site.ports
        super().__init__([sys.executable, "-m", "htekd", "serve", "-c", str(config or site.config)],
                         lambda server: server.wait_line(lambda line: line == "htekd: ready") is not None,
                         cwd=site.folder, env=env)

    def reload(self, timeout: float = 60.0) -> tuple[float, str]:
        """SIGHUP; seconds until the "reloaded" (or "reload failed") line, and that line."""
        start = len(self.output.lines)
        began = time.monotonic()
        self.proc.send_signal(signal.SIGHUP)
        line = self.wait_line(lambda text: text.startswith(("htekd: reloaded", "htekd: reload failed")), start, timeout)
        if line is None:
            raise ServerError(f"htekd: no reload answer within {timeout:g} s")
        return time.monotonic() - began, line

    def stop(self) -> None:
        # SIGTERM to the process only: htekd stops its listeners itself.
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.output.join(5)


class InTftpd(Server):
    """tftpd-hpa in the foreground (-L), one forked child per transfer."""

    name = "in.tftpd"

    def __init__(self, folder: Path, host: str):
        self.host, self.port = loopback(host), free_port(host, __import__("socket").SOCK_DGRAM)
        address = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        binary = shutil.which("in.tftpd") or "/usr/sbin/in.tftpd"
        super().__init__([binary, "-L", "-a", address, "-s", str(folder)],
                         lambda server: _udp_bound(self.port))


class Nginx(Server):
    name = "nginx"

    def __init__(self, folder: Path, work: Path, host: str):
        self.host, self.port = loopback(host), free_port(host)
        work.mkdir(parents=True, exist_ok=True)
        listen = f"[{host}]:{self.port}" if ":" in host else f"{host}:{self.port}"
        (work / "nginx.conf").write_text(f"""worker_processes auto;
error_log {work}/error.log error;
pid {work}/nginx.pid;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    sendfile on;
    tcp_nopush on;
    keepalive_requests 1000000;
    keepalive_timeout 65;
    client_body_temp_path {work}/body;
    proxy_temp_path {work}/proxy;
    fastcgi_temp_path {work}/fastcgi;
    uwsgi_temp_path {work}/uwsgi;
    scgi_temp_path {work}/scgi;
    default_type application/octet-stream;
    server {{
        listen {listen};
        root {folder};
    }}
}}
""")
        binary = shutil.which("nginx") or "/usr/sbin/nginx"
        super().__init__([binary, "-p", str(work), "-c", str(work / "nginx.conf"), "-g", "daemon off;"],
                         lambda server: _port_open(host, self.port))


class Vsftpd(Server):
    name = "vsftpd"

    def __init__(self, folder: Path, work: Path, host: str, passive: tuple[int, int]):
        self.host, self.port = loopback(host), free_port(host)
        work.mkdir(parents=True, exist_ok=True)
        empty = work / "empty"
        empty.mkdir(exist_ok=True)
        ipv6 = ":" in host
        (work / "vsftpd.conf").write_text(f"""listen={'NO' if ipv6 else 'YES'}
listen_ipv6={'YES' if ipv6 else 'NO'}
listen_address{'6' if ipv6 else ''}={host}
listen_port={self.port}
background=NO
anonymous_enable=YES
no_anon_password=YES
anon_root={folder}
local_enable=NO
write_enable=NO
pasv_enable=YES
pasv_min_port={passive[0]}
pasv_max_port={passive[1]}
port_enable=YES
connect_from_port_20=NO
seccomp_sandbox=NO
secure_chroot_dir={empty}
xferlog_enable=NO
max_clients=0
max_per_ip=0
idle_session_timeout=60
data_connection_timeout=60
""")
        binary = shutil.which("vsftpd") or "/usr/sbin/vsftpd"
        super().__init__([binary, str(work / "vsftpd.conf")], lambda server: _port_open(host, self.port))
