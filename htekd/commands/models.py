"""`htekd models`: the models htekd knows, their device codes and firmware file names."""

from __future__ import annotations

import argparse
import json

from htekd.cli import CommandError
from htekd.commands.common import add_optional_config_argument, load_optional_config
from htekd.models import Model, models

UNKNOWN = "unknown"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    add_optional_config_argument(parser, "the device codes learned from phones")
    parser.add_argument("--json", action="store_true", help="print a JSON array (null = not known)")


def learned_devcodes(config) -> dict[str, str]:
    """model -> device code the daemon learned from phones' own requests (state_dir)."""
    from htekd.state import StateError, read

    if config is None or not config.server.state_dir.is_dir():
        return {}
    try:
        _, devcodes = read(config.server.state_dir)
    except StateError as exc:
        raise CommandError(str(exc)) from None
    return {row.model: row.devcode for row in devcodes if row.model}


def as_json(model: Model, learned: dict[str, str]) -> dict:
    return {
        "model": model.name,
        "series": model.series,
        "devcode": model.devcode or learned.get(model.name),
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
    learned = learned_devcodes(load_optional_config(args.config))
    if args.json:
        print(json.dumps([as_json(model, learned) for model in known], indent=2))
        return 0
    rows = [("MODEL", "SERIES", "DEVICE CODE", "FIRMWARE")]
    rows += [(m.name, m.series, _devcode(m, learned), m.firmware or UNKNOWN) for m in known]
    print(table(rows))
    return 0


def _devcode(model: Model, learned: dict[str, str]) -> str:
    if model.devcode:
        return model.devcode
    return f"{learned[model.name]} (learned)" if model.name in learned else UNKNOWN
