"""htekd import: a configuration downloaded from a phone (or any settings file) as a minimal layer.

Only what differs from the phone's factory defaults is kept, in the phone's own order and P-code
form, so the layer says what the administrator chose and nothing the phone has anyway. Secrets
stay out unless asked for: a layer is a file that gets copied, mailed and committed.
"""

from __future__ import annotations

import os
import sys

from htekd import phonexml, render
from htekd.cli import CommandError
from htekd.commands.common import load_config, read_input, shown, write_output
from htekd.tree import Problem, SettingsReader


def add_arguments(parser, name: str) -> None:
    parser.add_argument("-c", "--config", metavar="FILE",
                        help="htekd.conf whose [htekd] secret_parameters also count as secrets (default: none read)")
    parser.add_argument("input", metavar="FILE", help='configuration downloaded from a phone, or a settings file; "-" for standard input')
    parser.add_argument("--to", metavar="PATH", default="-",
                        help="where to write the layer, e.g. settings/models/UC924.xml (default: standard output)")
    parser.add_argument("--force", action="store_true", help="replace PATH if it exists")
    parser.add_argument("--include-secrets", action="store_true",
                        help="keep passwords and keys (left out by default)")


def minimal_layer(data: bytes, source: str, include_secrets: bool = False,
                  secret_parameters: frozenset = frozenset()) -> tuple[bytes, dict[str, int], list[Problem]]:
    """The layer holding what `data` sets differently from the factory defaults; counts of what
    was kept and left out; problems found on the way (errors for names htekd cannot place)."""
    reader = SettingsReader(secret_parameters)
    layer = reader.read(source, data)
    reader.report_unknown_codes()
    kept: dict[str, str] = {}
    paras: dict[str, str] = {}
    counts = {"kept": 0, "factory": 0, "secrets": 0}
    for code, value in layer.items():
        if value.factory:
            counts["factory"] += 1
        elif not include_secrets and code in reader.secrets:
            counts["secrets"] += 1
        else:
            kept[code] = value.value
            paras[code] = value.para
            counts["kept"] += 1
    return render.layout(kept, lambda code: paras.get(code, "")), counts, reader.problems


def run(args) -> int:
    marked = load_config(args.config).server.secret_parameters if args.config else frozenset()
    data = read_input(args.input)
    if args.to != "-" and not args.force and os.path.lexists(args.to):
        raise CommandError(f"{args.to} exists (--force replaces it)")
    try:
        layer, counts, problems = minimal_layer(data, shown(args.input), args.include_secrets, marked)
    except phonexml.PhoneXmlError as exc:
        raise CommandError(f"{shown(args.input)}:{exc.line}: error: {exc}") from None
    for problem in problems:
        print(problem, file=sys.stderr)
    if any(problem.severity == "error" for problem in problems):
        raise CommandError(f"{shown(args.input)}: nothing written: fix the errors above")
    write_output(args.to, layer)
    left_out = f"{counts['factory']} at their factory default"
    if counts["secrets"]:
        left_out += f", {counts['secrets']} secret{'s' if counts['secrets'] > 1 else ''} (--include-secrets keeps them)"
    destination = "standard output" if args.to == "-" else args.to
    print(f"htekd import: {counts['kept']} parameters -> {destination} (left out: {left_out})", file=sys.stderr)
    return 0
