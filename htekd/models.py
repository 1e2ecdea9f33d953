"""The Htek phone models htekd knows: device code (cfg<code>.xml), firmware file names and the
resources each model takes. Data: htekd/data/models.csv; an empty cell means "not known"."""

from __future__ import annotations

import csv
import functools
import io
import re
from dataclasses import dataclass
from importlib import resources

DEVCODE = re.compile(r"[0-9]{4}")
RESOLUTION = re.compile(r"([0-9]+)x([0-9]+)")
SERIES = ("UC900", "UC800")
COLUMNS = ["model", "series", "devcode", "firmware", "legacy_firmware", "wallpaper", "web_logo"]


@dataclass(frozen=True)
class Model:
    name: str  # "UC924"
    series: str  # "UC900" or "UC800"
    devcode: str | None  # "0012": the phone asks for cfg0012.xml; None = not known
    firmware: str | None  # "fw920M.rom" (firmware 1.0.3.73 and later); None = not known
    legacy_firmware: tuple[str, ...] | None  # ("boot_924.bin", "img_924.bin") before 1.0.3.73
    wallpaper: tuple[int, int] | None  # wallpaper/screensaver resolution (width, height)
    web_logo: bool  # takes a custom web logo (225x93 .jpg)


class ModelTable:
    def __init__(self, models: tuple[Model, ...]):
        self.all = models
        self._by_name = {model.name.upper(): model for model in models}
        by_devcode: dict[str, list[Model]] = {}
        for model in models:
            if model.devcode:
                by_devcode.setdefault(model.devcode, []).append(model)
        self._by_devcode = {code: tuple(group) for code, group in by_devcode.items()}

    def get(self, name: str) -> Model | None:
        """The model named `name` (case-insensitive), or None."""
        return self._by_name.get(name.upper())

    def for_devcode(self, code: str) -> tuple[Model, ...]:
        """The models that ask for cfg<code>.xml (several share one code, e.g. 0019)."""
        return self._by_devcode.get(code, ())


def _parse_row(row: dict[str, str], line: int) -> Model:
    def fail(column: str) -> ValueError:
        return ValueError(f"models.csv line {line}: bad {column} {row[column]!r}")

    if row["series"] not in SERIES:
        raise fail("series")
    if row["devcode"] and not DEVCODE.fullmatch(row["devcode"]):
        raise fail("devcode")
    wallpaper = None
    if row["wallpaper"]:
        size = RESOLUTION.fullmatch(row["wallpaper"])
        if not size:
            raise fail("wallpaper")
        wallpaper = (int(size.group(1)), int(size.group(2)))
    if row["web_logo"] not in ("yes", "no"):
        raise fail("web_logo")
    return Model(
        name=row["model"],
        series=row["series"],
        devcode=row["devcode"] or None,
        firmware=row["firmware"] or None,
        legacy_firmware=tuple(row["legacy_firmware"].split()) or None,
        wallpaper=wallpaper,
        web_logo=row["web_logo"] == "yes",
    )


@functools.cache
def models() -> ModelTable:
    """The model table shipped with htekd (loaded once)."""
    text = resources.files("htekd").joinpath("data", "models.csv").read_text(encoding="utf-8")
    reader = csv.DictReader(io.StringIO(text))
    if reader.fieldnames != COLUMNS:
        raise ValueError(f"models.csv: expected columns {','.join(COLUMNS)}")
    return ModelTable(tuple(_parse_row(row, reader.line_num) for row in reader))
