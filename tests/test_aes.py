"""AES-128-CBC against the real openssl binary, through htekd.aes and through `htekd encrypt/decrypt`."""

from __future__ import annotations

import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from htekd import aes
from htekd.cli import CommandError
from htekd.commands import common, crypt

REPO = Path(__file__).resolve().parent.parent
IV_HEX = "0B1E1D000F0B07091D1F04071F1E0407"

# 1, 7, 8, 15 and 16 hex digits, each in lower and upper case
KEYS = [
    "a", "A",
    "1a2b3c4", "1A2B3C4",
    "001fc1bc", "001FC1BC",
    "fedcba987654321", "FEDCBA987654321",
    "0123456789abcdef", "0123456789ABCDEF",
]
XML = b'<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1">\n  <config version="1">\n' \
      b'    <P47 para="Profile1_Sipserver">192.168.0.68:5060</P47>\n  </config>\n</hl_provision>\n'
PAYLOADS = {
    "empty": b"",
    "one block": b"<0123456789abcd>",
    "xml": XML,
    "binary": bytes(range(256)) * 4 + b"\0\1\2",
}
INVALID_KEYS = {
    "empty": "",
    "17 digits": "0123456789ABCDEF0",
    "non-hex": "00G1",
    "leading space": " 001F",
    "inner space": "001F C1BC",
    "trailing space": "001F ",
    "0x prefix": "0x1F",
}


def openssl(*args: str, data: bytes = b"", check: bool = True) -> subprocess.CompletedProcess:
    binary = shutil.which("openssl")
    assert binary, "the openssl binary is needed by these tests"
    return subprocess.run([binary, *args], input=data, capture_output=True, check=check, timeout=60)


def openssl_encrypt(data: bytes, key: str) -> bytes:
    return openssl("enc", "-aes-128-cbc", "-K", key, "-iv", IV_HEX, data=data).stdout


def openssl_decrypt(data: bytes, key: str) -> bytes:
    return openssl("enc", "-d", "-aes-128-cbc", "-K", key, "-iv", IV_HEX, data=data).stdout


def htekd(*args: str | Path, data: bytes | None = None, env: dict[str, str] | None = None):
    """Run `python -m htekd ARGS` as a user would; HTEKD_AES_KEY only if `env` sets it."""
    environment = {k: v for k, v in os.environ.items() if k != crypt.KEY_ENVIRONMENT}
    environment["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "htekd", *map(str, args)],
        input=data if data is not None else b"",
        capture_output=True,
        env=environment,
        timeout=60,
    )


def one_line_error(result: subprocess.CompletedProcess, command: str) -> str:
    """The single stderr line of a failed command (no traceback, nothing on stdout)."""
    assert result.returncode != 0
    assert result.stdout == b""
    lines = result.stderr.decode().splitlines()
    assert len(lines) == 1, result.stderr.decode()
    assert lines[0].startswith(f"htekd {command}: ")
    return lines[0]


# --- key rules --------------------------------------------------------------------------------


def test_iv_is_the_phone_fixed_iv():
    assert aes.IV.hex().upper() == IV_HEX


@pytest.mark.parametrize("key", KEYS + ["0", "f0f"])
def test_parse_key_is_the_key_openssl_uses(key):
    """openssl -K with the short key and with our 32-digit expansion of it encrypt identically."""
    parsed = aes.parse_key(key)
    assert len(parsed) == 16
    data = b"sixteen byte blk" * 3
    assert openssl_encrypt(data, parsed.hex()) == openssl_encrypt(data, key)


def test_parse_key_pads_right_and_completes_odd_digit_counts():
    assert aes.parse_key("1") == bytes.fromhex("10" + "00" * 15)
    assert aes.parse_key("abc") == bytes.fromhex("abc0" + "00" * 14)
    assert aes.parse_key("001FC1BC") == aes.parse_key("001fc1bc") == bytes.fromhex("001fc1bc" + "00" * 12)
    assert aes.parse_key("0123456789ABCDEF") == bytes.fromhex("0123456789abcdef" + "00" * 8)


@pytest.mark.parametrize("label", INVALID_KEYS)
def test_parse_key_refuses_what_the_phone_refuses(label):
    key = INVALID_KEYS[label]
    with pytest.raises(aes.InvalidKey) as caught:
        aes.parse_key(key)
    message = str(caught.value)
    assert "\n" not in message and message
    if key.strip():
        assert key.strip() not in message
    with pytest.raises(aes.InvalidKey):
        aes.encrypt(b"<x/>", key)
    with pytest.raises(aes.InvalidKey):
        aes.decrypt(bytes(16), key)


def test_invalid_key_messages_say_why():
    def why(key):
        with pytest.raises(aes.InvalidKey) as caught:
            aes.parse_key(key)
        return str(caught.value)

    assert "empty" in why("")
    assert "at most 16" in why("0123456789ABCDEF0")
    assert "at most 16" in why("0" * 32)  # openssl would take it, the phone does not
    assert "hex digits only" in why("00G1") and "character 3" in why("00G1")
    assert "character 1" in why(" 001F")


# --- module against openssl ---------------------------------------------------------------------


@pytest.mark.parametrize("key", KEYS)
@pytest.mark.parametrize("payload", PAYLOADS)
def test_module_and_openssl_agree(key, payload):
    plain = PAYLOADS[payload]
    encrypted = aes.encrypt(plain, key)
    assert len(encrypted) == (len(plain) // 16 + 1) * 16  # PKCS#7, no "Salted__" header
    assert openssl_decrypt(encrypted, key) == plain
    by_openssl = openssl_encrypt(plain, key)
    assert by_openssl == encrypted
    assert aes.decrypt(by_openssl, key) == plain


@settings(max_examples=200, deadline=None)
@given(data=st.binary(max_size=100), key=st.text(alphabet="0123456789abcdefABCDEF", min_size=1, max_size=16))
def test_module_round_trip(data, key):
    encrypted = aes.encrypt(data, key)
    assert encrypted != data and aes.decrypt(encrypted, key) == data
    assert aes.encrypt(data, key.swapcase()) == encrypted


def test_module_wrong_key_is_a_clear_error():
    encrypted = openssl_encrypt(XML, "001FC1BC")
    with pytest.raises(aes.DecryptError, match="wrong key or not an encrypted file"):
        aes.decrypt(encrypted, "001FC1BD")


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "empty input"),
        (bytes(15), "length 15 is not a multiple of 16"),
        (bytes(33), "length 33 is not a multiple of 16"),
    ],
)
def test_module_refuses_impossible_lengths(data, message):
    with pytest.raises(aes.DecryptError, match=message):
        aes.decrypt(data, "1")


@pytest.mark.parametrize(
    "data, expected",
    [
        (XML, True),
        (b"\xef\xbb\xbf<?xml?>", True),
        (b" \r\n\t<a/>", True),
        (b"\xef\xbb\xbf \n<a/>", True),
        (b"", False),
        (b"   ", False),
        (b"\x8f<a/>", False),
        (b"hello <a/>", False),
        (b"\xef\xbb<a/>", False),
    ],
)
def test_looks_like_xml(data, expected):
    assert aes.looks_like_xml(data) is expected


def lucky_wrong_key(encrypted: bytes, right_key: str) -> str:
    """A wrong key whose decryption still ends in valid padding (about 1 key in 256)."""
    for number in range(1, 100_000):
        key = f"{number:X}"
        if key == right_key.upper():
            continue
        try:
            aes.decrypt(encrypted, key)
        except aes.DecryptError:
            continue
        return key
    raise AssertionError("no wrong key with valid padding found")


# --- the command line -----------------------------------------------------------------------------


@pytest.mark.parametrize("lower, upper", list(zip(KEYS[::2], KEYS[1::2])))
def test_cli_files_both_ways_with_openssl(tmp_path, lower, upper):
    """htekd with one case of the key, openssl with the other."""
    plain = XML + lower.encode() * 100  # a different length for each key
    source = tmp_path / "cfg.xml"
    source.write_bytes(plain)
    encrypted = tmp_path / "cfg.enc"
    result = htekd("encrypt", "--key", lower, source, encrypted)
    assert result.returncode == 0 and result.stdout == result.stderr == b""
    assert openssl_decrypt(encrypted.read_bytes(), upper) == plain

    (tmp_path / "openssl.enc").write_bytes(openssl_encrypt(plain, lower))
    result = htekd("decrypt", "--key", upper, tmp_path / "openssl.enc", tmp_path / "back.xml")
    assert result.returncode == 0 and result.stdout == result.stderr == b""
    assert (tmp_path / "back.xml").read_bytes() == plain


def test_cli_standard_input_and_output():
    result = htekd("encrypt", "--key", "001fc1bc", "-", "-", data=XML)
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout == openssl_encrypt(XML, "001FC1BC")

    result = htekd("decrypt", "--key", "001fc1bc", "-", "-", data=openssl_encrypt(XML, "001FC1BC"))
    assert result.returncode == 0 and result.stderr == b""
    assert result.stdout == XML


def test_cli_empty_input(tmp_path):
    empty = tmp_path / "empty"
    empty.write_bytes(b"")
    result = htekd("encrypt", "--key", "1A", empty, tmp_path / "empty.enc")
    assert result.returncode == 0
    assert (tmp_path / "empty.enc").read_bytes() == openssl_encrypt(b"", "1A")
    assert len((tmp_path / "empty.enc").read_bytes()) == 16
    assert openssl_decrypt((tmp_path / "empty.enc").read_bytes(), "1A") == b""

    # empty plaintext is no phone configuration: refused unless --raw
    line = one_line_error(htekd("decrypt", "--key", "1A", tmp_path / "empty.enc", tmp_path / "out"), "decrypt")
    assert "not XML" in line and not (tmp_path / "out").exists()
    result = htekd("decrypt", "--raw", "--key", "1A", tmp_path / "empty.enc", tmp_path / "out")
    assert result.returncode == 0 and (tmp_path / "out").read_bytes() == b""

    line = one_line_error(htekd("decrypt", "--key", "1A", empty, tmp_path / "out2"), "decrypt")
    assert "empty input" in line and not (tmp_path / "out2").exists()


def test_cli_exactly_one_block():
    block = PAYLOADS["one block"]
    result = htekd("encrypt", "--key", "001FC1BC", "-", "-", data=block)
    assert len(result.stdout) == 32
    assert openssl_decrypt(result.stdout, "001FC1BC") == block
    result = htekd("decrypt", "--key", "001FC1BC", "-", "-", data=openssl_encrypt(block, "001FC1BC"))
    assert result.stdout == block


def test_cli_five_megabytes(tmp_path):
    plain = b"<hl_provision>" + os.urandom(5 * 1024 * 1024)
    key = "9f8E7d6C5b4A3021"
    source = tmp_path / "big.xml"
    source.write_bytes(plain)
    result = htekd("encrypt", "--key", key, source, tmp_path / "big.enc")
    assert result.returncode == 0
    assert openssl_decrypt((tmp_path / "big.enc").read_bytes(), key) == plain

    openssl("enc", "-aes-128-cbc", "-K", key, "-iv", IV_HEX, "-in", str(source), "-out", str(tmp_path / "o.enc"))
    result = htekd("decrypt", "--key", key, "-", "-", data=(tmp_path / "o.enc").read_bytes())
    assert result.returncode == 0 and result.stdout == plain


@pytest.mark.parametrize("label", ["empty", "17 digits", "non-hex", "inner space"])
def test_cli_refuses_invalid_keys(tmp_path, label):
    key = INVALID_KEYS[label]
    source = tmp_path / "cfg.xml"
    source.write_bytes(XML)
    result = htekd("encrypt", "--key", key, source, tmp_path / "out")
    line = one_line_error(result, "encrypt")
    assert "invalid AES key (--key)" in line
    if key.strip():
        assert key.strip().encode() not in result.stderr
    assert not (tmp_path / "out").exists()


def test_cli_key_from_environment(tmp_path):
    result = htekd("encrypt", "-", "-", data=XML, env={crypt.KEY_ENVIRONMENT: "C0FFEE"})
    assert result.returncode == 0 and openssl_decrypt(result.stdout, "C0FFEE") == XML

    result = htekd("decrypt", "-", "-", data=openssl_encrypt(XML, "1"), env={crypt.KEY_ENVIRONMENT: "00G1"})
    line = one_line_error(result, "decrypt")
    assert f"invalid AES key ({crypt.KEY_ENVIRONMENT})" in line and "00G1" not in line


def test_cli_key_from_file(tmp_path):
    key_file = tmp_path / "aes.key"
    key_file.write_text("c0ffee\n")
    result = htekd("decrypt", "--key-file", key_file, "-", "-", data=openssl_encrypt(XML, "C0FFEE"))
    assert result.returncode == 0 and result.stdout == XML


def test_cli_key_option_wins_over_environment():
    result = htekd("encrypt", "--key", "1", "-", "-", data=XML, env={crypt.KEY_ENVIRONMENT: "2"})
    assert result.returncode == 0 and openssl_decrypt(result.stdout, "1") == XML


def test_cli_key_from_the_configuration(tmp_path):
    conf = tmp_path / "htekd.conf"
    conf.write_text("[htekd]\nroot = root\nserver_url = http://10.0.0.1\naes_key = C0FFEE\n", encoding="utf-8")
    result = htekd("decrypt", "-c", conf, "-", "-", data=openssl_encrypt(XML, "C0FFEE"))
    assert result.returncode == 0 and result.stdout == XML
    result = htekd("encrypt", "-c", conf, "--key", "1", "-", "-", data=XML)  # a key given wins
    assert result.returncode == 0 and openssl_decrypt(result.stdout, "1") == XML
    conf.write_text("[htekd]\nroot = root\nserver_url = http://10.0.0.1\n", encoding="utf-8")
    line = one_line_error(htekd("encrypt", "-c", conf, "-", "-", data=XML), "encrypt")
    assert "no AES key" in line and "-c a configuration with [htekd] aes_key" in line


def test_cli_key_errors(tmp_path):
    line = one_line_error(htekd("encrypt", "-", "-", data=XML), "encrypt")
    assert "no AES key" in line

    key_file = tmp_path / "aes.key"
    key_file.write_text("12345678\n90ABCDEF\n")
    result = htekd("encrypt", "--key-file", key_file, "-", "-", data=XML)
    line = one_line_error(result, "encrypt")
    assert f"invalid AES key (key file {key_file})" in line and b"12345678" not in result.stderr

    line = one_line_error(htekd("encrypt", "--key-file", tmp_path / "missing", "-", "-"), "encrypt")
    assert line == f"htekd encrypt: cannot read key file {tmp_path / 'missing'}: No such file or directory"


def test_cli_wrong_key_is_a_clear_error(tmp_path):
    encrypted = tmp_path / "cfg.enc"
    encrypted.write_bytes(openssl_encrypt(XML, "001FC1BC"))
    out = tmp_path / "cfg.xml"
    out.write_bytes(b"previous content")
    result = htekd("decrypt", "--key", "001FC1BD", encrypted, out)
    line = one_line_error(result, "decrypt")
    assert line == f"htekd decrypt: {encrypted}: bad padding: wrong key or not an encrypted file"
    assert b"001FC1B" not in result.stderr
    assert out.read_bytes() == b"previous content"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.enc", "cfg.xml"]


def test_cli_wrong_key_with_lucky_padding_is_not_xml(tmp_path):
    encrypted = openssl_encrypt(XML, "001FC1BC")
    key = lucky_wrong_key(encrypted, "001FC1BC")
    line = one_line_error(htekd("decrypt", "--key", key, "-", "-", data=encrypted), "decrypt")
    assert line == "htekd decrypt: standard input: decrypted data is not XML: wrong key? (--raw writes it anyway)"

    result = htekd("decrypt", "--raw", "--key", key, "-", "-", data=encrypted)
    assert result.returncode == 0 and result.stdout == openssl_decrypt(encrypted, key)


def test_cli_truncated_file(tmp_path):
    whole = openssl_encrypt(XML * 3, "ABCDEF")
    (tmp_path / "cut.enc").write_bytes(whole[:-5])
    line = one_line_error(htekd("decrypt", "--key", "ABCDEF", tmp_path / "cut.enc", tmp_path / "out"), "decrypt")
    assert f"length {len(whole) - 5} is not a multiple of 16 bytes" in line

    # one whole block missing: the last block left ends in plain text, not padding; openssl fails too
    line = one_line_error(htekd("decrypt", "--key", "ABCDEF", "-", "-", data=whole[:-16]), "decrypt")
    assert "bad padding" in line
    by_openssl = openssl("enc", "-d", "-aes-128-cbc", "-K", "ABCDEF", "-iv", IV_HEX, data=whole[:-16], check=False)
    assert by_openssl.returncode != 0
    assert not (tmp_path / "out").exists()


def test_cli_file_errors_are_one_line(tmp_path):
    line = one_line_error(htekd("encrypt", "--key", "1", tmp_path / "nope.xml", tmp_path / "out"), "encrypt")
    assert line == f"htekd encrypt: cannot read {tmp_path / 'nope.xml'}: No such file or directory"

    source = tmp_path / "cfg.xml"
    source.write_bytes(XML)
    line = one_line_error(htekd("encrypt", "--key", "1", source, tmp_path / "no" / "out"), "encrypt")
    assert line == f"htekd encrypt: cannot write {tmp_path / 'no' / 'out'}: No such file or directory"

    line = one_line_error(htekd("encrypt", "--key", "1", source, tmp_path), "encrypt")
    assert line == f"htekd encrypt: cannot write {tmp_path}: is a folder"

    result = htekd("encrypt", "--key", "1", "--key-file", source, source, tmp_path / "out")
    assert result.returncode == 2 and b"not allowed with" in result.stderr


# --- writing OUT ------------------------------------------------------------------------------


def test_write_keeps_mode_and_follows_links(tmp_path):
    target = tmp_path / "cfg.enc"
    target.write_bytes(b"old")
    target.chmod(0o640)
    link = tmp_path / "link.enc"
    link.symlink_to(target.name)
    common.write_output(str(link), b"new")
    assert link.is_symlink() and target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o640
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cfg.enc", "link.enc"]


def test_write_to_a_device_writes_in_place():
    common.write_output(os.devnull, b"data")
    assert stat.S_ISCHR(os.stat(os.devnull).st_mode)  # not replaced by a regular file


@pytest.mark.parametrize("existing", [True, False])
def test_failed_write_leaves_no_half_file(tmp_path, monkeypatch, existing):
    target = tmp_path / "cfg.enc"
    if existing:
        target.write_bytes(b"old")

    def disk_full(descriptor):
        raise OSError(28, os.strerror(28))

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(CommandError) as caught:
        common.write_output(str(target), b"x" * 100_000)
    assert str(caught.value) == f"cannot write {target}: No space left on device"
    assert sorted(p.name for p in tmp_path.iterdir()) == (["cfg.enc"] if existing else [])
    if existing:
        assert target.read_bytes() == b"old"
