"""A phone in any upgrade mode gets the same content: TFTP, FTP (passive and active), HTTP, HTTPS."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys

FETCHES = {  # how a phone in each upgrade mode fetches, as curl options
    "tftp": ("tftp", ()),
    "ftp-passive": ("ftp", ()),
    "ftp-active": ("ftp", ("-P", "-")),
    "http": ("http", ()),
    "https": ("https", ()),
}
# What htekd writes in per protocol: upgrade mode, server paths and resource URLs.
PER_PROTOCOL = ("P212", "P237", "P192", "P20174", "P20175", "P20176", "P20177", "P20051", "P20052", "P24885")


def fetch(d, mode: str, name: str) -> bytes:
    protocol, options = FETCHES[mode]
    args = ["curl", "-sS", "--max-time", "60", *options, d.url(protocol, name)]
    if protocol == "https":
        args[1:1] = ["--cacert", str(d.cacert)]
    result = subprocess.run(args, capture_output=True, timeout=90)
    assert result.returncode == 0, (mode, result.stderr)
    return result.stdout


def render(d, target: str, protocol: str) -> bytes:
    result = subprocess.run([sys.executable, "-m", "htekd", "render", "-c", str(d.config_path), "--protocol", protocol,
                             target], capture_output=True, timeout=60)
    assert result.returncode == 0, result.stderr
    return result.stdout


def test_firmware_is_byte_identical_over_every_protocol(daemon, site):
    firmware = os.urandom(6 * 1024 * 1024 + 123)
    (site / "root" / "files" / "fw920M.rom").write_bytes(firmware)
    d = daemon()
    digest = hashlib.sha256(firmware).hexdigest()
    for mode in FETCHES:
        assert hashlib.sha256(fetch(d, mode, "fw920M.rom")).hexdigest() == digest, mode
    lines = d.wait_log(len(FETCHES))
    assert all(" firmware ok " in line and f"bytes={len(firmware)} " in line for line in lines)


def test_configurations_differ_only_where_the_protocol_is_written_in(daemon):
    d = daemon()
    for name, target in (("cfg0012.xml", "0012"), ("cfg001fc1000001.xml", "001fc1000001")):
        fetched = {mode: fetch(d, mode, name) for mode in FETCHES}
        for mode, data in fetched.items():
            assert data == render(d, target, FETCHES[mode][0]), (name, mode)
        without = {mode: b"\n".join(line for line in data.splitlines()
                                     if not any(f"<{code} ".encode() in line for code in PER_PROTOCOL))
                   for mode, data in fetched.items()}
        assert len(set(without.values())) == 1, name
        assert b'<P212 para="FirmwareUpGrade_UrgrateMode">0</P212>' in fetched["tftp"]
        assert b'<P212 para="FirmwareUpGrade_UrgrateMode">3</P212>' in fetched["https"]
        assert b"<P212 " not in fetched["ftp-passive"]  # FTP's upgrade mode is not published


def test_configurations_are_byte_identical_when_the_settings_name_the_server(daemon, site):
    common = site / "root" / "settings" / "common.xml"
    fixed = "".join(f'        <{code} para="">{"3" if code == "P212" else "http://192.0.2.10/p"}</{code}>\n'
                    for code in PER_PROTOCOL)
    common.write_text(common.read_text(encoding="utf-8").replace("    </config>", fixed + "    </config>"),
                      encoding="utf-8")
    d = daemon()
    for name in ("cfg0012.xml", "cfg001fc1000001.xml", "cfg001fc1000002.xml"):
        assert len({fetch(d, mode, name) for mode in FETCHES}) == 1, name
