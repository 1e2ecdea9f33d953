"""htekd.conf: what a valid file gives, and the one-line error every mistake gets (file, section, key)."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from contenttree import make_site
from htekd.config import Address, ConfigError, load


def write_conf(folder: Path, text: str) -> Path:
    path = folder / "htekd.conf"
    path.write_text(text, encoding="utf-8")
    return path


MINIMAL = "[htekd]\nroot = root\nserver_url = http://192.168.0.10\n"


def test_minimal_file_gets_the_documented_defaults(tmp_path):
    config = load(write_conf(tmp_path, MINIMAL))
    assert config.server.root == (tmp_path / "root").resolve()  # relative to the file's folder
    assert config.server.unknown_phones == "default"
    assert config.server.log == "-" and config.server.log_format == "text"
    assert config.tftp.enabled and config.ftp.enabled and config.http.enabled and not config.https.enabled
    assert config.tftp.listen == (Address("0.0.0.0", 69),)
    assert config.ftp.passive_ports == (50000, 50100)
    assert config.ftp.timeout == 60 and config.http.timeout == 60
    assert config.ftp.connections_per_address == config.http.connections_per_address == 16
    assert config.https.connections_per_address == 16 and config.tftp.max_transfers == 1000
    assert "RSA" not in config.https.ciphers and config.https.ciphers.startswith("ECDHE+")
    assert config.public_url("http") == "http://192.168.0.10"
    assert config.public_url("tftp") == "tftp://192.168.0.10"


def test_listen_addresses_ipv6_and_several(tmp_path):
    config = load(write_conf(tmp_path, MINIMAL + "[tftp]\nlisten = 127.0.0.1:6969 [::1]:6969\n"))
    assert config.tftp.listen == (Address("127.0.0.1", 6969), Address("::1", 6969))
    assert [str(a) for a in config.tftp.listen] == ["127.0.0.1:6969", "[::1]:6969"]
    assert config.public_url("tftp") == "tftp://192.168.0.10:6969"


def test_path_prefix_of_server_url(tmp_path):
    conf = make_site(tmp_path, server_url="http://127.0.0.1:8080/htek/cfg/")
    config = load(conf)
    assert config.server.path_prefix == "htek/cfg"
    assert config.server.server_host == "127.0.0.1"
    assert config.public_url("http") == "http://127.0.0.1:8080/htek/cfg"
    assert config.public_url("tftp") == "tftp://127.0.0.1:6969/htek/cfg"


BAD = [
    # (file text, section, key, words in the message)
    (MINIMAL + "[tftp]\nlisten = nonsense\n", "tftp", "listen", "nonsense"),
    (MINIMAL + "[tftp]\nlisten = 127.0.0.1:99999\n", "tftp", "listen", "99999"),
    (MINIMAL + "[http]\nlisten = example.com:80\n", "http", "listen", "not an IP address"),
    (MINIMAL + "colour = blue\n", "htekd", "colour", "unknown key"),
    (MINIMAL + "[ftp]\nlisten = 127.0.0.1:21\nspeed = 9\n", "ftp", "speed", "unknown key"),
    (MINIMAL + "unknown_phones = maybe\n", "htekd", "unknown_phones", "default, deny"),
    (MINIMAL + "log_format = xml\n", "htekd", "log_format", "text, json"),
    (MINIMAL + "[tftp]\nenabled = perhaps\n", "tftp", "enabled", "yes or no"),
    (MINIMAL + "[tftp]\ntimeout = soon\n", "tftp", "timeout", "number"),
    (MINIMAL + "[tftp]\nmax_transfers = 0\n", "tftp", "max_transfers", "between 1 and"),
    (MINIMAL + "[http]\nconnections_per_address = -1\n", "http", "connections_per_address", "between 0 and"),
    (MINIMAL + "[ftp]\nconnections_per_address = many\n", "ftp", "connections_per_address", "number"),
    (MINIMAL + "[https]\nciphers = RC4-NONSENSE\n", "https", "ciphers", "selects no cipher"),
    (MINIMAL + "[ftp]\npassive_ports = 50100-50000\n", "ftp", "passive_ports", "range"),
    (MINIMAL + "[ftp]\nuser = admin\n", "ftp", "password", "together"),
    (MINIMAL + "[https]\nenabled = yes\ncertificate = missing.pem\n", "https", "certificate", "does not exist"),
    (MINIMAL + "aes_key = not-hex\n", "htekd", "aes_key", ""),
    (MINIMAL + "encrypt = everything\n", "htekd", "encrypt", "phone"),
    ("[htekd]\nroot = root\nserver_url = 192.168.0.10\n", "htekd", "server_url", "URL"),
    ("[htekd]\nserver_url = http://192.168.0.10\n", "htekd", "root", "required"),
    (MINIMAL + "[gopher]\nlisten = 1.2.3.4:70\n", "gopher", None, "unknown section"),
    (MINIMAL + "[tftp]\nlisten = 127.0.0.1:\u00b2\n", "tftp", "listen", "host:port"),
    (MINIMAL + "[ftp]\npassive_ports = 5000\u00b2-50100\n", "ftp", "passive_ports", "range"),
    ("[htekd]\nroot = root\nserver_url = http://[::1\n", "htekd", "server_url", "not a URL"),
    ("[htekd]\nroot = root\nserver_url = http://10.0.0.1:99999\n", "htekd", "server_url", "not a URL"),
    ("[htekd]\nroot = root\nserver_url = http://10.0.0.1/a b\n", "htekd", "server_url", "spaces"),
    ("[htekd]\nroot = ro\0ot\nserver_url = http://10.0.0.1\n", "htekd", "root", "NUL"),
]


@pytest.mark.parametrize("text,section,key,words", BAD, ids=[f"{s}-{k}" for _, s, k, _ in BAD])
def test_bad_value_names_file_section_and_key(tmp_path, text, section, key, words):
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    message = str(caught.value)
    assert "\n" not in message
    what = f"[{section}]" + (f" {key}:" if key else ":")
    assert re.match(rf"{re.escape(str(path))}(:[0-9]+)?: error: {re.escape(what)} ", message), message
    assert words in message


def test_missing_file_and_unparsable_file(tmp_path):
    with pytest.raises(ConfigError) as caught:
        load(tmp_path / "nope.conf")
    assert str(caught.value) == f"{tmp_path / 'nope.conf'}: error: cannot read: No such file or directory"
    path = write_conf(tmp_path, "root = outside any section\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value) == f"{path}:1: error: 'root = outside any section' is outside any [section]"
    path.write_bytes(b"[htekd]\nroot = \xff\xfe\n")
    with pytest.raises(ConfigError) as caught:
        load(path)
    assert str(caught.value).startswith(f"{path}:2: error: not UTF-8 text")


@pytest.mark.parametrize("text,line,message", [
    (MINIMAL + "[tftp]\nenabled = yes\nlisten = nonsense\n", "L+3", "[tftp] listen: expected host:port or [v6]:port, got 'nonsense'"),
    (MINIMAL + "[tftp]\nenabled = yes\nenabled = no\n", "L+3", "[tftp] enabled: given twice (first on line L+2)"),
    (MINIMAL + "[tftp]\n[tftp]\n", "L+2", "[tftp]: section given twice"),
    (MINIMAL + "[gopher]\n", "L+1", "[gopher]: unknown section"),
    (MINIMAL + "[ftp]\nuser = admin\n", "L+1", "[ftp] password: user and password go together"),
    (MINIMAL + "just words\n", "L+1", "not a key = value line: 'just words'"),
])
def test_config_errors_carry_the_line(tmp_path, text, line, message):
    """Like every other problem `htekd check` reports: file:line: error: message."""
    last = MINIMAL.count("\n")
    path = write_conf(tmp_path, text)
    with pytest.raises(ConfigError) as caught:
        load(path)
    number = lambda text: re.sub(r"L\+([0-9])", lambda m: str(last + int(m.group(1))), text)
    assert str(caught.value) == f"{path}:{number(line)}: error: {number(message)}"
