"""`[htekd] watch = yes`: what an administrator changes under the root is served once it settles,
with SIGHUP's guarantees (a broken edit keeps the last good state)."""

from __future__ import annotations

import os
import shutil
import subprocess
import time

from test_daemon import NEW_PHONE, curl

ROW = f"{NEW_PHONE},UC924,sales,1099,s3cret-1099,New,New,1099\n"
SETTLED = 1.0  # htekd.watch.SETTLE


def reload_lines(running, start: int = 0) -> list[str]:
    return [line for line in running.stderr_lines()[start:]
            if line.startswith(("htekd: reloaded", "htekd: reload failed", "htekd: root changed"))]


def wait_reload(running, start: int, timeout: float = 15.0) -> str:
    line = running.wait_stderr(lambda text: text.startswith(("htekd: reloaded", "htekd: reload failed")),
                               timeout=timeout, start=start)
    assert line is not None, running.stderr_text()
    return line


def test_an_edit_is_served_after_it_settles_and_a_broken_one_keeps_the_last_good_state(daemon, site):
    running = daemon({"htekd": {"watch": "yes", "unknown_phones": "deny"}})
    root = site / "root"
    assert curl(running.url("http", f"cfg{NEW_PHONE}.xml"))[0] == 403

    start = len(running.stderr_lines())
    with open(root / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write(ROW)
    assert wait_reload(running, start).startswith("htekd: reloaded (4 phones)")
    code, body = curl(running.url("http", f"cfg{NEW_PHONE}.xml"))
    assert code == 200 and b"1099" in body

    start = len(running.stderr_lines())
    common = root / "settings" / "common.xml"
    good = common.read_bytes()
    common.write_bytes(good.replace(b"</hl_provision>", b""))
    assert wait_reload(running, start).startswith("htekd: reload failed: ")
    assert curl(running.url("http", f"cfg{NEW_PHONE}.xml"))[0] == 200  # the last good state

    start = len(running.stderr_lines())
    common.write_bytes(good)
    assert wait_reload(running, start).startswith("htekd: reloaded (4 phones)")
    assert running.stop() == 0


def test_a_burst_of_changes_is_one_reload_and_hidden_names_none(daemon, site):
    running = daemon({"htekd": {"watch": "yes"}})
    root = site / "root"
    start = len(running.stderr_lines())
    # A deployment: several files written and renamed into place, a folder made, all at once.
    (root / "settings" / "groups" / "pilot").mkdir()
    for number in range(4, 9):
        temporary = root / "files" / f".ring{number}.bin.tmp"
        temporary.write_bytes(b"\0" * 1000)
        os.replace(temporary, root / "files" / f"ring{number}.bin")
    wait_reload(running, start)
    time.sleep(SETTLED * 2)
    assert reload_lines(running, start) == ["htekd: root changed, reloading", "htekd: reloaded (3 phones)"]

    # A new folder is watched too: a firmware folder pinned later.
    start = len(running.stderr_lines())
    shutil.copy(root / "files" / "ring4.bin", root / "settings" / "groups" / "pilot" / "notes.txt")
    wait_reload(running, start)

    # What git keeps for itself is no content.
    start = len(running.stderr_lines())
    subprocess.run(["git", "init", "-q", str(root)], check=True, timeout=30)
    (root / ".hidden.swp").write_bytes(b"editor")
    time.sleep(SETTLED * 3)
    assert reload_lines(running, start) == []
    assert running.stop() == 0


def test_a_deleted_folder_keeps_the_watch(daemon, site):
    running = daemon({"htekd": {"watch": "yes"}})
    root = site / "root"
    start = len(running.stderr_lines())
    shutil.rmtree(root / "settings" / "phones")
    wait_reload(running, start)

    start = len(running.stderr_lines())
    with open(root / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write(ROW)
    assert wait_reload(running, start).startswith("htekd: reloaded (4 phones)")
    assert running.stop() == 0


def test_without_watch_nothing_reloads_by_itself(daemon, site):
    running = daemon()
    start = len(running.stderr_lines())
    with open(site / "root" / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write(ROW)
    time.sleep(SETTLED * 3)
    assert reload_lines(running, start) == []
    assert running.stop() == 0
