"""Attacks on the listeners from one host of the LAN, on loopback, each bounded in count and time:
one host holding every connection, descriptor exhaustion, pipelined requests never read, idle TLS
handshakes, weak TLS suites. A phone at another address (127.0.0.2) is served during and after."""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import socket
import ssl
import subprocess
import time

import pytest

from conftest import LOOPBACK

PHONE = "127.0.0.2"  # the real phone, at another address than the attacker
ATTACKER = LOOPBACK
FIRMWARE = "fw920M.rom"
FIRMWARE_BYTES = os.urandom(300_000)
NO_PNP = {"pnp": {"enabled": "no"}}  # not under attack here: one port fewer to find free


def phone_fetch(d, protocol: str, name: str) -> bytes:
    """What the phone at PHONE receives over `protocol` (curl, bound to the phone's address)."""
    extra = ["--cacert", str(d.cacert)] if protocol == "https" else []
    result = subprocess.run(["curl", "-sS", "--max-time", "20", "--interface", PHONE, *extra, d.url(protocol, name)],
                            capture_output=True, timeout=30)
    assert result.returncode == 0, f"{protocol}: {result.stderr.decode(errors='replace')}"
    return result.stdout


def assert_phone_served(d) -> None:
    """The phone gets its model configuration and its firmware over every protocol."""
    for protocol in ("tftp", "ftp", "http", "https"):
        assert phone_fetch(d, protocol, "cfg0012.xml").startswith(b"<?xml"), protocol
        assert phone_fetch(d, protocol, FIRMWARE) == FIRMWARE_BYTES, protocol


def with_firmware(d):
    (d.root / "files" / FIRMWARE).write_bytes(FIRMWARE_BYTES)
    return d


def connect(port: int, timeout: float = 2.0) -> socket.socket | None:
    """A TCP connection from the attacker's address, or None if it cannot be made in time."""
    sock = socket.socket()
    sock.settimeout(timeout)
    try:
        sock.bind((ATTACKER, 0))
        sock.connect((LOOPBACK, port))
    except OSError:
        sock.close()
        return None
    return sock


def closed_by_server(sock: socket.socket, timeout: float = 3.0) -> bytes | None:
    """What the server sent before closing the connection, or None if it kept it open."""
    sock.settimeout(timeout)
    received = b""
    try:
        while chunk := sock.recv(4096):
            received += chunk
    except (socket.timeout, TimeoutError):
        return None
    except ConnectionResetError:
        pass
    return received


def rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        return int(re.search(r"VmRSS:\s+(\d+)", status.read()).group(1))


def event_lines(d, text: str) -> list[str]:
    return [line for line in d.stderr_lines() if text in line]


# -- one host takes every connection ---------------------------------------------------------------

def test_one_host_gets_a_limited_number_of_connections(daemon):
    d = with_firmware(daemon({**NO_PNP, **{section: {"connections_per_address": "4"} for section in ("ftp", "http", "https")}}))
    held = []
    try:
        for protocol in ("ftp", "http", "https"):
            mine = [connect(d.ports[protocol]) for _ in range(4)]
            assert all(mine), protocol
            held += mine
            over = [connect(d.ports[protocol]) for _ in range(20)]
            answers = [closed_by_server(sock) for sock in over if sock is not None]
            assert len(answers) == 20 and all(answer is not None for answer in answers), protocol
            if protocol == "ftp":
                assert all(answer.startswith(b"421 Too many connections from the same IP") for answer in answers)
            for sock in over:
                sock.close()
            refusing = f"{protocol}: {ATTACKER}/32 has 4 connections open"
            assert d.wait_stderr(lambda text: refusing in text, timeout=5), d.stderr_text()
            assert len(event_lines(d, refusing)) == 1, d.stderr_text()
        assert_phone_served(d)  # during
    finally:
        for sock in held:
            sock.close()
    time.sleep(0.5)
    mine = connect(d.ports["http"])  # the attacker's address is served again once its connections are closed
    mine.sendall(b"GET /cfg0012.xml HTTP/1.0\r\n\r\n")
    assert closed_by_server(mine, 10).startswith(b"HTTP/1.0 200")
    assert_phone_served(d)  # after
    assert "Traceback" not in d.stderr_text()


def test_slow_clients_are_cut_off_on_ftp(daemon):
    """An FTP client that sends half a command and waits is closed after [ftp] timeout."""
    d = daemon({**NO_PNP, "ftp": {"timeout": "2"}})
    sock = connect(d.ports["ftp"])
    sock.settimeout(5)
    assert sock.recv(100).startswith(b"220")
    started = time.monotonic()
    sock.sendall(b"US")
    answer = closed_by_server(sock, 10)
    assert answer is not None and b"421 Control connection timed out" in answer
    assert time.monotonic() - started < 6


# -- descriptor exhaustion -------------------------------------------------------------------------

def test_running_out_of_descriptors_stops_no_listener(daemon):
    """With the per-address limits off and 120 descriptors, a few hundred idle connections use
    them all up. Each listener says so once, keeps its port, and serves the phone once they close."""
    overrides = {**NO_PNP, **{section: {"connections_per_address": "0"} for section in ("ftp", "http", "https")}}
    d = with_firmware(daemon(overrides, nofile=120))
    early = connect(d.ports["http"])  # a connection made before the descriptors run out
    held = [early]
    try:
        for protocol in ("http", "ftp", "https", "http", "ftp"):  # each listener is refused at least once
            for _ in range(80):
                sock = connect(d.ports[protocol], timeout=0.5)
                if sock is None:
                    break
                held.append(sock)
        for protocol in ("http", "ftp", "https"):
            line = d.wait_stderr(lambda text: text.startswith(f"htekd: {protocol} ") and "cannot accept" in text,
                                 timeout=5)
            assert line is not None and "Too many open files (EMFILE)" in line, d.stderr_text()
        time.sleep(2)  # several retries later: still one line each
        for protocol in ("http", "ftp", "https"):
            assert len([line for line in event_lines(d, "cannot accept") if f"htekd: {protocol} " in line]) == 1
        # A file that cannot be opened for now is "try again" (503), not "not found".
        early.sendall(f"GET /{FIRMWARE} HTTP/1.1\r\nHost: htekd\r\nConnection: close\r\n\r\n".encode())
        answer = closed_by_server(early, 10)
        assert answer.startswith(b"HTTP/1.1 503 ") and b"\r\nRetry-After: 5\r\n" in answer, answer[:300]
        line = d.wait_log(lambda text: FIRMWARE in text and " http " in text)
        assert " failed " in line and "cannot open: Too many open files" in line
    finally:
        for sock in held:
            sock.close()
    for protocol in ("http", "ftp", "https"):
        assert d.wait_stderr(lambda text: text.startswith(f"htekd: {protocol} ") and "working again" in text,
                             timeout=10), d.stderr_text()
    assert_phone_served(d)
    assert d.proc.poll() is None and "Traceback" not in d.stderr_text()


# -- pipelined requests never read -----------------------------------------------------------------

def test_pipelined_requests_never_read_keep_memory_bounded(daemon):
    d = with_firmware(daemon(NO_PNP))
    assert_phone_served(d)  # before: what serving costs anyway is in the baseline
    before = rss_kib(d.proc.pid)
    request = b"GET /cfg0012.xml HTTP/1.1\r\nHost: htekd\r\n\r\n"
    sockets, peak = [], before
    sent = 0
    for _ in range(12):  # within the 16 connections one address may have
        sock = connect(d.ports["http"])
        sock.setblocking(False)
        sockets.append(sock)
    payload = request * (65536 // len(request))
    deadline = time.monotonic() + 6
    try:
        while time.monotonic() < deadline and sent < 30_000_000:
            for sock in sockets:
                with contextlib.suppress(BlockingIOError):
                    sent += sock.send(payload)
            peak = max(peak, rss_kib(d.proc.pid))
            time.sleep(0.005)
        assert phone_fetch(d, "http", "cfg0012.xml").startswith(b"<?xml")  # during
        time.sleep(1)
        peak = max(peak, rss_kib(d.proc.pid))
    finally:
        for sock in sockets:
            sock.close()
    growth_mib = (peak - before) / 1024
    print(f"pipelining: {sent} bytes sent, daemon grew {growth_mib:.1f} MiB")
    # Unbounded, the same requests grew it by about 100 MiB; bounded, what is left is allocator noise.
    assert growth_mib < 45, f"{sent} bytes of pipelined requests grew the daemon by {growth_mib:.0f} MiB"
    assert_phone_served(d)


# -- idle and broken TLS handshakes ----------------------------------------------------------------

def test_idle_and_broken_tls_handshakes_cost_no_log_line(daemon):
    d = daemon({**NO_PNP, "https": {"timeout": "1"}})
    start = len(d.stderr_lines())
    idle = [connect(d.ports["https"]) for _ in range(3)]
    broken = connect(d.ports["https"])
    broken.sendall(b"\x16\x03\x01\x00\x05hello")  # a handshake record that is no ClientHello
    garbage = connect(d.ports["https"])
    garbage.sendall(b"GET / HTTP/1.1\r\n\r\n")
    for sock in (*idle, broken, garbage):
        assert closed_by_server(sock, 5) is not None
        sock.close()
    time.sleep(16.5)  # past Twisted's abort timeout (15 s), where a traceback used to come
    assert d.stderr_lines()[start:] == []
    assert phone_fetch(d, "https", "cfg0012.xml").startswith(b"<?xml")


# -- TLS cipher suites -----------------------------------------------------------------------------

@pytest.fixture
def rsa_files(tmp_path):
    """An RSA certificate and key (a static-RSA key exchange needs one), as cert.pem and key.pem."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    certificate = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(days=1))
                   .not_valid_after(now + datetime.timedelta(days=2)).sign(key, hashes.SHA256()))
    cert, private = tmp_path / "cert.pem", tmp_path / "key.pem"
    cert.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    private.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                          serialization.NoEncryption()))
    return cert, private


def negotiated(port: int, cipher: str) -> str | None:
    """The TLS 1.2 suite openssl s_client agrees on when it offers only `cipher`; None if refused."""
    result = subprocess.run(["openssl", "s_client", "-connect", f"{LOOPBACK}:{port}", "-tls1_2", "-cipher", cipher],
                            input=b"", capture_output=True, timeout=20)
    match = re.search(rb"Cipher is (\S+)", result.stdout)
    return match.group(1).decode() if match and match.group(1) != b"(NONE)" else None


def test_https_offers_only_forward_secret_suites_unless_widened(daemon, rsa_files):
    cert, key = rsa_files
    tls = {"certificate": str(cert), "private_key": str(key)}
    d = daemon({**NO_PNP, "https": tls})
    assert negotiated(d.ports["https"], "ECDHE-RSA-AES128-GCM-SHA256") == "ECDHE-RSA-AES128-GCM-SHA256"
    for weak in ("AES128-GCM-SHA256", "AES256-SHA256", "AES128-SHA"):  # RSA key exchange: no forward secrecy
        assert negotiated(d.ports["https"], weak) is None, weak
    d.stop()
    widened = daemon({**NO_PNP, "https": {**tls, "ciphers": "DEFAULT:!aNULL:!eNULL"}})
    assert negotiated(widened.ports["https"], "AES128-GCM-SHA256") == "AES128-GCM-SHA256"


def test_a_cipher_string_that_selects_nothing_is_one_line(daemon):
    d = daemon({**NO_PNP, "https": {"ciphers": "NO-SUCH-CIPHER"}}, wait=False)
    assert d.wait_exit() == 1
    [line] = d.stderr_lines()
    assert line.startswith(f"htekd: {d.config_path}:") and line.endswith(
        ": error: [https] ciphers: selects no cipher OpenSSL knows, got 'NO-SUCH-CIPHER'")
