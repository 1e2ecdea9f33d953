"""SIP: check-sync NOTIFY (`htekd notify`), the PnP responder, `htekd dhcp`.

sipp (Debian package sip-tester) plays the phone wherever a scenario can say it; plain UDP
sockets play it where sipp cannot (multicast from loopback, many source addresses, a phone
that ignores the first NOTIFY). Everything runs on 127.0.0.0/8.
"""

from __future__ import annotations

import configparser
import json
import re
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from conftest import LOOPBACK, REPO, free_port
from htekd import sip
from htekd.listeners.sip import PNP_GROUP

SIPP_DIR = Path(__file__).resolve().parent / "sipp"
URL = "http://127.0.0.1:8080/htek"
needs_sipp = pytest.mark.skipif(shutil.which("sipp") is None, reason="sipp (Debian sip-tester) is not installed")


def htekd(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    """`htekd ARGS` as a user runs it."""
    return subprocess.run([sys.executable, "-m", "htekd", *args], capture_output=True, text=True, timeout=timeout, cwd=REPO)


class Sipp:
    """One sipp process playing a scenario from tests/sipp; its messages land in a trace file."""

    def __init__(self, tmp_path: Path, scenario: str, *args: str, port: int | None = None, calls: int = 1):
        self.port = port or free_port(socket.SOCK_DGRAM)
        self.messages = tmp_path / f"{scenario}-{self.port}-messages.log"
        self.proc = subprocess.Popen(
            ["sipp", "-sf", str(SIPP_DIR / f"{scenario}.xml"), *args, "-i", LOOPBACK, "-p", str(self.port),
             "-m", str(calls), "-timeout", "20s", "-trace_msg", "-message_file", str(self.messages), "-nostdin"],
            cwd=tmp_path, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
        self._wait_bound()

    def _wait_bound(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            probe = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            try:
                probe.bind((LOOPBACK, self.port))
            except OSError:
                return  # sipp holds the port
            finally:
                probe.close()
            if self.proc.poll() is not None:
                pytest.fail(f"sipp exited early: {self.proc.stderr.read().decode()}")
            time.sleep(0.05)
        pytest.fail("sipp did not bind its port")

    def wait(self, timeout: float = 30) -> int:
        try:
            return self.proc.wait(timeout)
        finally:
            if self.proc.poll() is None:
                self.proc.kill()

    def received(self) -> list[str]:
        """Every SIP message sipp received, as text."""
        text = self.messages.read_text(errors="replace") if self.messages.exists() else ""
        chunks = re.split(r"^-{10,}.*$", text, flags=re.M)
        return [chunk.split("\n", 2)[2].strip() for chunk in chunks if "message received" in chunk]


# -- pure: parsing, building, Digest -------------------------------------------------------------

def test_a_check_sync_notify_is_a_well_formed_request():
    leg = sip.Leg("10.0.0.1", 5070)
    data = sip.check_sync_notify("10.0.0.21", 5060, leg, True, "abc@10.0.0.1", "tag1", 1, "z9hG4bKxyz")
    message = sip.parse(data)
    assert message.method == "NOTIFY" and message.uri == "sip:10.0.0.21:5060"
    assert sip.request_is_complete(message)
    assert sip.parse_via(message.header("via")).branch == "z9hG4bKxyz"
    assert sip.name_addr(message.header("from"))[1] == {"tag": "tag1"}
    assert message.header("event") == "check-sync;reboot=true"
    assert message.header("max-forwards") == "70" and message.header("content-length") == "0"
    assert data.endswith(b"\r\n\r\n") and message.body == b""


def test_parse_takes_compact_forms_folding_and_a_body():
    data = (b"SIP/2.0 200 OK\r\nv: SIP/2.0/UDP 10.0.0.1:5060;branch=z9hG4bK1\r\nf: <sip:a@b>;tag=1\r\n"
            b"t: <sip:c@d>\r\ni: x\r\nCSeq: 7\r\n  NOTIFY\r\nc: text/plain\r\nl: 5\r\n\r\nhello trailing")
    message = sip.parse(data)
    assert message.status == 200 and message.reason == "OK"
    assert message.cseq == (7, "NOTIFY") and message.header("content-type") == "text/plain"
    assert message.body == b"hello"


@pytest.mark.parametrize("data", [
    b"", b"\r\n\r\n", b"hello", b"NOTIFY sip:x SIP/3.0\r\n\r\n", b"SIP/2.0 999 No\r\n\r\n",
    b"NOTIFY sip:x SIP/2.0\r\nno colon here\r\n\r\n", b"NOTIFY sip:x SIP/2.0\r\n continued first\r\n\r\n",
    b"NOTIFY sip:x SIP/2.0\r\nContent-Length: 10\r\n\r\nshort", b"NOTIFY sip:x SIP/2.0\r\nContent-Length: -1\r\n\r\n",
    b"NOTIFY sip:x SIP/2.0\r\nVia: \xff\xfe\r\n\r\n", b"NOTIFY sip:x SIP/2.0\r\nX: a\x00b\r\n\r\n",
    b"NOTIFY sip:x SIP/2.0\r\n" + b"X: y\r\n" * 200 + b"\r\n", b"NOTIFY sip:x SIP/2.0\r\nX: " + b"y" * 20000 + b"\r\n\r\n",
    "NOTIFY sip:x SIP/2.0\r\nContent-Length: \u00b2\r\n\r\n".encode(),  # a digit to isdigit(), not to int()
])
def test_malformed_datagrams_parse_to_nothing(data):
    assert sip.parse(data) is None


def test_a_cseq_number_in_other_digits_is_no_cseq():
    assert sip.parse("NOTIFY sip:x SIP/2.0\r\nCSeq: \u00b2 NOTIFY\r\n\r\n".encode()).cseq is None


VALID_SUBSCRIBE = (
    "SUBSCRIBE sip:MAC%3a001fc1000009@224.0.1.75 SIP/2.0\r\n"
    "Via: SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bK77;rport\r\n"
    "From: <sip:MAC%3a001fc1000009@224.0.1.75>;tag=99\r\nTo: <sip:MAC%3a001fc1000009@224.0.1.75>\r\n"
    "Call-ID: c1@127.0.0.1\r\nCSeq: 1 SUBSCRIBE\r\nContact: <sip:127.0.0.1:5060>\r\n"
    'Event: ua-profile;profile-type="device";vendor="Htek";model="UC926";version="2.0.4.2"\r\n'
    "Content-Length: 0\r\n\r\n"
).encode()


@settings(max_examples=400, deadline=None)
@given(st.binary(max_size=2000))
def test_parsing_arbitrary_bytes_never_raises(data):
    message = sip.parse(data)
    if message is not None and message.is_request:
        sip.pnp_phone(message)
        sip.request_is_complete(message)


@settings(max_examples=400, deadline=None)
@given(st.integers(0, len(VALID_SUBSCRIBE) - 1), st.binary(min_size=1, max_size=8), st.integers(0, 8))
def test_parsing_a_mangled_subscribe_never_raises(position, insert, cut):
    data = VALID_SUBSCRIBE[:position] + insert + VALID_SUBSCRIBE[position + cut:]
    message = sip.parse(data)
    if message is not None and message.is_request:
        phone = sip.pnp_phone(message)
        if phone is not None:
            sip.ua_profile_notify(message, sip.Leg("127.0.0.1", 5060), "t", "z9hG4bKx", URL)
            sip.build_response(message, 200, "t")


def test_pnp_phone_reads_mac_vendor_model_version():
    phone = sip.pnp_phone(sip.parse(VALID_SUBSCRIBE))
    assert (phone.mac, phone.vendor, phone.model, phone.version) == ("001fc1000009", "Htek", "UC926", "2.0.4.2")
    presence = VALID_SUBSCRIBE.replace(b"Event: ua-profile", b"Event: presence")
    assert sip.pnp_phone(sip.parse(presence)) is None


def test_digest_matches_the_rfc_2617_example():
    challenge = ('Digest realm="testrealm@host.com", qop="auth,auth-int", '
                 'nonce="dcd98b7102dd2f0e8b11d0f600bfb0c093", opaque="5ccc069c403ebaf9f0171e9517f40e41"')
    value = sip.digest_authorization(challenge, "GET", "/dir/index.html", "Mufasa", "Circle Of Life", "0a4f113b")
    assert 'response="6629fae49393a05397450978507c4ef1"' in value
    assert "qop=auth" in value and "nc=00000001" in value and 'opaque="5ccc069c403ebaf9f0171e9517f40e41"' in value


@pytest.mark.parametrize("challenge, error", [
    ('Basic realm="x"', "unsupported authentication scheme"),
    ('Digest realm="x", nonce="y", algorithm=SHA-256', "unsupported digest algorithm"),
    ('Digest realm="x", nonce="y", qop="auth-int"', "unsupported qop"),
    ('Digest realm="x"', "without realm or nonce"),
])
def test_digest_refuses_what_it_cannot_answer(challenge, error):
    with pytest.raises(sip.DigestError, match=error):
        sip.digest_authorization(challenge, "NOTIFY", "sip:x", "u", "p")


# -- htekd notify against sipp -------------------------------------------------------------------

@needs_sipp
@pytest.mark.parametrize("reboot", [False, True])
def test_notify_check_sync_answered_200(tmp_path, reboot):
    phone = Sipp(tmp_path, "check-sync-200")
    result = htekd("notify", f"127.0.0.1:{phone.port}", *(["--reboot"] if reboot else []))
    assert phone.wait() == 0, phone.received()
    assert result.returncode == 0, result.stderr
    assert result.stdout == f"127.0.0.1:{phone.port} - - 200 OK\n"
    assert "1 phones: 1 ok, 0 failed" in result.stderr
    [notify] = phone.received()
    assert notify.startswith(f"NOTIFY sip:127.0.0.1:{phone.port} SIP/2.0")
    assert ("Event: check-sync;reboot=true" if reboot else "Event: check-sync\n") in notify + "\n"


@needs_sipp
@pytest.mark.parametrize("credentials, expected, status", [
    (["--user", "htekd", "--password", "s3cret"], "200 OK (after Digest authentication)", 0),
    (["--user", "htekd", "--password", "wrong"], "403 Forbidden (after Digest authentication)", 1),
    (["--user", "htekd", "--password", "s3cret", "--realm", "htek"], "200 OK (after Digest authentication)", 0),
    ([], "401 Unauthorized (no credentials: --user/--password or [sip] user/password)", 1),
    (["--user", "htekd", "--password", "s3cret", "--realm", "office"],
     "401 Unauthorized (challenge for realm 'htek', not the configured 'office': credentials not sent)", 1),
])
def test_notify_answers_a_digest_challenge_once(tmp_path, credentials, expected, status):
    phone = Sipp(tmp_path, "check-sync-401")
    result = htekd("notify", f"127.0.0.1:{phone.port}", *credentials)
    assert result.stdout == f"127.0.0.1:{phone.port} - - {expected}\n"
    assert result.returncode == status
    if "after Digest" in expected:
        assert phone.wait() == 0
        first, second = phone.received()
        assert "Authorization" not in first and "CSeq: 1 NOTIFY" in first
        assert 'Authorization: Digest username="htekd", realm="htek"' in second and "CSeq: 2 NOTIFY" in second
    else:
        phone.proc.kill()


@needs_sipp
def test_notify_reports_a_phone_that_never_answers(tmp_path):
    phone = Sipp(tmp_path, "check-sync-silent")
    started = time.monotonic()
    result = htekd("notify", f"127.0.0.1:{phone.port}", "--timeout", "2")
    assert time.monotonic() - started < 15
    assert result.returncode == 1
    assert result.stdout == f"127.0.0.1:{phone.port} - - timeout: no answer in 2s (3 sends)\n"
    phone.wait()
    sent = phone.received()
    assert len(sent) == 3  # at 0, T1 and 3*T1: retransmissions of one transaction
    assert len({re.search(r"branch=(\S+?);", message)[1] for message in sent}) == 1


def _site_config(site: Path, **htekd_keys: str) -> Path:
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    path = site / "htekd.conf"
    parser.read(path)
    for key, value in htekd_keys.items():
        parser["htekd"][key] = value
    with open(path, "w") as handle:
        parser.write(handle)
    return path


def _seen(state_dir: Path, mac: str, address: str, model: str) -> None:
    from htekd.requestlog import RequestRecord
    from htekd.resolution import Client
    from htekd.state import PhoneStore

    store = PhoneStore(state_dir)
    store.observe(RequestRecord(time.time(), "http", address, 40000, f"cfg{mac}.xml", "phone-config", "ok", 10, 0.01,
                                mac=mac, model=model), Client("http", address))
    store.close()


@needs_sipp
def test_notify_by_mac_and_group_uses_phones_seen_and_logs_each_notify(tmp_path, site):
    log = tmp_path / "requests.log"
    config = _site_config(site, state_dir=str(site / "state"), log=str(log))
    _seen(site / "state", "001fc1000001", "127.0.0.1", "UC924")  # 001fc1000002 (group sales too) never fetched
    phone = Sipp(tmp_path, "check-sync-200")
    result = htekd("notify", "-c", str(config), "--group", "sales", "--port", str(phone.port))
    assert phone.wait() == 0
    assert sorted(result.stdout.splitlines()) == [
        "- 001fc1000002 UC926 not seen: no address known",
        f"127.0.0.1:{phone.port} 001fc1000001 UC924 200 OK",
    ]
    assert result.returncode == 1
    assert "2 phones: 1 ok, 1 failed" in result.stderr
    [line] = log.read_text().splitlines()
    assert re.search(rf' sip 127\.0\.0\.1:{phone.port} "check-sync" check-sync ok mac=001fc1000001 model=UC924 .*'
                     r'reason="200 OK"', line), line

    again = Sipp(tmp_path, "check-sync-200")
    by_mac = htekd("notify", "-c", str(config), "00:1F:C1:00:00:01", "--port", str(again.port), "--reboot")
    assert again.wait() == 0
    assert by_mac.returncode == 0 and by_mac.stdout == f"127.0.0.1:{again.port} 001fc1000001 UC924 200 OK\n"


class UdpPhone(threading.Thread):
    """A phone on its own loopback address answering every NOTIFY 200 after `delay`; notes arrival times."""

    def __init__(self, host: str, port: int, delay: float = 0.0):
        super().__init__(daemon=True)
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.sock.settimeout(0.2)
        self.delay, self.arrivals, self.running = delay, [], True
        self.start()

    def run(self) -> None:
        while self.running:
            try:
                data, source = self.sock.recvfrom(65535)
            except socket.timeout:
                continue
            request = sip.parse(data)
            self.arrivals.append(time.monotonic())
            time.sleep(self.delay)
            self.sock.sendto(sip.build_response(request, 200, "p"), source)

    def stop(self) -> None:
        self.running = False
        self.join(2)
        self.sock.close()


@pytest.mark.parametrize("options, spacing", [(["--rate", "10"], 0.09), (["--parallel", "1", "--rate", "1000"], 0.19)])
def test_notify_paces_many_phones(options, spacing):
    port = free_port(socket.SOCK_DGRAM)
    phones = [UdpPhone(f"127.0.0.{20 + index}", port, delay=0.2 if "--parallel" in options else 0.0) for index in range(5)]
    try:
        result = htekd("notify", *[f"127.0.0.{20 + index}:{port}" for index in range(5)], *options)
    finally:
        for phone in phones:
            phone.stop()
    assert result.returncode == 0, result.stdout + result.stderr
    assert len(result.stdout.splitlines()) == 5 and "5 phones: 5 ok, 0 failed" in result.stderr
    arrivals = sorted(moment for phone in phones for moment in phone.arrivals)
    assert len(arrivals) == 5
    assert min(later - earlier for earlier, later in zip(arrivals, arrivals[1:])) >= spacing


@pytest.mark.parametrize("args, message", [
    ([], "no target: give a MAC or an address, or --group, --model, --all"),
    (["not-a-phone"], "'not-a-phone' is neither a MAC nor an IP address[:port]"),
    (["127.0.0.1:99999"], "'127.0.0.1:99999' is neither a MAC nor an IP address[:port]"),
    (["127.0.0.1", "--user", "u"], "--user and --password go together"),
])
def test_notify_bad_input_is_one_line(args, message):
    result = htekd("notify", *args)
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"htekd notify: {message}\n"


def test_notify_by_mac_needs_the_configuration(tmp_path):
    result = htekd("notify", "-c", str(tmp_path / "missing.conf"), "001fc1000001")
    assert result.returncode == 1 and result.stderr.count("\n") == 1
    assert "missing.conf: error: cannot read" in result.stderr


# -- PnP responder -------------------------------------------------------------------------------

PNP_SERVER = """
import json, sys
from twisted.internet import reactor
from htekd.listeners import ListenError
from htekd.listeners.sip import PnpOptions, listen_pnp
from htekd.requestlog import RequestLog
settings = {key: tuple(value) if isinstance(value, list) else value for key, value in json.loads(sys.argv[1]).items()}
log = RequestLog.open(sys.argv[2])
try:
    listen_pnp(reactor, PnpOptions(**settings), lambda: sys.argv[3], log)
except ListenError as exc:
    print(exc, file=sys.stderr)
    sys.exit(1)
print("ready", flush=True)
reactor.run()
"""


class PnpServer:
    """listen_pnp under a real reactor in its own process, as the daemon starts it."""

    def __init__(self, tmp_path: Path, **options):
        self.port = options.setdefault("port", free_port(socket.SOCK_DGRAM))
        options.setdefault("interface", LOOPBACK)
        self.log = tmp_path / f"pnp-{self.port}.log"
        self.proc = subprocess.Popen([sys.executable, "-c", PNP_SERVER, json.dumps(options), str(self.log), URL],
                                     cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        self.ready = self.proc.stdout.readline().strip() == "ready"

    def lines(self, count: int = 1, timeout: float = 10) -> list[str]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            lines = self.log.read_text().splitlines() if self.log.exists() else []
            if len(lines) >= count:
                return lines
            time.sleep(0.05)
        pytest.fail(f"expected {count} PnP log lines, got: {lines}")

    def stop(self) -> None:
        self.proc.kill()
        self.proc.wait(5)
        self.proc.stdout.close()
        self.proc.stderr.close()


@pytest.fixture
def pnp(tmp_path):
    started = []

    def start(**options) -> PnpServer:
        server = PnpServer(tmp_path, **options)
        started.append(server)
        if not server.ready:
            pytest.fail(f"PnP responder did not start: {server.proc.stderr.read()}")
        return server

    yield start
    for server in started:
        server.stop()


def subscribe(mac: str = "001fc1000009", vendor: str = "Htek", event: str = "ua-profile", source=("127.0.0.1", 5060),
              contact: str | None = None, call_id: str = "c1") -> bytes:
    host, port = source
    return (
        f"SUBSCRIBE sip:MAC%3a{mac}@224.0.1.75 SIP/2.0\r\n"
        f"Via: SIP/2.0/UDP {host}:{port};branch=z9hG4bK{call_id}\r\n"
        f"From: <sip:MAC%3a{mac}@224.0.1.75>;tag=99\r\nTo: <sip:MAC%3a{mac}@224.0.1.75>\r\n"
        f"Call-ID: {call_id}@{host}\r\nCSeq: 1 SUBSCRIBE\r\nContact: {contact or f'<sip:{host}:{port}>'}\r\n"
        f"User-Agent: {vendor} UC926 2.0.4.2\r\n"
        f'Event: {event};profile-type="device";vendor="{vendor}";model="UC926";version="2.0.4.2"\r\n'
        "Content-Length: 0\r\n\r\n"
    ).encode()


def phone_socket(host: str = "127.0.0.1") -> socket.socket:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((host, 0))
    sock.settimeout(2)
    return sock


def receive(sock: socket.socket, timeout: float = 2) -> sip.Message | None:
    sock.settimeout(timeout)
    try:
        return sip.parse(sock.recvfrom(65535)[0])
    except socket.timeout:
        return None


@needs_sipp
def test_pnp_subscribe_from_sipp_gets_200_then_the_url(tmp_path, pnp):
    # Unicast to the responder's port: sipp cannot choose the interface a multicast datagram
    # leaves by, and this machine's multicast route points off the host. The multicast path is
    # the next test, with a socket sending the same SUBSCRIBE out of loopback.
    server = pnp()
    phone = Sipp(tmp_path, "pnp-subscribe", f"127.0.0.1:{server.port}",
                 "-key", "mac", "001fc1abcdef", "-key", "vendor", "Htek", "-key", "model", "UC924")
    assert phone.wait() == 0, phone.received()
    ok, notify = phone.received()
    assert ok.startswith("SIP/2.0 200 OK") and "CSeq: 1 SUBSCRIBE" in ok
    assert notify.startswith(f"NOTIFY sip:127.0.0.1:{phone.port} SIP/2.0")
    assert "Content-Type: application/url" in notify and "Subscription-State: terminated" in notify
    assert notify.endswith("\n" + URL)
    [line] = server.lines()
    assert re.search(rf' sip 127\.0\.0\.1:{phone.port} "{re.escape(URL)}" pnp ok mac=001fc1abcdef model=UC924 '
                     r'firmware=2\.0\.4\.2 .*reason="NOTIFY answered 200 OK"', line), line


def test_pnp_answers_a_multicast_subscribe_on_loopback(pnp):
    server = pnp()
    sock = phone_socket()
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_IF, socket.inet_aton(LOOPBACK))
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_TTL, 0)  # never leaves this host
    sock.setsockopt(socket.IPPROTO_IP, socket.IP_MULTICAST_LOOP, 1)
    sock.sendto(subscribe(source=sock.getsockname()), (PNP_GROUP, server.port))
    ok, notify = receive(sock), receive(sock)
    assert ok is not None and ok.status == 200
    assert notify.method == "NOTIFY" and notify.body == URL.encode()
    sock.sendto(sip.build_response(notify, 200), ("127.0.0.1", server.port))
    assert " ok mac=001fc1000009 model=UC926" in server.lines()[0]
    sock.close()


def test_pnp_notify_is_retransmitted_until_answered_and_a_silent_phone_is_logged(pnp):
    server = pnp(timeout=1.5)
    sock = phone_socket()
    sock.sendto(subscribe(source=sock.getsockname()), ("127.0.0.1", server.port))
    assert receive(sock).status == 200
    first, second = receive(sock), receive(sock)  # the first NOTIFY goes unanswered
    assert first.method == second.method == "NOTIFY" and first.header("via") == second.header("via")
    sock.sendto(sip.build_response(second, 200), ("127.0.0.1", server.port))
    assert " ok mac=001fc1000009" in server.lines(1)[0]

    silent = phone_socket("127.0.0.2")
    silent.sendto(subscribe(source=silent.getsockname(), mac="001fc1000010"), ("127.0.0.1", server.port))
    line = server.lines(2)[1]
    assert " failed mac=001fc1000010" in line and 'reason="NOTIFY timeout: no answer in 1.5s' in line
    sock.close()
    silent.close()


def test_pnp_never_answers_other_events_vendors_or_garbage_and_keeps_serving(pnp):
    server = pnp()
    sock = phone_socket()
    source = sock.getsockname()
    junk = [
        b"", b"\x00" * 100, bytes(range(256)) * 4, b"SUBSCRIBE sip:x SIP/2.0\r\n\r\n", b"x" * 60000,
        subscribe(event="presence", source=source), subscribe(event="message-summary", source=source),
        subscribe(mac="001565000001", vendor="Yealink", source=source),
        subscribe(source=source).replace(b"CSeq: 1 SUBSCRIBE", b"CSeq: 1 NOTIFY"),
        subscribe(source=source).replace(b"SUBSCRIBE sip:", b"OPTIONS sip:").replace(b"1 SUBSCRIBE", b"1 OPTIONS"),
        subscribe(source=source).replace(b"Content-Length: 0", b"Content-Length: 900"),
        b"SIP/2.0 200 OK\r\nVia: SIP/2.0/UDP 1.2.3.4;branch=z9hG4bKnone\r\nCSeq: 1 NOTIFY\r\n\r\n",
    ]
    for data in junk:
        sock.sendto(data, ("127.0.0.1", server.port))
    assert receive(sock, timeout=1) is None
    sock.sendto(subscribe(source=source, call_id="ok"), ("127.0.0.1", server.port))
    assert receive(sock).status == 200
    assert server.proc.poll() is None


def test_pnp_other_vendors_when_allowed(pnp):
    server = pnp(vendors=["htek", "yealink"])
    sock = phone_socket()
    sock.sendto(subscribe(mac="001565000001", vendor="Yealink", source=sock.getsockname()), ("127.0.0.1", server.port))
    assert receive(sock).status == 200
    sock.close()


def test_pnp_is_rate_limited_and_never_sends_to_a_third_party(pnp):
    server = pnp(rate=1.0, burst=5)
    victim = phone_socket("127.0.0.99")
    victim_port = victim.getsockname()[1]
    senders = [phone_socket(f"127.0.1.{index}") for index in range(1, 31)]
    for sender in senders:  # forged: each Contact names the victim
        sender.sendto(subscribe(source=sender.getsockname(), contact=f"<sip:127.0.0.99:{victim_port}>"),
                      ("127.0.0.1", server.port))
    answered = sum(receive(sender, timeout=0.3) is not None for sender in senders)
    assert 5 <= answered <= 6  # the burst (plus one token refilled meanwhile); the rest were dropped
    assert receive(victim, timeout=0.5) is None
    for sock in (victim, *senders):
        sock.close()


def test_pnp_port_in_use_is_one_line(tmp_path):
    holder = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    holder.bind(("0.0.0.0", 0))
    port = holder.getsockname()[1]
    server = PnpServer(tmp_path, port=port)
    try:
        assert not server.ready and server.proc.wait(10) == 1
        assert server.proc.stderr.read() == f"pnp: cannot listen on 127.0.0.1:{port}: Address already in use\n"
    finally:
        server.stop()
        holder.close()


def test_pnp_group_that_cannot_be_joined_is_one_line(tmp_path):
    server = PnpServer(tmp_path, interface="203.0.113.77")  # no interface has this address: nothing is sent
    try:
        assert not server.ready and server.proc.wait(10) == 1
        assert server.proc.stderr.read() == (
            f"pnp: cannot listen on 203.0.113.77:{server.port}: Cannot assign requested address "
            "(set [pnp] interface to this host's LAN address, or enabled = no)\n")
    finally:
        server.stop()


def udp_addresses(port: int) -> set[str]:
    """The IPv4 addresses UDP sockets of this host are bound to on `port` (from /proc/net/udp)."""
    found = set()
    for line in Path("/proc/net/udp").read_text().splitlines()[1:]:
        address, _, hex_port = line.split()[1].partition(":")
        if int(hex_port, 16) == port:
            found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]))
    return found


def test_pnp_on_a_loopback_interface_listens_on_loopback_and_the_group_only(pnp):
    server = pnp()
    assert udp_addresses(server.port) == {"127.0.0.1", PNP_GROUP}


# -- htekd dhcp ----------------------------------------------------------------------------------

def test_dhcp_prints_option_66_for_htek_phones_from_the_config(site):
    result = htekd("dhcp", "-c", str(site / "htekd.conf"))
    assert result.returncode == 0, result.stderr
    assert 'dhcp-mac=set:htek,00:1f:c1:*:*:*\ndhcp-option=tag:htek,66,"http://127.0.0.1:8080"' in result.stdout
    assert 'match if substring(hardware, 1, 3) = 00:1f:c1;\n    option tftp-server-name "http://127.0.0.1:8080";' in result.stdout
    assert '"test": "substring(pkt4.mac, 0, 3) == 0x001fc1"' in result.stdout


def _kea_config(snippet: str) -> str:
    body = "\n".join(line for line in snippet.splitlines() if not line.startswith("#"))
    return ('{"Dhcp4": {"interfaces-config": {"interfaces": []}, '
            '"subnet4": [{"subnet": "10.0.0.0/24", "id": 1, "pools": [{"pool": "10.0.0.100 - 10.0.0.200"}]}],'
            f"{body}}}}}")


@pytest.mark.parametrize("server, checker, wrap", [
    ("dnsmasq", ["dnsmasq", "--test", "-C"], lambda text: text),
    ("isc", ["dhcpd", "-t", "-cf"], lambda text: text + "\nsubnet 10.0.0.0 netmask 255.255.255.0 { range 10.0.0.100 10.0.0.200; }\n"),
    ("kea", ["kea-dhcp4", "-t"], _kea_config),
])
def test_dhcp_lines_pass_the_servers_own_check(tmp_path, server, checker, wrap):
    program = shutil.which(checker[0]) or shutil.which(f"/usr/sbin/{checker[0]}")
    if program is None:
        pytest.skip(f"{checker[0]} is not installed")
    result = htekd("dhcp", server, "--url", "http://10.0.0.1/htek", "--option", "66", "--option", "128", "--option", "150")
    assert result.returncode == 0, result.stderr
    assert "http://10.0.0.1/htek" in result.stdout
    path = tmp_path / f"{server}.conf"
    path.write_text(wrap(result.stdout))
    check = subprocess.run([program, *checker[1:], str(path)], capture_output=True, text=True, timeout=30)
    assert check.returncode == 0, check.stdout + check.stderr
    path.write_text(path.read_text() + "\nno-such-directive {\n")  # the checker does reject a bad file
    assert subprocess.run([program, *checker[1:], str(path)], capture_output=True, timeout=30).returncode != 0


@pytest.mark.parametrize("args, message", [
    (["bogus"], "unknown DHCP server 'bogus' (expected dnsmasq, isc, kea)"),
    (["--url", "not a url"], "--url: expected a URL such as http://192.168.0.10, got 'not a url'"),
    (["--url", "http://10.0.0.1/a b"], "--url: spaces, quotes and backslashes do not belong in a URL, got 'http://10.0.0.1/a b'"),
    (["--url", "http://[::1"], "--url: not a URL (Invalid IPv6 URL), got 'http://[::1'"),
])
def test_dhcp_bad_input_is_one_line(args, message):
    result = htekd("dhcp", *args)
    assert result.returncode == 1 and result.stderr == f"htekd dhcp: {message}\n"


@needs_sipp
def test_daemon_answers_pnp_and_the_phone_can_then_be_notified_by_mac(tmp_path, daemon):
    pnp_port = free_port(socket.SOCK_DGRAM)
    running = daemon({"pnp": {"interface": LOOPBACK, "port": str(pnp_port)}, "sip": {"user": "htekd", "password": "s3cret"}})
    assert f"htekd: listening pnp 224.0.1.75:{pnp_port} on {LOOPBACK}" in running.stderr_lines()
    phone = Sipp(tmp_path, "pnp-subscribe", f"127.0.0.1:{pnp_port}",
                 "-key", "mac", "001fc1000001", "-key", "vendor", "Htek", "-key", "model", "UC924")
    assert phone.wait() == 0
    url = f"http://127.0.0.1:{running.ports['http']}"
    assert phone.received()[1].endswith("\n" + url)
    running.wait_log(lambda line: f' sip 127.0.0.1:{phone.port} "{url}" pnp ok mac=001fc1000001 model=UC924' in line)
    # A SUBSCRIBE can name any MAC: the address to notify comes from the phone's own file, fetched.
    time.sleep(0.5)  # the phones seen are written in batches
    before = htekd("notify", "-c", str(running.config_path), "001fc1000001", "--timeout", "1")
    assert before.stdout == "- 001fc1000001 UC924 not seen: no address known\n"
    fetched = subprocess.run(["curl", "-sf", "-o", "/dev/null", "-A", "Htek UC924 2.0.4.2 00:1f:c1:00:00:01",
                              f"{url}/cfg001fc1000001.xml"], timeout=20)
    assert fetched.returncode == 0

    challenged = Sipp(tmp_path, "check-sync-401")
    deadline = time.monotonic() + 5
    while True:  # the phones seen are written in batches
        result = htekd("notify", "-c", str(running.config_path), "001fc1000001", "--port", str(challenged.port))
        if "not seen" not in result.stdout or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert result.stdout == f"127.0.0.1:{challenged.port} 001fc1000001 UC924 200 OK (after Digest authentication)\n"
    assert challenged.wait() == 0
    running.wait_log(lambda line: f' sip 127.0.0.1:{challenged.port} "check-sync" check-sync ok mac=001fc1000001' in line)
    assert "s3cret" not in running.log_path.read_text()
