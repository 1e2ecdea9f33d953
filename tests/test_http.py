"""HTTP and HTTPS as a phone (or curl) sees them: bytes, headers, status codes, TLS, timeouts, log lines."""

from __future__ import annotations

import datetime
import ipaddress
import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK, free_port

BIG_SIZE = 3 * 1024 * 1024 + 12345  # a few MB of static file, not a multiple of any chunk size
HUGE_SIZE = 32 * 1024 * 1024  # more than loopback socket buffers hold: a download cut off midway


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


class Response:
    """One curl transfer: status, headers (last response, lower-case names), body, curl's exit code."""

    def __init__(self, tmp: Path, url: str, *args: str, cacert: Path | None = None):
        head, body = tmp / "head.txt", tmp / "body.bin"
        for stale in (head, body):
            stale.unlink(missing_ok=True)
        extra = ["--cacert", str(cacert)] if cacert else []
        self.proc = curl(*extra, "-D", str(head), "-o", str(body), "-w", "%{http_code}", *args, url)
        self.status = int(self.proc.stdout or 0)
        self.headers: dict[str, str] = {}
        if head.exists():
            block = head.read_text("latin-1").replace("\r\n", "\n").strip().split("\n\n")[-1]
            for line in block.splitlines()[1:]:
                name, _, value = line.partition(":")
                self.headers[name.strip().lower()] = value.strip()
        self.body = body.read_bytes() if body.exists() else b""


def log_line(d, name: str, protocol: str = "http", outcome: str | None = None, timeout: float = 10) -> str:
    """The request-log line of `name` over `protocol` (and with `outcome`), waiting for it."""
    def wanted(line: str) -> bool:
        fields = line.split()
        return (len(fields) > 5 and fields[1] == protocol and fields[3] == f'"{name}"'
                and (outcome is None or fields[5] == outcome))
    return d.wait_log(wanted, timeout=timeout)


def lines_for(d, name: str) -> list[str]:
    return [line for line in d.log_lines() if f' "{name}" ' in line]


@pytest.fixture
def big(site) -> bytes:
    data = os.urandom(BIG_SIZE)
    (site / "root" / "files" / "big.bin").write_bytes(data)
    return data


# -- generated files -------------------------------------------------------------------------------

def render(d, target: str, protocol: str) -> bytes:
    """What `htekd render` says a phone gets over `protocol`."""
    result = subprocess.run([sys.executable, "-m", "htekd", "render", "-c", str(d.config_path), "--protocol", protocol, target],
                            capture_output=True, timeout=30, cwd=d.site)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_generated_config_over_http_and_https_is_what_render_prints(daemon, tmp_path):
    d = daemon()
    plain = Response(tmp_path, d.url("http", "cfg0012.xml"))
    secure = Response(tmp_path, d.url("https", "cfg0012.xml"), cacert=d.cacert)
    assert plain.status == secure.status == 200
    assert plain.headers["content-type"] == secure.headers["content-type"] == "application/xml"
    assert int(plain.headers["content-length"]) == len(plain.body)
    assert re.fullmatch(r'"[^"]+"', plain.headers["etag"])
    # Byte for byte what the resolver renders; the two differ only where the protocol in use is
    # written into the file (upgrade mode and server URLs).
    assert plain.body == render(d, "0012", "http")
    assert secure.body == render(d, "0012", "https")
    line = log_line(d, "/cfg0012.xml", "http", "ok")
    assert f"bytes={len(plain.body)}" in line and "model-config" in line
    assert f"bytes={len(secure.body)}" in log_line(d, "/cfg0012.xml", "https", "ok")


def test_generated_config_head_etag_and_not_modified(daemon, tmp_path):
    d = daemon()
    url = d.url("http", "cfg0012.xml")
    full = Response(tmp_path, url)
    head = Response(tmp_path, url, "-I")
    assert head.status == 200
    with socket.create_connection((LOOPBACK, d.ports["http"])) as raw:  # HEAD: headers, then nothing
        raw.sendall(b"HEAD /cfg0012.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        received = b"".join(iter(lambda: raw.recv(65536), b""))
    assert received.endswith(b"\r\n\r\n") and received.count(b"\r\n\r\n") == 1
    assert head.headers["content-length"] == str(len(full.body))
    assert head.headers["etag"] == full.headers["etag"]
    cached = Response(tmp_path, url, "-H", f"If-None-Match: {full.headers['etag']}")
    assert cached.status == 304 and cached.body == b""
    assert cached.headers["etag"] == full.headers["etag"]
    changed = Response(tmp_path, url, "-H", 'If-None-Match: "something-else"')
    assert changed.status == 200 and changed.body == full.body
    d.wait_log(5)
    outcomes = [line.split()[5] for line in lines_for(d, "/cfg0012.xml")]
    assert outcomes == ["ok"] * 5
    assert sum(" bytes=0 " in line for line in lines_for(d, "/cfg0012.xml")) == 3  # HEAD twice and 304


def test_user_agent_reaches_the_resolver(daemon, tmp_path):
    d = daemon()
    answer = Response(tmp_path, d.url("http", "cfg001fc1000001.xml"), "-A", "Htek UC924 2.0.4.2 00:1f:c1:00:00:01")
    assert answer.status == 200
    line = log_line(d, "/cfg001fc1000001.xml")
    assert "phone-config" in line and "mac=001fc1000001" in line and "model=UC924" in line
    assert "firmware=2.0.4.2" in line


# -- static files ------------------------------------------------------------------------------------

def test_static_file_ranges_and_resume(daemon, tmp_path, big):
    d = daemon()
    url = d.url("http", "big.bin")
    whole = Response(tmp_path, url)
    assert whole.status == 200 and whole.body == big
    assert whole.headers["accept-ranges"] == "bytes"
    assert whole.headers["content-length"] == str(BIG_SIZE)
    assert whole.headers["content-type"] == "application/octet-stream"
    assert f"bytes={BIG_SIZE}" in log_line(d, "/big.bin", outcome="ok")

    part = Response(tmp_path, url, "-r", "100-199")
    assert part.status == 206 and part.body == big[100:200]
    assert part.headers["content-range"] == f"bytes 100-199/{BIG_SIZE}"
    assert part.headers["content-length"] == "100"
    tail = Response(tmp_path, url, "-r", "-10")
    assert tail.status == 206 and tail.body == big[-10:]
    several = Response(tmp_path, url, "-r", "0-9,20-29")  # answered with the whole file
    assert several.status == 200 and several.body == big
    beyond = Response(tmp_path, url, "-r", f"{BIG_SIZE}-")
    assert beyond.status == 416 and beyond.headers["content-range"] == f"bytes */{BIG_SIZE}"

    partial = tmp_path / "resumed.bin"  # an interrupted download, resumed by curl
    partial.write_bytes(big[:1_000_000])
    resumed = curl("-C", "-", "-o", str(partial), url)
    assert resumed.returncode == 0, resumed.stderr
    assert partial.read_bytes() == big
    assert f"bytes={BIG_SIZE - 1_000_000}" in d.wait_log(lambda l: f"bytes={BIG_SIZE - 1_000_000}" in l)


def test_static_file_if_modified_since(daemon, tmp_path, big):
    d = daemon()
    url = d.url("http", "big.bin")
    first = Response(tmp_path, url)
    assert first.headers["last-modified"].endswith("GMT")
    copy = tmp_path / "copy.bin"
    copy.write_bytes(first.body)
    mtime = (d.root / "files" / "big.bin").stat().st_mtime
    os.utime(copy, (mtime + 60, mtime + 60))
    fresh = Response(tmp_path, url, "-z", str(copy))  # If-Modified-Since: the copy's time
    assert fresh.status == 304 and fresh.body == b""
    os.utime(copy, (mtime - 3600, mtime - 3600))
    stale = Response(tmp_path, url, "-z", str(copy))
    assert stale.status == 200 and stale.body == big
    d.wait_log(3)
    assert [" bytes=0 " in line for line in lines_for(d, "/big.bin")] == [False, True, False]


def test_keep_alive_reuses_the_connection(daemon, tmp_path, big):
    d = daemon()
    result = curl("-o", "/dev/null", "-o", "/dev/null", "-o", "/dev/null", "-w", "%{num_connects} ",
                  d.url("http", "cfg0012.xml"), d.url("http", "big.bin"), d.url("http", "cfg0012.xml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.decode().split() == ["1", "0", "0"]


# -- refusals ----------------------------------------------------------------------------------------

def test_not_found_and_denied_have_a_short_text_body(daemon, tmp_path):
    d = daemon()
    missing = Response(tmp_path, d.url("http", "no-such-file.bin"))
    assert missing.status == 404
    assert missing.headers["content-type"].startswith("text/plain")
    assert missing.body == b"no such file\n"
    factory = Response(tmp_path, d.url("http", "factory0001.bin"))
    assert factory.status == 403 and factory.body.startswith(b"factory files")
    assert "not-found" in log_line(d, "/no-such-file.bin")
    assert "denied" in log_line(d, "/factory0001.bin")


@pytest.mark.parametrize("raw_path", ["/../etc/passwd", "/%2e%2e/etc/passwd", "/files/%2E%2E%2F%2E%2E%2Fhtekd.conf",
                                      "/%2e%2e%5c..%5cphones.csv", "/cfg0012.xml%00.bin"])
def test_traversal_is_denied_in_any_spelling(daemon, tmp_path, raw_path):
    d = daemon()
    answer = Response(tmp_path, f"http://{LOOPBACK}:{d.ports['http']}{raw_path}", "--path-as-is")
    assert answer.status in (403, 404)
    assert b"root" not in answer.body and b"mac," not in answer.body
    line = d.wait_log(1)[-1]
    assert line.split()[5] in ("denied", "not-found")


def test_percent_encoded_names_are_decoded_once(daemon, tmp_path):
    d = daemon()
    encoded = Response(tmp_path, d.url("http", "cfg%30012.xml"))
    assert encoded.status == 200 and encoded.body.startswith(b"<?xml")
    assert "model-config" in log_line(d, "/cfg0012.xml")
    twice = Response(tmp_path, d.url("http", "cfg%2530012.xml"))  # "%30" after one decoding: no such file
    assert twice.status == 404
    assert "not-found" in log_line(d, "/cfg%30012.xml")


def test_absolute_form_request_target(daemon, tmp_path):
    d = daemon()  # curl talking to htekd as if to a proxy sends "GET http://provisioning.invalid/cfg0012.xml"
    answer = Response(tmp_path, "http://provisioning.invalid/cfg0012.xml", "-x", f"http://{LOOPBACK}:{d.ports['http']}")
    assert answer.status == 200 and answer.body.startswith(b"<?xml")
    assert "model-config" in log_line(d, "/cfg0012.xml")
    with socket.create_connection((LOOPBACK, d.ports["http"]), timeout=10) as raw:
        raw.sendall(b"GET http://[x/cfg0012.xml HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        reply = b"".join(iter(lambda: raw.recv(65536), b""))
    assert reply.startswith(b"HTTP/1.1 404 ")  # an unreadable authority: the name as sent, refused
    assert "Traceback" not in d.stderr_text()


def test_writes_are_refused(daemon, tmp_path):
    d = daemon()
    upload = tmp_path / "upload.xml"
    upload.write_bytes(b"<hl_provision/>")
    before = sorted(p.relative_to(d.root) for p in d.root.rglob("*"))
    for args, name in ((["-T", str(upload)], "put.xml"), (["-d", "x=1"], "post.xml"), (["-X", "DELETE"], "cfg0012.xml")):
        answer = Response(tmp_path, d.url("http", name), *args)
        assert answer.status == 405, args
        assert answer.headers["allow"] == "GET, HEAD"
        assert answer.body.startswith(b"method ") and b"not allowed" in answer.body
        assert "denied" in log_line(d, f"/{name}")
    assert sorted(p.relative_to(d.root) for p in d.root.rglob("*")) == before


# -- timeouts and broken transfers -------------------------------------------------------------------

def _closed_within(sock: socket.socket, seconds: float) -> float | None:
    """Seconds until the server closed `sock` (reading and dropping what it sends), None if it did not."""
    start = time.monotonic()
    sock.settimeout(0.2)
    while time.monotonic() - start < seconds:
        try:
            if not sock.recv(65536):
                return time.monotonic() - start
        except socket.timeout:
            continue
        except ConnectionResetError:
            return time.monotonic() - start
    return None


def test_idle_and_slow_clients_are_cut_off(daemon):
    d = daemon({"http": {"timeout": "2"}, "https": {"timeout": "2"}})
    with socket.create_connection((LOOPBACK, d.ports["http"])) as idle, \
            socket.create_connection((LOOPBACK, d.ports["https"])) as idle_tls, \
            socket.create_connection((LOOPBACK, d.ports["http"])) as trickle:
        trickle.sendall(b"GET /cfg0012.xml HTTP/1.1\r\nHost: x\r\n")
        start = time.monotonic()
        for _ in range(8):  # one header byte every 0.4 s: never idle, never done
            try:
                trickle.sendall(b"X")
            except OSError:
                break
            time.sleep(0.4)
        assert _closed_within(trickle, 2) is not None, "a client trickling headers was not cut off"
        assert time.monotonic() - start < 4.5
        assert _closed_within(idle, 5) is not None, "an idle connection was not closed"
        assert _closed_within(idle_tls, 5) is not None, "an idle TLS connection (no handshake) was not closed"


def test_stalled_download_is_cut_off_and_logged(daemon, tmp_path):
    d = daemon({"http": {"timeout": "2"}})
    with open(d.root / "files" / "huge.bin", "wb") as handle:
        handle.truncate(HUGE_SIZE)
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    sock.connect((LOOPBACK, d.ports["http"]))
    with sock:
        sock.sendall(b"GET /huge.bin HTTP/1.1\r\nHost: x\r\n\r\n")
        sock.recv(1000)  # then read nothing more
        line = log_line(d, "/huge.bin", outcome="failed", timeout=10)
    sent = int(re.search(r"bytes=(\d+)", line)[1])
    assert 0 < sent < HUGE_SIZE


def test_client_gone_midway_gives_one_failed_line(daemon, tmp_path):
    d = daemon()
    huge = d.root / "files" / "huge.bin"
    with open(huge, "wb") as handle:
        handle.truncate(HUGE_SIZE)
    result = curl("--limit-rate", "200k", "--max-time", "1", "-o", "/dev/null", d.url("http", "huge.bin"))
    assert result.returncode == 28  # curl gave up: operation timed out
    line = log_line(d, "/huge.bin", outcome="failed")
    assert 0 < int(re.search(r"bytes=(\d+)", line)[1]) < HUGE_SIZE
    time.sleep(0.3)
    assert len(lines_for(d, "/huge.bin")) == 1
    open_files = [os.readlink(fd) for fd in Path(f"/proc/{d.proc.pid}/fd").iterdir() if fd.is_symlink()]
    assert str(huge) not in open_files  # the file was closed


RAISING_RESOLVER = """
import sys
from twisted.internet import reactor
from htekd.config import Address, HttpConfig
from htekd.listeners import http
from htekd.requestlog import RequestLog
from htekd.resolution import Kind, Resolution, Status

class Resolver:
    def resolve(self, name, client):
        if name == "/boom.xml":
            raise RuntimeError("resolver bug")
        return Resolution(name, name.lstrip("/"), Kind.STATIC, Status.OK, content=b"fine\\n", size=5)

config = HttpConfig(True, (Address("127.0.0.1", int(sys.argv[1])),), 5.0)
http.listen(reactor, config, Resolver(), RequestLog(sys.stdout), tls=False)
reactor.callWhenRunning(print, "ready", file=sys.stderr, flush=True)
reactor.run()
"""


def test_a_resolver_exception_fails_one_request_only(tmp_path):
    script = tmp_path / "serve_raising.py"
    script.write_text(RAISING_RESOLVER)
    port = free_port()
    env = dict(os.environ, PYTHONPATH=str(Path(__file__).resolve().parent.parent))
    proc = subprocess.Popen([sys.executable, str(script), str(port)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    try:
        assert proc.stderr.readline() == b"ready\n"
        url = f"http://{LOOPBACK}:{port}/"
        broken = Response(tmp_path, url + "boom.xml")
        assert broken.status == 500 and broken.body == b"internal error\n"
        fine = Response(tmp_path, url + "fine.txt")
        assert fine.status == 200 and fine.body == b"fine\n"
    finally:
        proc.terminate()
        out, err = proc.communicate(timeout=10)
    lines = out.decode().splitlines()
    assert len(lines) == 2
    assert '"/boom.xml"' in lines[0] and " failed " in lines[0] and "RuntimeError: resolver bug" in lines[0]
    assert '"/fine.txt"' in lines[1] and " ok " in lines[1]
    assert 'htekd: http: "/boom.xml" failed: RuntimeError: resolver bug' in err.decode()


# -- listening ---------------------------------------------------------------------------------------

def test_ipv6_and_ipv4_on_the_same_port(daemon, tmp_path):
    try:
        port = free_port(host="::1", also=(LOOPBACK,))  # free on both: the daemon binds both
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    d = daemon({"http": {"listen": f"[::1]:{port} 127.0.0.1:{port}"}})
    six = Response(tmp_path, f"http://[::1]:{port}/cfg0012.xml", "-g")
    assert six.status == 200 and six.body.startswith(b"<?xml")
    assert "[::1]:" in log_line(d, "/cfg0012.xml").split()[2]
    four = Response(tmp_path, f"http://127.0.0.1:{port}/cfg0012.xml")
    assert four.body == six.body


# -- TLS ---------------------------------------------------------------------------------------------

def test_tls_versions(daemon, tmp_path):
    d = daemon()
    url = d.url("https", "cfg0012.xml")
    for version in ("1.2", "1.3"):
        answer = Response(tmp_path, url, f"--tlsv{version}", "--tls-max", version, cacert=d.cacert)
        assert answer.status == 200, answer.proc.stderr
    # This client could speak TLS 1.1 (security level 0); the server must refuse it.
    old = Response(tmp_path, url, "--tls-max", "1.1", "--ciphers", "DEFAULT@SECLEVEL=0", cacert=d.cacert)
    assert old.proc.returncode == 35 and old.status == 0


def _certificate(subject: str, key, issuer_name, issuer_key, ca: bool):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .issuer_name(issuer_name or x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)]))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        builder = builder.add_extension(
            x509.KeyUsage(digital_signature=True, content_commitment=False, key_encipherment=False,
                          data_encipherment=False, key_agreement=False, key_cert_sign=True, crl_sign=True,
                          encipher_only=False, decipher_only=False), critical=True)
    else:
        builder = builder.add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address(LOOPBACK))]), critical=False)
    return builder.sign(issuer_key, hashes.SHA256())


def test_certificate_chain_with_intermediate(daemon, tmp_path):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    pem = serialization.Encoding.PEM
    root_key, inter_key, leaf_key = (ec.generate_private_key(ec.SECP256R1()) for _ in range(3))
    root = _certificate("htekd test root", root_key, None, root_key, ca=True)
    inter = _certificate("htekd test intermediate", inter_key, root.subject, root_key, ca=True)
    leaf = _certificate(LOOPBACK, leaf_key, inter.subject, inter_key, ca=False)
    (tmp_path / "root.pem").write_bytes(root.public_bytes(pem))
    (tmp_path / "fullchain.pem").write_bytes(leaf.public_bytes(pem) + inter.public_bytes(pem))
    (tmp_path / "leaf.pem").write_bytes(leaf.public_bytes(pem))
    (tmp_path / "privkey.pem").write_bytes(leaf_key.private_bytes(
        pem, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))

    d = daemon({"https": {"certificate": str(tmp_path / "fullchain.pem"), "private_key": str(tmp_path / "privkey.pem")}})
    answer = Response(tmp_path, d.url("https", "cfg0012.xml"), cacert=tmp_path / "root.pem")
    assert answer.status == 200, answer.proc.stderr
    d.stop()
    # Without the intermediate the same client cannot verify the server: the chain is what made it work.
    d = daemon({"https": {"certificate": str(tmp_path / "leaf.pem"), "private_key": str(tmp_path / "privkey.pem")}})
    answer = Response(tmp_path, d.url("https", "cfg0012.xml"), cacert=tmp_path / "root.pem")
    assert answer.proc.returncode == 60


@pytest.mark.parametrize("problem", ["garbage certificate", "garbage key", "key of another certificate"])
def test_a_bad_certificate_or_key_is_one_clear_error(daemon, tmp_path, tls_files, problem):
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ec

    certificate, private_key = tls_files
    bad = tmp_path / "bad.pem"
    if problem == "key of another certificate":
        bad.write_bytes(ec.generate_private_key(ec.SECP256R1()).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()))
    else:
        bad.write_text("-----BEGIN NONSENSE-----\nnot base64\n-----END NONSENSE-----\n")
    files = {"certificate": str(bad), "private_key": str(private_key)} if problem == "garbage certificate" \
        else {"certificate": str(certificate), "private_key": str(bad)}
    d = daemon({"https": files}, wait=False)
    assert d.wait_exit() == 1
    errors = [line for line in d.stderr_lines() if "https" in line]
    assert len(errors) == 1, d.stderr_text()
    what = "certificate" if problem == "garbage certificate" else "private key"
    assert f"cannot load {what} {bad}" in errors[0]
