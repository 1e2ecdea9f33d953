"""Fuzzing the TFTP packet handling and the SIP PnP message handling, in process and over real sockets.

Random bytes and structure-aware mutations (TFTP RRQ/WRQ/DATA/ACK/ERROR/OACK with options, to the
listening port and to a transfer's own port; SIP SUBSCRIBEs mutated and rebuilt) go to a running
`htekd serve`; afterwards the daemon is alive, has printed no internal error, and serves a real
request. CI runs a bounded number of examples; a long run:

    HTEKD_FUZZ_EXAMPLES=100000 python -m pytest -q tests/test_fuzz.py
"""

from __future__ import annotations

import configparser
import os
import socket
import struct
import subprocess
import time
from unittest import mock

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from twisted.internet.task import Clock

from conftest import LOOPBACK
from test_hostile_names import NAMES
from test_sip import subscribe
from htekd import sip
from htekd.config import Address, TftpConfig
from htekd.listeners import tftp
from htekd.listeners.sip import PnpOptions, PnpResponder
from htekd.requestlog import RequestLog
from htekd.resolution import Kind, Resolution, Status

EXAMPLES = int(os.environ.get("HTEKD_FUZZ_EXAMPLES", "300"))
FUZZ = settings(max_examples=EXAMPLES, deadline=None, derandomize="HTEKD_FUZZ_EXAMPLES" not in os.environ,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                       HealthCheck.data_too_large])

# -- TFTP packets ----------------------------------------------------------------------------------

OPTION_NAMES = ["blksize", "tsize", "timeout", "BLKSIZE", "TSize", "windowsize", "multicast", "", "x" * 300]
OPTION_VALUES = ["512", "8", "7", "65464", "65465", "1468", "0", "1", "255", "256", "-1", "99999999999999999999",
                 "abc", "", " 512", "1e3", "\u0663", "0x10"]
FILES = ["README.txt", "cfg0012.xml", "cfg001fc1000001.xml", "fw920M.rom", "ring4.bin", "", "/", ".."]


def text_field() -> st.SearchStrategy[bytes]:
    """A NUL-terminated field's text: likely names, hostile names, or anything."""
    return st.one_of(st.sampled_from(FILES), st.sampled_from(NAMES[:200]), st.text(max_size=40)).map(
        lambda text: text.encode("utf-8", "surrogatepass"))


@st.composite
def request_packet(draw) -> bytes:
    opcode = draw(st.sampled_from([1, 2, 1, 1]))
    packet = struct.pack("!H", opcode) + draw(text_field()) + b"\0"
    packet += draw(st.sampled_from([b"octet", b"netascii", b"OCTET", b"NetAscii", b"mail", b"", b"binary"])) + b"\0"
    for _ in range(draw(st.integers(0, 5))):
        name = draw(st.one_of(st.sampled_from(OPTION_NAMES), st.text(max_size=12)))
        value = draw(st.one_of(st.sampled_from(OPTION_VALUES), st.text(max_size=12)))
        packet += name.encode("utf-8", "surrogatepass") + b"\0" + value.encode("utf-8", "surrogatepass") + b"\0"
    return packet


@st.composite
def other_packet(draw) -> bytes:
    opcode = draw(st.sampled_from([3, 4, 5, 6, 0, 7, 255, 65535]))
    block = struct.pack("!H", draw(st.integers(0, 65535)))
    if opcode == 3:
        return struct.pack("!H", opcode) + block + draw(st.binary(max_size=600))
    if opcode == 5:
        return struct.pack("!H", opcode) + block + draw(st.binary(max_size=80)) + draw(st.sampled_from([b"\0", b""]))
    if opcode == 6:
        return struct.pack("!H", opcode) + b"blksize\0" + draw(st.binary(max_size=20)) + b"\0"
    return struct.pack("!H", opcode) + block + draw(st.binary(max_size=8))


@st.composite
def mutated(draw, packets: st.SearchStrategy[bytes]) -> bytes:
    """A packet with a few bytes flipped, cut, duplicated or inserted."""
    data = bytearray(draw(packets))
    for _ in range(draw(st.integers(0, 3))):
        action = draw(st.sampled_from(["flip", "cut", "insert", "repeat"]))
        position = draw(st.integers(0, len(data)))
        if action == "flip" and position < len(data):
            data[position] ^= draw(st.integers(1, 255))
        elif action == "cut":
            del data[position:]
        elif action == "insert":
            data[position:position] = draw(st.binary(min_size=1, max_size=8))
        else:
            data += data[position:position + 600]
    return bytes(data)


TFTP_PACKETS = st.one_of(st.binary(max_size=700), request_packet(), other_packet(),
                         mutated(st.one_of(request_packet(), other_packet())))


# -- in process: TftpServer.datagramReceived over a fake reactor ------------------------------------------------

class _Transport:
    def __init__(self):
        self.sent: list[tuple[bytes, tuple]] = []

    def write(self, packet, addr):
        self.sent.append((bytes(packet), addr))


def _no_socket_to_spare(*args):
    """Every valid request ends as "server busy", so no transfer starts."""
    raise OSError(24, "Too many open files")


class _Resolver:
    def resolve(self, name, client):
        return Resolution(name, name.lstrip("/"), Kind.NONE, Status.NOT_FOUND, reason="no such file")


@pytest.fixture(scope="module")
def null_log():
    with open(os.devnull, "w", encoding="utf-8") as stream:
        yield RequestLog(stream)


@FUZZ
@given(packet=TFTP_PACKETS)
def test_tftp_request_decoding_in_process(null_log, capsys, packet):
    server = tftp.TftpServer(None, "127.0.0.1", TftpConfig(True, (Address("127.0.0.1", 0),)), _Resolver(), null_log)
    server.transport = _Transport()
    with mock.patch.object(tftp, "transfer_socket", _no_socket_to_spare):
        server.datagramReceived(packet, ("127.0.0.1", 40000))
    assert "internal error" not in capsys.readouterr().err
    for reply, addr in server.transport.sent:
        assert addr == ("127.0.0.1", 40000)
        opcode, code = struct.unpack("!HH", reply[:4])
        assert opcode == 5 and code <= 8 and reply.endswith(b"\0") and reply.count(b"\0") >= 2, reply
    if packet[:2] in (b"\0\3", b"\0\4", b"\0\5", b"\0\6"):
        assert server.transport.sent == []  # stray answers are never answered: no loops between servers


# -- over sockets: a running daemon ---------------------------------------------------------------------------

def drain(sock: socket.socket, wait: float = 0.01) -> list[tuple[bytes, tuple]]:
    sock.settimeout(wait)
    received = []
    try:
        while True:
            received.append(sock.recvfrom(70000))
    except (socket.timeout, ConnectionRefusedError):
        return received


def still_serving(d) -> None:
    """Alive, no internal error printed, and a real phone's TFTP and HTTP requests served."""
    assert d.proc.poll() is None, d.stderr_text()
    problems = [line for line in d.stderr_lines() if "internal error" in line or "Traceback" in line or "Unhandled" in line]
    assert not problems, "\n".join(problems)
    result = subprocess.run(["curl", "-sS", "--max-time", "10", d.url("tftp", "README.txt")], capture_output=True)
    assert result.returncode == 0 and result.stdout == (d.root / "files" / "README.txt").read_bytes()
    assert subprocess.run(["curl", "-sS", d.url("http", "cfg0012.xml")], capture_output=True).stdout.startswith(b"<?xml")


@pytest.fixture
def fuzzed(daemon, site):
    """The daemon under fuzzing: short TFTP timeouts so abandoned transfers go quickly; a file of 40 blocks."""
    (site / "root" / "files" / "big.bin").write_bytes(os.urandom(20000))
    d = daemon({"tftp": {"timeout": "1", "retries": "2"}})
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    parser.read(d.config_path)
    d.ports["pnp"] = int(parser["pnp"]["port"])
    return d


def test_tftp_listening_port_takes_any_packet(fuzzed):
    @FUZZ
    @given(TFTP_PACKETS)
    def send(packet):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.sendto(packet, (LOOPBACK, fuzzed.ports["tftp"]))
            for reply, transfer in drain(sock):
                assert reply[:2] in (b"\0\3", b"\0\5", b"\0\6"), reply  # DATA, ERROR or OACK, nothing else
                if reply[:2] != b"\0\5":
                    sock.sendto(b"\0\5\0\0enough\0", transfer)  # ends the transfer the packet started

    send()
    still_serving(fuzzed)


def test_tftp_transfer_port_takes_any_packet(fuzzed):
    @FUZZ
    @given(st.lists(TFTP_PACKETS, min_size=1, max_size=4), st.booleans(), st.sampled_from(["README.txt", "big.bin"]))
    def send(packets, from_stranger, name):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as stranger:
            phone.bind((LOOPBACK, 0))
            stranger.bind((LOOPBACK, 0))
            phone.sendto(b"\0\1" + name.encode() + b"\0octet\0", (LOOPBACK, fuzzed.ports["tftp"]))
            phone.settimeout(5)
            first, transfer = phone.recvfrom(70000)
            assert first[:4] == b"\0\3\0\1"
            sender = stranger if from_stranger else phone
            for packet in packets:
                sender.sendto(packet, transfer)
            if from_stranger:
                for reply, _ in drain(stranger):
                    assert reply[:4] == b"\0\5\0\5", reply  # unknown transfer ID; the phone's transfer goes on
                if name == "big.bin":  # README.txt fits in its first block: ACK 1 would end it
                    phone.sendto(b"\0\4\0\1", transfer)
                    assert phone.recvfrom(70000)[0][:4] == b"\0\3\0\2"
            drain(phone)
            phone.sendto(b"\0\5\0\0enough\0", transfer)

    send()
    still_serving(fuzzed)


# -- SIP PnP ---------------------------------------------------------------------------------------------

METHODS = ["SUBSCRIBE", "NOTIFY", "OPTIONS", "INVITE", "REGISTER", "ACK", "BYE", "subscribe", "X" * 40]
HEADERS = ["Via", "v", "From", "f", "To", "t", "Call-ID", "i", "CSeq", "Contact", "m", "Event", "o", "Expires",
           "Content-Length", "l", "Content-Type", "c", "User-Agent", "Max-Forwards", "Accept"]
VALUES = ["SIP/2.0/UDP 127.0.0.1:5060;branch=z9hG4bKx;rport", "SIP/2.0/UDP [::1]:0", "SIP/2.0/TCP x;branch=",
          "<sip:MAC%3a001fc1000009@224.0.1.75>;tag=1", "<sip:127.0.0.1:1>", "<sip:8.8.8.8:5060>", "<>", "1 SUBSCRIBE",
          "99999999999999999999 SUBSCRIBE", "x", 'ua-profile;profile-type="device";vendor="Htek";model="UC926"',
          "ua-profile;vendor=Htek", "0", "-1", "100000", "application/url", "Htek UC926 2.0.4.2 001fc1000009", "",
          "a" * 2000]


@st.composite
def sip_message(draw) -> bytes:
    method = draw(st.sampled_from(METHODS))
    uri = draw(st.sampled_from(["sip:MAC%3a001fc1000009@224.0.1.75", "sip:x", "", "sip:[::1", "tel:1"]))
    lines = [f"{method} {uri} SIP/2.0"] if draw(st.booleans()) else [draw(st.sampled_from(
        ["SIP/2.0 200 OK", "SIP/2.0 999 X", "SIP/3.0 200 OK", "SIP/2.0 100"]))]
    for _ in range(draw(st.integers(0, 14))):
        name = draw(st.one_of(st.sampled_from(HEADERS), st.text(max_size=10)))
        value = draw(st.one_of(st.sampled_from(VALUES), st.text(max_size=30)))
        lines.append(f"{name}:{draw(st.sampled_from([' ', '', '  ', chr(9)]))}{value}")
    separator = draw(st.sampled_from(["\r\n", "\n", "\r"]))
    body = draw(st.binary(max_size=200))
    return (separator.join(lines) + separator * 2).encode("utf-8", "surrogatepass") + body


SUBSCRIBES = st.builds(
    lambda mac, vendor, event, call_id: subscribe(mac=mac, vendor=vendor, event=event, call_id=call_id),
    st.sampled_from(["001fc1000009", "001fc1abcdef", "001565000001", "zz", ""]),
    st.sampled_from(["Htek", "htek", "Yealink", "", '"']),
    st.sampled_from(["ua-profile", "presence", "UA-Profile", ""]),
    st.text(alphabet="abc123@.", min_size=1, max_size=12))
# Mostly SUBSCRIBEs, whole or mutated, so most examples get past parsing into the responder.
SIP_MESSAGES = st.one_of(SUBSCRIBES, mutated(SUBSCRIBES), mutated(SUBSCRIBES), sip_message(), mutated(sip_message()),
                         st.binary(max_size=2000))


class _SipTransport(_Transport):
    class _Host:
        host, port = "127.0.0.1", 5060

    def getHost(self):
        return self._Host()


@FUZZ
@given(data=SIP_MESSAGES)
def test_sip_message_handling_in_process(null_log, capsys, data):
    message = sip.parse(data)
    assert message is None or isinstance(message, sip.Message)
    clock = Clock()
    responder = PnpResponder(clock, PnpOptions(port=0, timeout=2.0), lambda: "http://127.0.0.1:8080", null_log)
    endpoint = responder.endpoint
    endpoint.transport = _SipTransport()
    endpoint.datagramReceived(data, ("127.0.0.1", 5062))
    clock.advance(3)  # every retransmission and timeout runs
    for packet, addr in endpoint.transport.sent:
        assert addr[0] == "127.0.0.1"  # never a third party, whatever the Via or Contact says
        assert sip.parse(packet) is not None
    assert "Traceback" not in capsys.readouterr().err


def test_pnp_responder_takes_any_datagram(fuzzed):
    @FUZZ
    @given(SIP_MESSAGES)
    def send(data):
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            sock.sendto(data, (LOOPBACK, fuzzed.ports["pnp"]))
            for reply, _ in drain(sock):
                assert sip.parse(reply) is not None, reply

    send()
    still_serving(fuzzed)
    time.sleep(2.5)  # PnP's rate limit refills (the fuzzing spent it)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as phone:
        phone.bind(("127.0.0.77", 0))
        phone.sendto(subscribe(source=phone.getsockname(), call_id="after-fuzz"), (LOOPBACK, fuzzed.ports["pnp"]))
        phone.settimeout(5)
        answer = sip.parse(phone.recvfrom(65535)[0])
    assert answer is not None and answer.status == 200
