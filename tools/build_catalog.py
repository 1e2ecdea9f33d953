#!/usr/bin/env python3
"""Regenerate htekd/data/catalog.tsv from a configuration downloaded from an Htek phone.

    tools/build_catalog.py REFERENCE_XML [-o OUTPUT]

The phone's own download is not well-formed XML (it uses HTML entities such as `&copy;`),
so entities XML does not define are replaced by their characters before parsing.
Output: one row per section comment (empty code, so empty sections survive) and one row
per parameter (code, name, section, default), in file order; a P-code listed twice keeps
its first position. Tabs, newlines, carriage returns and backslashes are escaped.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from lxml import etree

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # htekd from this checkout, installed or not
from htekd import phonexml  # noqa: E402
from htekd.catalog import PCODE  # noqa: E402

DEFAULT_OUTPUT = Path(__file__).resolve().parents[1] / "htekd" / "data" / "catalog.tsv"
HEADER = ("code", "name", "section", "default")
# The vendor's file spells `para` as `papr` once (P24749).
NAME_ATTRIBUTES = ("para", "papr")


class BuildError(Exception):
    pass


def escape(field: str) -> str:
    return field.replace("\\", "\\\\").replace("\t", "\\t").replace("\n", "\\n").replace("\r", "\\r")


def read_rows(path: Path) -> list[tuple[str, str, str, str]]:
    """Section rows ("", "", section, "") and parameter rows (code, name, section, default)."""
    try:
        root = etree.fromstring(phonexml.readable(path.read_bytes()), phonexml.PARSER)
    except etree.XMLSyntaxError as exc:
        raise BuildError(f"{path}: {exc}") from None
    config = root.find("config")
    if config is None:
        raise BuildError(f"{path}: no <config> element")
    rows: list[tuple[str, str, str, str]] = []
    seen: dict[str, tuple[str, str]] = {}
    section = ""
    for node in config:
        if isinstance(node, etree._Comment):
            section = (node.text or "").strip()
            rows.append(("", "", section, ""))
            continue
        if not isinstance(node.tag, str) or not (PCODE.fullmatch(node.tag) and node.tag.startswith("P")):
            raise BuildError(f"{path}:{node.sourceline}: unexpected element <{node.tag}>")
        code = node.tag
        name = next((node.get(a) for a in NAME_ATTRIBUTES if node.get(a) is not None), "")
        default = node.text or ""
        if code in seen:
            if seen[code] != (name, default):
                raise BuildError(f"{path}:{node.sourceline}: {code} listed twice with different contents")
            continue
        seen[code] = (name, default)
        rows.append((code, name, section, default))
    return rows


def write_tsv(rows: list[tuple[str, str, str, str]], output: Path) -> None:
    lines = ["\t".join(HEADER)] + ["\t".join(escape(field) for field in row) for row in rows]
    output.write_bytes(("\n".join(lines) + "\n").encode("utf-8"))


def table_tool(argv: list[str] | None, name: str, doc: str, source_help: str, default_output: Path, build) -> int:
    """The command line of a tool that builds one data table: SOURCE [-o OUTPUT].
    `build(source, output)` writes the table and says what it wrote; an error is one line."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("source", type=Path, help=source_help)
    parser.add_argument("-o", "--output", type=Path, default=default_output, help=f"default: {default_output}")
    args = parser.parse_args(argv)
    try:
        summary = build(args.source, args.output)
    except (OSError, UnicodeDecodeError, BuildError) as exc:
        print(f"{name}: {exc}", file=sys.stderr)
        return 1
    print(f"{name}: {summary} -> {args.output}")
    return 0


def build(reference: Path, output: Path) -> str:
    rows = read_rows(reference)
    write_tsv(rows, output)
    count = sum(1 for row in rows if row[0])
    return f"{count} parameters, {len(rows) - count} sections"


def main(argv: list[str] | None = None) -> int:
    return table_tool(argv, "build_catalog", __doc__, "configuration XML downloaded from a phone", DEFAULT_OUTPUT, build)


if __name__ == "__main__":
    raise SystemExit(main())
