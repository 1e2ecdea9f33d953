"""The administrator's console as a user meets it: pages, /api/ and /metrics over curl, logins,
CSRF, escaping of what strangers send, secrets kept out, request history across restarts."""

from __future__ import annotations

import json
import re
import shutil
import socket
import subprocess
import time

import pytest
from prometheus_client.parser import text_string_to_metric_families

from conftest import LOOPBACK
from contenttree import htekd

XSS = "<img src=x onerror=alert(1)>"
SECRET = "s3cret-1001"  # phones.csv of the example: 001fc1000001's SIP password
ADMIN_PASSWORD = "the console password"
ADMIN_HA1 = "md5-ha1:" + __import__("hashlib").md5(f"admin:htekd:{ADMIN_PASSWORD}".encode()).hexdigest()
PAGES = ("/", "/phones", "/phones/001fc1000001", "/requests", "/problems")
APIS = ("/api/phones", "/api/phones/001fc1000001", "/api/requests", "/api/problems", "/metrics")
needs = {tool: pytest.mark.skipif(shutil.which(tool) is None, reason=f"{tool} is not installed") for tool in ("curl", "atftp")}


def curl(*args: str) -> subprocess.CompletedProcess:
    """curl as an administrator runs it; -w appends the status code on a line of its own."""
    done = subprocess.run(["curl", "-sS", "--max-time", "20", "-w", "\n%{http_code}", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    body, _, status = done.stdout.rpartition("\n")
    done.body, done.status = body, int(status)
    return done


def admin_url(running, path: str = "/") -> str:
    return f"http://{LOOPBACK}:{running.ports['admin']}{path}"


def provision(running) -> None:
    """What phones ask for: two real phones, and a stranger's name with markup in it."""
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-A", "Htek UC924 2.0.4.2 00:1f:c1:00:00:01",
                    running.url("http", "cfg001fc1000001.xml")], check=True, timeout=30)
    subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("tftp", "cfg001fc10000ff.xml")], check=True, timeout=30)
    subprocess.run(["atftp", "-g", "-r", XSS, "-l", "/dev/null", LOOPBACK, str(running.ports["tftp"])],
                   capture_output=True, timeout=30)
    running.wait_log(lambda line: "onerror" in line)
    running.wait_log(lambda line: "001fc10000ff" in line)


def wait_history(running, predicate, timeout: float = 10.0) -> list[dict]:
    """/api/requests once the store has written what the predicate waits for (it writes in batches)."""
    deadline = time.monotonic() + timeout
    while True:
        records = json.loads(curl(admin_url(running, "/api/requests?limit=1000")).body)["requests"]
        if predicate(records) or time.monotonic() > deadline:
            return records
        time.sleep(0.1)


@needs["curl"]
@needs["atftp"]
def test_every_page_and_api_shows_stranger_text_escaped_and_no_secret(daemon):
    running = daemon()
    provision(running)
    wait_history(running, lambda records: any(record["name"] == XSS for record in records))
    for path in PAGES + APIS:
        answer = curl("-i", admin_url(running, path))
        assert answer.status == 200, (path, answer.body)
        assert XSS not in answer.body, path  # never as markup
        assert SECRET not in answer.body, path
        assert "X-Content-Type-Options: nosniff" in answer.body
        assert "Content-Security-Policy: default-src 'self'" in answer.body
    requests_page = curl(admin_url(running, "/requests")).body
    assert "&lt;img src=x onerror=alert(1)&gt;" in requests_page
    phone_page = curl(admin_url(running, "/phones/001fc1000001")).body
    assert "Account1_AuthenticatePassword" in phone_page and "***" in phone_page
    assert "phones.csv:2 column Account1_AuthenticatePassword" in phone_page


@needs["curl"]
@needs["atftp"]
def test_api_answers_parse_and_say_what_phones_did(daemon):
    running = daemon()
    provision(running)
    records = wait_history(running, lambda records: len(records) >= 3)
    assert {(r["protocol"], r["name"], r["outcome"]) for r in records} >= {
        ("http", "/cfg001fc1000001.xml", "ok"), ("tftp", XSS, "not-found")}
    answer = curl(admin_url(running, "/api/requests"))
    assert "<" not in answer.body  # escaped in JSON too, in case it is ever read as HTML

    phones = json.loads(curl(admin_url(running, "/api/phones?all=yes")).body)
    by_mac = {row["mac"]: row for row in phones["phones"]}
    assert phones["total"] == 4  # three in the inventory, one seen that is not
    assert by_mac["001fc1000001"] | {"model": "UC924", "group": "sales", "name": "Zoë Müller", "extension": "1001",
                                     "firmware": "2.0.4.2", "outcome": "ok", "in_inventory": True} == by_mac["001fc1000001"]
    assert by_mac["001fc10000ff"]["in_inventory"] is False
    assert by_mac["001fc1000003"]["last_seen"] == 0

    one = json.loads(curl(admin_url(running, "/api/phones/00:1F:C1:00:00:01")).body)
    parameters = {line["code"]: line for line in one["configuration"]["parameters"]}
    assert parameters["P34"]["value"] == "***" and parameters["P34"]["secret"] is True
    assert parameters["P47"]["source"] == "settings/common.xml:5"
    assert one["requests"][0]["name"] == "/cfg001fc1000001.xml"

    problems = json.loads(curl(admin_url(running, "/api/problems")).body)
    assert [group["who"] for group in problems["requests"]["unknown phones"]] == ["001fc10000ff"]
    assert problems["last_reload"] is None
    assert curl(admin_url(running, "/api/nothing")).status == 404
    assert curl(admin_url(running, "/api/phones/001fc1999999")).status == 404


@needs["curl"]
def test_metrics_are_prometheus_text_without_names_or_secrets(daemon):
    running = daemon()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("http", "cfg001fc1000001.xml")], check=True, timeout=30)
    subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("http", f"x{SECRET}")], timeout=30)
    running.wait_log(2)
    assert running.reload().startswith("htekd: reloaded")
    text = curl(admin_url(running, "/metrics")).body
    samples = {(sample.name, tuple(sorted(sample.labels.items()))): sample.value
               for family in text_string_to_metric_families(text) for sample in family.samples}
    assert samples[("htekd_requests_total", (("kind", "phone-config"), ("outcome", "ok"), ("protocol", "http")))] == 1
    assert samples[("htekd_sent_bytes_total", (("protocol", "http"),))] > 1000
    assert samples[("htekd_phones_in_inventory", ())] == 3
    assert samples[("htekd_reloads_total", (("result", "ok"),))] == 1
    assert time.time() - samples[("htekd_last_reload_timestamp_seconds", ())] < 60
    assert SECRET not in text and "cfg001fc1000001" not in text


@needs["curl"]
def test_a_login_guards_pages_api_and_metrics(daemon, tmp_path):
    running = daemon({"admin": {"user": "admin", "password": ADMIN_HA1}})
    page = curl(admin_url(running, "/phones?q=1"))
    assert page.status == 303
    for path in APIS:
        assert curl(admin_url(running, path)).status == 401
        assert curl("--digest", "-u", f"admin:{ADMIN_PASSWORD}", admin_url(running, path)).status == 200
        assert curl("-u", f"admin:{ADMIN_PASSWORD}", admin_url(running, path)).status == 200
        assert curl("-u", "admin:wrong", admin_url(running, path)).status == 401

    jar = tmp_path / "cookies"
    wrong = curl("-c", str(jar), "-d", "user=admin&password=nope", admin_url(running, "/login"))
    assert wrong.status == 401 and "Wrong user or password" in wrong.body
    headers = tmp_path / "headers"
    good = curl("-c", str(jar), "-b", str(jar), "-D", str(headers), "-d",
                f"user=admin&password={ADMIN_PASSWORD}&next=/phones", admin_url(running, "/login"))
    assert good.status == 303
    assert re.search(r"Set-Cookie: htekd_console=[\w-]+; Path=/; HttpOnly; SameSite=Strict\r?$",
                     headers.read_text(), re.MULTILINE | re.IGNORECASE)
    assert curl("-b", str(jar), admin_url(running, "/phones")).status == 200
    running.wait_stderr(lambda line: line == f"htekd: console: admin logged in from {LOOPBACK}")
    assert running.wait_stderr(lambda line: "console: wrong login" in line)
    outside = curl("-d", "user=admin&password=x&next=https://evil.example/", admin_url(running, "/login"))
    assert "evil.example" not in outside.body


def test_check_refuses_a_console_elsewhere_than_loopback_without_login(site):
    config = site / "htekd.conf"
    config.write_text(config.read_text().replace("listen = 127.0.0.1:8081", "listen = 0.0.0.0:8081"))
    done = htekd("check", "-c", str(config))
    assert done.returncode == 1
    assert re.fullmatch(r".*htekd\.conf:\d+: error: \[admin\] user: a login \(user and password\) is required to listen "
                        r"on 0\.0\.0\.0:8081: only loopback addresses may go without\n", done.stdout.decode()), done.stdout
    config.write_text(config.read_text() + f"user = admin\npassword = {ADMIN_HA1}\n")
    assert htekd("check", "-c", str(config)).returncode == 0


@needs["curl"]
def test_check_sync_needs_the_form_token_and_a_page_by_name_needs_the_address(daemon, tmp_path):
    running = daemon()
    jar = tmp_path / "cookies"
    page = curl("-c", str(jar), admin_url(running, "/phones/001fc1000001")).body
    token = re.search(r'name="csrf" value="([^"]+)"', page)[1]
    forged = curl("-b", str(jar), "-d", "csrf=guess", admin_url(running, "/phones/001fc1000001/check-sync"))
    assert forged.status == 403
    assert curl("-d", f"csrf={token}", admin_url(running, "/phones/001fc1000001/check-sync")).status == 403  # no cookie
    assert running.wait_stderr(lambda line: "console: refused a /phones/001fc1000001/check-sync" in line)
    rebound = curl("-H", "Host: console.evil.example", admin_url(running, "/api/phones"))
    assert rebound.status == 421


@needs["curl"]
def test_request_history_survives_a_restart_and_is_bounded(daemon):
    running = daemon({"admin": {"history": "5"}})
    for number in range(8):
        subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("http", f"file{number}.bin")], timeout=30)
    running.wait_log(8)
    wait_history(running, lambda records: records and records[0]["name"] == "/file7.bin")
    assert running.stop() == 0
    again = daemon({"admin": {"history": "5"}})
    names = [record["name"] for record in wait_history(again, lambda records: False, timeout=0)]
    assert names == [f"/file{number}.bin" for number in (7, 6, 5, 4, 3)]
    filtered = json.loads(curl(admin_url(again, "/api/requests?outcome=ok&protocol=http")).body)["requests"]
    assert filtered == []


@needs["curl"]
def test_phones_table_filters_sorts_pages_and_downloads_csv(daemon):
    running = daemon()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("http", "cfg001fc1000002.xml")], timeout=30)
    page = curl(admin_url(running, "/phones?q=smith")).body
    assert "001fc1000003" in page and "001fc1000001" not in page
    order = re.findall(r'<a href="/phones/(\w+)">', curl(admin_url(running, "/phones?sort=extension&order=desc")).body)
    assert order == ["001fc1000003", "001fc1000002", "001fc1000001"]
    assert "1 phones" in curl(admin_url(running, "/phones?state=never&q=zo")).body
    csv_text = curl(admin_url(running, "/phones.csv?q=sales")).body
    lines = csv_text.splitlines()
    assert lines[0].startswith("mac,model,group,name,extension,address")
    assert [line.split(",")[0] for line in lines[1:]] == ["001fc1000001", "001fc1000002"]


@needs["curl"]
def test_the_console_over_tls_takes_the_certificate_of_https(daemon):
    running = daemon({"admin": {"tls": "yes", "user": "admin", "password": ADMIN_HA1}})
    url = f"https://localhost:{running.ports['admin']}/api/phones"
    answer = curl("--cacert", str(running.cacert), "--resolve", f"localhost:{running.ports['admin']}:{LOOPBACK}",
                  "-u", f"admin:{ADMIN_PASSWORD}", url)
    assert answer.status == 200 and json.loads(answer.body)["total"] == 3
    jar_line = curl("-i", "--cacert", str(running.cacert), "--resolve", f"localhost:{running.ports['admin']}:{LOOPBACK}",
                    "-d", f"user=admin&password={ADMIN_PASSWORD}", f"https://localhost:{running.ports['admin']}/login").body
    assert re.search(r"Set-Cookie: htekd_console=[\w-]+; Path=/; HttpOnly; SameSite=Strict; Secure", jar_line)


@needs["curl"]
def test_a_name_that_is_not_utf8_is_kept_in_the_history_as_the_log_writes_it(daemon):
    running = daemon()
    subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("http", "%FFcfg.bin")], timeout=30)
    subprocess.run(["curl", "-sS", "-o", "/dev/null", running.url("http", "after.bin")], timeout=30)
    records = wait_history(running, lambda records: any(record["name"] == "/after.bin" for record in records))
    assert [record["name"] for record in records] == ["/after.bin", "/\\udcffcfg.bin"]
    assert '"/\\udcffcfg.bin"' in running.wait_log(lambda line: "cfg.bin" in line)


@needs["curl"]
def test_problems_show_a_failed_reload_and_what_check_says(daemon):
    running = daemon()
    common = running.root / "settings" / "common.xml"
    common.write_text(common.read_text().replace("<P130", "<P130 broken=", 1))
    assert running.reload().startswith("htekd: reload failed: settings/common.xml:")
    problems = json.loads(curl(admin_url(running, "/api/problems")).body)
    assert problems["last_reload"]["result"].startswith("reload failed: settings/common.xml:")
    assert any(line.startswith("settings/common.xml:") and ": error: " in line for line in problems["check"])
    page = curl(admin_url(running, "/problems")).body
    assert "reload failed: settings/common.xml:" in page
    metrics = curl(admin_url(running, "/metrics")).body
    assert 'htekd_reloads_total{result="failed"} 1.0' in metrics

    common.write_text(common.read_text().replace("<P130 broken=", "<P130", 1))
    assert running.reload().startswith("htekd: reloaded")
    problems = json.loads(curl(admin_url(running, "/api/problems")).body)  # checked again after the reload
    assert problems["last_reload"]["result"].startswith("reloaded")
    assert not any(": error: " in line for line in problems["check"])


@needs["curl"]
def test_metrics_count_tftp_transfers_under_way(daemon):
    running = daemon({"tftp": {"timeout": "3", "retries": "2"}})
    (running.root / "files" / "big.bin").write_bytes(bytes(100_000))
    phone = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # asks, takes block 1, never acknowledges it
    try:
        phone.settimeout(5)
        phone.sendto(b"\x00\x01big.bin\x00octet\x00", (LOOPBACK, running.ports["tftp"]))
        assert phone.recvfrom(1024)[0][:4] == b"\x00\x03\x00\x01"

        def under_way() -> float:
            text = curl(admin_url(running, "/metrics")).body
            return next(sample.value for family in text_string_to_metric_families(text) for sample in family.samples
                        if sample.name == "htekd_transfers_in_flight")

        assert under_way() == 1
        running.wait_log(lambda line: '"big.bin"' in line and " failed " in line, timeout=20)
        assert under_way() == 0
    finally:
        phone.close()


def test_metrics_count_the_connections_open_per_protocol(daemon):
    running = daemon()

    def open_now() -> dict[str, float]:
        text = curl(admin_url(running, "/metrics")).body
        return {sample.labels["protocol"]: sample.value for family in text_string_to_metric_families(text)
                for sample in family.samples if sample.name == "htekd_connections_open"}

    held = [socket.create_connection((LOOPBACK, running.ports[protocol]), timeout=10) for protocol in ("http", "ftp")]
    try:
        assert held[1].recv(100).startswith(b"220")  # the FTP session is under way
        counts = open_now()
        assert counts["http"] >= 1 and counts["ftp"] == 1 and counts["https"] == 0
    finally:
        for sock in held:
            sock.close()
