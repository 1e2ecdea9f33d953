"""`[htekd] state`: phones seen in SQLite by default, or in one PostgreSQL database that several
servers share; a database that goes away never stops a phone being served."""

from __future__ import annotations

import json
import shutil
import time

import pytest

import postgres
from test_daemon import curl, event_lines, htekd

pytestmark = pytest.mark.skipif(not postgres.available(), reason="PostgreSQL server binaries not installed")

PASSWORD = "hunter22-not-logged"


@pytest.fixture(scope="module")
def server():
    cluster = postgres.Postgres()
    cluster.start()
    yield cluster
    cluster.remove()


@pytest.fixture
def database(server, request):
    """A fresh database on the running server; the server is running again at the end of the test."""
    name = "htekd_" + request.node.name.replace("[", "_").replace("]", "").replace("-", "_").lower()[:40]
    url = server.create_database(name)
    yield url
    if not (server.data / "postmaster.pid").exists():
        server.start()


def phones(config, *options: str) -> list[dict]:
    done = htekd("phones", "-c", str(config), "--json", *options)
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


def wait_for(check, timeout: float = 15.0):
    """check() until it returns something true, or fail after `timeout`."""
    deadline = time.monotonic() + timeout
    while True:
        result = check()
        if result:
            return result
        if time.monotonic() > deadline:
            pytest.fail(f"not within {timeout}s: {check.__doc__ or check}")
        time.sleep(0.2)


def agent(mac: str, model: str = "UC924") -> str:
    return f"Htek {model} 2.0.4.2 {':'.join(mac[i:i + 2] for i in range(0, 12, 2))}"


def test_two_servers_share_the_phones_they_saw(daemon, site, database):
    first = daemon({"htekd": {"state": database}})
    first_config = site / "first.conf"
    shutil.copy(first.config_path, first_config)
    second = daemon({"htekd": {"state": database, "state_dir": str(site / "state-second"),
                               "log": str(site / "second.log")}})

    assert curl(first.url("http", "cfg001fc1000001.xml"), "-A", agent("001fc1000001"))[0] == 200
    assert curl(second.url("http", "cfg001fc1000002.xml"), "-A", agent("001fc1000002", "UC926"))[0] == 200
    assert curl(second.url("tftp", "cfg001fc1000001.xml"))[0] == 0  # the first phone, now on the second server

    def both_seen():
        """both phones in the first server's view, the first with its two requests"""
        seen = {row["mac"]: row for row in phones(first_config)}
        return seen if len(seen) == 2 and seen["001fc1000001"]["requests"] == 2 else None

    seen = wait_for(both_seen)
    assert seen["001fc1000002"]["model"] == "UC926" and seen["001fc1000002"]["protocol"] == "http"
    assert seen["001fc1000001"]["protocol"] == "tftp"  # the latest request, whichever server took it
    assert seen["001fc1000001"]["model"] == "UC924"  # a fact the TFTP request did not carry is kept
    assert phones(second.config_path) == phones(first_config)
    assert not (site / "state" / "phones.sqlite").exists()  # nothing went to the embedded store

    assert curl(first.url("http", "cfg0012.xml"), "-A", agent("001fc1000001"))[0] == 200
    learned = wait_for(lambda: phones(second.config_path, "--devcodes"))
    assert [(row["devcode"], row["model"]) for row in learned] == [("0012", "UC924")]
    for running in (first, second):
        assert running.stop() == 0
        assert "phones seen" not in running.stderr_text()


def test_losing_the_database_keeps_serving_and_writes_when_it_is_back(daemon, server, database):
    running = daemon({"htekd": {"state": database}})
    assert curl(running.url("http", "cfg001fc1000001.xml"), "-A", agent("001fc1000001"))[0] == 200
    wait_for(lambda: phones(running.config_path))

    server.stop()
    for attempt in range(3):
        code, body = curl(running.url("http", "cfg001fc1000002.xml"), "-A", agent("001fc1000002", "UC926"))
        assert code == 200 and b"<hl_provision" in body
        time.sleep(1)
    assert curl(running.url("tftp", "cfg0012.xml"))[0] == 0
    lost = running.wait_stderr(lambda line: line.startswith("htekd: phones seen: cannot write postgresql://"))
    assert lost is not None, running.stderr_text()
    assert "serving on" in lost
    unreadable = htekd("phones", "-c", str(running.config_path))
    assert unreadable.returncode == 1 and len(event_lines(unreadable.stderr)) == 1
    assert "cannot read postgresql://" in unreadable.stderr

    server.start()
    assert running.wait_stderr(lambda line: line.startswith("htekd: phones seen: writing postgresql://"),
                               timeout=15) is not None, running.stderr_text()
    seen = {row["mac"]: row for row in phones(running.config_path)}
    assert seen["001fc1000002"]["requests"] == 3  # every request made while it was down
    assert seen["001fc1000001"]["requests"] == 1
    outage = [line for line in running.stderr_lines() if line.startswith("htekd: phones seen")]
    assert len(outage) == 2, outage  # one line when it went, one when it came back
    assert running.stop() == 0


def test_a_server_starts_and_serves_while_the_database_is_down(daemon, server, database):
    url = database.replace("postgres@", f"postgres:{PASSWORD}@")
    server.stop()
    running = daemon({"htekd": {"state": url}})
    assert curl(running.url("http", "cfg001fc1000001.xml"), "-A", agent("001fc1000001"))[0] == 200
    server.start()
    [phone] = wait_for(lambda: phones(running.config_path))
    assert phone["mac"] == "001fc1000001"
    assert running.stop() == 0
    assert PASSWORD not in running.stderr_text()
    assert any(line.startswith("htekd: phones seen: cannot write postgresql://postgres@/")
               for line in running.stderr_lines())


@pytest.mark.parametrize("state, expected", [
    ("mysql://db/htekd", "[htekd] state: expected sqlite or a URL such as postgresql://"),
    ("postgresql://db/htekd?colour=blue", "[htekd] state: not a PostgreSQL URL: invalid URI query parameter"),
])
def test_a_state_that_is_no_database_is_one_line(daemon, site, state, expected):
    running = daemon({"htekd": {"state": state}}, wait=False)
    assert running.wait_exit() == 1
    [line] = event_lines(running.stderr_text())
    assert expected in line and "htekd.conf" in line
    done = htekd("phones", "-c", str(running.config_path))
    assert done.returncode == 1 and expected in done.stderr
