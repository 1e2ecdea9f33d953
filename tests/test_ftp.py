"""FTP as a phone (or curl, or Python's ftplib) sees it: bytes, replies, logins, listings, log lines."""

from __future__ import annotations

import configparser
import email.utils
import ftplib
import io
import os
import re
import socket
import subprocess
import sys
import threading
import time

import pytest

from conftest import LOOPBACK, free_port

BIG_SIZE = 3 * 1024 * 1024 + 12345  # a few MB of static file, not a multiple of any chunk size
HUGE_SIZE = 32 * 1024 * 1024  # more than loopback socket buffers hold: a download cut off midway
PARALLEL_CLIENTS = 20
ROUNDS = 5

PASSIVE = ("--ftp-pasv",)
ACTIVE = ("-P", "-")  # active mode on the control connection's address (PORT/EPRT)
MODES = {"passive": PASSIVE, "active": ACTIVE, "active-port": ("--ftp-port", LOOPBACK, "--disable-eprt")}

# pyftpdlib imports asyncore/asynchat, deprecated in Python 3.11 (2.x brings its own copies for 3.12+).
pytestmark = pytest.mark.filterwarnings("ignore:The asyn(core|chat) module is deprecated:DeprecationWarning")


def curl(*args: str, timeout: float = 30) -> subprocess.CompletedProcess:
    return subprocess.run(["curl", "-sS", "--max-time", "20", *args], capture_output=True, timeout=timeout)


def render(d, target: str) -> bytes:
    """What `htekd render` says a phone gets over FTP."""
    result = subprocess.run([sys.executable, "-m", "htekd", "render", "-c", str(d.config_path), "--protocol", "ftp", target],
                            capture_output=True, timeout=30, cwd=d.site)
    assert result.returncode == 0, result.stderr
    return result.stdout


def session(port: int, user: str = "anonymous", password: str = "phone@") -> ftplib.FTP:
    client = ftplib.FTP(timeout=10)
    client.connect(LOOPBACK, port)
    client.login(user, password)
    return client


def lines_for(d, name: str) -> list[str]:
    return [line for line in d.log_lines() if line.split()[1] == "ftp" and f' "{name}" ' in line]


def ftp_lines(d) -> list[str]:
    return [line for line in d.log_lines() if line.split()[1] == "ftp"]


@pytest.fixture
def big(site) -> bytes:
    data = os.urandom(BIG_SIZE)
    (site / "root" / "files" / "big.bin").write_bytes(data)
    (site / "root" / "files" / "firmware").mkdir()
    (site / "root" / "files" / "firmware" / "fw924.rom").write_bytes(data[:100_000])
    return data


# -- fetching ----------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", MODES)
def test_generated_and_static_files_in_every_mode(daemon, big, mode):
    d = daemon()
    config = curl(*MODES[mode], d.url("ftp", "cfg0012.xml"))
    assert config.returncode == 0, config.stderr
    assert config.stdout == render(d, "0012")
    static = curl(*MODES[mode], d.url("ftp", "big.bin"))
    assert static.returncode == 0, static.stderr
    assert static.stdout == big
    nested = curl(*MODES[mode], d.url("ftp", "firmware/fw924.rom"))  # curl: CWD firmware, RETR fw924.rom
    assert nested.stdout == big[:100_000]
    d.wait_log(3)
    assert "model-config ok" in lines_for(d, "/cfg0012.xml")[0]
    assert f"bytes={len(config.stdout)} " in lines_for(d, "/cfg0012.xml")[0]
    assert f" ok bytes={BIG_SIZE} " in lines_for(d, "/big.bin")[0]
    assert " ok bytes=100000 " in lines_for(d, "/firmware/fw924.rom")[0]
    assert len(ftp_lines(d)) == 3


def free_on_both_loopbacks() -> int:
    """A TCP port free on ::1 and on 127.0.0.1 a moment ago."""
    for _ in range(50):
        port = free_port(host="::1")
        with socket.socket() as probe:
            try:
                probe.bind((LOOPBACK, port))
            except OSError:
                continue
        return port
    raise RuntimeError("no port free on both loopback addresses")


def test_ipv6_epsv_and_eprt(daemon, big):
    try:
        port = free_on_both_loopbacks()
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    d = daemon({"ftp": {"listen": f"[::1]:{port} {LOOPBACK}:{port}"}})
    url = f"ftp://[::1]:{port}/big.bin"
    passive = curl("-g", "-v", *PASSIVE, url)
    assert passive.stdout == big
    assert b"> EPSV" in passive.stderr and b"229 Entering extended passive mode" in passive.stderr
    active = curl("-g", "-v", *ACTIVE, url)
    assert active.stdout == big
    assert b"> EPRT |2|::1|" in active.stderr and b"200 Active data connection established" in active.stderr
    four = curl(d.url("ftp", "big.bin"))  # the same port on IPv4
    assert four.stdout == big
    d.wait_log(3)
    clients = [line.split()[2] for line in lines_for(d, "/big.bin")]
    assert clients[0].startswith("[::1]:") and clients[1].startswith("[::1]:") and clients[2].startswith(f"{LOOPBACK}:")


def test_size_and_mdtm_are_the_real_ones(daemon, big):
    d = daemon()
    generated = render(d, "0012")
    head = curl("-I", d.url("ftp", "cfg0012.xml"))  # curl asks MDTM and SIZE
    assert head.returncode == 0, head.stderr
    assert f"Content-Length: {len(generated)}\r\n".encode() in head.stdout
    modified = re.search(rb"Last-Modified: (.+)\r\n", head.stdout).group(1).decode()
    assert 0 < time.time() - email.utils.parsedate_to_datetime(modified).timestamp() < 3600
    static = curl("-I", d.url("ftp", "big.bin"))
    assert f"Content-Length: {BIG_SIZE}\r\n".encode() in static.stdout
    mtime = int((d.root / "files" / "big.bin").stat().st_mtime)
    assert f"Last-Modified: {email.utils.formatdate(mtime, usegmt=True)}\r\n".encode() in static.stdout
    with session(d.ports["ftp"]) as client:
        client.voidcmd("TYPE I")
        assert client.size("cfg0012.xml") == len(generated)
        assert client.sendcmd("MDTM big.bin") == "213 " + time.strftime("%Y%m%d%H%M%S", time.gmtime(mtime))
        facts = dict(client.mlsd(facts=["size", "type"]))
        assert facts["big.bin"] == {"size": str(BIG_SIZE), "type": "file"}
        assert f" size={len(generated)};type=file; /cfg0012.xml" in client.sendcmd("MLST cfg0012.xml")
    assert ftp_lines(d) == []  # sizes and dates are no requests for a file


def test_listing_shows_only_what_is_served(daemon, big):
    d = daemon()
    listing = curl(d.url("ftp", ""))
    assert listing.returncode == 0, listing.stderr
    names = {line.split()[-1] for line in listing.stdout.decode().splitlines()}
    assert {"big.bin", "README.txt", "firmware"} <= names
    assert not names & {"phones.csv", "settings", "common.xml", "files"}
    assert re.search(rf"^-r--r--r-- .* {BIG_SIZE} .* big\.bin\r?$", listing.stdout.decode(), re.M)
    assert re.search(r"^dr-xr-xr-x .* firmware\r?$", listing.stdout.decode(), re.M)
    assert curl("--list-only", d.url("ftp", "firmware/")).stdout.split() == [b"fw924.rom"]
    with session(d.ports["ftp"]) as client:
        assert client.pwd() == "/"
        client.cwd("firmware")
        assert client.pwd() == "/firmware"
        assert client.nlst() == ["fw924.rom"]
        client.cwd("..")
        for folder in ("settings", "/settings/models", "nope", "README.txt"):
            with pytest.raises(ftplib.error_perm, match="^550"):
                client.cwd(folder)
        assert client.pwd() == "/"
        with pytest.raises(ftplib.error_perm, match="^550"):
            client.retrlines("LIST settings", lambda line: None)
    for hidden in ("phones.csv", "settings/common.xml", "../phones.csv", "%2e%2e/phones.csv"):
        assert curl(d.url("ftp", hidden)).returncode != 0
    assert not (d.root / "files" / "phones.csv").exists()


def test_missing_and_denied_files(daemon):
    d = daemon({"htekd": {"unknown_phones": "deny"}})
    missing = curl("-v", d.url("ftp", "nope.rom"))
    assert missing.returncode == 78 and b"< 550 " in missing.stderr
    denied = curl("-v", d.url("ftp", "cfg001fc1000099.xml"))  # a phone not in the inventory
    assert denied.returncode == 78
    reply = re.search(rb"< (550 .*)\r\n", denied.stderr).group(1).decode()
    line = d.wait_log(lambda text: '"/cfg001fc1000099.xml"' in text)
    assert " denied " in line
    reason = re.search(r'reason="(.*)"', line).group(1)
    assert reply == f"550 Access denied: {reason}."
    assert " not-found " in lines_for(d, "/nope.rom")[0]
    with session(d.ports["ftp"]) as client:  # SIZE refused, then RETR anyway: still one line
        client.voidcmd("TYPE I")
        with pytest.raises(ftplib.error_perm, match="^550 Access denied"):
            client.size("cfg001fc1000098.xml")
        with pytest.raises(ftplib.error_perm, match="^550 Access denied"):
            client.retrbinary("RETR cfg001fc1000098.xml", lambda block: None)
        with pytest.raises(ftplib.error_perm, match="^550 No such file"):
            client.retrbinary("RETR nope.rom", lambda block: None)
    time.sleep(0.2)
    assert len(lines_for(d, "/cfg001fc1000098.xml")) == 1
    assert len(lines_for(d, "/nope.rom")) == 2


def test_size_then_retr_counts_once_for_the_throttle(daemon):
    d = daemon({"access": {"throttle": "4"}})
    for number in range(4):  # unknown phones; curl asks SIZE, then RETR
        fetched = curl(d.url("ftp", f"cfg001fc10001{number}0.xml"))
        assert fetched.returncode == 0 and fetched.stdout.startswith(b"<?xml"), fetched.stderr
    over = curl("-v", d.url("ftp", "cfg001fc1000150.xml"))
    assert over.returncode == 78 and b"< 550 Access denied: throttled" in over.stderr
    lines = d.wait_log(5)
    assert [line.split()[5] for line in lines] == ["ok"] * 4 + ["denied"]


# -- read-only ---------------------------------------------------------------------------------------

def test_every_write_command_is_refused_with_550(daemon, big, tmp_path):
    d = daemon()
    before = sorted(path.relative_to(d.root) for path in d.root.rglob("*"))
    upload = tmp_path / "upload.bin"
    upload.write_bytes(b"not for a phone")
    stored = curl("-v", "-T", str(upload), d.url("ftp", "upload.bin"))
    assert stored.returncode == 25 and b"< 550 " in stored.stderr
    appended = curl("-v", "-a", "-T", str(upload), d.url("ftp", "big.bin"))
    assert appended.returncode == 25 and b"< 550 " in appended.stderr
    with session(d.ports["ftp"]) as client:
        for command in ("STOR new.bin", "STOU", "STOU new.bin", "APPE big.bin"):
            with pytest.raises(ftplib.error_perm, match="^550"):
                client.storbinary(command, io.BytesIO(b"data"))
        for command in ("DELE big.bin", "DELE /etc/hostname", "RMD firmware", "XRMD firmware", "MKD new",
                        "XMKD new", "RNFR big.bin", "RNTO other.bin", "SITE CHMOD 777 big.bin",
                        "MFMT 20200101000000 big.bin"):
            with pytest.raises(ftplib.error_perm, match="^550"):
                client.sendcmd(command)
        assert client.size("big.bin") == BIG_SIZE
    assert sorted(path.relative_to(d.root) for path in d.root.rglob("*")) == before
    assert (d.root / "files" / "big.bin").read_bytes() == big
    assert ftp_lines(d) == []


# -- logins ------------------------------------------------------------------------------------------

def test_names_under_the_server_url_path_with_curls_default_folder_walk(daemon):
    d = daemon({"htekd": {"server_url": "http://127.0.0.1/htek/cfg"}})
    url = f"ftp://127.0.0.1:{d.ports['ftp']}"
    fetched = curl(f"{url}/htek/cfg/cfg0012.xml")  # curl sends CWD htek, CWD cfg, then RETR
    assert fetched.returncode == 0, fetched.stderr
    assert fetched.stdout == render(d, "0012")
    assert curl(f"{url}/cfg0012.xml").stdout == fetched.stdout  # and without the prefix
    assert curl(f"{url}/other/cfg0012.xml").returncode != 0


def test_anonymous_by_default(daemon):
    d = daemon()
    assert curl(d.url("ftp", "README.txt")).returncode == 0  # curl logs in as anonymous
    for user, password in (("anonymous", ""), ("ftp", "x"), ("phone", "any password")):
        with session(d.ports["ftp"], user, password) as client:
            assert "README.txt" in client.nlst()


def test_configured_login_only(daemon):
    secret = "Correct-Horse-7"
    d = daemon({"ftp": {"user": "phones", "password": secret}})
    right = curl("-u", f"phones:{secret}", d.url("ftp", "README.txt"))
    assert right.returncode == 0, right.stderr
    results = {}

    def attempt(label: str, *credentials: str) -> None:
        results[label] = curl("-v", *credentials, d.url("ftp", "README.txt"))

    attempts = [threading.Thread(target=attempt, args=args) for args in (
        ("anonymous", ), ("wrong password", "-u", "phones:Correct-Horse-8"), ("wrong user", "-u", f"admin:{secret}"))]
    for thread in attempts:
        thread.start()
    for thread in attempts:
        thread.join()
    assert set(results) == {"anonymous", "wrong password", "wrong user"}
    for label, result in results.items():
        assert result.returncode == 67, label  # login denied
        assert b"< 530 " in result.stderr, label
    assert len(lines_for(d, "/README.txt")) == 1
    assert secret not in "\n".join(d.log_lines()) + d.stderr_text() + d.stdout_text()


# -- the request log -----------------------------------------------------------------------------------

def test_one_line_per_transfer_even_when_broken_off(daemon, site):
    with open(site / "root" / "files" / "huge.bin", "wb") as huge:
        huge.truncate(HUGE_SIZE)
    d = daemon()
    with session(d.ports["ftp"]) as client:
        client.voidcmd("TYPE I")
        data = client.transfercmd("RETR huge.bin")
        assert len(data.recv(65536)) > 0
        data.close()  # the phone goes away midway
        with pytest.raises(ftplib.error_temp, match="^426"):
            client.voidresp()
        client.sendcmd("PASV")  # a data connection that never comes
        assert client.sendcmd("RETR README.txt").startswith("150")
    line = d.wait_log(lambda text: '"/huge.bin"' in text)
    assert " failed " in line
    sent = int(re.search(r" bytes=(\d+) ", line).group(1))
    assert 65536 <= sent < HUGE_SIZE
    assert " failed bytes=0 " in d.wait_log(lambda text: '"/README.txt"' in text)
    assert len(ftp_lines(d)) == 2


def test_a_resolver_exception_fails_one_request_only(tmp_path, capfd):
    from htekd.config import Address, FtpConfig
    from htekd.listeners.ftp import FtpListener
    from htekd.requestlog import RequestLog
    from htekd.resolution import Client, Kind, Resolution, Status

    class Resolver:
        def resolve(self, name: str, client: Client) -> Resolution:
            if name == "/boom.xml":
                raise RuntimeError("resolver bug")
            if name == "/fine.txt":
                return Resolution(name, "fine.txt", Kind.STATIC, Status.OK, content=b"fine\n", size=5, mtime=1.0)
            return Resolution(name, name.lstrip("/"), Kind.NONE, Status.NOT_FOUND, reason="no such file")

        def listdir(self, path: str):
            raise RuntimeError("listing bug")

    stream = io.StringIO()
    listener = FtpListener(FtpConfig(True, (Address(LOOPBACK, 0),)), Resolver(), RequestLog(stream))
    listener.start()
    try:
        url = f"ftp://{LOOPBACK}:{listener.addresses[0][1]}/"
        broken = curl("-v", url + "boom.xml")
        assert broken.returncode != 0 and b"< 550 Internal error." in broken.stderr
        assert curl(url + "fine.txt").stdout == b"fine\n"
        assert curl(url).returncode != 0
    finally:
        listener.stop()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 2
    assert '"/boom.xml"' in lines[0] and " failed " in lines[0] and "RuntimeError: resolver bug" in lines[0]
    assert '"/fine.txt"' in lines[1] and " ok bytes=5 " in lines[1]
    err = capfd.readouterr().err
    assert 'htekd: ftp: "/boom.xml" failed: RuntimeError: resolver bug' in err
    assert 'htekd: ftp: listing "/" failed: RuntimeError: listing bug' in err


def test_pyftpdlib_says_nothing_per_command(daemon, big):
    d = daemon()
    for _ in range(3):
        assert curl(*ACTIVE, d.url("ftp", "big.bin")).stdout == big
        curl(d.url("ftp", "nope.bin"))
        curl(d.url("ftp", ""))
    d.wait_log(6)
    assert all(line.startswith("htekd: ") for line in d.stderr_lines())
    assert not any(line.startswith("htekd: ftp") for line in d.stderr_lines())


# -- load ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("mode", ["active", "passive"])
def test_parallel_clients(daemon, big, mode):
    """pyftpdlib as shipped stalls ~10 % of active-mode sessions at this load (a closed connector
    unregisters a reused file descriptor); every fetch here must arrive whole."""
    d = daemon({"ftp": {"connections_per_address": str(PARALLEL_CLIENTS)}})  # every client is at 127.0.0.1
    generated = render(d, "0012")
    failures: list[str] = []

    def client(number: int) -> None:
        for round_ in range(ROUNDS):
            name, expected = ("big.bin", big) if (number + round_) % 2 else ("cfg0012.xml", generated)
            result = curl("--max-time", "15", *MODES[mode], d.url("ftp", name))
            if result.returncode != 0 or result.stdout != expected:
                failures.append(f"{name}: exit {result.returncode}, {len(result.stdout)} bytes, {result.stderr[-200:]!r}")

    clients = [threading.Thread(target=client, args=(number,)) for number in range(PARALLEL_CLIENTS)]
    for thread in clients:
        thread.start()
    for thread in clients:
        thread.join()
    assert failures == []
    lines = d.wait_log(PARALLEL_CLIENTS * ROUNDS)
    assert len(lines) == PARALLEL_CLIENTS * ROUNDS
    assert all(re.search(r" ok (\S+ )*bytes=", line) for line in lines)
    assert sum(f" bytes={BIG_SIZE} " in line for line in lines) == PARALLEL_CLIENTS * ROUNDS // 2


# -- listening and stopping ----------------------------------------------------------------------------

def test_passive_ports_and_masquerade_address(daemon):
    d = daemon({"ftp": {"masquerade_address": "192.0.2.10"}})
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    parser.read(d.config_path)
    low, high = (int(port) for port in parser["ftp"]["passive_ports"].split("-"))
    with session(d.ports["ftp"]) as client:
        for _ in range(3):
            reply = client.sendcmd("PASV")  # the address a phone behind NAT must use
            numbers = [int(n) for n in re.search(r"\((\d+(?:,\d+){5})\)", reply).group(1).split(",")]
            assert numbers[:4] == [192, 0, 2, 10]
            assert low <= numbers[4] * 256 + numbers[5] <= high
            extended = client.sendcmd("EPSV")
            assert low <= int(re.search(r"\(\|\|\|(\d+)\|\)", extended).group(1)) <= high
    assert curl(d.url("ftp", "README.txt")).returncode == 0  # curl uses EPSV: no address to mask



def test_a_port_in_use_is_one_clear_error_and_nothing_stays_bound(daemon):
    from htekd.config import Address, FtpConfig
    from htekd.listeners import ListenError
    from htekd.listeners.ftp import FtpListener
    from htekd.requestlog import RequestLog

    with socket.socket() as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        d = daemon({"ftp": {"listen": f"{LOOPBACK}:{port}"}}, wait=False)
        assert d.wait_exit() == 1
        assert f"htekd: ftp: cannot listen on {LOOPBACK}:{port}: Address already in use" in d.stderr_lines()
        first = free_port()
        listener = FtpListener(FtpConfig(True, (Address(LOOPBACK, first), Address(LOOPBACK, port))), None,
                               RequestLog(io.StringIO()))
        with pytest.raises(ListenError, match=f"cannot listen on {LOOPBACK}:{port}: Address already in use"):
            listener.start()
    with socket.socket() as again:  # the first address was let go
        again.bind((LOOPBACK, first))


def test_stop_with_clients_connected(daemon, site):
    with open(site / "root" / "files" / "huge.bin", "wb") as huge:
        huge.truncate(HUGE_SIZE)
    d = daemon()
    idle = session(d.ports["ftp"])
    busy = session(d.ports["ftp"])
    busy.voidcmd("TYPE I")
    stalled = busy.transfercmd("RETR huge.bin")  # never read: the transfer stays in flight
    started = time.monotonic()
    assert d.stop() == 0
    assert time.monotonic() - started < 5
    line = d.wait_log(lambda text: '"/huge.bin"' in text)
    assert " failed " in line
    for connection in (stalled, idle, busy):
        connection.close()
