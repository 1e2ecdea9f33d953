"""An attacker on the phones' LAN, reproduced on loopback: a scanner rotating the addresses of its
IPv6 /64, forged UDP requests in a victim's name, hostile header fields. Each time a real phone at
another address (or the victim's own) is served during and after.
"""

from __future__ import annotations

import ipaddress
import json
import random
import shutil
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK, free_port
from test_security import fail2ban_pattern
from test_sip import Sipp, needs_sipp

PHONE_MAC = "001fc1000001"  # example/root/phones.csv: a UC924 whose password is s3cret-1001
PHONE_UA = "Htek UC924 2.0.4.2 00:1f:c1:00:00:01"
PHONE_SECRET = b"s3cret-1001"
SCAN_ADDRESSES = 255
SCAN_PER_ADDRESS = 8  # 2,040 requests, as the scanner of the report made
MAX_PHONE_FETCHES = 200  # the phone's loop during a scan stops by itself after this many


def curl(*args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-s", "--max-time", "10", *args], capture_output=True, timeout=timeout)


def phones_seen(d) -> dict[str, dict]:
    shown = subprocess.run([sys.executable, "-m", "htekd", "phones", "-c", str(d.config_path), "--json"],
                           capture_output=True, text=True, timeout=60)
    assert shown.returncode == 0, shown.stderr
    return {row["mac"]: row for row in json.loads(shown.stdout)}


def wait_seen(d, predicate, timeout: float = 10.0) -> dict[str, dict]:
    """The phones seen once `predicate(rows)` holds (they are written in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        rows = phones_seen(d)
        if predicate(rows) or time.monotonic() > deadline:
            return rows
        time.sleep(0.2)


class PhoneLoop(threading.Thread):
    """A real phone fetching its own file with curl every 50 ms until stopped (MAX_PHONE_FETCHES at most)."""

    def __init__(self, url: str, *curl_args: str):
        super().__init__(daemon=True)
        self.url, self.curl_args = url, curl_args
        self.stopping = threading.Event()
        self.served = self.failed = 0

    def run(self) -> None:
        for _ in range(MAX_PHONE_FETCHES):
            if self.stopping.is_set():
                return
            fetched = curl("-A", PHONE_UA, *self.curl_args, self.url)
            if fetched.returncode == 0 and PHONE_SECRET in fetched.stdout:
                self.served += 1
            else:
                self.failed += 1
            self.stopping.wait(0.05)

    def stop(self) -> None:
        self.stopping.set()
        self.join(60)


# -- the scanner rotating the addresses of one IPv6 /64 ------------------------------------------

@pytest.fixture
def scanner_addresses():
    """SCAN_ADDRESSES addresses of a random unique-local /64 on lo, removed afterwards."""
    if shutil.which("ip") is None:
        pytest.skip("no `ip` command (iproute2) to add IPv6 addresses to lo")
    network = ipaddress.ip_network((0xfd << 120 | random.getrandbits(56) << 64, 64))
    addresses = [str(network[n]) for n in range(1, SCAN_ADDRESSES + 1)]
    commands = "".join(f"address add {address}/128 dev lo nodad\n" for address in addresses)
    added = subprocess.run(["ip", "-6", "-batch", "-"], input=commands, capture_output=True, text=True, timeout=60)
    try:
        if added.returncode != 0:
            pytest.skip(f"cannot add IPv6 addresses to lo (root needed): {added.stderr.strip().splitlines()[0]}")
        yield network, addresses
    finally:
        subprocess.run(["ip", "-6", "-force", "-batch", "-"], input=commands.replace("address add", "address del"),
                       capture_output=True, text=True, timeout=60)


def test_a_scanner_rotating_the_addresses_of_its_64_gets_at_most_throttle_answers(daemon, scanner_addresses):
    network, addresses = scanner_addresses
    port = free_port()
    d = daemon({"http": {"listen": f"{LOOPBACK}:{port} [::1]:{port}"},
                "access": {"throttle": "20", "throttle_window": "60", "throttle_penalty": "600"}})
    macs = [f"001fc1{random.getrandbits(24):06x}" for _ in range(SCAN_ADDRESSES * SCAN_PER_ADDRESS)]
    macs[-3:] = ["001fc1000001", "001fc1000002", "001fc1000003"]  # the inventory, asked for last
    scan = []
    for index, address in enumerate(addresses):  # one curl, a new source address every 8 requests
        scan += ["--next"] if index else []
        scan += ["--interface", address, "-s", "-w", "%{http_code}\n"]
        for mac in macs[index * SCAN_PER_ADDRESS:(index + 1) * SCAN_PER_ADDRESS]:
            scan += ["-o", "/dev/null", f"http://[::1]:{port}/cfg{mac}.xml"]
    phone = PhoneLoop(d.url("http", f"cfg{PHONE_MAC}.xml"))
    phone.start()
    try:
        scanned = subprocess.run(["curl", *scan], capture_output=True, text=True, timeout=240)
    finally:
        phone.stop()
    codes = scanned.stdout.split()
    assert len(codes) == len(macs), scanned.stderr
    assert codes.count("200") == 20 and codes.count("403") == len(macs) - 20
    assert codes[-3:] == ["403"] * 3  # no password of the inventory
    assert phone.failed == 0 and phone.served > 0
    after = curl("-A", PHONE_UA, d.url("http", f"cfg{PHONE_MAC}.xml"))
    assert after.returncode == 0 and PHONE_SECRET in after.stdout
    throttled = d.wait_log(lambda line: 'reason="throttled: more than 20' in line)
    assert f"from {network}; refused for 600 s" in throttled
    assert sum(PHONE_SECRET.decode() in line for line in d.log_lines()) == 0


# -- forged UDP requests in a victim's name ------------------------------------------------------

VICTIM = "127.0.0.66"  # a real phone (the inventory's 001fc1000001), or the PBX
ATTACKER = "127.0.0.99"


def rrq(name: str) -> bytes:
    return b"\x00\x01" + name.encode() + b"\x00octet\x00"


def forge(source: str, destination: tuple[str, int], packets: list[bytes]) -> None:
    """Datagrams that claim `source`; whatever comes back is never read nor acknowledged."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.bind((source, 0))
        for count, packet in enumerate(packets, 1):
            sock.sendto(packet, destination)
            if count % 10 == 0:
                time.sleep(0.01)  # a pace the listener keeps up with on a busy machine


def test_forged_udp_requests_never_lock_out_the_victim_nor_move_a_phone(daemon, tmp_path):
    pnp_port = free_port(socket.SOCK_DGRAM)
    d = daemon({"access": {"throttle": "5", "throttle_penalty": "600"}, "tftp": {"timeout": "1", "retries": "2"},
                "pnp": {"interface": LOOPBACK, "port": str(pnp_port)}})
    (d.root / "files" / "fw920M.rom").write_bytes(bytes(range(256)) * 400)
    own = f"cfg{PHONE_MAC}.xml"
    # The phone at the victim's address provisions as usual: its address is learned.
    first = curl("--interface", VICTIM, "-A", PHONE_UA, d.url("http", own))
    assert first.returncode == 0 and PHONE_SECRET in first.stdout
    assert wait_seen(d, lambda rows: rows.get(PHONE_MAC, {}).get("address") == VICTIM)[PHONE_MAC]["address"] == VICTIM

    tftp = (LOOPBACK, d.ports["tftp"])
    forged_macs = [f"001fc1{n:06x}" for n in range(0xa00000, 0xa00000 + 3000)]
    forge(VICTIM, tftp, [rrq(f"cfg{mac}.xml") for mac in forged_macs[:30]])  # the report's 22, and more
    for n in range(10):  # 3,000 requests naming MACs outside the inventory, from ten addresses
        forge(f"127.0.1.{n + 1}", tftp, [rrq(f"cfg{mac}.xml") for mac in forged_macs[30 + n * 297:30 + (n + 1) * 297]])
    forge(ATTACKER, tftp, [rrq(own), rrq(f"cfg{PHONE_MAC.upper()}")])  # the phone's own names, never acknowledged
    # A PnP SUBSCRIBE from elsewhere naming the phone (answered: even a completed one moves nothing).
    subscribe = Sipp(tmp_path, "pnp-subscribe", f"{LOOPBACK}:{pnp_port}", "-key", "mac", PHONE_MAC,
                     "-key", "vendor", "Htek", "-key", "model", "UC924") if shutil.which("sipp") else None
    d.wait_log(lambda line: f'tftp {ATTACKER}:' in line and f'"cfg{PHONE_MAC.upper()}"' in line, timeout=30)
    assert len(d.log_lines()) >= 1500  # UDP may lose some under load; the rest must have been answered

    # The victim: every protocol still serves it, its phone's own file included.
    for protocol in ("http", "ftp", "tftp"):
        for name in (own, "cfg0012.xml", "fw920M.rom"):
            fetched = curl("--interface", VICTIM, "-A", PHONE_UA, d.url(protocol, name))
            assert fetched.returncode == 0 and fetched.stdout, (protocol, name, fetched.stderr)
    # ... and over TCP even files of phones it is not: nothing of the forgery counts there.
    assert curl("--interface", VICTIM, "-f", "-o", "/dev/null", d.url("http", "cfg001fc1bbbbbb.xml")).returncode == 0
    # Over UDP, phone files of other MACs are what the forgery closed to that address (for the penalty).
    refused = curl("--interface", VICTIM, d.url("tftp", "cfg001fc1bbbbbc.xml"))
    assert refused.returncode != 0
    d.wait_log(lambda line: line.startswith(f"tftp {VICTIM}:", 25) and "phone files over UDP refused" in line)

    pattern = fail2ban_pattern()
    assert not [line for line in d.log_lines() if pattern.search(line)]
    if subscribe is not None:
        subscribe.wait()
        d.wait_log(lambda line: " pnp " in line and f"mac={PHONE_MAC}" in line)
    rows = wait_seen(d, lambda rows: "001fc1bbbbbb" in rows)
    assert rows[PHONE_MAC]["address"] == VICTIM  # neither the forged RRQs nor the SUBSCRIBE moved it
    assert not set(forged_macs) & set(rows)
    assert len(rows) <= 5


def test_a_tftp_scanner_that_acknowledges_is_throttled_on_every_protocol(daemon):
    scanner = "127.0.0.77"
    d = daemon({"access": {"throttle": "3", "throttle_penalty": "600"}})
    for n in range(3):  # curl acknowledges every block: these requests were no forgery
        fetched = curl("--interface", scanner, d.url("tftp", f"cfg001fc1cc{n:04x}.xml"))
        assert fetched.returncode == 0 and fetched.stdout.startswith(b"<?xml")
    d.wait_log(3)
    # They count with its TCP requests: the very next unknown phone file is one too many.
    for name in ("cfg001fc1cc0100.xml", "cfg0012.xml"):
        refused = curl("--interface", scanner, "-w", "%{http_code}", "-o", "/dev/null", d.url("http", name))
        assert refused.stdout == b"403"
    line = d.wait_log(lambda text: text.startswith("http ", 25) and "throttled: more than 3" in text)
    assert f"from {scanner}/32; refused for 600 s" in line
    assert fail2ban_pattern().search(line)["host"] == scanner
    phone = curl("-A", PHONE_UA, d.url("http", f"cfg{PHONE_MAC}.xml"))  # elsewhere: served
    assert phone.returncode == 0 and PHONE_SECRET in phone.stdout


def test_the_phones_seen_keep_a_bounded_number_of_macs_outside_the_inventory(tmp_path: Path):
    from htekd.requestlog import RequestRecord
    from htekd.resolution import Client
    from htekd.state import PhoneStore, read

    store = PhoneStore(tmp_path)
    store.inventory = frozenset({PHONE_MAC})
    store.max_other_phones = 50
    client = Client("http", "192.0.2.9")

    def record(mac: str, moment: float, confirmed: bool = True, kind: str = "unknown-phone") -> RequestRecord:
        return RequestRecord(moment, "http", "192.0.2.9", 4000, f"cfg{mac}.xml", kind, "ok", 100, 0.01, mac=mac,
                             confirmed=confirmed)

    store.observe(record(PHONE_MAC, 1.0, kind="phone-config"), client)
    for n in range(3000):
        store.observe(record(f"001fc1{n:06x}", 2.0 + n, confirmed=n % 2 == 0), client)
    store.close()
    phones, _ = read(tmp_path)
    macs = {phone.mac for phone in phones}
    assert PHONE_MAC in macs and len(macs) == 51
    assert "001fc1000bb6" in macs and "001fc1000bb7" not in macs  # the latest confirmed are kept


# -- what clients send, shown escaped ------------------------------------------------------------

HOSTILE = "<script>x</script>\u2028\u0085\u009b[2J\u202e"


def test_hostile_fields_are_escaped_in_the_text_log_and_htekd_phones(daemon):
    d = daemon()
    quoted = "".join(f"%{byte:02X}" for byte in f"x{HOSTILE}.txt".encode())
    curl("-A", PHONE_UA, "-o", "/dev/null", d.url("http", quoted))
    line = d.wait_log(lambda text: "x\\u003cscript" in text)
    assert "\\u003cscript\\u003ex\\u003c/script\\u003e\\u2028\\u0085\\u009b[2J\\u202e" in line
    rows = wait_seen(d, lambda rows: "script" in (rows.get(PHONE_MAC, {}).get("last_file") or ""))
    assert rows[PHONE_MAC]["last_file"] == f"/x{HOSTILE}.txt"  # --json: the same text, escaped in JSON
    table = subprocess.run([sys.executable, "-m", "htekd", "phones", "-c", str(d.config_path)],
                           capture_output=True, text=True, timeout=60)
    raw = subprocess.run([sys.executable, "-m", "htekd", "phones", "-c", str(d.config_path), "--json"],
                         capture_output=True, text=True, timeout=60)
    for output in (table.stdout, raw.stdout, line):
        assert "<" not in output and "\u2028" not in output and "\x85" not in output and "\x9b" not in output
    assert "\\u003cscript\\u003ex\\u003c/script\\u003e\\u2028\\u0085\\u009b[2J\\u202e.txt" in table.stdout


def test_hostile_fields_are_escaped_in_the_json_log(daemon):
    d = daemon({"htekd": {"log_format": "json"}})
    quoted = "".join(f"%{byte:02X}" for byte in f"Fran\u00e7ais{HOSTILE}".encode())
    curl("-o", "/dev/null", d.url("http", quoted))
    d.wait_log(1)
    [line] = d.log_lines()
    assert line.isprintable() and "<" not in line and ">" not in line
    assert "Français" in line  # UTF-8 that is printable stays as it is
    assert json.loads(line)["name"] == f"/Fran\u00e7ais{HOSTILE}"


@needs_sipp
def test_a_pnp_subscribe_with_hostile_model_and_version_logs_neither(daemon, tmp_path):
    pnp_port = free_port(socket.SOCK_DGRAM)
    d = daemon({"pnp": {"interface": LOOPBACK, "port": str(pnp_port)}})
    phone = Sipp(tmp_path, "pnp-subscribe", f"{LOOPBACK}:{pnp_port}",
                 "-key", "mac", PHONE_MAC, "-key", "vendor", "Htek", "-key", "model", "<script>\u2028")
    assert phone.wait() == 0
    line = d.wait_log(lambda text: " pnp " in text)
    assert "model=" not in line and "script" not in line and line.isascii()


def test_notify_lines_escape_what_the_phone_sent():
    from htekd.commands.notify import Result, Target

    line = Result(Target("192.0.2.5", 5060, PHONE_MAC, "<b>UC924"), False, "486 Busy\u2028Here\u0085\u009b").line()
    assert line == "192.0.2.5:5060 001fc1000001 \\u003cb\\u003eUC924 486 Busy\\u2028Here\\u0085\\u009b"


def test_a_daemon_line_quoting_a_client_text_stays_one_line(capsys):
    from htekd.events import say

    say("http: \"/a\u2028b\nc\u009b\" failed: <reason>")
    assert capsys.readouterr().err == 'htekd: http: "/a\\u2028b\\u000ac\\u009b" failed: <reason>\n'


def test_addresses_recorded_before_they_had_to_be_confirmed_are_forgotten(tmp_path: Path):
    import sqlite3

    from htekd.requestlog import RequestRecord
    from htekd.resolution import Client
    from htekd.state import SCHEMA, PhoneStore, read

    old = sqlite3.connect(tmp_path / "phones.sqlite")
    old.executescript(SCHEMA)
    old.execute("INSERT INTO phones (mac, address, first_seen, last_seen) VALUES (?, '192.0.2.66', 1, 1)", (PHONE_MAC,))
    old.commit()
    old.close()
    store = PhoneStore(tmp_path)
    store.close()
    [phone], _ = read(tmp_path)
    assert phone.mac == PHONE_MAC and phone.address is None  # a forged request may have written it
    store = PhoneStore(tmp_path)
    store.observe(RequestRecord(2.0, "http", "192.0.2.5", 4000, f"cfg{PHONE_MAC}.xml", "phone-config", "ok", 100, 0.01,
                                mac=PHONE_MAC), Client("http", "192.0.2.5"))
    store.close()
    PhoneStore(tmp_path).close()  # once only: an address learned since stays
    [phone], _ = read(tmp_path)
    assert phone.address == "192.0.2.5"
