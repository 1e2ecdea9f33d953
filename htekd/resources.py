"""Firmware and resource files: which names phones take and what the files must be (seed sections 5-7).

A wrong name, size or resolution breaks the feature on every phone at once, so `htekd check`
knows the rules; the renderer fills in the URL parameters for the files that are present.
"""

from __future__ import annotations

import functools
import os
import re
import struct
from dataclasses import dataclass
from importlib import resources as package_data
from pathlib import Path
from typing import Mapping

from htekd.models import Model, models
from htekd.tree import Problem, Snapshot

SCREENSAVER_URL = "P20051"
WALLPAPER_URL = "P20052"
WEB_LOGO_URL = "P24885"
# wallpaper-UC924.jpg, screensaver-UC926E.bmp: one file per model, since resolutions differ.
MODEL_IMAGE = re.compile(r"\A(?P<kind>wallpaper|screensaver)-(?P<model>[A-Za-z0-9]+)\.(?P<ext>jpg|bmp)\Z", re.IGNORECASE)
GENERIC_IMAGE = re.compile(r"\A(?:wallpaper|screensaver)[^/]*\.(?:jpe?g|bmp|png|gif)\Z", re.IGNORECASE)
WEB_LOGO = "weblogo.jpg"
WEB_LOGO_SIZE = (225, 93)
IMAGE_MAX_BYTES = 100 * 1024
WEB_LOGO_MAX_BYTES = 2 * 1024 * 1024
RING = re.compile(r"\Aring([0-9]+)\.bin\Z", re.IGNORECASE)
LANGUAGE_LIKE = re.compile(r"\A(?:[0-9]+_.*|LCD_.*|Web_.*)\.(?:xml|js)\Z", re.IGNORECASE)
IMAGE_PARAMETERS = {"wallpaper": WALLPAPER_URL, "screensaver": SCREENSAVER_URL}
FIRMWARE_SERVER_PATH = "P192"
FILE_PREFIX, FILE_POSTFIX = "P232", "P233"  # the phone asks for <prefix><firmware file><postfix>
VERSIONS_FOLDER = "firmware"  # files/firmware/<version>/: a version pinned with P192
ALL_IN_ONE_SINCE = (1, 0, 3, 73)  # from this firmware on one fw*.rom; before it boot_9xx.bin + img_9xx.bin


@dataclass(frozen=True)
class FirmwareOffer:
    """What a phone is offered for upgrade, read from its own rendered configuration."""

    folder: str | None  # under files/, "" for files/ itself; None when P192 points at another server
    version: str | None  # the version pinned by the folder name (files/firmware/<version>/), if any
    names: tuple[str, ...]  # the file names the phone asks for
    missing: tuple[str, ...]  # those not present in the folder

    def differs_from(self, running: str | None) -> bool:
        return bool(self.version and running and running != self.version)


def _version(text: str | None) -> tuple[int, ...] | None:
    parts = re.findall(r"[0-9]+", text or "")
    return tuple(int(part) for part in parts) if parts else None


def firmware_offer(settings: Mapping[str, str], base_url: str, files: Path, model: Model | None,
                   running: str | None = None) -> FirmwareOffer | None:
    """The firmware a phone with these rendered `settings` would fetch, and whether it is there.

    None when the model's firmware file is not known. `running` (from the User-Agent) decides
    between the all-in-one file and the older boot/img pair.
    """
    if model is None or not model.firmware:
        return None
    version = _version(running)
    legacy = version is not None and version < ALL_IN_ONE_SINCE and model.legacy_firmware
    bare = model.legacy_firmware if legacy else (model.firmware,)
    names = tuple(settings.get(FILE_PREFIX, "") + name + settings.get(FILE_POSTFIX, "") for name in bare)
    server_path = settings.get(FIRMWARE_SERVER_PATH, "").rstrip("/")
    if server_path == base_url:
        folder = ""
    elif server_path.startswith(base_url + "/"):
        folder = server_path[len(base_url) + 1:]
    else:
        return FirmwareOffer(None, None, names, ())
    segments = [segment for segment in folder.split("/") if segment]
    if any(segment in (".", "..") for segment in segments):
        return FirmwareOffer(None, None, names, ())
    pinned = segments[1] if len(segments) == 2 and segments[0] == VERSIONS_FOLDER else None
    missing = tuple(name for name in names if not files.joinpath(*segments, name).is_file())
    return FirmwareOffer(folder, pinned, names, missing)


@functools.cache
def language_files() -> frozenset[str]:
    """The LCD (.xml) and web (.js) language file names the phones take."""
    text = package_data.files("htekd").joinpath("data/languages.tsv").read_text(encoding="utf-8")
    return frozenset(line.split("\t", 1)[1] for line in text.splitlines() if line and not line.startswith("#"))


def image_size(data: bytes) -> tuple[str, int, int] | None:
    """(format, width, height) of a JPEG or BMP from its header, or None if it is neither."""
    if data[:2] == b"BM" and len(data) >= 26:
        width, height = struct.unpack_from("<ii", data, 18)
        return "bmp", width, abs(height)
    if data[:2] != b"\xff\xd8":
        return None
    offset = 2
    while offset + 4 <= len(data):
        if data[offset] != 0xFF:
            return None
        marker = data[offset + 1]
        if marker == 0xFF:  # fill byte
            offset += 1
            continue
        if marker in (0x01, *range(0xD0, 0xD8)):  # markers without a length
            offset += 2
            continue
        (length,) = struct.unpack_from(">H", data, offset + 2)
        if 0xC0 <= marker <= 0xCF and marker not in (0xC4, 0xC8, 0xCC):
            if offset + 9 > len(data):
                return None
            height, width = struct.unpack_from(">HH", data, offset + 5)
            return "jpg", width, height
        offset += 2 + length
    return None


def _read_head(path: Path, limit: int = 256 * 1024) -> bytes:
    with open(path, "rb") as handle:
        return handle.read(limit)


def image_urls(resource_names: frozenset, model: Model | None, base_url: str) -> dict[str, str]:
    """URL parameters for the images present under files/ that this model takes."""
    values: dict[str, str] = {}
    if model is None:
        return values
    if model.wallpaper:
        for kind, code in IMAGE_PARAMETERS.items():
            for ext in ("jpg", "bmp"):
                name = f"{kind}-{model.name}.{ext}"
                if name in resource_names:
                    values[code] = f"{base_url}/{name}"
                    break
    if model.web_logo and WEB_LOGO in resource_names:
        values[WEB_LOGO_URL] = f"{base_url}/{WEB_LOGO}"
    return values


def check_files(snapshot: Snapshot) -> list[Problem]:
    """Every resource or firmware problem a phone would meet, one Problem each."""
    problems: list[Problem] = []
    files = snapshot.files
    if not files.is_dir():
        return problems
    for folder, dirs, names in os.walk(files):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        for name in sorted(names):
            path = Path(folder) / name
            if path.is_file():  # a FIFO or a socket would block the read; the resolver never serves one
                problems += _check_file(path, f"files/{path.relative_to(files)}", name)
    return problems


def _check_file(path: Path, rel: str, name: str) -> list[Problem]:
    ring = RING.match(name)
    if ring and not 4 <= int(ring[1]) <= 8:
        return [Problem(rel, 0, "phones take ring4.bin to ring8.bin only (ring1-3 are built in)")]
    if LANGUAGE_LIKE.match(name) and name not in language_files():
        return [Problem(rel, 0, "not a language file name the phone takes (see docs/guide.md for the list)")]
    match = MODEL_IMAGE.match(name)
    if match:
        return _check_model_image(path, rel, name, match)
    if name.lower() == WEB_LOGO:
        return _check_image(path, rel, "jpg", WEB_LOGO_SIZE, WEB_LOGO_MAX_BYTES, "the web logo")
    if GENERIC_IMAGE.match(name):
        return [Problem(rel, 0, "name it wallpaper-<MODEL>.jpg or screensaver-<MODEL>.jpg (.bmp) so htekd knows "
                        "which models take it; a generic name is not given to phones", "warning")]
    return []


def _check_model_image(path: Path, rel: str, name: str, match: re.Match) -> list[Problem]:
    model = models().get(match["model"])
    if model is None:
        return [Problem(rel, 0, f"unknown model {match['model']!r} in the name")]
    if model.wallpaper is None:
        takers = ", ".join(m.name for m in models().all if m.wallpaper)
        return [Problem(rel, 0, f"{model.name} takes no {match['kind']} (only {takers} do)")]
    kind, ext = match["kind"].lower(), match["ext"].lower()
    if name != f"{kind}-{model.name}.{ext}":
        return [Problem(rel, 0, f"name it {kind}-{model.name}.{ext} exactly")]
    return _check_image(path, rel, ext, model.wallpaper, IMAGE_MAX_BYTES, f"a {model.name} {kind}")


def _check_image(path: Path, rel: str, ext: str, size: tuple[int, int], max_bytes: int, what: str) -> list[Problem]:
    try:
        length = path.stat().st_size
        info = image_size(_read_head(path))
    except OSError as exc:
        return [Problem(rel, 0, f"cannot read: {exc.strerror}")]
    problems = []
    if length > max_bytes:
        problems.append(Problem(rel, 0, f"{length} bytes: {what} must be at most {max_bytes // 1024} KB"))
    if info is None:
        problems.append(Problem(rel, 0, f"not a {ext.upper()} image"))
    elif info[0] != ext:
        problems.append(Problem(rel, 0, f"a {info[0].upper()} image named .{ext}"))
    elif (info[1], info[2]) != size:
        problems.append(Problem(rel, 0, f"{info[1]}x{info[2]}: {what} must be {size[0]}x{size[1]}"))
    return problems


