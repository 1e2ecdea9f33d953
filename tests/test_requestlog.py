"""The request log's writing: on the event loop thread one flush per turn, from any other thread at once."""

from __future__ import annotations

import sys
import threading

from htekd.requestlog import RequestLog
from htekd.resolution import Client, Kind, Resolution, Status

FOUND = Resolution("cfg001fc1000001.xml", "cfg001fc1000001.xml", Kind.PHONE_CONFIG, Status.OK, mac="001fc1000001")
PHONE = Client("tftp", "127.0.0.1", 40000)


def test_lines_from_the_loop_thread_are_flushed_once_per_turn(tmp_path):
    path = tmp_path / "requests.log"
    log = RequestLog.open(str(path))
    turn_end = []
    log.flush_each_turn(turn_end.append)
    for _ in range(3):
        log.record(FOUND, PHONE, "ok", 100)
    assert path.read_text() == "" and len(turn_end) == 1  # one flush asked for three lines
    turn_end.pop()()
    assert len(path.read_text().splitlines()) == 3
    log.record(FOUND, PHONE, "ok", 100)
    assert len(turn_end) == 1  # the next turn gets its own flush
    log.close()
    assert len(path.read_text().splitlines()) == 4  # closing writes what a turn had not flushed yet


def test_lines_from_another_thread_are_written_at_once(tmp_path):
    path = tmp_path / "requests.log"
    log = RequestLog.open(str(path))
    turn_end = []
    log.flush_each_turn(turn_end.append)
    other = threading.Thread(target=log.record, args=(FOUND, PHONE, "ok", 100))
    other.start()
    other.join(10)
    assert not other.is_alive()
    assert turn_end == [] and path.read_text().startswith("20") and " tftp 127.0.0.1:40000 " in path.read_text()
    log.close()


def test_a_log_on_standard_output_is_flushed_and_left_open_when_closed(tmp_path, monkeypatch):
    path = tmp_path / "stdout"
    with open(path, "w", encoding="utf-8") as stdout:
        monkeypatch.setattr(sys, "stdout", stdout)
        log = RequestLog.open("-")
        log.flush_each_turn(lambda flush: None)  # a turn that never ends
        log.record(FOUND, PHONE, "ok", 100)
        assert path.read_text() == ""
        log.close()
        assert '"cfg001fc1000001.xml" phone-config ok mac=001fc1000001' in path.read_text()
        assert not stdout.closed
