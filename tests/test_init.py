"""`htekd init`: from nothing to a tree that `htekd check` passes and a daemon serves, without overwriting."""

from __future__ import annotations

import configparser
import stat
import subprocess
from pathlib import Path

import pytest

from contenttree import htekd
from htekd import config as config_module

URL = "http://127.0.0.1:8080"
PHONE = "00:1f:c1:12:34:56"


def init(folder: Path, *extra: str) -> subprocess.CompletedProcess:
    return htekd("init", str(folder / "root"), "-c", str(folder / "htekd.conf"), "--server-url", URL,
                 "--state-dir", str(folder / "state"), *extra)


def test_init_writes_a_tree_that_check_passes(tmp_path):
    done = init(tmp_path, "--listen", "127.0.0.1")
    assert done.returncode == 0, done.stderr
    assert done.stdout.decode().splitlines() == [
        f"htekd init: wrote {tmp_path / 'htekd.conf'} and the content tree {tmp_path / 'root'}",
        f"next: add phones to {tmp_path / 'root/phones.csv'}, settings to {tmp_path / 'root/settings/common.xml'}, "
        f"firmware to {tmp_path / 'root/files'}; then htekd check -c {tmp_path / 'htekd.conf'}"]
    assert stat.S_IMODE((tmp_path / "htekd.conf").stat().st_mode) == 0o640  # it will hold passwords
    for folder in ("settings/models", "settings/groups", "settings/phones", "files"):
        assert (tmp_path / "root" / folder).is_dir()
    config = config_module.load(tmp_path / "htekd.conf")
    assert config.server.root == tmp_path / "root" and config.server.state_dir == tmp_path / "state"
    assert config.server.server_url == URL
    assert [str(a) for a in config.tftp.listen + config.ftp.listen + config.http.listen] == [
        "127.0.0.1:69", "127.0.0.1:21", "127.0.0.1:80"]
    assert config.pnp.interface == "127.0.0.1"
    checked = htekd("check", "-c", str(tmp_path / "htekd.conf"))
    assert checked.returncode == 0 and checked.stdout == b""
    assert checked.stderr.startswith("htekd check: ok, 0 warnings")


def test_init_lists_every_key_of_the_configuration(tmp_path):
    assert init(tmp_path).returncode == 0
    text = (tmp_path / "htekd.conf").read_text(encoding="utf-8")
    listed = configparser.ConfigParser(inline_comment_prefixes=(";",), interpolation=None)
    listed.read_string("\n".join(line.lstrip(";") for line in text.splitlines() if not line.startswith("; ")))
    for section, keys in config_module.SECTIONS.items():
        assert set(listed[section]) == keys, section


def test_init_refuses_to_overwrite_and_changes_nothing(tmp_path):
    (tmp_path / "htekd.conf").write_text("mine\n")
    done = init(tmp_path)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr == f"htekd init: {tmp_path / 'htekd.conf'} exists: not overwritten (give another -c FILE)\n"
    assert (tmp_path / "htekd.conf").read_text() == "mine\n" and not (tmp_path / "root").exists()
    (tmp_path / "htekd.conf").unlink()
    (tmp_path / "root").mkdir()
    (tmp_path / "root" / "phones.csv").write_text("mac\n")
    done = init(tmp_path)
    assert done.returncode == 1
    assert done.stderr == f"htekd init: {tmp_path / 'root'} exists and is not an empty folder: not overwritten\n"
    assert not (tmp_path / "htekd.conf").exists() and (tmp_path / "root" / "phones.csv").read_text() == "mac\n"


@pytest.mark.parametrize("option,value,message", [
    ("--server-url", "192.168.0.10", "htekd init: --server-url: expected a URL such as http://192.168.0.10, got '192.168.0.10'"),
    ("--listen", "server.lan", "htekd init: --listen: expected an IP address such as 192.168.0.10 or ::, got 'server.lan'"),
])
def test_init_bad_options_are_one_line(tmp_path, option, value, message):
    done = htekd("init", str(tmp_path / "root"), "-c", str(tmp_path / "htekd.conf"), option, value)
    assert done.returncode == 1 and done.stderr == message + "\n"
    assert list(tmp_path.iterdir()) == []


def test_init_leaves_nothing_when_it_cannot_write(tmp_path):
    (tmp_path / "locked").mkdir()
    (tmp_path / "locked" / "root").write_text("a file where the tree would go\n")
    done = htekd("init", str(tmp_path / "locked" / "root" / "tree"), "-c", str(tmp_path / "htekd.conf"))
    assert done.returncode == 1 and done.stderr.count("\n") == 1 and "nothing written" in done.stderr
    assert not (tmp_path / "htekd.conf").exists()


@pytest.fixture
def site(tmp_path) -> Path:
    """For the daemon fixture: a tree made by htekd init, with one phone added as an administrator would."""
    folder = tmp_path / "site"
    assert init(folder, "--listen", "127.0.0.1").returncode == 0
    with open(folder / "root" / "phones.csv", "a", encoding="utf-8") as inventory:
        inventory.write(f"{PHONE},UC924,,1042,s3cret,Reception\n")
    return folder


def test_the_tree_init_makes_is_served(daemon, tmp_path):
    running = daemon({"https": {"enabled": "no"}})
    for protocol in ("tftp", "ftp", "http"):
        fetched = subprocess.run(["curl", "-sS", "--max-time", "20", running.url(protocol, "cfg001fc1123456.xml")],
                                 capture_output=True, timeout=30)
        assert fetched.returncode == 0, fetched.stderr
        assert b'<P35 para="Account1_SipUserId">1042</P35>' in fetched.stdout
        assert b'<P30 para="NW_Adv_UrlOrIpAddress">pool.ntp.org</P30>' in fetched.stdout
    assert running.wait_log(3)[-1].split()[4:6] == ["phone-config", "ok"]


def test_init_without_server_url_takes_this_hosts_address_and_says_so(tmp_path):
    done = htekd("init", str(tmp_path / "root"), "-c", str(tmp_path / "htekd.conf"), "--state-dir", str(tmp_path / "s"))
    assert done.returncode == 0, done.stderr
    url = config_module.load(tmp_path / "htekd.conf").server.server_url
    assert url.startswith("http://")
    assert (f"htekd init: server_url = {url}, this host's address on its default route "
            "(phones must reach it; --server-url chooses another)") in done.stdout.decode().splitlines()
