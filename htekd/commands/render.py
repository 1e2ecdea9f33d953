"""htekd render: exactly the bytes a phone would get."""

from __future__ import annotations

import sys

from htekd.cli import CommandError
from htekd.commands.common import add_config_argument, add_phone_arguments, load_resolver



def add_arguments(parser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("target", help="a MAC (any spelling), a device code such as 0012, or a file name")
    parser.add_argument("--plain", action="store_true", help="show an encrypted file decrypted (the XML)")
    add_phone_arguments(parser)


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
