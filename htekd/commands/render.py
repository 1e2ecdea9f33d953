"""htekd render: exactly the bytes a phone would get."""

from __future__ import annotations

import re
import sys

from htekd.cli import CommandError
from htekd.commands.common import add_config_argument, add_phone_arguments, load_resolver
from htekd.models import DEVCODE
from htekd.resolution import Kind, Status
from htekd.tree import normalise_mac

# Six pairs or twelve characters without a dot: meant as a MAC, not as a file name.
MAC_LIKE = re.compile(r"\A(?:[0-9A-Za-z]{2}(?:[:-][0-9A-Za-z]{2}){5}|[0-9A-Za-z]{12})\Z")


def add_arguments(parser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("target", help="a MAC (any spelling), a device code such as 0012, or a file name")
    parser.add_argument("--plain", action="store_true", help="show an encrypted file decrypted (the XML)")
    add_phone_arguments(parser)


def run(args) -> int:
    target = args.target.strip()
    if MAC_LIKE.match(target) and not normalise_mac(target):
        raise CommandError(f"bad MAC {target!r}: expected 12 hex digits, e.g. 00:1f:c1:00:00:01 or 001fc1000001")
    if target.isdigit() and not DEVCODE.fullmatch(target):
        raise CommandError(f"bad device code {target!r}: expected 4 digits, e.g. 0012 (see htekd models)")
    resolver = load_resolver(args.config)
    resolution = resolver.render_target(target, args.protocol, plain=args.plain, user_agent=args.user_agent)
    policy = resolver.config.server.unknown_phones
    if resolution.kind is Kind.UNKNOWN_PHONE and resolution.status is Status.DENIED:
        raise CommandError(f"{resolution.mac}: unknown phone (not in phones.csv): refused (unknown_phones = {policy})")
    if not resolution.ok:
        raise CommandError(f"{resolution.path or target}: {resolution.status.value}: {resolution.reason}")
    if resolution.kind is Kind.UNKNOWN_PHONE:
        print(f"htekd render: {resolution.mac}: unknown phone (not in phones.csv): unknown_phones = {policy} "
              "gives it the common and model settings, without passwords or keys", file=sys.stderr)
    with resolution.open() as reader:
        while chunk := reader.read(1 << 16):
            sys.stdout.buffer.write(chunk)
    sys.stdout.buffer.flush()
    return 0
