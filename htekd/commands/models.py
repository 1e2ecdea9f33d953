"""`htekd models`: the models htekd knows, their device codes and firmware file names."""

from __future__ import annotations

import argparse
import json

from htekd.models import Model, models

UNKNOWN = "unknown"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("--json", action="store_true", help="print a JSON array (null = not known)")


def as_json(model: Model) -> dict:
    return {
        "model": model.name,
        "series": model.series,
        "devcode": model.devcode,
        "firmware": model.firmware,
        "legacy_firmware": list(model.legacy_firmware) if model.legacy_firmware else None,
        "wallpaper": "{}x{}".format(*model.wallpaper) if model.wallpaper else None,
        "web_logo": model.web_logo,
    }


def table(rows: list[tuple[str, ...]]) -> str:
    widths = [max(len(row[column]) for row in rows) for column in range(len(rows[0]))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in rows)


def run(args: argparse.Namespace) -> int:
    known = models().all
    if args.json:
        print(json.dumps([as_json(model) for model in known], indent=2))
        return 0
    rows = [("MODEL", "SERIES", "DEVICE CODE", "FIRMWARE")]
    rows += [(m.name, m.series, m.devcode or UNKNOWN, m.firmware or UNKNOWN) for m in known]
    print(table(rows))
    return 0
