"""`[htekd] workers = N`: several processes on the same ports, one main process that reloads, stops
and restarts them; each client kept on one worker; the request log whole line by line."""

from __future__ import annotations

import os
import re
import signal
import socket
import threading
import time
from pathlib import Path

import pytest

from conftest import LOOPBACK
from test_daemon import NEW_PHONE, curl, event_lines, notification
from test_watch import ROW

LINE = re.compile(r'^\S+Z (tftp|ftp|http|https) (\S+):\d+ "[^"]*" \S+ \S+( \S+=\S+)* ms=[\d.]+$')


def workers_of(running) -> list[int]:
    """Process ids of the main process's children."""
    children = Path(f"/proc/{running.proc.pid}/task/{running.proc.pid}/children").read_text().split()
    return [int(pid) for pid in children]


def from_address(running, source: str, name: str, protocol: str = "http") -> int:
    """The response code curl gets for `name` asked from the loopback address `source`."""
    return curl(running.url(protocol, name), "--interface", source)[0]


def test_two_workers_serve_every_protocol_and_stop_cleanly(daemon):
    running = daemon({"htekd": {"workers": "2"}})
    lines = event_lines(running.stderr_text())
    assert lines[-1] == "htekd: ready"
    assert [line.split()[2] for line in lines if line.startswith("htekd: listening ")] == ["tftp", "ftp", "http", "https", "admin", "pnp"]
    children = workers_of(running)
    assert len(children) == 2
    assert curl(running.url("http", "cfg0012.xml"))[0] == 200
    assert curl(running.url("tftp", "cfg0012.xml"))[0] == 0
    assert curl(running.url("ftp", "cfg0012.xml"))[0] == 226
    assert running.stop() == 0
    assert running.stderr_lines()[-2:] == ["htekd: stopping", "htekd: stopped"]
    for pid in children:
        assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()


def test_one_client_stays_on_one_worker(daemon):
    """The enumeration throttle counts per address in one process: it bites at the same request
    with two workers as with one, even though every request is a new connection."""
    running = daemon({"htekd": {"workers": "2"}, "access": {"throttle": "4"}})
    for source in ("127.0.0.2", "127.0.0.3"):  # one on each worker
        codes = [from_address(running, source, f"cfg001fc10009{number:02d}.xml") for number in range(6)]
        assert codes == [200] * 4 + [403] * 2, (source, codes)
    assert running.stop() == 0


def test_a_client_rotating_the_addresses_of_its_network_meets_one_worker(daemon):
    """With the throttle counting IPv4 /24s, the workers are chosen by /24 too: addresses of one /24
    (which alone would be spread over both workers) share one count."""
    running = daemon({"htekd": {"workers": "2"}, "access": {"throttle": "4", "throttle_ipv4_prefix": "24"}})
    codes = [from_address(running, f"127.0.9.{number + 2}", f"cfg001fc10008{number:02d}.xml") for number in range(6)]
    assert codes == [200] * 4 + [403] * 2, codes
    assert running.stop() == 0


def test_sighup_reloads_every_worker_and_a_broken_edit_keeps_the_last_good_state(daemon, site):
    running = daemon({"htekd": {"workers": "2", "unknown_phones": "deny"}})
    with open(site / "root" / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write(ROW)
    assert running.reload() == "htekd: reloaded (4 phones)"
    for source in ("127.0.0.2", "127.0.0.3"):
        assert from_address(running, source, f"cfg{NEW_PHONE}.xml") == 200

    common = site / "root" / "settings" / "common.xml"
    common.write_bytes(common.read_bytes().replace(b"</hl_provision>", b""))
    start = len(running.stderr_lines())
    assert running.reload().startswith("htekd: reload failed: ")
    time.sleep(0.5)
    assert len([line for line in running.stderr_lines()[start:] if "reload" in line]) == 1  # one line for all
    for source in ("127.0.0.2", "127.0.0.3"):
        assert from_address(running, source, f"cfg{NEW_PHONE}.xml") == 200
    assert running.stop() == 0


def test_a_worker_that_dies_is_started_again(daemon):
    running = daemon({"htekd": {"workers": "2"}})
    first, second = workers_of(running)
    start = len(running.stderr_lines())
    os.kill(second, signal.SIGKILL)
    assert running.wait_stderr(lambda line: line.startswith("htekd: worker 2 ready"), start=start) is not None, \
        running.stderr_text()
    said = [line for line in running.stderr_lines()[start:] if "worker" in line]
    assert said[0] == f"htekd: worker 2 (pid {second}) ended with signal 9; starting it again"
    now = workers_of(running)
    assert first in now and second not in now and len(now) == 2
    for source in ("127.0.0.2", "127.0.0.3"):
        assert from_address(running, source, "cfg0012.xml") == 200
    assert running.stop() == 0


def test_the_request_log_is_one_whole_line_per_request(daemon):
    running = daemon({"htekd": {"workers": "2"}})
    count, threads = 40, []

    def ask(source: str) -> None:
        for number in range(count // 4):
            curl(running.url("http", f"cfg001fc1000001.xml?{'x' * 3000}{number}"), "--interface", source)

    for source in ("127.0.0.2", "127.0.0.3", "127.0.0.4", "127.0.0.5"):
        threads.append(threading.Thread(target=ask, args=(source,)))
        threads[-1].start()
    for thread in threads:
        thread.join(60)
    lines = running.wait_log(count)
    assert len(lines) == count
    assert all(LINE.match(line) for line in lines), [line[:120] for line in lines if not LINE.match(line)]
    assert running.stop() == 0


def test_the_request_log_on_standard_output_keeps_whole_lines(daemon):
    running = daemon({"htekd": {"workers": "2", "log": "-"}})
    for source in ("127.0.0.2", "127.0.0.3"):
        assert from_address(running, source, "cfg0012.xml") == 200
    assert running.stop() == 0
    lines = running.stdout_text().splitlines()
    assert len(lines) == 2 and all(LINE.match(line) for line in lines)
    assert sorted(line.split()[2].rpartition(":")[0] for line in lines) == ["127.0.0.2", "127.0.0.3"]


def test_a_port_in_use_is_one_line_and_nothing_keeps_running(daemon):
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as taken:
        taken.bind((LOOPBACK, 0))
        taken.listen()
        port = taken.getsockname()[1]
        running = daemon({"htekd": {"workers": "2"}, "http": {"listen": f"{LOOPBACK}:{port}"}}, wait=False)
        assert running.wait_exit(20) == 1
    errors = [line for line in event_lines(running.stderr_text()) if not line.startswith("htekd: listening")]
    assert errors == [f"htekd: http: cannot listen on {LOOPBACK}:{port}: Address already in use"]


def test_one_worker_is_one_process(daemon):
    running = daemon({"htekd": {"workers": "1"}})
    assert workers_of(running) == []
    assert curl(running.url("http", "cfg0012.xml"))[0] == 200
    assert running.stop() == 0


def test_workers_that_are_no_number_is_one_line(daemon):
    running = daemon({"htekd": {"workers": "many"}}, wait=False)
    assert running.wait_exit() == 1
    [line] = event_lines(running.stderr_text())
    assert "[htekd] workers: expected a number, got 'many'" in line


def test_systemd_hears_from_the_main_process_only(daemon, tmp_path):
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as listener:
        address = str(tmp_path / "notify.sock")
        listener.bind(address)
        listener.settimeout(10)
        running = daemon({"htekd": {"workers": "2"}}, env={"NOTIFY_SOCKET": address})
        ready = notification(listener)
        assert ready["READY"] == "1" and ready["MAINPID"] == str(running.proc.pid)
        running.reload()
        assert notification(listener)["RELOADING"] == "1"
        assert notification(listener)["READY"] == "1"
        running.proc.send_signal(signal.SIGTERM)
        assert notification(listener)["STOPPING"] == "1"
        assert running.wait_exit() == 0
        listener.settimeout(0.5)
        with pytest.raises(socket.timeout):  # nothing from the workers, before or after
            listener.recv(4096)


def test_watch_reloads_every_worker_once(daemon, site):
    running = daemon({"htekd": {"workers": "2", "watch": "yes", "unknown_phones": "deny"}})
    start = len(running.stderr_lines())
    with open(site / "root" / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write(ROW)
    line = running.wait_stderr(lambda text: text.startswith("htekd: reloaded"), start=start, timeout=15)
    assert line == "htekd: reloaded (4 phones)", running.stderr_text()
    for source in ("127.0.0.2", "127.0.0.3"):
        assert from_address(running, source, f"cfg{NEW_PHONE}.xml") == 200
    time.sleep(1)
    assert [text for text in running.stderr_lines()[start:] if "reload" in text] == [
        "htekd: root changed, reloading", "htekd: reloaded (4 phones)"]
    assert running.stop() == 0
