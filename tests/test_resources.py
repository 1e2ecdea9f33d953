"""Firmware and resource files: `htekd check` knows the phones' rules; rendering fills the URLs."""

from __future__ import annotations

import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from htekd.resources import image_size

EXAMPLE = Path(__file__).resolve().parents[1] / "example"


def jpeg(width: int, height: int, padding: int = 0) -> bytes:
    """The start of a baseline JPEG: SOI, an APP0 segment, SOF0 with the size."""
    app0 = b"\xff\xe0" + struct.pack(">H", 16) + b"JFIF\x00\x01\x01\x00\x00\x01\x00\x01\x00\x00"
    sof0 = b"\xff\xc0" + struct.pack(">HBHHB", 11, 8, height, width, 1) + b"\x01\x11\x00"
    return b"\xff\xd8" + app0 + sof0 + b"\x00" * padding + b"\xff\xd9"


def bmp(width: int, height: int) -> bytes:
    row = ((width + 31) // 32) * 4
    pixels = b"\x00" * (row * height)
    header = struct.pack("<2sIHHI", b"BM", 62 + len(pixels), 0, 0, 62)
    info = struct.pack("<IiiHHIIiiII", 40, width, height, 1, 1, 0, len(pixels), 2835, 2835, 2, 0)
    return header + info + b"\x00\x00\x00\x00\xff\xff\xff\x00" + pixels


@pytest.fixture
def site(tmp_path: Path) -> Path:
    target = tmp_path / "site"
    shutil.copytree(EXAMPLE, target, ignore=shutil.ignore_patterns("state"))
    return target


def htekd(site: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "htekd", *args, "-c", str(site / "htekd.conf")],
                          capture_output=True, text=True, timeout=60)


def test_image_headers_are_read_for_jpeg_and_bmp():
    assert image_size(jpeg(480, 320)) == ("jpg", 480, 320)
    assert image_size(bmp(480, 272)) == ("bmp", 480, 272)
    assert image_size(b"GIF89a....") is None
    assert image_size(b"\xff\xd8\xff") is None  # truncated


def test_example_resources_pass_check(site: Path):
    result = htekd(site, "check")
    assert result.returncode == 0, result.stdout + result.stderr
    problems = [line for line in result.stdout.splitlines() if line.startswith("files/")]
    assert problems == []  # no problem with the bundled images, ring and language files


@pytest.mark.parametrize(
    "name, data, message",
    [
        ("wallpaper-UC924.jpg", jpeg(480, 272), "480x272: a UC924 wallpaper must be 480x320"),
        ("screensaver-UC923.bmp", bmp(480, 320), "480x320: a UC923 screensaver must be 320x240"),
        ("wallpaper-UC926.jpg", bmp(480, 272), "a BMP image named .jpg"),
        ("wallpaper-UC926E.bmp", b"not an image", "not a BMP image"),
        ("wallpaper-UC924E.jpg", jpeg(480, 320, padding=101 * 1024), "must be at most 100 KB"),
        ("wallpaper-UC902.jpg", jpeg(480, 320), "UC902 takes no wallpaper"),
        ("wallpaper-UC999.jpg", jpeg(480, 320), "unknown model 'UC999'"),
        ("Wallpaper-uc924.JPG", jpeg(480, 320), "name it wallpaper-UC924.jpg exactly"),
        ("weblogo.jpg", jpeg(200, 93), "200x93: the web logo must be 225x93"),
        ("ring9.bin", b"\x00" * 16, "ring4.bin to ring8.bin only"),
        ("ring1.bin", b"\x00" * 16, "ring4.bin to ring8.bin only"),
        ("1_French.xml", b"<x/>", "not a language file name the phone takes"),
        ("5_Russian(Russian).xml", b"<x/>", "not a language file name the phone takes"),
    ],
    ids=lambda value: value if isinstance(value, str) and len(value) < 40 else "",
)
def test_check_rejects_a_resource_the_phone_would_not_take(site: Path, name: str, data: bytes, message: str):
    (site / "root" / "files" / name).write_bytes(data)
    result = htekd(site, "check")
    assert result.returncode == 1, result.stdout
    lines = [line for line in result.stdout.splitlines() if line.startswith(f"files/{name}:")]
    assert len(lines) == 1, result.stdout
    assert message in lines[0]


def test_language_files_named_as_the_phone_expects_pass(site: Path):
    for name in ("1_Français(French).xml", "10_简体中文(ChineseSimplified).xml", "19_Dutch.js", "Web_English_Template.js"):
        (site / "root" / "files" / name).write_bytes(b"<x/>")
    result = htekd(site, "check")
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_generic_wallpaper_name_is_a_warning(site: Path):
    (site / "root" / "files" / "wallpaper.jpg").write_bytes(jpeg(480, 320))
    result = htekd(site, "check")
    assert result.returncode == 0
    assert "files/wallpaper.jpg: warning: name it wallpaper-<MODEL>.jpg" in result.stdout


def test_missing_firmware_for_a_model_in_the_inventory_is_listed(site: Path):
    result = htekd(site, "check")
    assert "no fw920M.rom for the UC924 phones" in result.stdout
    (site / "root" / "files" / "fw920M.rom").write_bytes(b"\x00" * 1024)
    result = htekd(site, "check")
    assert "fw920M.rom" not in result.stdout
    assert "no fw900M.rom for the UC912G phones" in result.stdout


@pytest.mark.parametrize(
    "protocol, base",
    [("http", "http://127.0.0.1:8080"), ("tftp", "tftp://127.0.0.1:6969"), ("ftp", "ftp://127.0.0.1:2121")],
)
def test_render_fills_resource_urls_for_the_protocol_in_use(site: Path, protocol: str, base: str):
    uc924 = htekd(site, "render", "001fc1000001", "--protocol", protocol).stdout
    assert f'<P20052 para="FirmwareUpGrade_WallpaperServerURL">{base}/wallpaper-UC924.jpg</P20052>' in uc924
    assert f'<P24885 para="Preference_WebLogoServerURL">{base}/weblogo.jpg</P24885>' in uc924
    assert f'<P20175 para="FirmwareUpGrade_LanguageUrl">{base}/Language.tar</P20175>' in uc924
    assert f'<P20174 para="FirmwareUpGrade_RingUrl">{base}</P20174>' in uc924
    assert "P20051" not in uc924  # no screensaver-UC924 file
    assert "P20176" not in uc924  # no hlpres.tar
    uc926 = htekd(site, "render", "001fc1000002", "--protocol", protocol).stdout
    assert f"{base}/screensaver-UC926.bmp</P20051>" in uc926
    assert "P20052" not in uc926
    uc912 = htekd(site, "render", "001fc1000003", "--protocol", protocol).stdout
    assert "P20051" not in uc912 and "P20052" not in uc912  # the UC912G has no wallpaper


def test_a_layer_that_sets_a_resource_url_wins(site: Path):
    (site / "root" / "settings" / "models" / "UC924.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1"><config version="1">'
        '<P20052 para="FirmwareUpGrade_WallpaperServerURL">http://cdn.example.com/w.jpg</P20052>'
        "</config></hl_provision>\n", encoding="utf-8")
    out = htekd(site, "render", "001fc1000001").stdout
    assert "http://cdn.example.com/w.jpg</P20052>" in out
    assert "wallpaper-UC924.jpg" not in out


def pin_sales_to(site: Path, version: str) -> None:
    (site / "root" / "settings" / "groups" / "sales.xml").write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1"><config version="1">'
        f'<P192 para="FirmwareUpGrade_FirmwareServerPath">{{firmware_url}}/firmware/{version}</P192>'
        "</config></hl_provision>\n", encoding="utf-8")


def test_a_pinned_firmware_version_must_be_present(site: Path):
    pin_sales_to(site, "2.0.4.6")
    result = htekd(site, "check")
    assert result.returncode == 1
    assert "files/firmware/2.0.4.6: error: no fw920M.rom for the 1 UC924 phones pinned to firmware 2.0.4.6" in result.stdout
    assert "files/firmware/2.0.4.6: error: no fw920M.rom for the 1 UC926 phones pinned to firmware 2.0.4.6" in result.stdout
    folder = site / "root" / "files" / "firmware" / "2.0.4.6"
    folder.mkdir(parents=True)
    (folder / "fw920M.rom").write_bytes(b"\x00" * 4096)
    result = htekd(site, "check")
    assert result.returncode == 0, result.stdout
    assert "fw920M.rom" not in result.stdout  # the pinned phones have theirs; the UC912G's warning stays
    assert "no fw900M.rom for the UC912G phones" in result.stdout
    rendered = htekd(site, "render", "001fc1000001").stdout
    assert '<P192 para="FirmwareUpGrade_FirmwareServerPath">http://127.0.0.1:8080/firmware/2.0.4.6</P192>' in rendered


def test_phones_shows_the_firmware_offered_and_who_would_upgrade(site: Path, daemon):
    import json

    pin_sales_to(site, "2.0.4.6")
    folder = site / "root" / "files" / "firmware" / "2.0.4.6"
    folder.mkdir(parents=True)
    (folder / "fw920M.rom").write_bytes(b"\x00" * 4096)
    (folder / "boot_924.bin").write_bytes(b"\x00" * 16)
    (folder / "img_924.bin").write_bytes(b"\x00" * 16)
    d = daemon()
    agents = {
        "001fc1000001": "Htek UC924 1.0.3.60 00:1f:c1:00:00:01",  # before the all-in-one file
        "001fc1000002": "Htek UC926 2.0.4.6 00:1f:c1:00:00:02",  # already on the pinned version
        "001fc1000003": "Htek UC912G 2.0.4.2 00:1f:c1:00:00:03",  # not pinned, no file present
    }
    for mac, agent in agents.items():
        subprocess.run(["curl", "-s", "-o", "/dev/null", "-A", agent, d.url("http", f"cfg{mac}.xml")], timeout=20)
    d.wait_log(3)
    assert d.stop() == 0
    rows = {row["mac"]: row for row in json.loads(htekd(site, "phones", "--json").stdout)}
    assert (rows["001fc1000001"]["offered"], rows["001fc1000001"]["upgrade"]) == ("2.0.4.6", True)
    assert (rows["001fc1000002"]["offered"], rows["001fc1000002"]["upgrade"]) == ("2.0.4.6", False)
    assert rows["001fc1000003"]["offered"] == "none (fw900M.rom missing)"
    assert rows["001fc1000003"]["upgrade"] is False
    (folder / "img_924.bin").unlink()
    rows = {row["mac"]: row for row in json.loads(htekd(site, "phones", "--json").stdout)}
    assert rows["001fc1000001"]["offered"] == "none (img_924.bin missing)"
