"""Shared fixtures: a copy of the example site, and real `htekd serve` processes on loopback."""

from __future__ import annotations

import configparser
import datetime
import ipaddress
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest

from bench import net
from bench.lines import LineReader

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "example"
LOOPBACK = "127.0.0.1"
READY_TIMEOUT = 15.0
PROTOCOLS = ("tftp", "ftp", "http", "https")


def free_port(kind: int = socket.SOCK_STREAM, host: str = LOOPBACK, also: tuple[str, ...] = ()) -> int:
    """A port free a moment ago on `host` and every address of `also` (TCP by default, UDP with SOCK_DGRAM),
    outside the range the kernel hands clients, so no connection takes it before the daemon binds it."""
    return net.free_port(host, kind, also)


def free_port_range(count: int = 20) -> tuple[int, int]:
    """A run of `count` TCP ports that were all free a moment ago (FTP passive ports)."""
    return net.free_port_range(LOOPBACK, count)


@pytest.fixture(scope="session")
def tls_files(tmp_path_factory) -> tuple[Path, Path]:
    """A self-signed certificate and key for 127.0.0.1, ::1 and localhost (certificate, key)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    folder = tmp_path_factory.mktemp("tls")
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
                    x509.IPAddress(ipaddress.ip_address("::1")),
                    x509.DNSName("localhost"),
                ]
            ),
            critical=False,
        )
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return cert_path, key_path


@pytest.fixture
def site(tmp_path) -> Path:
    """A private copy of example/ (htekd.conf and root/) in tmp_path/"site"."""
    target = tmp_path / "site"
    if EXAMPLE.is_dir():
        # Without the state a run of the example in place leaves there (phones seen).
        shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("state"))
    else:
        target.mkdir()
    return target


class Daemon:
    """One `htekd serve` process and what a test needs to talk to it."""

    def __init__(self, site: Path, config_path: Path, ports: dict[str, int], log_path: Path, cacert: Path, env,
                 nofile: int | None = None):
        self.site, self.config_path, self.ports, self.log_path, self.cacert = site, config_path, ports, log_path, cacert
        self.root = site / "root"
        self.state_dir = site / "state"

        def limit_descriptors():  # in the child, before exec: as LimitNOFILE= would
            resource.setrlimit(resource.RLIMIT_NOFILE, (nofile, nofile))

        self.proc = subprocess.Popen(
            [sys.executable, "-m", "htekd", "serve", "-c", str(config_path)],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=env,
            cwd=site,
            preexec_fn=limit_descriptors if nofile else None,
        )
        self._stderr = LineReader(self.proc.stderr)
        self._stdout = LineReader(self.proc.stdout)

    # -- addresses -------------------------------------------------------------------------------
    def url(self, protocol: str, name: str = "") -> str:
        """e.g. url("tftp", "cfg0012.xml") -> "tftp://127.0.0.1:PORT/cfg0012.xml"."""
        return f"{protocol}://{LOOPBACK}:{self.ports[protocol]}/{name.lstrip('/')}"

    # -- output ------------------------------------------------------------------------------------
    def stderr_text(self) -> str:
        return self._stderr.text()

    def stderr_lines(self) -> list[str]:
        with self._stderr.changed:
            return list(self._stderr.lines)

    def stdout_text(self) -> str:
        return self._stdout.text()

    def wait_stderr(self, predicate: Callable[[str], bool], timeout: float = 10.0, start: int = 0) -> str | None:
        return self._stderr.wait_for(predicate, start, timeout)

    def log_lines(self) -> list[str]:
        """The request log's non-empty lines so far."""
        try:
            text = self.log_path.read_text(encoding="utf-8")
        except FileNotFoundError:
            return []
        return [line for line in text.splitlines() if line.strip()]

    def log_records(self) -> list[dict]:
        """The request log parsed as JSON lines (for log_format = json)."""
        return [json.loads(line) for line in self.log_lines()]

    def wait_log(self, predicate_or_count: Callable[[str], bool] | int = 1, timeout: float = 10.0):
        """Wait for the request log: an int waits for at least that many lines and returns them all;
        a callable waits for a line it accepts and returns that line. Fails the test on timeout."""
        deadline = time.monotonic() + timeout
        while True:
            lines = self.log_lines()
            if isinstance(predicate_or_count, int):
                if len(lines) >= predicate_or_count:
                    return lines
            else:
                for line in lines:
                    if predicate_or_count(line):
                        return line
            if time.monotonic() > deadline:
                pytest.fail(f"request log: no match for {predicate_or_count!r} within {timeout}s; log:\n"
                            + "\n".join(lines) + "\nstderr:\n" + self.stderr_text())
            time.sleep(0.05)

    # -- lifecycle ---------------------------------------------------------------------------------
    def wait_ready(self, timeout: float = READY_TIMEOUT) -> None:
        line = self._stderr.wait_for(lambda text: text == "htekd: ready", timeout=timeout)
        if line is None:
            if self.proc.poll() is None:
                self.kill()
            self._stderr.wait_for(lambda text: False, timeout=2)  # let the reader catch the last lines
            pytest.fail(f"htekd did not become ready (exit {self.proc.poll()}); stderr:\n{self.stderr_text()}")

    def reload(self, timeout: float = 15.0) -> str:
        """SIGHUP; returns the next "htekd: reloaded ..." or "htekd: reload failed ..." line."""
        start = len(self.stderr_lines())
        self.proc.send_signal(signal.SIGHUP)
        line = self._stderr.wait_for(
            lambda text: text.startswith(("htekd: reloaded", "htekd: reload failed")), start, timeout
        )
        if line is None:
            pytest.fail(f"no reload result within {timeout}s; stderr:\n{self.stderr_text()}")
        return line

    def wait_exit(self, timeout: float = 10.0) -> int:
        """The exit status once the process ends by itself; fails the test after `timeout`."""
        try:
            code = self.proc.wait(timeout)
        except subprocess.TimeoutExpired:
            self.kill()
            pytest.fail(f"htekd still running after {timeout}s; stderr:\n{self.stderr_text()}")
        self._stderr.join(5)
        self._stdout.join(5)
        return code

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 10.0) -> int:
        """Send `sig` and return the exit status; fails the test if it does not end in `timeout`."""
        if self.proc.poll() is None:
            self.proc.send_signal(sig)
        return self.wait_exit(timeout)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def _test_env(extra: dict | None) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), str(REPO)]))
    env.pop("NOTIFY_SOCKET", None)  # a test opts in; pytest under systemd must not notify its unit
    for key, value in (extra or {}).items():
        if value is None:
            env.pop(key, None)
        else:
            env[key] = value
    return env


@pytest.fixture
def daemon(site, tls_files):
    """Factory: start(overrides=None, env=None, wait=True, nofile=None) -> Daemon.

    The config is the example's htekd.conf with free loopback ports (server_url = this HTTP
    listener), the request log in
    site/requests.log, state in site/state, HTTPS on with a self-signed certificate (Daemon.cacert),
    then `overrides` ({section: {key: value}}) on top. `env` adds variables (None removes one).
    `nofile` is the daemon's descriptor limit (RLIMIT_NOFILE), as LimitNOFILE= sets it.
    With wait=True the call returns once stderr says "htekd: ready". Every daemon is stopped at teardown.
    """
    certificate, private_key = tls_files
    example_conf = site / "htekd.conf"
    original = example_conf.read_text(encoding="utf-8") if example_conf.exists() else ""
    started: list[Daemon] = []

    def start(overrides: dict[str, dict[str, str]] | None = None, env: dict | None = None, wait: bool = True,
              nofile: int | None = None) -> Daemon:
        parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
        parser.read_string(original, source=str(example_conf))
        for section in ("htekd", *PROTOCOLS):
            if not parser.has_section(section):
                parser.add_section(section)
        ports = {
            "tftp": free_port(socket.SOCK_DGRAM),
            "ftp": free_port(),
            "http": free_port(),
            "https": free_port(),
        }
        log_path = site / "requests.log"
        parser["htekd"].setdefault("root", "root")
        parser["htekd"]["server_url"] = f"http://{LOOPBACK}:{ports['http']}"
        parser["htekd"]["log"] = str(log_path)
        parser["htekd"]["state_dir"] = str(site / "state")
        for protocol, port in ports.items():
            parser[protocol]["listen"] = f"{LOOPBACK}:{port}"
        low, high = free_port_range()
        parser["ftp"]["passive_ports"] = f"{low}-{high}"
        parser["https"]["enabled"] = "yes"
        parser["https"]["certificate"] = str(certificate)
        parser["https"]["private_key"] = str(private_key)
        if not parser.has_section("pnp"):
            parser.add_section("pnp")
        parser["pnp"]["interface"] = LOOPBACK
        parser["pnp"]["port"] = str(free_port(socket.SOCK_DGRAM))
        if parser.has_section("admin"):  # the example's console, on a port of its own
            ports["admin"] = free_port()
            parser["admin"]["listen"] = f"{LOOPBACK}:{ports['admin']}"
        for section, values in (overrides or {}).items():
            if not parser.has_section(section):
                parser.add_section(section)
            for key, value in values.items():
                parser[section][key] = value
        for protocol in [*PROTOCOLS, "admin"] if parser.has_section("admin") else PROTOCOLS:
            # an overridden listen address: its first port is the one to talk to
            first = parser[protocol]["listen"].split()[0] if parser[protocol].get("listen", "").strip() else ""
            if first.rpartition(":")[2].isdigit():
                ports[protocol] = int(first.rpartition(":")[2])
        with open(example_conf, "w", encoding="utf-8") as handle:
            parser.write(handle)
        running = Daemon(site, example_conf, ports, log_path, certificate, _test_env(env), nofile)
        started.append(running)
        if wait:
            running.wait_ready()
        return running

    yield start

    for running in started:
        if running.proc.poll() is None:
            running.proc.send_signal(signal.SIGTERM)
            try:
                running.proc.wait(10)
            except subprocess.TimeoutExpired:
                running.kill()
        for reader in (running._stderr, running._stdout):
            reader.join(5)
            reader.stream.close()
