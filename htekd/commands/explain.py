"""htekd explain: each parameter a phone or model gets, and where its value comes from."""

from __future__ import annotations

import json
import sys

from htekd.catalog import CatalogError, catalog, is_pcode
from htekd.cli import CommandError
from htekd.commands.common import add_config_argument, add_phone_arguments, load_resolver
from htekd.commands.phones import print_table

COLUMNS = (("CODE", "code"), ("NAME", "name"), ("VALUE", "value"), ("FROM", "source"))


def add_arguments(parser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("target", help="a MAC (any spelling) or a device code such as 0012")
    parser.add_argument("parameters", nargs="*", metavar="PARAMETER",
                        help="P-codes or names to explain (default: every parameter in the file)")
    parser.add_argument("--show-secrets", action="store_true", help="show passwords and keys instead of ***")
    parser.add_argument("--json", action="store_true", help="print a JSON array")
    add_phone_arguments(parser)


def run(args) -> int:
    from htekd.explain import explain_target

    codes = [_code(key) for key in args.parameters] if args.parameters else None
    resolver = load_resolver(args.config)
    try:
        explained = explain_target(resolver, args.target, codes, args.protocol, args.user_agent, args.show_secrets)
    except ValueError as exc:
        raise CommandError(str(exc)) from None
    if explained.note:
        print(f"htekd explain: {explained.note}", file=sys.stderr)
    rows = [line.as_dict() for line in explained.lines]
    if args.json:
        print(json.dumps(rows, indent=2, ensure_ascii=False))
        return 0
    for row in rows:  # one line each, whatever a value holds
        row["value"] = json.dumps(row["value"], ensure_ascii=False) if row["sent"] else f"({json.dumps(row['value'], ensure_ascii=False)})"
        if row["written"]:
            row["source"] += f" as {json.dumps(row['written'], ensure_ascii=False)}"
    print_table(rows, COLUMNS)
    return 0


def _code(key: str) -> str:
    """The P-code of a name or P-code; a P-code the catalog lacks may still be set in a layer."""
    if is_pcode(key):
        return f"P{int(key[1:])}"
    try:
        return catalog().lookup(key).code
    except CatalogError as exc:
        raise CommandError(str(exc)) from None
