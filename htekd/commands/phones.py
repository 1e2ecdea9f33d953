"""`htekd phones`: the phones seen, from the state store (safe while the daemon runs; with a shared
PostgreSQL store, what every server saw)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time

from htekd.cli import CommandError
from htekd.commands.common import add_config_argument, load_config
from htekd.escape import shown
from htekd.state import StateError
from htekd.store import is_postgresql, read


PHONE_COLUMNS = (
    ("MAC", "mac"), ("MODEL", "model"), ("FIRMWARE", "firmware"), ("OFFERED", "offered"), ("UPGRADE", "upgrade"),
    ("ADDRESS", "address"),
    ("VIA", "protocol"), ("LAST FILE", "last_file"), ("OUTCOME", "outcome"), ("LAST SEEN", "last_seen"),
    ("REQUESTS", "requests"),
)
DEVCODE_COLUMNS = (("DEVCODE", "devcode"), ("MODEL", "model"), ("FIRST SEEN", "first_seen"), ("LAST SEEN", "last_seen"))
TIME_FIELDS = ("first_seen", "last_seen")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("--json", action="store_true", help="print a JSON array (times in ISO 8601 UTC)")
    parser.add_argument("--devcodes", action="store_true",
                        help="list the device codes learned from phones instead (cfg<devcode>.xml -> model)")


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config)
    if not is_postgresql(config.server.state) and not config.server.state_dir.is_dir():
        # An empty table would say "no phone asked yet" when the truth is "not the daemon's state".
        raise CommandError(f"state folder {config.server.state_dir} does not exist ([htekd] state_dir of "
                           f"{config.source}): has htekd serve run with this configuration?")
    try:
        phones, devcodes = read(config.server)
    except StateError as exc:
        raise CommandError(str(exc)) from None
    rows, columns = (devcodes, DEVCODE_COLUMNS) if args.devcodes else (phones, PHONE_COLUMNS)
    rows = [dataclasses.asdict(row) for row in rows]
    if not args.devcodes:
        add_offers(config, rows)
    if args.json:
        for row in rows:
            for key in TIME_FIELDS:
                row[key] = _iso(row[key])
        # Lines are split by the indentation only (JSON escapes a newline inside a string).
        print("\n".join(shown(line) for line in json.dumps(rows, indent=2, ensure_ascii=False).split("\n")))
        return 0
    print_table(rows, columns)
    return 0


def add_offers(config, rows: list[dict]) -> None:
    """The firmware each phone would be offered now, next to what it runs ("offered", "upgrade")."""
    from htekd.resolver import Resolver
    from htekd.tree import TreeError

    try:
        resolver = Resolver.from_config(config)
    except TreeError as exc:
        print(f"htekd phones: firmware offers left out: {exc}", file=sys.stderr)
        resolver = None
    for row in rows:
        row["offered"], row["upgrade"] = offer(resolver, row) if resolver else (None, False)


def offer(resolver, row: dict) -> tuple[str | None, bool]:
    """What a phone seen (`row`: mac, model, protocol, firmware) is offered now, and whether it would upgrade."""
    from htekd.models import models
    from htekd.resources import firmware_offer

    model = models().get(row["model"]) if row["model"] else None
    if model is None:
        return None, False
    protocol = row["protocol"] if row["protocol"] in ("tftp", "ftp", "http", "https") else "http"
    settings = resolver.settings_for(row["mac"], protocol)
    if settings is None:
        return None, False
    found = firmware_offer(settings, resolver.config.public_url(protocol), resolver.snapshot.files, model, row["firmware"])
    if found is None:
        return None, False
    if found.folder is None:
        offered = "another server"
    elif found.missing:
        offered = f"none ({', '.join(found.missing)} missing)"
    else:
        offered = found.version or " + ".join(found.names)
    return offered, not found.missing and found.differs_from(row["firmware"])


def print_table(rows: list[dict], columns) -> None:
    cells = [[title for title, _ in columns]]
    for row in rows:
        cells.append([_cell(key, row[key]) for _, key in columns])
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _cell(key: str, value) -> str:
    if key in TIME_FIELDS:
        return _local(value)
    if isinstance(value, bool):
        return "yes" if value else ""
    return "" if value is None else shown(str(value))  # what phones sent: no control reaches the terminal


def _local(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
