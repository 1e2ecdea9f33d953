"""Reading the administrator's small CSV tables under settings/ (keys.csv, contacts.csv).

Problems go to the loader (its error() and warn() take file, line, message); a table that cannot
be read at all gives None.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass
from pathlib import Path

# Characters XML 1.0 cannot carry: a cell holding one could not be written into a phone's file.
NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


@dataclass(frozen=True)
class Row:
    line: int  # where the row starts
    cells: dict[str, str]  # column (lower case) -> cell, stripped; "" for a missing cell


@dataclass(frozen=True)
class Table:
    columns: tuple[str, ...]  # lower case, in file order, without note columns (#...)
    rows: tuple[Row, ...]


def read(loader, path: Path, name: str, allowed, required: tuple[str, ...]) -> Table | None:
    """`allowed(column)` says whether a column belongs; `required` columns must be present."""
    try:
        data = path.read_bytes()
    except OSError as exc:
        loader.error(name, 0, f"cannot read: {exc.strerror}")
        return None
    try:
        text = data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        loader.error(name, data[: exc.start].count(b"\n") + 1, "not UTF-8 text (save the spreadsheet as CSV UTF-8)")
        return None
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    rows: list[Row] = []
    try:
        header = [column.strip().lower() for column in next(reader, [])]
        if not any(header):
            loader.error(name, 1, f"empty file: the first line must name the columns ({', '.join(required)}, ...)")
            return None
        kept = {index: column for index, column in enumerate(header) if column and not column.startswith("#")}
        names = list(kept.values())
        why = [f"unknown column {column!r}" for column in names if not allowed(column)]
        why += [f"column {column!r} twice" for column in sorted(set(names)) if names.count(column) > 1]
        why += [f"no {column!r} column" for column in required if column not in names]
        if why:
            loader.error(name, 1, "; ".join(why) + " (start a column's name with # to keep it as a note)")
            return None
        for row in reader:
            if not any(cell.strip() for cell in row):
                continue
            line = reader.line_num - sum(cell.count("\n") for cell in row)
            if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
                loader.error(name, line, f"{len(row)} cells but only {len(header)} columns")
                continue
            cells = {column: row[index].strip() if index < len(row) else "" for index, column in kept.items()}
            unwritable = next((column for column, cell in cells.items() if NOT_XML.search(cell)), None)
            if unwritable:
                char = NOT_XML.search(cells[unwritable]).group()
                loader.error(name, line, f"column {unwritable!r}: character U+{ord(char):04X} cannot be written in XML")
                continue
            rows.append(Row(line, cells))
    except csv.Error as exc:
        loader.error(name, reader.line_num, f"malformed CSV: {exc}")
    return Table(tuple(kept.values()), tuple(rows))
