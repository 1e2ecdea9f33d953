"""Keeping SIP passwords from strangers: address rules, the User-Agent match and the enumeration throttle."""

from __future__ import annotations

import random
import subprocess
from pathlib import Path

import pytest

from htekd.resolution import Client, Kind, Status
from htekd.throttle import Throttle
from contenttree import make_site, resolver_for

CSV = "mac,model,Account1_AuthenticatePassword\n001fc1000001,UC924,s3cret\n001fc1000002,UC926,other-s3cret\n"
OWN_UA = "Htek UC924 2.0.4.2 00:1f:c1:00:00:01"


def site(tmp_path: Path, access: str = "") -> Path:
    make_site(tmp_path, csv=CSV, extra="")
    conf = tmp_path / "htekd.conf"
    if access:
        conf.write_text(conf.read_text(encoding="utf-8") + "\n[access]\n" + access + "\n", encoding="utf-8")
    return conf


def ask(resolver, name: str, address: str = "192.168.1.20", protocol: str = "http", user_agent: str = ""):
    return resolver.resolve(name, Client(protocol, address, 5000, user_agent))


def test_addresses_outside_allow_get_nothing(tmp_path: Path):
    resolver = resolver_for(site(tmp_path, "allow = 192.168.1.0/24 fd00::/8"))
    assert ask(resolver, "cfg0012.xml").ok
    assert ask(resolver, "cfg0012.xml", address="fd00::5").ok
    assert ask(resolver, "cfg0012.xml", address="::ffff:192.168.1.9").ok  # IPv4 seen on an IPv6 socket
    for address in ("10.0.0.1", "2001:db8::1", "::ffff:10.0.0.1"):
        refused = ask(resolver, "cfg0012.xml", address=address)
        assert refused.status is Status.DENIED and refused.reason == "address not allowed"


def test_phone_files_can_be_limited_to_the_phone_network(tmp_path: Path):
    resolver = resolver_for(site(tmp_path, "phone_files = 192.168.1.0/24"))
    assert ask(resolver, "cfg001fc1000001.xml").ok
    assert ask(resolver, "cfg0012.xml", address="10.1.1.1").ok  # model files stay open
    refused = ask(resolver, "cfg001fc1000001.xml", address="10.1.1.1")
    assert refused.status is Status.DENIED and refused.kind is Kind.PHONE_CONFIG
    assert refused.content is None


def test_a_user_agent_naming_a_mac_gets_only_that_phones_file(tmp_path: Path):
    resolver = resolver_for(site(tmp_path))
    own = ask(resolver, "cfg001fc1000001.xml", user_agent=OWN_UA)
    assert own.ok and b"s3cret" in own.content
    other = ask(resolver, "cfg001fc1000002.xml", user_agent=OWN_UA)
    assert other.status is Status.DENIED and "names another phone" in other.reason
    assert other.content is None
    # without a MAC in the User-Agent (phones can turn it off with P24809) the default is to serve
    assert ask(resolver, "cfg001fc1000002.xml", user_agent="Htek UC926 2.0.4.2").ok


def test_requests_without_a_mac_in_the_user_agent_can_be_refused_over_http(tmp_path: Path):
    resolver = resolver_for(site(tmp_path, "without_mac = deny"))
    assert ask(resolver, "cfg001fc1000001.xml", user_agent="curl/8").status is Status.DENIED
    assert ask(resolver, "cfg001fc1000001.xml", user_agent=OWN_UA).ok
    assert ask(resolver, "cfg001fc1000001.xml", protocol="tftp").ok  # TFTP and FTP carry no User-Agent


def test_user_agent_check_can_be_turned_off(tmp_path: Path):
    resolver = resolver_for(site(tmp_path, "user_agent_mac = ignore"))
    assert ask(resolver, "cfg001fc1000002.xml", user_agent=OWN_UA).ok


def test_a_scanner_is_throttled_on_every_request_while_a_real_phone_elsewhere_is_served(tmp_path: Path):
    resolver = resolver_for(site(tmp_path, "throttle = 5\nthrottle_window = 60\nthrottle_penalty = 600"))
    scanner = "192.168.1.66"
    answers = 0
    for _ in range(50):
        mac = "001fc1%06x" % random.randrange(16 ** 6)
        if ask(resolver, f"cfg{mac}.xml", address=scanner).ok:
            answers += 1
    assert answers == 5
    blocked = ask(resolver, "cfg0012.xml", address=scanner, protocol="tftp")
    assert blocked.status is Status.DENIED and blocked.reason.startswith("throttled")
    phone = ask(resolver, "cfg001fc1000001.xml", address="192.168.1.20", user_agent=OWN_UA)
    assert phone.ok and b"s3cret" in phone.content


def test_throttle_counts_within_the_window_and_forgives_after_the_penalty():
    now = [1000.0]
    throttle = Throttle(limit=3, window=10, penalty=30, clock=lambda: now[0])
    for _ in range(3):
        assert not throttle.miss("a")
        now[0] += 4  # 3 misses spread over 12 s: never more than 3 in any 10 s
    assert not throttle.miss("a") and not throttle.blocked("a")
    for _ in range(3):
        throttle.miss("a")
    assert throttle.blocked("a") and not throttle.blocked("b")
    now[0] += 31
    assert not throttle.blocked("a")


def test_throttle_memory_is_bounded():
    from htekd import throttle as module

    now = [0.0]
    throttle = Throttle(limit=1, window=60, penalty=600, max_networks=100, clock=lambda: now[0])
    for n in range(10_000):
        for address in (f"10.0.{n // 256}.{n % 256}", f"2001:db8:{n:x}::{n:x}"):
            assert not throttle.miss(address) and throttle.miss(address)  # the second miss blocks it
        now[0] += 0.01  # all still within their penalty
    assert len(throttle._misses) <= 100
    assert len(throttle._blocked) <= 100
    assert len(throttle._keys) <= module.MAX_KEYS
    assert throttle.blocked("2001:db8:270f::1")  # the latest are kept


def test_throttle_counts_an_ipv6_64_as_one_and_ipv4_addresses_apart():
    throttle = Throttle(limit=3, window=60, penalty=60)
    for n in range(3):
        assert not throttle.miss(f"2001:db8:1:2::{n + 1:x}")
    assert throttle.miss("2001:db8:1:2:ffff:ffff:ffff:ffff")  # a fourth address of the same /64
    assert throttle.blocked("2001:db8:1:2::abcd") and not throttle.blocked("2001:db8:1:3::1")
    for n in range(10):
        assert not throttle.miss(f"192.0.2.{n}")  # one miss each: IPv4 addresses are apart
    assert throttle.network("::ffff:192.0.2.7") == "192.0.2.7/32"


def test_throttle_prefix_lengths_are_configurable():
    throttle = Throttle(limit=2, window=60, penalty=60, ipv4_prefix=24, ipv6_prefix=48)
    assert throttle.network("192.0.2.77") == "192.0.2.0/24"
    assert throttle.network("2001:db8:1:2::5") == "2001:db8:1::/48"
    for address in ("192.0.2.1", "192.0.2.2"):
        assert not throttle.miss(address)
    assert throttle.miss("192.0.2.3") and throttle.blocked("192.0.2.200") and not throttle.blocked("192.0.3.1")


@pytest.mark.parametrize("key, value, message", [
    ("allow", "192.168.1.0/33", "[access] allow: '192.168.1.0/33' is not a network"),
    ("user_agent_mac", "maybe", "[access] user_agent_mac: must be one of check, ignore"),
    ("throttle", "-1", "[access] throttle: must be between 0"),
    ("throttle_ipv6_prefix", "129", "[access] throttle_ipv6_prefix: must be between 16"),
    ("throttle_ipv4_prefix", "/24", "[access] throttle_ipv4_prefix:"),
])
def test_bad_access_settings_are_one_line_naming_the_key(tmp_path: Path, key: str, value: str, message: str):
    conf = site(tmp_path, f"{key} = {value}")
    import sys

    result = subprocess.run([sys.executable, "-m", "htekd", "check", "-c", str(conf)], capture_output=True, text=True)
    assert result.returncode == 1
    [line] = result.stdout.splitlines()
    assert line.startswith(f"{conf}:") and f": error: {message}" in line, line


def test_throttled_requests_are_logged_for_fail2ban_on_every_protocol(daemon):
    d = daemon({"access": {"throttle": "3", "throttle_penalty": "60"}, "htekd": {"unknown_phones": "deny"}})
    for n in range(4):
        subprocess.run(["curl", "-s", "-o", "/dev/null", d.url("http", f"cfg001fc10009{n:02d}.xml")], timeout=20)
    for protocol in ("tftp", "ftp", "http"):
        fetched = subprocess.run(["curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--max-time", "10",
                                  d.url(protocol, "cfg0012.xml")], capture_output=True, text=True, timeout=20)
        assert fetched.returncode != 0 or fetched.stdout.strip() == "403"
    lines = d.wait_log(7)
    throttled = [line for line in lines if 'reason="throttled' in line]
    assert len(throttled) == 4  # the request that went over the limit, then one per protocol
    assert all(" denied " in line and " 127.0.0.1:" in line for line in throttled)


def test_the_administrators_commands_see_past_the_access_rules(tmp_path: Path):
    import sys

    conf = site(tmp_path, "allow = 10.0.0.0/8\nphone_files = 10.0.0.0/8\nthrottle = 1")
    for target in ("0012", "001fc1000001", "001fc1000099", "001fc1000098"):
        rendered = subprocess.run([sys.executable, "-m", "htekd", "render", "-c", str(conf), target], capture_output=True)
        assert rendered.returncode == 0 and rendered.stdout.startswith(b"<?xml"), rendered.stderr
    checked = subprocess.run([sys.executable, "-m", "htekd", "check", "-c", str(conf)], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stdout + checked.stderr
    assert "no fw920M.rom for the UC924 phones" in checked.stdout  # the rendered files were looked at


def test_a_raised_throttle_limit_applies_to_addresses_already_counted(tmp_path: Path):
    conf = site(tmp_path, "throttle = 2")
    resolver = resolver_for(conf)
    scanner = "192.168.1.66"
    for n in range(2):
        assert ask(resolver, f"cfg001fc1ee00{n:02d}.xml", address=scanner).ok
    conf.write_text(conf.read_text(encoding="utf-8").replace("throttle = 2", "throttle = 5"), encoding="utf-8")
    from contenttree import load_config

    resolver.reload(load_config(conf))
    answers = sum(ask(resolver, f"cfg001fc1ee01{n:02d}.xml", address=scanner).ok for n in range(30))
    assert answers == 5


def udp(address: str = "192.168.1.20") -> Client:
    return Client("tftp", address, 5000, confirmed=False)


def test_unconfirmed_udp_misses_refuse_only_phone_files_over_udp(tmp_path: Path):
    resolver = resolver_for(site(tmp_path, "throttle = 3"))
    victim = "192.168.1.20"
    for n in range(50):  # forged in the victim's name
        resolver.resolve(f"cfg001fc1ee{n:04x}.xml", udp(victim))
    refused = resolver.resolve("cfg001fc1000001.xml", udp(victim))
    assert refused.status is Status.DENIED and "over UDP" in refused.reason and refused.content is None
    assert resolver.resolve("cfg0012.xml", udp(victim)).ok  # model files and firmware: still served
    assert ask(resolver, "cfg001fc1000001.xml", address=victim).ok  # and everything over TCP
    assert ask(resolver, "cfg001fc1ee0100.xml", address=victim).ok
    assert resolver.resolve("cfg001fc1000001.xml", udp("192.168.1.21")).ok  # and other addresses


def test_a_phone_at_a_forged_address_still_gets_its_own_file_over_udp(tmp_path: Path):
    from htekd.requestlog import RequestRecord

    resolver = resolver_for(site(tmp_path, "throttle = 3"))
    victim = "192.168.1.20"
    own = resolver.resolve("cfg001fc1000001.xml", udp(victim))
    assert own.ok
    record = RequestRecord(0.0, "tftp", victim, 5000, own.name, own.kind.value, "ok", own.size, 0.1, mac=own.mac,
                           confirmed=True)  # the phone acknowledged every block
    resolver.observe(record, udp(victim))
    for n in range(50):
        resolver.resolve(f"cfg001fc1ee{n:04x}.xml", udp(victim))
    assert resolver.resolve("cfg001fc1000001.xml", udp(victim)).ok
    assert resolver.resolve("cfg001fc1000002.xml", udp(victim)).status is Status.DENIED


def test_acknowledged_udp_misses_count_on_every_protocol(tmp_path: Path):
    from htekd.requestlog import RequestRecord

    resolver = resolver_for(site(tmp_path, "throttle = 5"))
    scanner = "192.168.1.66"
    for n in range(3):
        answer = resolver.resolve(f"cfg001fc1ee{n:04x}.xml", udp(scanner))
        assert answer.ok and answer.kind is Kind.UNKNOWN_PHONE
        acknowledged = n < 2  # the third never answered: it could have been forged
        record = RequestRecord(0.0, "tftp", scanner, 5000, answer.name, answer.kind.value, "ok", answer.size, 0.1,
                               mac=answer.mac, confirmed=acknowledged)
        resolver.observe(record, udp(scanner))
    answers = sum(ask(resolver, f"cfg001fc1ef{n:04x}.xml", address=scanner).ok for n in range(20))
    assert answers == 3
