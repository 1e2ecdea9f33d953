"""`htekd serve` as an administrator runs it: a real process, real clients, signals, systemd."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK, free_port

HTEK_AGENT = "Htek UC924 2.0.4.2 00:1f:c1:00:00:01"
README = b"Files in this folder are served to phones as they are.\n"
NEW_PHONE = "001fc10000aa"


def curl(url: str, *options: str, cacert: Path | None = None) -> tuple[int, bytes]:
    """(response code, body) as curl sees them; the code is 0 for TFTP and on transfer errors."""
    command = ["curl", "-sS", "--max-time", "10", "-w", "\n%{response_code}", *options]
    if cacert:
        command += ["--cacert", str(cacert)]
    done = subprocess.run([*command, url], capture_output=True, timeout=20)
    body, _, code = done.stdout.rpartition(b"\n")
    return int(code or 0), body


def htekd(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [env.get("PYTHONPATH"), repo]))
    return subprocess.run([sys.executable, "-m", "htekd", *args], capture_output=True, text=True, env=env, timeout=30)


def event_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line.strip()]


def bindable(kind: int, port: int) -> bool:
    with socket.socket(socket.AF_INET, kind) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
        return True


# -- serving -------------------------------------------------------------------------------------

def test_serves_the_example_tree_over_every_protocol(daemon):
    running = daemon()
    lines = running.stderr_text().splitlines()
    for protocol in ("tftp", "ftp", "http", "https"):
        assert f"htekd: listening {protocol} {LOOPBACK}:{running.ports[protocol]}" in lines
    assert lines[-1] == "htekd: ready"

    assert curl(running.url("http", "README.txt")) == (200, README)
    assert curl(running.url("https", "README.txt"), cacert=running.cacert) == (200, README)
    assert curl(running.url("tftp", "README.txt"))[1] == README
    assert curl(running.url("ftp", "README.txt"))[1] == README
    code, body = curl(running.url("http", "cfg001fc1000001.xml"), "-A", HTEK_AGENT)
    assert code == 200 and b"<hl_provision" in body and b"s3cret-1001" in body


# -- stopping ------------------------------------------------------------------------------------

@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_stops_cleanly_and_frees_the_ports(daemon, sig):
    running = daemon()
    assert curl(running.url("http", "README.txt")) == (200, README)
    held = (("tftp", socket.SOCK_DGRAM), ("ftp", socket.SOCK_STREAM), ("http", socket.SOCK_STREAM),
            ("https", socket.SOCK_STREAM))
    assert not any(bindable(kind, running.ports[protocol]) for protocol, kind in held)  # they are really in use
    started = time.monotonic()
    assert running.stop(sig, timeout=10) == 0
    assert time.monotonic() - started < 5
    assert running.stderr_text().splitlines()[-2:] == ["htekd: stopping", "htekd: stopped"]
    assert "Traceback" not in running.stderr_text()


# -- refusing to start ---------------------------------------------------------------------------

@pytest.mark.parametrize("protocol, kind", [("http", socket.SOCK_STREAM), ("tftp", socket.SOCK_DGRAM),
                                            ("ftp", socket.SOCK_STREAM), ("https", socket.SOCK_STREAM)])
def test_port_in_use_is_one_line_and_exit_1(daemon, protocol, kind):
    with socket.socket(socket.AF_INET, kind) as squatter:
        squatter.bind((LOOPBACK, 0))
        if kind == socket.SOCK_STREAM:
            squatter.listen()
        taken = f"{LOOPBACK}:{squatter.getsockname()[1]}"
        running = daemon({protocol: {"listen": taken}}, wait=False)
        assert running.wait_exit(15) == 1
    lines = event_lines(running.stderr_text())
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"htekd: {protocol}") and taken in lines[0]


@pytest.mark.parametrize(
    "overrides, expected",
    [
        ({"tftp": {"listen": "127.0.0.1"}}, "[tftp] listen"),
        ({"http": {"enabled": "maybe"}}, "[http] enabled"),
        ({"htekd": {"log_format": "xml"}}, "[htekd] log_format"),
        ({"ftp": {"colour": "blue"}}, "[ftp] colour"),
        ({"https": {"certificate": "missing.pem"}}, "[https] certificate"),
    ],
)
def test_bad_config_is_one_line_naming_file_section_and_key(daemon, overrides, expected):
    running = daemon(overrides, wait=False)
    assert running.wait_exit(15) == 1
    lines = event_lines(running.stderr_text())
    assert len(lines) == 1, lines
    assert re.match(rf"htekd: {re.escape(str(running.config_path))}:[0-9]+: error: {re.escape(expected)}: ", lines[0]), lines


def test_unusable_tls_key_is_one_line(daemon, site):
    (site / "garbage.pem").write_text("not a key\n")
    running = daemon({"https": {"private_key": str(site / "garbage.pem")}}, wait=False)
    assert running.wait_exit(15) == 1
    lines = event_lines(running.stderr_text())
    assert len(lines) == 1 and lines[0].startswith("htekd: https") and "garbage.pem" in lines[0], lines


def test_missing_config_file(tmp_path):
    done = htekd("serve", "-c", str(tmp_path / "nowhere.conf"))
    assert done.returncode == 1
    assert event_lines(done.stderr) == [f"htekd: {tmp_path / 'nowhere.conf'}: error: cannot read: No such file or directory"]


def test_broken_tree_at_start_is_one_line(daemon, site):
    (site / "root" / "settings" / "common.xml").write_text("<hl_provision><config>", encoding="utf-8")
    running = daemon(wait=False)
    assert running.wait_exit(15) == 1
    lines = event_lines(running.stderr_text())
    assert len(lines) == 1 and "settings/common.xml" in lines[0], lines


def test_state_folder_that_cannot_be_created(daemon, site):
    (site / "blocker").write_text("a file, not a folder")
    running = daemon({"htekd": {"state_dir": str(site / "blocker" / "state")}}, wait=False)
    assert running.wait_exit(15) == 1
    lines = event_lines(running.stderr_text())
    assert len(lines) == 1 and "cannot create state folder" in lines[0] and "blocker" in lines[0], lines


def test_log_file_that_cannot_be_opened(daemon, site):
    running = daemon({"htekd": {"log": str(site / "no-such-dir" / "requests.log")}}, wait=False)
    assert running.wait_exit(15) == 1
    lines = event_lines(running.stderr_text())
    assert len(lines) == 1 and "[htekd] log" in lines[0] and "no-such-dir" in lines[0], lines


# -- reloading -----------------------------------------------------------------------------------

def test_sighup_picks_up_a_new_phone_and_survives_a_broken_edit(daemon, site):
    running = daemon({"htekd": {"unknown_phones": "deny"}})
    new_phone = running.url("http", f"cfg{NEW_PHONE}.xml")
    assert curl(new_phone)[0] != 200

    with open(site / "root" / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write("00:1f:c1:00:00:aa,UC924,sales,1099,pw-1099,New Phone,New,1099\n")
    assert running.reload().startswith("htekd: reloaded")
    code, body = curl(new_phone)
    assert code == 200 and b"1099" in body
    before = curl(running.url("http", "cfg001fc1000001.xml"))
    assert before[0] == 200

    (site / "root" / "settings" / "common.xml").write_text("<hl_provision><config><P47>", encoding="utf-8")
    line = running.reload()
    assert line.startswith("htekd: reload failed: ") and "settings/common.xml" in line
    assert "\n" not in line
    assert curl(running.url("http", "cfg001fc1000001.xml")) == before
    assert curl(new_phone) == (code, body)

    (site / "htekd.conf").write_text("[htekd\n", encoding="utf-8")
    line = running.reload()
    assert line.startswith(f"htekd: reload failed: {running.config_path}")
    assert curl(new_phone) == (code, body)
    assert running.proc.poll() is None


def test_reload_keeps_transfers_in_flight(daemon, site):
    content = os.urandom(2 * 1024 * 1024)
    (site / "root" / "files" / "big.bin").write_bytes(content)
    running = daemon()
    slow = {
        protocol: subprocess.Popen(["curl", "-sS", "--max-time", "30", "--limit-rate", "1M", running.url(protocol, "big.bin")],
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        for protocol in ("http", "tftp", "ftp")
    }
    time.sleep(0.5)
    # Replaced the way an administrator should (a new file renamed over the old one), and reloaded.
    (site / "root" / "files" / "big.bin.new").write_bytes(b"replaced")
    os.replace(site / "root" / "files" / "big.bin.new", site / "root" / "files" / "big.bin")
    assert running.reload().startswith("htekd: reloaded")
    for protocol, transfer in slow.items():
        body, errors = transfer.communicate(timeout=40)
        assert transfer.returncode == 0, (protocol, errors)
        assert body == content, protocol
    assert curl(running.url("http", "big.bin")) == (200, b"replaced")


def test_a_burst_of_sighups_is_survived(daemon):
    running = daemon()
    for _ in range(5):
        running.proc.send_signal(signal.SIGHUP)
    deadline = time.monotonic() + 15
    while not running.wait_stderr(lambda line: line.startswith("htekd: reloaded"), timeout=1):
        assert time.monotonic() < deadline, running.stderr_text()
    time.sleep(1)
    results = [line for line in running.stderr_lines() if line.startswith("htekd: reload")]
    assert 1 <= len(results) <= 5 and all(line.startswith("htekd: reloaded") for line in results), results
    assert curl(running.url("http", "README.txt")) == (200, README)
    assert running.stop() == 0


def test_reload_names_listener_changes_that_need_a_restart(daemon, site):
    running = daemon()
    config = running.config_path.read_text(encoding="utf-8")
    moved = free_port()
    running.config_path.write_text(config.replace(f"{LOOPBACK}:{running.ports['http']}", f"{LOOPBACK}:{moved}"),
                                   encoding="utf-8")
    line = running.reload()
    assert line.startswith("htekd: reloaded") and "restart htekd to apply [http]" in line
    assert curl(running.url("http", "README.txt")) == (200, README)


def test_sighup_reopens_the_request_log(daemon, site):
    running = daemon()
    for rotation in (1, 2):
        curl(running.url("http", "README.txt"))
        running.wait_log(1)
        rotated = running.log_path.with_name(f"requests.log.{rotation}")
        running.log_path.rename(rotated)
        if rotation == 2:  # a broken edit does not stop logrotate from getting its file back
            (site / "root" / "settings" / "common.xml").write_text("<hl_provision>", encoding="utf-8")
        assert running.reload().startswith("htekd: reloaded" if rotation == 1 else "htekd: reload failed")
        assert len([line for line in rotated.read_text().splitlines() if line]) == 1
    curl(running.url("http", "README.txt"))
    assert len(running.wait_log(1)) == 1


# -- systemd notification ------------------------------------------------------------------------

@pytest.mark.parametrize("abstract", [False, True], ids=["path", "abstract"])
def test_notify_socket_gets_ready_reloading_stopping(daemon, tmp_path, abstract):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        if abstract:
            name = f"htekd-test-{os.getpid()}-{time.monotonic_ns()}"
            listener.bind("\0" + name)
            address = "@" + name
        else:
            address = str(tmp_path / "notify.sock")
            listener.bind(address)
        listener.settimeout(10)

        def next_message() -> dict[str, str]:
            fields = listener.recv(4096).decode().split("\n")
            return dict(field.split("=", 1) for field in fields)

        running = daemon(env={"NOTIFY_SOCKET": address})
        assert next_message()["READY"] == "1"

        running.reload()
        reloading = next_message()
        assert reloading["RELOADING"] == "1"
        assert abs(int(reloading["MONOTONIC_USEC"]) - time.clock_gettime_ns(time.CLOCK_MONOTONIC) // 1000) < 30e6
        assert next_message()["READY"] == "1"

        running.proc.send_signal(signal.SIGTERM)
        assert next_message()["STOPPING"] == "1"
        assert running.wait_exit() == 0


# -- phones seen ---------------------------------------------------------------------------------

def wait_for_phones(config: Path, count: int, timeout: float = 10.0) -> list[dict]:
    deadline = time.monotonic() + timeout
    while True:
        done = htekd("phones", "-c", str(config), "--json")
        assert done.returncode == 0, done.stderr
        phones = json.loads(done.stdout)
        if len(phones) >= count or time.monotonic() > deadline:
            return phones
        time.sleep(0.1)


def test_phones_seen_are_recorded_and_listed(daemon):
    running = daemon()
    assert htekd("phones", "-c", str(running.config_path), "--json").stdout.strip() in ("[]", "")
    assert curl(running.url("http", "cfg001fc1000001.xml"), "-A", HTEK_AGENT)[0] == 200

    [phone] = wait_for_phones(running.config_path, 1)
    assert phone["mac"] == "001fc1000001"
    assert phone["model"] == "UC924"
    assert phone["firmware"] == "2.0.4.2"
    assert phone["address"] == LOOPBACK
    assert phone["protocol"] == "http"
    assert phone["last_file"].lstrip("/") == "cfg001fc1000001.xml"
    assert phone["outcome"] == "ok"
    assert phone["requests"] == 1
    assert phone["last_seen"].endswith("Z") and phone["first_seen"] <= phone["last_seen"]

    table = htekd("phones", "-c", str(running.config_path))
    assert table.returncode == 0
    header, row = table.stdout.splitlines()
    assert header.split()[:6] == ["MAC", "MODEL", "FIRMWARE", "OFFERED", "UPGRADE", "ADDRESS"]
    assert row.split()[:3] == ["001fc1000001", "UC924", "2.0.4.2"]
    assert f" {LOOPBACK} " in row

    # Kept across restarts.
    assert running.stop() == 0
    assert [p["mac"] for p in wait_for_phones(running.config_path, 1)] == ["001fc1000001"]
    again = daemon()
    assert curl(again.url("http", "cfg0012.xml"), "-A", HTEK_AGENT)[0] == 200
    again.wait_log(lambda line: "cfg0012.xml" in line)
    assert again.stop() == 0  # what is queued is written at shutdown
    [phone] = json.loads(htekd("phones", "-c", str(again.config_path), "--json").stdout)
    assert phone["requests"] == 2 and phone["last_file"].lstrip("/") == "cfg0012.xml"
    assert phone["devcode"] == "0012"

    # The model-wide file asked for by a UC924 teaches htekd that 0012 means UC924.
    learned = json.loads(htekd("phones", "-c", str(again.config_path), "--devcodes", "--json").stdout)
    assert [(row["devcode"], row["model"]) for row in learned] == [("0012", "UC924")]


def test_phones_without_a_state_database(site):
    (site / "htekd.conf").write_text(
        "[htekd]\nroot = root\nstate_dir = state\nserver_url = http://127.0.0.1\n", encoding="utf-8"
    )
    missing = htekd("phones", "-c", str(site / "htekd.conf"))
    assert missing.returncode == 1 and missing.stdout == ""
    assert event_lines(missing.stderr) == [
        f"htekd phones: state folder {site / 'state'} does not exist ([htekd] state_dir of {site / 'htekd.conf'}): "
        "has htekd serve run with this configuration?"]
    (site / "state").mkdir()
    done = htekd("phones", "-c", str(site / "htekd.conf"), "--json")
    assert done.returncode == 0 and json.loads(done.stdout) == []
    bad = htekd("phones", "-c", str(site / "missing.conf"))
    assert bad.returncode == 1 and len(event_lines(bad.stderr)) == 1


# -- the request log -----------------------------------------------------------------------------

def requests_over_every_protocol(running) -> list[tuple[str, str, str]]:
    """Makes one request per protocol plus a miss; returns (protocol, name, outcome) of each."""
    curl(running.url("http", "cfg001fc1000001.xml"), "-A", HTEK_AGENT)
    curl(running.url("https", "README.txt"), cacert=running.cacert)
    curl(running.url("tftp", "README.txt"))
    curl(running.url("ftp", "README.txt"))
    curl(running.url("http", "no-such-file.bin"))
    return [
        ("http", "cfg001fc1000001.xml", "ok"),
        ("https", "README.txt", "ok"),
        ("tftp", "README.txt", "ok"),
        ("ftp", "README.txt", "ok"),
        ("http", "no-such-file.bin", "not-found"),
    ]


def test_request_log_text_one_line_per_request(daemon):
    running = daemon({"htekd": {"log_format": "text"}})
    expected = requests_over_every_protocol(running)
    running.wait_log(len(expected))
    time.sleep(0.5)  # nothing more may arrive
    lines = running.log_lines()
    assert len(lines) == len(expected), lines
    for line in lines:
        fields = line.split(" ")
        assert fields[0].endswith("Z") and fields[1] in ("tftp", "ftp", "http", "https")
        assert fields[2].startswith(f"{LOOPBACK}:")
        assert "bytes=" in line and "ms=" in line
    seen = {(line.split(" ")[1], json.loads(line.split(" ")[3]).lstrip("/"), line.split(" ")[5]) for line in lines}
    assert seen == set(expected)
    phone_line = running.wait_log(lambda line: "cfg001fc1000001.xml" in line)
    assert " phone-config ok " in phone_line and "mac=001fc1000001" in phone_line and "model=UC924" in phone_line
    assert "s3cret" not in "\n".join(lines)


def test_request_log_json_one_object_per_request(daemon):
    running = daemon({"htekd": {"log_format": "json", "aes_key": "0123456789abcdef"}})
    expected = requests_over_every_protocol(running)
    running.wait_log(len(expected))
    time.sleep(0.5)
    records = running.log_records()
    assert len(records) == len(expected)
    assert {(r["protocol"], r["name"].lstrip("/"), r["outcome"]) for r in records} == set(expected)
    for record in records:
        assert {"time", "protocol", "client", "name", "kind", "outcome", "mac", "model", "bytes", "duration_ms"} <= set(record)
    [phone] = [r for r in records if r["kind"] == "phone-config"]
    assert phone["mac"] == "001fc1000001" and phone["model"] == "UC924" and phone["bytes"] > 0
    [readme] = [r for r in records if r["protocol"] == "ftp"]
    assert readme["kind"] == "static" and readme["bytes"] == len(README)
    [miss] = [r for r in records if r["outcome"] == "not-found"]
    assert miss["bytes"] == 0 and miss["reason"]
    text = running.log_path.read_text(encoding="utf-8")
    assert "s3cret" not in text and "0123456789abcdef" not in text


def test_request_log_to_standard_output(daemon):
    running = daemon({"htekd": {"log": "-"}})
    curl(running.url("http", "README.txt"))
    deadline = time.monotonic() + 10
    while "README.txt" not in running.stdout_text() and time.monotonic() < deadline:
        time.sleep(0.05)
    [line] = event_lines(running.stdout_text())
    assert " http " in line and "README.txt" in line
    assert "htekd:" not in running.stdout_text()
