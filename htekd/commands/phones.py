"""`htekd phones`: the phones the daemon has seen, from its state folder (safe while it runs)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import time
from pathlib import Path

from htekd.cli import CommandError
from htekd.config import DEFAULT_CONFIG, ConfigError, load
from htekd.state import StateError, read


PHONE_COLUMNS = (
    ("MAC", "mac"), ("MODEL", "model"), ("FIRMWARE", "firmware"), ("ADDRESS", "address"),
    ("VIA", "protocol"), ("LAST FILE", "last_file"), ("OUTCOME", "outcome"), ("LAST SEEN", "last_seen"),
    ("REQUESTS", "requests"),
)
DEVCODE_COLUMNS = (("DEVCODE", "devcode"), ("MODEL", "model"), ("FIRST SEEN", "first_seen"), ("LAST SEEN", "last_seen"))
TIME_FIELDS = ("first_seen", "last_seen")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"the configuration file naming the state folder (default {DEFAULT_CONFIG})")
    parser.add_argument("--json", action="store_true", help="print a JSON array (times in ISO 8601 UTC)")
    parser.add_argument("--devcodes", action="store_true",
                        help="list the device codes learned from phones instead (cfg<devcode>.xml -> model)")


def run(args: argparse.Namespace) -> int:
    try:
        config = load(args.config)
        phones, devcodes = read(config.server.state_dir)
    except (ConfigError, StateError) as exc:
        raise CommandError(str(exc)) from None
    rows, columns = (devcodes, DEVCODE_COLUMNS) if args.devcodes else (phones, PHONE_COLUMNS)
    rows = [dataclasses.asdict(row) for row in rows]
    if args.json:
        for row in rows:
            for key in TIME_FIELDS:
                row[key] = _iso(row[key])
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    print_table(rows, columns)
    return 0


def print_table(rows: list[dict], columns) -> None:
    cells = [[title for title, _ in columns]]
    for row in rows:
        cells.append([_local(row[key]) if key in TIME_FIELDS else "" if row[key] is None else str(row[key])
                      for _, key in columns])
    widths = [max(len(line[index]) for line in cells) for index in range(len(columns))]
    for line in cells:
        print("  ".join(cell.ljust(width) for cell, width in zip(line, widths)).rstrip())


def _local(moment: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment))


def _iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))
