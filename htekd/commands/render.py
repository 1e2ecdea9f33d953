"""htekd render: exactly the bytes a phone would get."""

from __future__ import annotations

import sys

from htekd.cli import CommandError
from htekd.commands.common import add_config_argument, load_resolver



def add_arguments(parser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("target", help="a MAC (any spelling), a device code such as 0012, or a file name")
    parser.add_argument("--plain", action="store_true", help="show an encrypted file decrypted (the XML)")
    parser.add_argument("--protocol", choices=("tftp", "ftp", "http", "https"), default="http",
                        help="the upgrade mode the phone uses; it decides the server URLs written in (default http)")
    parser.add_argument("--user-agent", default="", metavar="UA",
                        help="the phone's User-Agent, e.g. 'Htek UC924 2.0.4.2 00:1f:c1:00:00:01'")


def run(args) -> int:
    resolver = load_resolver(args.config)
    resolution = resolver.render_target(args.target, args.protocol, plain=args.plain, user_agent=args.user_agent)
    if not resolution.ok:
        raise CommandError(f"{resolution.path or args.target}: {resolution.status.value}: {resolution.reason}")
    with resolution.open() as reader:
        while chunk := reader.read(1 << 16):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return 0
