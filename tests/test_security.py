"""Keeping SIP passwords from strangers, as a stranger and as a phone see it over real sockets:
HTTP/HTTPS login (Basic and Digest, plain and hashed password), FTP login, hostile names over every
protocol, secrets kept out of every log, and the fail2ban filter against real log lines."""

from __future__ import annotations

import base64
import concurrent.futures
import configparser
import ftplib
import hashlib
import http.client
import re
import socket
import ssl
import struct
import subprocess
import threading
import urllib.parse

import pytest

from conftest import LOOPBACK, REPO
from test_hostile_names import NAMES, OUTSIDE_SECRET
from htekd.listeners.http import NO_CREDENTIALS, NONCE_LIFETIME, STALE_NONCE, WRONG_CREDENTIALS, Login

USER, PASSWORD = "provision", "Pr0v-s3cret!"
HA1 = hashlib.md5(f"{USER}:htekd:{PASSWORD}".encode()).hexdigest()
LOGIN = {"user": USER, "password": PASSWORD}
HASHED_LOGIN = {"user": USER, "password": f"md5-ha1:{HA1}"}


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", *args], capture_output=True, timeout=timeout)


def fetch(d, protocol: str, name: str, *args: str) -> tuple[int, bytes, str]:
    """(status, body, headers of the last response) of one curl request."""
    extra = ["--cacert", str(d.cacert)] if protocol == "https" else []
    result = curl(*extra, "-D", "-", "-o", "/dev/stderr", "-w", "\n%{http_code}", *args, d.url(protocol, name))
    head, _, status = result.stdout.decode("latin-1").rpartition("\n")
    return int(status or 0), result.stderr, head


# -- HTTP and HTTPS login ---------------------------------------------------------------------------

@pytest.fixture
def login_daemon(daemon):
    """HTTP with a plain password, HTTPS with the hashed form of the same one."""
    return daemon({"http": LOGIN, "https": HASHED_LOGIN})


@pytest.mark.parametrize("protocol", ["http", "https"])
def test_without_credentials_401_offers_digest_and_basic(login_daemon, protocol):
    status, body, head = fetch(login_daemon, protocol, "cfg0012.xml")
    assert status == 401 and b"authentication required" in body
    challenges = [line.split(":", 1)[1].strip() for line in head.splitlines() if line.lower().startswith("www-authenticate:")]
    assert len(challenges) == 2
    assert re.fullmatch(r'Digest realm="htekd", qop="auth", nonce="[0-9a-f]+\.[0-9a-f]{32}", algorithm=MD5', challenges[0])
    assert challenges[1] == 'Basic realm="htekd"'
    line = login_daemon.wait_log(lambda text: f" {protocol} " in text and "cfg0012.xml" in text)
    assert ' denied ' in line and 'reason="authentication required"' in line


@pytest.mark.parametrize("protocol", ["http", "https"])  # plain password on HTTP, hashed on HTTPS
@pytest.mark.parametrize("scheme", ["--digest", "--basic", "--anyauth"])
def test_the_right_login_gets_the_file(login_daemon, protocol, scheme):
    status, body, _ = fetch(login_daemon, protocol, "cfg0012.xml", scheme, "-u", f"{USER}:{PASSWORD}")
    assert status == 200 and body.startswith(b"<?xml")
    assert any(" model-config ok " in line and f" {protocol} " in line for line in login_daemon.log_lines())


@pytest.mark.parametrize("protocol", ["http", "https"])
@pytest.mark.parametrize("scheme", ["--digest", "--basic"])
@pytest.mark.parametrize("credentials", [f"{USER}:wrong", f"other:{PASSWORD}", f"{USER}:", f"{USER}:{HA1}"])
def test_a_wrong_login_is_401_and_logged_without_the_password(login_daemon, protocol, scheme, credentials):
    status, body, _ = fetch(login_daemon, protocol, "cfg0012.xml", scheme, "-u", credentials)
    assert status == 401 and not body.startswith(b"<?xml")
    line = login_daemon.wait_log(lambda text: 'reason="wrong credentials"' in text)
    assert " denied " in line
    log = "\n".join(login_daemon.log_lines()) + login_daemon.stderr_text()
    assert "wrong" not in log.replace('reason="wrong credentials"', "") and PASSWORD not in log and HA1 not in log


def raw_get(d, path: str, authorization: str) -> int:
    connection = http.client.HTTPConnection(LOOPBACK, d.ports["http"], timeout=10)
    try:
        connection.request("GET", path, headers={"Authorization": authorization})
        return connection.getresponse().status
    finally:
        connection.close()


def challenge_nonce(d) -> str:
    _, _, head = fetch(d, "http", "cfg0012.xml")
    return re.search(r'nonce="([^"]+)"', head)[1]


def digest(nonce: str, uri: str, method: str = "GET", qop: bool = True, ha1: str = HA1, user: str = USER) -> str:
    ha2 = hashlib.md5(f"{method}:{uri}".encode()).hexdigest()
    if not qop:
        response = hashlib.md5(f"{ha1}:{nonce}:{ha2}".encode()).hexdigest()
        return f'Digest username="{user}", realm="htekd", nonce="{nonce}", uri="{uri}", response="{response}"'
    response = hashlib.md5(f"{ha1}:{nonce}:00000001:abc:auth:{ha2}".encode()).hexdigest()
    return (f'Digest username="{user}", realm="htekd", nonce="{nonce}", uri="{uri}", qop=auth, nc=00000001, '
            f'cnonce="abc", response="{response}", algorithm=MD5')


def test_digest_without_qop_for_old_clients_and_the_uri_must_be_the_request(login_daemon):
    d = login_daemon
    nonce = challenge_nonce(d)
    assert raw_get(d, "/cfg0012.xml", digest(nonce, "/cfg0012.xml", qop=False)) == 200
    assert raw_get(d, "/cfg0012.xml", digest(nonce, "/cfg0012.xml")) == 200
    # An answer computed for one file does not open another.
    assert raw_get(d, "/cfg001fc1000001.xml", digest(nonce, "/cfg0012.xml")) == 401
    # A nonce this server did not make, an unknown user, another realm: refused.
    forged = f"{nonce.split('.')[0]}.{'0' * 32}"
    assert raw_get(d, "/cfg0012.xml", digest(forged, "/cfg0012.xml")) == 401
    assert raw_get(d, "/cfg0012.xml", digest(nonce, "/cfg0012.xml", user="other")) == 401
    assert raw_get(d, "/cfg0012.xml", digest(nonce, "/cfg0012.xml").replace('realm="htekd"', 'realm="x"')) == 401
    for junk in ("Digest", "Digest ,,,", 'Digest username="', "Basic !!!", "Basic " + base64.b64encode(b"nocolon").decode(),
                 "Bearer abc", "Digest " + "a=b, " * 2000, "\u00ff" * 50):
        assert raw_get(d, "/cfg0012.xml", junk) == 401
    assert raw_get(d, "/cfg0012.xml", "Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode()).decode()) == 200


def test_login_nonces_expire_and_are_reported_stale():
    now = [1_000_000.0]
    login = Login(USER, PASSWORD, clock=lambda: now[0])
    nonce = re.search(rb'nonce="([^"]+)"', login.challenges()[0])[1].decode()
    header = digest(nonce, "/cfg0012.xml").encode()
    assert login.check(b"GET", b"/cfg0012.xml", header) == ""
    assert login.check(b"HEAD", b"/cfg0012.xml", header) == WRONG_CREDENTIALS  # the method is in the hash
    now[0] += NONCE_LIFETIME + 1
    assert login.check(b"GET", b"/cfg0012.xml", header) == STALE_NONCE
    assert b"stale=true" in login.challenges(stale=True)[0]
    assert login.check(b"GET", b"/cfg0012.xml", None) == NO_CREDENTIALS
    # Another process (another secret) does not accept this one's nonces.
    assert Login(USER, PASSWORD, clock=lambda: now[0]).check(b"GET", b"/cfg0012.xml", header) == WRONG_CREDENTIALS


def test_hashed_password_works_for_both_schemes_in_process():
    login = Login(USER, f"md5-ha1:{HA1.upper()}")
    basic = b"Basic " + base64.b64encode(f"{USER}:{PASSWORD}".encode())
    assert login.check(b"GET", b"/x", basic) == ""
    assert login.check(b"GET", b"/x", b"Basic " + base64.b64encode(f"{USER}:{HA1}".encode())) == WRONG_CREDENTIALS
    nonce = re.search(rb'nonce="([^"]+)"', login.challenges()[0])[1].decode()
    assert login.check(b"GET", b"/x", digest(nonce, "/x").encode()) == ""


def test_non_ascii_user_and_password(daemon):
    d = daemon({"http": {"user": "zoë", "password": "pässwörd"}})
    for scheme in ("--digest", "--basic"):
        assert fetch(d, "http", "cfg0012.xml", scheme, "-u", "zoë:pässwörd")[0] == 200
        assert fetch(d, "http", "cfg0012.xml", scheme, "-u", "zoë:passwort")[0] == 401


# -- FTP login ------------------------------------------------------------------------------------

def test_ftp_login_replaces_anonymous(daemon):
    d = daemon({"ftp": LOGIN})
    url = d.url("ftp", "README.txt")
    assert curl("-u", f"{USER}:{PASSWORD}", url).returncode == 0
    assert curl("-u", f"{USER}:wrong", url).returncode == 67  # CURLE_LOGIN_DENIED
    assert curl(url).returncode == 67  # anonymous
    text = "\n".join(d.log_lines()) + d.stderr_text() + d.stdout_text()
    assert PASSWORD not in text and "wrong" not in text


# -- hostile names over every protocol ------------------------------------------------------------------

INVENTORY_LINE = b"mac,model,group,Account1_SipUserId"
SIP_PASSWORD = b"s3cret-1001"
MARKERS = (OUTSIDE_SECRET.strip(), INVENTORY_LINE, SIP_PASSWORD, b"root:x:0:0", b"[htekd]", b"pa,ss")
# Names an FTP command line cannot carry (the client's own line ends): those go over the other protocols.
LINE_ENDS = ("\r", "\n")
FTP_LINE_LIMIT = 2000  # longer command lines are refused whole by pyftpdlib


def wire(name: str) -> bytes:
    """The bytes a client puts on the wire for `name` (undecodable bytes as they came, lone surrogates as CESU-8)."""
    try:
        return name.encode("utf-8", "surrogateescape")
    except UnicodeEncodeError:
        return name.encode("utf-8", "surrogatepass")


@pytest.fixture
def planted(site, daemon):
    """The example site with secrets next to files/ and symlinks in files/ pointing at them; the daemon on it."""
    root = site / "root"
    (root / "outside").mkdir()
    (root / "outside" / "secret.txt").write_bytes(OUTSIDE_SECRET)
    (site / "secret.txt").write_bytes(OUTSIDE_SECRET)
    files = root / "files"
    (files / "sub").mkdir()
    (files / "sub" / "file.txt").write_bytes(b"inside\n")
    for name, target in {"passwd": "/etc/passwd", "secret": str(site / "secret.txt"), "inventory.csv": "../phones.csv",
                         "common.xml": "../settings/common.xml", "outdir": "../outside", "rootlink": "..",
                         "settingslink": "../settings", "sub/up": "../..", "loop": "loop", "brokenlink": "nothing",
                         "conf": "../../htekd.conf"}.items():
        (files / name).symlink_to(target)
    return daemon()


def check_bytes(protocol: str, name: str, data: bytes, problems: list) -> None:
    for marker in MARKERS:
        if marker in data:
            problems.append(f"{protocol} {name[:60]!r}: {marker!r} in the answer")


def tftp_rrq(port: int, name: str, problems: list) -> None:
    packet = b"\x00\x01" + wire(name) + b"\x00octet\x00"
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(packet, (LOOPBACK, port))
        received = b""
        while True:
            try:
                reply, peer = sock.recvfrom(70000)
            except socket.timeout:
                problems.append(f"tftp {name[:60]!r}: no answer")
                return
            opcode = struct.unpack("!H", reply[:2])[0]
            if opcode == 5:
                check_bytes("tftp", name, reply, problems)
                return
            if opcode != 3:
                problems.append(f"tftp {name[:60]!r}: opcode {opcode}")
                return
            received += reply[4:]
            sock.sendto(b"\x00\x04" + reply[2:4], peer)
            if len(reply) - 4 < 512:
                problems.append(f"tftp {name[:60]!r}: served {len(received)} bytes")
                check_bytes("tftp", name, received, problems)
                return


def tftp_names(d, problems: list) -> None:
    for name in NAMES:
        tftp_rrq(d.ports["tftp"], name, problems)


class _Ftp(ftplib.FTP):
    """ftplib sending each name's bytes as they are (latin-1 round-trips every byte)."""

    encoding = "latin-1"
    maxline = 1 << 20


def ftp_connect(d, user: str = "anonymous", password: str = "x") -> _Ftp:
    ftp = _Ftp()
    ftp.connect(LOOPBACK, d.ports["ftp"], timeout=10)
    ftp.login(user, password)
    return ftp


def ftp_names(d, problems: list) -> None:
    ftp = ftp_connect(d)
    for name in NAMES:
        if any(end in name for end in LINE_ENDS):
            continue
        sent = wire(name).decode("latin-1")
        if len(sent) > FTP_LINE_LIMIT:
            # pyftpdlib answers "500 Command too long" and reads on: a fresh session for each.
            for command in ("SIZE", "RETR", "LIST", "CWD"):
                try:
                    problems.append(f"ftp {command} {name[:60]!r}: {ftp.sendcmd(f'{command} {sent}')}")
                except ftplib.error_perm:
                    pass
                ftp.close()
                ftp = ftp_connect(d)
            continue
        for command in ("SIZE", "RETR", "LIST", "CWD"):
            chunks: list[bytes] = []
            try:
                if command == "SIZE":
                    problems.append(f"ftp SIZE {name[:60]!r}: {ftp.sendcmd(f'SIZE {sent}')}")
                elif command == "RETR":
                    ftp.retrbinary(f"RETR {sent}", chunks.append)
                    problems.append(f"ftp RETR {name[:60]!r}: served")
                elif command == "LIST":
                    ftp.retrbinary(f"LIST {sent}", chunks.append)
                else:
                    ftp.cwd(sent)
                    where = ftp.pwd()
                    listing: list[bytes] = []
                    ftp.retrbinary("LIST", listing.append)
                    chunks += listing
                    ftp.cwd("/")
                    if b"secret.txt" in b"".join(listing) or b"phones.csv" in b"".join(listing):
                        problems.append(f"ftp CWD {name[:60]!r} -> {where}: lists outside files/")
            except ftplib.error_perm:
                pass
            except (EOFError, OSError, ftplib.error_temp, ftplib.error_proto, ftplib.error_reply):  # a line too long may end the session
                ftp.close()
                ftp = ftp_connect(d)
            check_bytes("ftp", name, b"".join(chunks), problems)
    ftp.quit()


def http_request(d, protocol: str, target: bytes) -> bytes:
    sock = socket.create_connection((LOOPBACK, d.ports[protocol]), timeout=10)
    if protocol == "https":
        context = ssl.create_default_context(cafile=str(d.cacert))
        sock = context.wrap_socket(sock, server_hostname="localhost")
    with sock:
        sock.sendall(b"GET " + target + b" HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    return answer


def http_names(d, protocol: str, problems: list) -> None:
    for name in NAMES:
        raw = wire(name)
        path = raw if raw.startswith(b"/") else b"/" + raw
        for target in (path, urllib.parse.quote_from_bytes(path, safe="/").encode("ascii")):
            try:
                answer = http_request(d, protocol, target)
            except (ssl.SSLError, OSError) as exc:
                problems.append(f"{protocol} {name[:60]!r}: {exc!r}")
                continue
            status = answer.split(b"\r\n", 1)[0]
            if b" 200 " in status or b" 206 " in status:
                problems.append(f"{protocol} {name[:60]!r}: {status!r}")
            check_bytes(protocol, name, answer, problems)


def test_hostile_names_over_every_protocol(planted):
    d = planted
    assert len(NAMES) >= 300
    problems: dict[str, list] = {protocol: [] for protocol in ("tftp", "ftp", "http", "https")}
    runs = [threading.Thread(target=tftp_names, args=(d, problems["tftp"])),
            threading.Thread(target=ftp_names, args=(d, problems["ftp"])),
            threading.Thread(target=http_names, args=(d, "http", problems["http"])),
            threading.Thread(target=http_names, args=(d, "https", problems["https"]))]
    failures: list = []
    for run in runs:
        run.run = _catching(run.run, failures)
        run.start()
    for run in runs:
        run.join(120)
    assert not [run for run in runs if run.is_alive()], "a protocol's hostile names did not finish"
    assert not failures, failures
    assert not any(problems.values()), problems
    assert d.proc.poll() is None
    assert "Traceback" not in d.stderr_text() and "internal error" not in d.stderr_text()
    # Still serving, on every protocol.
    assert curl(d.url("tftp", "README.txt")).stdout == (d.root / "files" / "README.txt").read_bytes()
    assert curl(d.url("ftp", "sub/file.txt")).stdout == b"inside\n"
    assert curl(d.url("http", "cfg0012.xml")).stdout.startswith(b"<?xml")
    assert curl("--cacert", str(d.cacert), d.url("https", "cfg001fc1000001.xml")).stdout.startswith(b"<?xml")
    log = "\n".join(d.log_lines())
    assert " tftp " in log and " ftp " in log and " https " in log and "throttled" not in log


def _catching(function, failures: list):
    def run():
        try:
            function()
        except BaseException as exc:  # reported by the test, not lost in a thread
            failures.append(repr(exc))
    return run


# -- secrets never logged ---------------------------------------------------------------------------

AES_KEY = "5ec2e7a9c0ffee11"
FTP_PASSWORD, HTTP_PASSWORD = "ftp-Secr3t-pw", "http-Secr3t-pw"
SIP_PASSWORDS = ("s3cret-1001", "s3cret-1003", 'pa,ss"1002')


def drive_with_secret(d, secret: str) -> None:
    """Requests carrying `secret` in names, User-Agents, Authorization headers and FTP USER/PASS."""
    quoted = urllib.parse.quote(secret, safe="")
    for protocol in ("http", "https"):
        extra = ["--cacert", str(d.cacert)] if protocol == "https" else []
        for user_agent in (f"Htek {secret} {secret} 001fc1000001", secret, f"Htek UC924 2.0.4.2 {secret}"):
            for credentials in (["--basic", "-u", f"phone:{secret}"], ["--digest", "-u", f"{secret}:{secret}"],
                                ["-H", f"Authorization: Basic {secret}"], ["-H", f'Authorization: Digest username="{secret}"']):
                curl(*extra, "-A", user_agent, *credentials, "-o", "/dev/null", d.url(protocol, quoted))
        curl(*extra, "-u", f"phone:{HTTP_PASSWORD}", "-A", f"Htek UC924 {secret}", "-o", "/dev/null",
             d.url(protocol, f"{quoted}/cfg{quoted}.xml"))
    curl("-u", f"phone:{secret}", "-o", "/dev/null", d.url("ftp", quoted))
    curl("-u", f"{secret}:{FTP_PASSWORD}", "-o", "/dev/null", d.url("ftp", quoted))
    curl("-u", f"phone:{FTP_PASSWORD}", "-o", "/dev/null", d.url("ftp", quoted))
    curl("-o", "/dev/null", d.url("tftp", quoted))
    for name in (secret, f"cfg{secret}.xml", f"../{secret}"):
        tftp_rrq(d.ports["tftp"], name, [])


def test_no_secret_reaches_any_log_whatever_the_input(site, daemon):
    d = daemon({"htekd": {"aes_key": AES_KEY}, "ftp": {"user": "phone", "password": FTP_PASSWORD},
                "http": {"user": "phone", "password": HTTP_PASSWORD},
                "https": {"user": "phone", "password": f"md5-ha1:{hashlib.md5(f'phone:htekd:{HTTP_PASSWORD}'.encode()).hexdigest()}"}})
    secrets = (AES_KEY, FTP_PASSWORD, HTTP_PASSWORD, *SIP_PASSWORDS)
    with concurrent.futures.ThreadPoolExecutor(8) as pool:  # a refused FTP login takes pyftpdlib 3 s to answer
        for future in [pool.submit(drive_with_secret, d, secret) for secret in secrets]:
            future.result()
    # The secrets are in use: the phone's own file is encrypted with the key and holds its password.
    assert curl("-u", f"phone:{HTTP_PASSWORD}", "-o", "/dev/null", "-w", "%{http_code}",
                d.url("http", "cfg001fc1000001.xml")).stdout == b"200"
    lines = d.wait_log(len(secrets) * 20)
    d.stop()
    output = {"request log": "\n".join(lines), "stderr": d.stderr_text(), "stdout": d.stdout_text()}
    assert "***" in output["request log"]
    for where, text in output.items():
        for secret in secrets:
            for spelling in {secret, urllib.parse.quote(secret, safe=""), secret.replace('"', '\\"')}:
                assert spelling not in text, f"{spelling!r} in {where}"


# -- fail2ban ---------------------------------------------------------------------------------------

FAIL2BAN_FILTER = REPO / "etc" / "fail2ban" / "filter.d" / "htekd.conf"
# fail2ban's <HOST> for an address (IPv6 in brackets, as the request log writes it).
FAIL2BAN_HOST = r"\[?(?P<host>[0-9A-Fa-f:.]+?)\]?"


def fail2ban_pattern() -> re.Pattern:
    """The shipped filter's failregex as fail2ban applies it: to the line after the timestamp."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(FAIL2BAN_FILTER, encoding="utf-8")
    return re.compile(parser["Definition"]["failregex"].replace("<HOST>", FAIL2BAN_HOST))


def test_fail2ban_filter_matches_throttled_and_wrong_login_lines(daemon):
    d = daemon({"access": {"throttle": "3", "throttle_window": "60", "throttle_penalty": "60"}, "http": LOGIN})
    for number in range(6):
        curl("--digest", "-u", f"{USER}:{PASSWORD}", "-o", "/dev/null", d.url("http", f"cfg00000000000{number}.xml"))
    curl("--basic", "-u", f"{USER}:bad", "-o", "/dev/null", d.url("http", "cfg0012.xml"))
    curl("--digest", "-u", f"{USER}:{PASSWORD}", "-o", "/dev/null", d.url("http", "cfg0012.xml"))
    forged = '" none denied bytes=0 ms=0.1 reason="wrong credentials"'  # a name that tries to look like a failure
    curl("-o", "/dev/null", d.url("http", urllib.parse.quote(forged)))
    d.wait_log(lambda line: 'reason="wrong credentials"' in line)
    d.wait_log(lambda line: '\\"wrong credentials\\"' in line)  # logged escaped, not matched below
    pattern = fail2ban_pattern()
    lines = d.log_lines()
    matched = [line for line in lines if pattern.search(line)]
    assert matched and all(pattern.search(line)["host"] == "127.0.0.1" for line in matched)
    assert any("throttled" in line for line in matched) and any("wrong credentials" in line for line in matched)
    # What it must not ban: served files, a phone's ordinary miss, the login handshake's first 401.
    for line in lines:
        if not ("throttled" in line or "wrong credentials" in line):
            assert not pattern.search(line), line
    v6 = '2026-01-01T00:00:00.000Z http [::1]:4711 "/cfg001fc1000009.xml" phone-config denied bytes=0 ms=0.1 ' \
         'reason="throttled: too many unknown or denied phone files"'
    assert pattern.search(v6)["host"] == "::1"
