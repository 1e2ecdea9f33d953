"""Encrypted configurations in the daemon: which files, which key, and the bootstrap path.

Every encrypted file is checked with the real openssl binary, as the phone's firmware would read it.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from htekd.aes import IV

PHONE_KEY = "001FC1BC"
DEFAULT_KEY = "0123456789ABCDEF"


def openssl_decrypt(data: bytes, key: str) -> bytes:
    result = subprocess.run(
        ["openssl", "enc", "-d", "-aes-128-cbc", "-K", key, "-iv", IV.hex()],
        input=data, capture_output=True, timeout=30,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


def htekd(conf: Path, *args: str) -> subprocess.CompletedProcess:
    done = subprocess.run([sys.executable, "-m", "htekd", *args, "-c", str(conf)], capture_output=True, timeout=60)
    if args[0] == "render":  # what a phone gets is never empty: an empty answer is a failure, not "no secret"
        assert done.returncode == 0 and done.stdout, done.stderr
    return done


def add_key_column(root: Path, keys: dict[str, str]) -> None:
    """Append an aes_key column to the example phones.csv: {mac as written in the file: key}."""
    lines = (root / "phones.csv").read_text(encoding="utf-8").splitlines()
    out = [lines[0] + ",aes_key"]
    for line in lines[1:]:
        out.append(line + "," + next((key for mac, key in keys.items() if line.startswith(mac)), ""))
    (root / "phones.csv").write_text("\n".join(out) + "\n", encoding="utf-8")


def set_server_keys(conf: Path, **values: str) -> None:
    text = conf.read_text(encoding="utf-8")
    extra = "".join(f"{key} = {value}\n" for key, value in values.items())
    conf.write_text(text.replace("[htekd]\n", "[htekd]\n" + extra, 1), encoding="utf-8")


def test_a_phone_with_a_key_gets_its_file_encrypted_and_render_shows_both(site: Path):
    add_key_column(site / "root", {"00:1f:c1:00:00:01": PHONE_KEY})
    conf = site / "htekd.conf"
    encrypted = htekd(conf, "render", "001fc1000001").stdout
    plain = htekd(conf, "render", "001fc1000001", "--plain").stdout
    assert plain.startswith(b"<?xml") and not encrypted.startswith(b"<?xml")
    assert openssl_decrypt(encrypted, PHONE_KEY) == plain
    # phones without a key, and the model file, stay in clear
    assert htekd(conf, "render", "001fc1000002").stdout.startswith(b"<?xml")
    assert htekd(conf, "render", "0012").stdout.startswith(b"<?xml")


def test_the_default_key_applies_to_every_phone_file_and_a_row_key_overrides_it(site: Path):
    add_key_column(site / "root", {"00:1f:c1:00:00:01": PHONE_KEY})
    conf = site / "htekd.conf"
    set_server_keys(conf, aes_key=DEFAULT_KEY)
    for mac, key in (("001fc1000001", PHONE_KEY), ("001fc1000002", DEFAULT_KEY), ("001fc1000099", DEFAULT_KEY)):
        encrypted = htekd(conf, "render", mac).stdout
        assert openssl_decrypt(encrypted, key) == htekd(conf, "render", mac, "--plain").stdout
    assert htekd(conf, "render", "0012").stdout.startswith(b"<?xml")


def test_model_files_are_encrypted_only_when_asked(site: Path):
    conf = site / "htekd.conf"
    set_server_keys(conf, aes_key=DEFAULT_KEY, encrypt="phone,model")
    encrypted = htekd(conf, "render", "0012").stdout
    assert openssl_decrypt(encrypted, DEFAULT_KEY) == htekd(conf, "render", "0012", "--plain").stdout


def test_bootstrap_puts_the_key_in_the_model_file_only_when_asked_and_check_warns(site: Path):
    conf = site / "htekd.conf"
    set_server_keys(conf, aes_key=DEFAULT_KEY)
    model_file = htekd(conf, "render", "0012").stdout.decode()
    assert "P8631" not in model_file and DEFAULT_KEY not in model_file

    set_server_keys(conf, aes_key_in_model_file="yes")
    model_file = htekd(conf, "render", "0012").stdout.decode()
    assert f'<P8631 para="FirmwareUpGrade_SetCommonAESKey">{DEFAULT_KEY}</P8631>' in model_file
    assert '<P240 para="FirmwareUpGrade_AuthenticateCfgFile">1</P240>' in model_file
    check = htekd(conf, "check")
    assert check.returncode == 0
    assert b"aes_key_in_model_file: the AES key travels in clear" in check.stdout
    assert DEFAULT_KEY.encode() not in check.stdout + check.stderr


def test_passwords_never_travel_in_model_files(site: Path):
    common = site / "root" / "settings" / "common.xml"
    common.write_text(common.read_text(encoding="utf-8").replace(
        "</config>", '<P2 para="AdminPassword">admin-s3cret</P2>\n    </config>'), encoding="utf-8")
    conf = site / "htekd.conf"
    assert b"admin-s3cret" not in htekd(conf, "render", "0012").stdout
    assert b"admin-s3cret" not in htekd(conf, "render", "001fc1000099").stdout  # unknown phone
    assert b"<P2 para=\"AdminPassword\">admin-s3cret</P2>" in htekd(conf, "render", "001fc1000001").stdout


@pytest.mark.parametrize("bad", ["", "00G1", "0123456789ABCDEF0"])
def test_bad_keys_are_refused_with_file_section_and_key(site: Path, bad: str):
    conf = site / "htekd.conf"
    if bad:
        add_key_column(site / "root", {"001FC1000002": bad})
        result = htekd(conf, "check")
        assert result.returncode == 1
        lines = [line for line in result.stdout.decode().splitlines() if "aes_key" in line]
        assert len(lines) == 1 and lines[0].startswith("phones.csv:3: error: aes_key:")
        assert bad not in lines[0]
        set_server_keys(conf, aes_key=bad)
        result = htekd(conf, "check")
        assert result.returncode == 1
        assert re.match(rf"{re.escape(str(conf))}:[0-9]+: error: \[htekd\] aes_key: ", result.stdout.decode())
        assert bad not in result.stdout.decode() + result.stderr.decode()
    else:
        set_server_keys(conf, aes_key_in_model_file="yes")
        result = htekd(conf, "check")
        assert result.returncode == 1 and b": error: [htekd] aes_key_in_model_file: needs aes_key" in result.stdout


def test_an_encrypted_file_fetched_over_every_protocol_decrypts_to_render_plain(daemon, site: Path):
    add_key_column(site / "root", {"00:1f:c1:00:00:01": PHONE_KEY})
    d = daemon()
    for protocol in ("tftp", "ftp", "http", "https"):
        args = ["curl", "-sS", "--max-time", "20", d.url(protocol, "cfg001fc1000001.xml")]
        if protocol == "https":
            args[1:1] = ["--cacert", str(d.cacert)]
        fetched = subprocess.run(args, capture_output=True, timeout=30)
        assert fetched.returncode == 0, fetched.stderr
        plain = htekd(d.config_path, "render", "001fc1000001", "--plain", "--protocol", protocol).stdout
        assert openssl_decrypt(fetched.stdout, PHONE_KEY) == plain
    log = "\n".join(d.wait_log(4))
    assert PHONE_KEY not in log and PHONE_KEY.lower() not in log
