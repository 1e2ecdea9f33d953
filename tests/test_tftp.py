"""TFTP listener: real clients (curl, tftp-hpa, atftp) and raw sockets on loopback.

Most tests run the real daemon (`daemon` fixture). Tests that need a resolver to be slow or to
break run the listener alone over tests/tftp_harness.py's stand-in resolver.
"""

from __future__ import annotations

import hashlib
import os
import random
import re
import shutil
import socket
import struct
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK, REPO, free_port

HARNESS = Path(__file__).resolve().parent / "tftp_harness.py"
from tftp_harness import SLOW_SECONDS  # noqa: E402  how long the stand-in takes for "slow-" names
CURL_FILE_NOT_FOUND, CURL_PERMISSION, CURL_ILLEGAL = 68, 69, 71

needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} not installed")
         for tool in ("curl", "tftp", "atftp")}


# -- packets -----------------------------------------------------------------------------------------
def rrq(name: bytes | str, mode: bytes = b"octet", *options: tuple[bytes, bytes], opcode: int = 1) -> bytes:
    name = name.encode() if isinstance(name, str) else name
    packed = b"".join(key + b"\0" + value + b"\0" for key, value in options)
    return struct.pack("!H", opcode) + name + b"\0" + mode + b"\0" + packed


def ack(block: int) -> bytes:
    return struct.pack("!HH", 4, block)


def opcode(packet: bytes) -> int:
    return struct.unpack("!H", packet[:2])[0]


def block_of(packet: bytes) -> int:
    return struct.unpack("!H", packet[2:4])[0]


def error_of(packet: bytes) -> tuple[int, str]:
    assert opcode(packet) == 5, packet[:40]
    return block_of(packet), packet[4:].rstrip(b"\0").decode("ascii")


def oack_options(packet: bytes) -> dict[str, str]:
    assert opcode(packet) == 6, packet[:40]
    fields = packet[2:].split(b"\0")[:-1]
    return {fields[i].decode(): fields[i + 1].decode() for i in range(0, len(fields), 2)}


class RawClient:
    """A UDP socket speaking TFTP by hand, to do what real clients never do."""

    def __init__(self, host: str = LOOPBACK):
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))

    def send(self, packet: bytes, addr) -> None:
        self.sock.sendto(packet, addr)

    def recv(self, timeout: float = 5.0):
        """(packet, source address) or (None, None) if nothing comes within `timeout`."""
        self.sock.settimeout(timeout)
        try:
            packet, addr = self.sock.recvfrom(70000)
        except socket.timeout:
            return None, None
        return packet, addr[:2]

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def raw():
    clients: list[RawClient] = []

    def make(host: str = LOOPBACK) -> RawClient:
        clients.append(RawClient(host))
        return clients[-1]

    yield make
    for client in clients:
        client.close()


def fetch_raw(client: RawClient, addr, name: str, *options, mode: bytes = b"octet") -> tuple[bytes, dict]:
    """Read a whole file acknowledging every packet; (content, options of the OACK if any)."""
    client.send(rrq(name, mode, *options), addr)
    content, negotiated, expected = [], {}, 1
    blksize = 512
    while True:
        packet, source = client.recv()
        assert packet is not None, "server went silent"
        if opcode(packet) == 6:
            negotiated = oack_options(packet)
            blksize = int(negotiated.get("blksize", 512))
            client.send(ack(0), source)
            continue
        assert opcode(packet) == 3, error_of(packet)
        if block_of(packet) == expected & 0xFFFF:
            content.append(packet[4:])
            expected += 1
        client.send(ack(block_of(packet)), source)
        if len(packet) - 4 < blksize:
            return b"".join(content), negotiated


def read_rest(client: RawClient, source, received: list[bytes], acknowledge: int, blksize: int = 512) -> bytes:
    """ACK block `acknowledge`, then read and ACK blocks to the end; all the content received."""
    client.send(ack(acknowledge), source)
    while True:
        packet, _ = client.recv()
        assert packet is not None and opcode(packet) == 3, packet
        received.append(packet[4:])
        client.send(ack(block_of(packet)), source)
        if len(packet) - 4 < blksize:
            return b"".join(received)


# -- servers -----------------------------------------------------------------------------------------
def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def tftp_lines(lines: list[str]) -> list[str]:
    return [line for line in lines if " tftp " in line]


class Harness:
    """The listener alone over the stand-in resolver (see tftp_harness.py), in its own process."""

    def __init__(self, folder: Path, timeout: float, retries: int):
        self.folder = folder
        self.log_path = folder.parent / "requests.log"
        env = dict(os.environ, PYTHONPATH=str(REPO))
        self.proc = subprocess.Popen(
            [sys.executable, str(HARNESS), str(folder), str(self.log_path), str(timeout), str(retries)],
            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env, text=True,
        )
        ready = self.proc.stderr.readline()
        assert ready.startswith("ready "), ready + self.proc.stderr.read()
        self.addr = (LOOPBACK, int(ready.split()[1]))
        self.stderr: list[str] = []
        self.reader = threading.Thread(target=lambda: self.stderr.extend(self.proc.stderr), daemon=True)
        self.reader.start()

    def url(self, name: str) -> str:
        return f"tftp://{LOOPBACK}:{self.addr[1]}/{name}"

    def log_lines(self) -> list[str]:
        return self.log_path.read_text().splitlines() if self.log_path.exists() else []

    def wait_log(self, predicate, timeout: float = 10.0) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for line in self.log_lines():
                if predicate(line):
                    return line
            time.sleep(0.05)
        pytest.fail("no matching log line; log:\n" + "\n".join(self.log_lines()))

    def stderr_text(self) -> str:
        return "".join(self.stderr)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)
        self.reader.join(5)


@pytest.fixture
def harness(tmp_path):
    started: list[Harness] = []

    def start(timeout: float = 5.0, retries: int = 5) -> Harness:
        folder = tmp_path / "files"
        folder.mkdir(exist_ok=True)
        started.append(Harness(folder, timeout, retries))
        return started[-1]

    yield start
    for running in started:
        running.stop()


class Served:
    """A running daemon seen from its TFTP side, with the same face as Harness."""

    def __init__(self, running, addr):
        self.daemon, self.addr = running, addr
        self.folder = running.root / "files"

    def url(self, name: str) -> str:
        host = f"[{self.addr[0]}]" if ":" in self.addr[0] else self.addr[0]
        return f"tftp://{host}:{self.addr[1]}/{name}"

    def log_lines(self) -> list[str]:
        return self.daemon.log_lines()

    def wait_log(self, predicate, timeout: float = 10.0) -> str:
        return self.daemon.wait_log(predicate, timeout)

    def stderr_text(self) -> str:
        return self.daemon.stderr_text()


@pytest.fixture
def served(daemon):
    """start(timeout=None, retries=None, host=LOOPBACK) -> Served: the daemon with those [tftp] settings."""

    def start(timeout: float | None = None, retries: int | None = None, host: str = LOOPBACK) -> Served:
        settings = {}
        if timeout is not None:
            settings["timeout"] = str(timeout)
        if retries is not None:
            settings["retries"] = str(retries)
        port = free_port(socket.SOCK_DGRAM, host)
        settings["listen"] = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
        return Served(daemon({"tftp": settings}), (host, port))

    return start


def put_file(server, name: str, content: bytes) -> Path:
    path = server.folder / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    return path


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "--silent", "--show-error", *args], capture_output=True, timeout=timeout)


def assert_no_unhandled(text: str) -> None:
    assert "Traceback" not in text and "Unhandled" not in text, text


def netascii(data: bytes) -> bytes:
    """RFC 764 as the wire carries it: every CR is followed by NUL or LF."""
    out = bytearray()
    for byte in data:
        if byte == 0x0A:
            out += b"\r\n"
        elif byte == 0x0D:
            out += b"\r\0"
        else:
            out.append(byte)
    return bytes(out)


# -- real clients --------------------------------------------------------------------------------------
@needs["curl"]
def test_curl_gets_a_generated_model_config(served):
    server = served()
    result = curl(server.url("cfg0012.xml"))
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith(b"<?xml") and b"<hl_provision" in result.stdout
    line = server.wait_log(lambda text: '"cfg0012.xml"' in text)
    assert " tftp " in line and " model-config ok " in line and f" bytes={len(result.stdout)} " in line


@needs["curl"]
@pytest.mark.parametrize("blksize", [None, 512, 1468, 65464])
def test_curl_gets_a_static_file(served, tmp_path, blksize):
    server = served()
    content = os.urandom(300_000)
    put_file(server, "static.bin", content)
    args = ["--tftp-blksize", str(blksize)] if blksize else []
    result = curl(*args, server.url("static.bin"))
    assert result.returncode == 0, result.stderr
    assert result.stdout == content
    line = server.wait_log(lambda text: '"static.bin"' in text)
    assert " ok " in line and " bytes=300000 " in line


@needs["tftp"]
@pytest.mark.parametrize("mode", ["octet", "binary"])
def test_tftp_hpa_gets_a_file(served, tmp_path, mode):
    # tftp-hpa 5.2's client sends no options: plain RFC 1350 with 512-byte blocks.
    server = served()
    content = os.urandom(100_000) + b"\n\r\n"
    put_file(server, "fw.rom", content)
    target = tmp_path / "got.rom"
    result = subprocess.run(["tftp", "-m", mode, LOOPBACK, str(server.addr[1]), "-c", "get", "fw.rom", str(target)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "rror" not in result.stdout + result.stderr, result
    assert target.read_bytes() == content


@needs["atftp"]
def test_atftp_negotiates_blksize_and_tsize(served, tmp_path):
    server = served()
    content = os.urandom(50_000)
    put_file(server, "ring4.bin", content)
    target = tmp_path / "ring4.bin"
    result = subprocess.run(
        ["atftp", "--trace", "--option", "blksize 1468", "--option", "tsize 0",
         "-g", "-r", "ring4.bin", "-l", str(target), LOOPBACK, str(server.addr[1])],
        capture_output=True, text=True, timeout=60,
    )
    assert result.returncode == 0, result
    trace = result.stdout + result.stderr
    assert re.search(r"received OACK <.*tsize: 50000", trace) and re.search(r"received OACK <.*blksize: 1468", trace), trace
    assert "size 1468" in trace
    assert target.read_bytes() == content


@needs["tftp"]
@needs["atftp"]
def test_netascii_mode(served, raw, tmp_path):
    server = served()
    text = b"line one\nline two\r\nlone\rcarriage\n" * 200 + b"no newline at the end"
    put_file(server, "notes.txt", text)
    wire, options = fetch_raw(raw(), server.addr, "notes.txt", (b"tsize", b"0"), (b"blksize", b"100"),
                              mode=b"netascii")
    assert wire == netascii(text)
    assert options == {"tsize": str(len(netascii(text))), "blksize": "100"}
    target = tmp_path / "hpa.txt"  # a netascii client turns the wire form back into local text
    subprocess.run(["tftp", "-m", "netascii", LOOPBACK, str(server.addr[1]), "-c", "get", "notes.txt", str(target)],
                   check=True, capture_output=True, timeout=60)
    assert target.read_bytes() == text
    target = tmp_path / "atftp.txt"
    subprocess.run(["atftp", "--option", "mode netascii", "-g", "-r", "notes.txt", "-l", str(target),
                    LOOPBACK, str(server.addr[1])], check=True, capture_output=True, timeout=60)
    assert target.read_bytes() == text


@needs["curl"]
@needs["tftp"]
def test_more_than_65535_blocks_roll_over(served, tmp_path):
    server = served()
    source = server.folder / "fw920M.rom"
    source.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "wb") as handle:  # 65600 blocks of 512 and a short one
        for _ in range(65600 * 512 // (1 << 20) + 1):
            handle.write(os.urandom(1 << 20))
        handle.truncate(65600 * 512 + 77)
    expected = sha256(source)
    target = tmp_path / "curl.rom"
    result = curl("--tftp-blksize", "512", "-o", str(target), server.url("fw920M.rom"), timeout=120)
    assert result.returncode == 0, result.stderr
    assert sha256(target) == expected
    target = tmp_path / "hpa.rom"
    subprocess.run(["tftp", "-m", "octet", LOOPBACK, str(server.addr[1]), "-c", "get", "fw920M.rom", str(target)],
                   check=True, capture_output=True, timeout=120)
    assert sha256(target) == expected
    assert len([line for line in server.log_lines() if " ok " in line and f"bytes={65600 * 512 + 77} " in line]) == 2


@needs["curl"]
def test_missing_file_is_error_1_and_logged(served, raw):
    server = served()
    result = curl(server.url("no-such-file.bin"))
    assert result.returncode == CURL_FILE_NOT_FOUND, result
    client = raw()
    client.send(rrq("no-such-file.bin"), server.addr)
    packet, _ = client.recv()
    code, message = error_of(packet)
    assert code == 1 and message and message.isascii()
    line = server.wait_log(lambda text: '"no-such-file.bin"' in text)
    assert " not-found " in line and " bytes=0 " in line


@needs["tftp"]
def test_write_is_refused_with_error_2(served, raw, tmp_path):
    server = served()
    local = tmp_path / "upload.xml"
    local.write_bytes(b"<x/>")
    result = subprocess.run(["tftp", LOOPBACK, str(server.addr[1]), "-c", "put", str(local), "upload.xml"],
                            capture_output=True, text=True, timeout=30)
    assert "Error code 2" in result.stdout + result.stderr, result
    client = raw()
    client.send(rrq("upload2.xml", opcode=2), server.addr)
    packet, source = client.recv()
    assert error_of(packet)[0] == 2
    assert not (server.folder / "upload.xml").exists() and not (server.folder / "upload2.xml").exists()
    line = server.wait_log(lambda text: '"upload2.xml"' in text)
    assert " denied " in line


MALFORMED = {
    "empty": b"",
    "one byte": b"\x00",
    "opcode only": b"\x00\x01",
    "unknown opcode 9": b"\x00\x09hello\x00octet\x00",
    "opcode 0xffff": b"\xff\xffjunk",
    "RRQ without NUL": b"\x00\x01static.bin",
    "RRQ without mode": b"\x00\x01static.bin\x00",
    "RRQ mode without NUL": b"\x00\x01static.bin\x00octet",
    "RRQ with 10 kB name": rrq("a" * 10_000),
    "RRQ of 65000 bytes": rrq("b" * 100) + b"x\x00" * 32_000,
    "RRQ unknown mode": rrq("static.bin", b"mail"),
    "RRQ non-ASCII mode": rrq("static.bin", "octét".encode()),
    "RRQ non-ASCII option": rrq("static.bin") + "blksizé".encode() + b"\x00512\x00",
    "RRQ option without value": rrq("static.bin") + b"blksize\x00",
    "RRQ option value without NUL": rrq("static.bin") + b"blksize\x001468",
    "RRQ empty option name": rrq("static.bin") + b"\x00512\x00",
    "ACK": ack(1),
    "short ACK": b"\x00\x04\x00",
    "DATA": b"\x00\x03\x00\x01data",
    "ERROR": b"\x00\x05\x00\x00bye\x00",
    "short ERROR": b"\x00\x05\x00",
    "OACK": b"\x00\x06blksize\x00512\x00",
    "garbage": bytes(range(256)) * 4,
}


@needs["curl"]
def test_malformed_packets_are_ignored_or_refused(served, raw):
    server = served()
    content = os.urandom(5000)
    put_file(server, "static.bin", content)
    client = raw()
    # Packets that start nothing on the listening port get no answer; requests that cannot be read get ERROR 4.
    silent = {"empty", "one byte", "ACK", "short ACK", "DATA", "ERROR", "short ERROR", "OACK"}
    for label, packet in MALFORMED.items():
        client.send(packet, server.addr)
        answer, source = client.recv(timeout=0.3 if label in silent else 5)
        if label in silent:
            assert answer is None, label
        else:
            assert answer is not None and error_of(answer)[0] == 4 and source == server.addr, label
    result = curl(server.url("static.bin"))
    assert result.returncode == 0 and result.stdout == content, result.stderr
    server.wait_log(lambda text: '"static.bin"' in text and " ok " in text)
    assert len(tftp_lines(server.log_lines())) == 1
    assert_no_unhandled(server.stderr_text())


@needs["curl"]
def test_random_requests_never_hurt_the_listener(harness, raw):
    server = harness()
    put_file(server, "ok.bin", b"fine\n")
    generator = random.Random(1350)
    client = raw()
    pieces = [b"\0", b"octet", b"netascii", b"blksize", b"tsize", b"timeout", b"0", b"99999", b"ok.bin", b"\xff"]

    def noise(count: int) -> bytes:
        return b"".join(generator.choice(pieces) if generator.random() < 0.7 else bytes([generator.randrange(256)])
                        for _ in range(count))

    for _ in range(500):
        if generator.random() < 0.5:  # well-formed up to the mode, then anything as options
            body = generator.choice([b"ok.bin", b"missing", noise(2)]) + b"\0"
            body += generator.choice([b"octet", b"netascii", b"OCTET", noise(1)]) + b"\0"
            body += b"".join(noise(generator.randrange(3)) + b"\0" for _ in range(generator.randrange(7)))
        else:
            body = noise(generator.randrange(12))
        client.send(struct.pack("!H", generator.choice([1, 1, 2, 3, 4, 5, 6, 7])) + body, server.addr)
    result = curl(server.url("ok.bin"))
    assert result.returncode == 0 and result.stdout == b"fine\n", result.stderr
    assert_no_unhandled(server.stderr_text())
    assert server.proc.poll() is None


def test_option_negotiation(served, raw):
    server = served()
    content = os.urandom(100_000)
    put_file(server, "static.bin", content)
    cases = [
        ((), None, 512),
        (((b"blksize", b"99999"),), {"blksize": "65464"}, 65464),
        (((b"blksize", b"65464"),), {"blksize": "65464"}, 65464),
        (((b"blksize", b"8"),), {"blksize": "8"}, 8),
        (((b"blksize", b"7"),), None, 512),
        (((b"blksize", b"0"),), None, 512),
        (((b"blksize", b"-1"),), None, 512),
        (((b"blksize", b"big"),), None, 512),
        (((b"BlkSize", b"1024"),), {"blksize": "1024"}, 1024),
        (((b"tsize", b"0"),), {"tsize": "100000"}, 512),
        (((b"timeout", b"3"),), {"timeout": "3"}, 512),
        (((b"timeout", b"0"),), None, 512),
        (((b"timeout", b"256"),), None, 512),
        (((b"windowsize", b"4"), (b"x-vendor", b"1")), None, 512),
        (((b"windowsize", b"4"), (b"blksize", b"1468"), (b"tsize", b"0")), {"blksize": "1468", "tsize": "100000"}, 1468),
    ]
    for options, expected_oack, blksize in cases:
        client = raw()
        client.send(rrq("static.bin", b"octet", *options), server.addr)
        first, source = client.recv()
        if expected_oack is None:
            assert opcode(first) == 3 and block_of(first) == 1, options
            data = first
        else:
            assert oack_options(first) == expected_oack, options
            client.send(ack(0), source)
            data, _ = client.recv()
        assert opcode(data) == 3 and block_of(data) == 1 and data[4:] == content[:blksize], options
        client.send(struct.pack("!HH", 5, 0) + b"enough\0", source)  # end the transfer politely


VENDOR_NAME = "1_Français(French).xml"  # a language file name from the vendor's own Language.tar


@needs["curl"]
def test_utf8_names_are_served_as_over_http(served, raw):
    server = served()
    content = os.urandom(3000)
    put_file(server, VENDOR_NAME, content)
    client = raw()
    client.send(rrq(VENDOR_NAME), server.addr)
    first, source = client.recv()
    assert opcode(first) == 3, first[:40]
    assert read_rest(client, source, [first[4:]], 1) == content
    result = curl(server.url("1_Fran%C3%A7ais%28French%29.xml"))
    assert result.returncode == 0 and result.stdout == content, result.stderr
    over_http = subprocess.run(["curl", "-sS", server.daemon.url("http", "1_Fran%C3%A7ais%28French%29.xml")],
                               capture_output=True, timeout=30)
    assert over_http.stdout == content, over_http.stderr
    lines = [line for line in tftp_lines(server.log_lines()) if "(French)" in line]
    assert len(lines) == 2 and all(" ok " in line and " bytes=3000 " in line for line in lines), lines
    # Bytes that are not UTF-8 are a name like any other: refused by the resolver, and logged.
    client.send(rrq(b"st\xffatic.bin"), server.addr)
    answer, _ = client.recv()
    assert error_of(answer)[0] == 2
    line = server.wait_log(lambda text: " tftp " in text and "atic.bin" in text)
    assert " denied " in line


def test_a_peer_that_never_answers_gets_the_first_packet_twice_at_most(served, raw):
    """A forged request (the source never asked) costs two DATA packets, not `retries` of them."""
    server = served(timeout=0.3, retries=5)
    put_file(server, "static.bin", os.urandom(5000))
    for options in ((), ((b"blksize", b"1468"), (b"tsize", b"0"))):  # the first packet: DATA 1, or the OACK
        client = raw()
        request = rrq("static.bin", b"octet", *options)
        client.send(request, server.addr)
        packets = []
        while (packet := client.recv(timeout=1.5)[0]) is not None:
            packets.append(packet)
        assert len(packets) == 2 and packets[0] == packets[1], [packet[:8] for packet in packets]
        assert sum(len(packet) for packet in packets) <= 2 * 516
    failed = [line for line in tftp_lines(server.log_lines()) if '"static.bin"' in line]
    assert len(failed) == 2 and all(" failed " in line and "timeout after 2 tries" in line for line in failed)


@needs["curl"]
def test_unanswered_requests_make_room_for_a_real_phone(daemon, raw):
    """When the transfers at once are at their limit, the oldest one nobody answers makes room."""
    port = free_port(socket.SOCK_DGRAM)
    running = daemon({"tftp": {"listen": f"{LOOPBACK}:{port}", "max_transfers": "4", "timeout": "5"}})
    content = os.urandom(20_000)
    (running.root / "files" / "fw.rom").write_bytes(content)
    forgers = [raw() for _ in range(8)]
    for forger in forgers:
        forger.send(rrq("fw.rom"), (LOOPBACK, port))
    result = curl("--interface", "127.0.0.2", f"tftp://{LOOPBACK}:{port}/fw.rom")  # the phone, at another address
    assert result.returncode == 0 and result.stdout == content, result.stderr
    line = running.wait_log(lambda text: " tftp " in text and "127.0.0.2" in text)
    assert " ok " in line
    made_room = [line for line in running.log_lines() if "made room" in line]
    assert len(made_room) == 5  # 8 forged + 1 real, 4 at once


def test_lost_data_is_sent_again_and_duplicate_acks_are_ignored(served, raw):
    server = served(timeout=0.5, retries=4)
    content = os.urandom(2000)
    put_file(server, "static.bin", content)
    client = raw()
    client.send(rrq("static.bin"), server.addr)
    first, source = client.recv()
    assert block_of(first) == 1
    started = time.monotonic()
    again, again_source = client.recv(timeout=3)  # "lost": not acknowledged, so it comes again
    assert again == first and again_source == source
    assert 0.3 < time.monotonic() - started < 2.0
    for _ in range(3):  # the ACK arrives three times (a delayed copy, a duplicate)
        client.send(ack(1), source)
    second, _ = client.recv()
    assert block_of(second) == 2 and second[4:] == content[512:1024]
    extra, _ = client.recv(timeout=0.3)
    assert extra is None, "a duplicate ACK made the server send a block twice"
    assert read_rest(client, source, [first[4:], second[4:]], 2) == content
    line = server.wait_log(lambda text: '"static.bin"' in text)
    assert " ok " in line and " bytes=2000 " in line


def test_vanished_client_is_logged_once_as_failed(served, raw):
    server = served(timeout=0.3, retries=3)
    put_file(server, "static.bin", os.urandom(5000))
    client = raw()
    client.send(rrq("static.bin"), server.addr)
    first, source = client.recv()
    client.send(ack(block_of(first)), source)
    copies = 0
    while True:  # the client is gone: it reads but never answers again
        packet, _ = client.recv(timeout=2)
        if packet is None:
            break
        assert block_of(packet) == 2
        copies += 1
    assert copies == 3
    line = server.wait_log(lambda text: '"static.bin"' in text)
    assert " failed " in line and " bytes=1024 " in line and "timeout" in line
    time.sleep(0.5)
    assert len(tftp_lines(server.log_lines())) == 1


def test_packets_from_another_port_get_error_5(served, raw):
    server = served()
    content = os.urandom(1500)
    put_file(server, "static.bin", content)
    client, intruder = raw(), raw()
    client.send(rrq("static.bin"), server.addr)
    first, source = client.recv()
    intruder.send(ack(1), source)
    answer, answer_source = intruder.recv()
    assert error_of(answer)[0] == 5 and answer_source == source
    nothing, _ = client.recv(timeout=0.3)
    assert nothing is None, "the intruder's ACK moved the transfer on"
    assert read_rest(client, source, [first[4:]], 1) == content
    server.wait_log(lambda text: '"static.bin"' in text and " ok " in text)


def test_repeated_request_starts_one_transfer(served, raw):
    server = served()
    put_file(server, "static.bin", os.urandom(1000))
    client = raw()
    client.send(rrq("static.bin"), server.addr)
    client.send(rrq("static.bin"), server.addr)
    first, source = client.recv()
    other, other_source = client.recv(timeout=0.5)
    assert other is None or other_source == source, "a second transfer answered the repeated request"
    client.send(ack(1), source)
    last, _ = client.recv()
    client.send(ack(block_of(last)), source)
    server.wait_log(lambda text: '"static.bin"' in text)
    time.sleep(0.3)
    assert len(tftp_lines(server.log_lines())) == 1


def test_reload_does_not_disturb_a_transfer_in_flight(served, raw):
    server = served()
    old = os.urandom(4000)
    path = put_file(server, "fw.rom", old)
    client = raw()
    client.send(rrq("fw.rom"), server.addr)
    first, source = client.recv()
    replacement = path.with_name("fw.rom.new")
    replacement.write_bytes(os.urandom(4000))
    os.replace(replacement, path)  # how an administrator drops in new firmware
    assert server.daemon.reload().startswith("htekd: reloaded")
    assert read_rest(client, source, [first[4:]], 1) == old
    server.wait_log(lambda text: '"fw.rom"' in text and " ok " in text and " bytes=4000 " in text)


def test_stopping_ends_transfers_in_flight_with_one_log_line(served, raw):
    server = served()
    put_file(server, "fw.rom", os.urandom(10_000))
    client = raw()
    client.send(rrq("fw.rom"), server.addr)
    first, source = client.recv()
    assert server.daemon.stop() == 0
    answer, _ = client.recv(timeout=2)
    assert answer is not None and error_of(answer)[0] == 0
    lines = [line for line in tftp_lines(server.log_lines()) if '"fw.rom"' in line]
    assert len(lines) == 1 and " failed " in lines[0] and " bytes=512 " in lines[0] and "server stopped" in lines[0]


def _has_ipv6_loopback() -> bool:
    try:
        with socket.socket(socket.AF_INET6, socket.SOCK_DGRAM) as probe:
            probe.bind(("::1", 0))
        return True
    except OSError:
        return False


@pytest.mark.skipif(not _has_ipv6_loopback(), reason="no IPv6 loopback (::1) on this machine")
@needs["curl"]
def test_ipv6(served, raw):
    server = served(host="::1")
    content = os.urandom(3000)
    put_file(server, "static.bin", content)
    result = curl("--tftp-blksize", "1024", server.url("static.bin"))
    assert result.returncode == 0 and result.stdout == content, result.stderr
    got, _ = fetch_raw(raw("::1"), server.addr, "static.bin", (b"tsize", b"0"))
    assert got == content
    line = server.wait_log(lambda text: '"static.bin"' in text)
    assert "[::1]:" in line and " ok " in line


# -- a resolver that misbehaves ---------------------------------------------------------------------------
@needs["curl"]
def test_slow_resolution_does_not_stall_other_transfers(harness, raw):
    server = harness()
    content = os.urandom(200_000)
    put_file(server, "fw.rom", content)
    slow = raw()
    slow.send(rrq("slow-fw.rom"), server.addr)
    started = time.monotonic()
    result = curl(server.url("fw.rom"))
    assert result.returncode == 0 and result.stdout == content, result.stderr
    assert slow.recv(timeout=0.01)[0] is None, "the slow resolution finished first: this proves nothing"
    assert time.monotonic() - started < SLOW_SECONDS, "a slow resolution held up another transfer"
    got, _ = slow.recv(timeout=10)  # the slow one is answered in its own time
    assert opcode(got) == 3 and block_of(got) == 1


@needs["curl"]
@pytest.mark.parametrize("name", ["raise-x.bin", "open-fails-x.bin"])
def test_resolver_or_open_failure_ends_one_request(harness, raw, name):
    server = harness()
    put_file(server, "ok.bin", b"fine\n")
    client = raw()
    client.send(rrq(name, b"octet", (b"tsize", b"0")), server.addr)
    packet, _ = client.recv()
    assert error_of(packet) == (0, "internal error")
    line = server.wait_log(lambda text: f'"{name}"' in text)
    assert " failed " in line and "internal error" in line
    result = curl(server.url("ok.bin"))
    assert result.returncode == 0 and result.stdout == b"fine\n"
    assert_no_unhandled(server.stderr_text())


def test_read_failure_midway_is_logged_with_bytes_sent(harness, raw):
    server = harness()
    client = raw()
    client.send(rrq("read-fails-x.bin"), server.addr)
    while True:
        packet, source = client.recv()
        if opcode(packet) == 5:
            break
        client.send(ack(block_of(packet)), source)
    assert error_of(packet) == (0, "internal error")
    line = server.wait_log(lambda text: '"read-fails-x.bin"' in text)
    assert " failed " in line and " bytes=2048 " in line
    assert_no_unhandled(server.stderr_text())
