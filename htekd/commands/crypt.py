"""`htekd encrypt` / `htekd decrypt`: a file in, the same file AES-encrypted (or decrypted) out.

Equivalent to `openssl enc [-d] -aes-128-cbc -K KEY -iv 0B1E1D000F0B07091D1F04071F1E0407`.
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from htekd import aes
from htekd.cli import CommandError
from htekd.commands.common import add_optional_config_argument, load_optional_config, read_input, shown, write_output

KEY_ENVIRONMENT = "HTEKD_AES_KEY"



def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    decrypt_option = " -d" if name == "decrypt" else ""
    parser.epilog = f"""\
The key is 1 to 16 hex digits (0-9, A-F), the phone's "Common AES Key" (P8631). It is taken from
--key, else --key-file, else the environment variable {KEY_ENVIRONMENT}, else [htekd] aes_key of the
configuration (-c FILE, or /etc/htekd.conf when it exists). A key given with --key is
visible to every user in the process list; --key-file and {KEY_ENVIRONMENT} are not.
Equivalent openssl command:
  openssl enc{decrypt_option} -aes-128-cbc -K KEY -iv {aes.IV.hex().upper()} -in IN -out OUT
"""
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--key", metavar="KEY", help="the AES key, 1 to 16 hex digits")
    source.add_argument(
        "--key-file", metavar="FILE", type=Path, help="read the key from FILE (surrounding whitespace ignored)"
    )
    add_optional_config_argument(parser, "its [htekd] aes_key when no other key is given")
    if name == "decrypt":
        parser.add_argument(
            "--raw", action="store_true", help="write the decrypted data even if it does not look like XML"
        )
    parser.add_argument("input", metavar="IN", help='file to read, "-" for standard input')
    parser.add_argument("output", metavar="OUT", help='file to write, "-" for standard output')


def run(args: argparse.Namespace) -> int:
    key = _key(args)
    data = read_input(args.input)
    try:
        if args.command == "encrypt":
            result = aes.encrypt(data, key)
        else:
            result = aes.decrypt(data, key)
            if not (args.raw or aes.looks_like_xml(result)):
                raise CommandError(
                    f"{shown(args.input)}: decrypted data is not XML: wrong key? (--raw writes it anyway)"
                )
    except aes.DecryptError as exc:
        raise CommandError(f"{shown(args.input)}: {exc}") from None
    write_output(args.output, result)
    return 0


def _key(args: argparse.Namespace) -> str:
    """The key text, checked; errors name where the key came from, never the key."""
    if args.key is not None:
        source, key = "--key", args.key
    elif args.key_file is not None:
        source = f"key file {args.key_file}"
        try:
            key = args.key_file.read_text(encoding="utf-8", errors="replace").strip()
        except OSError as exc:
            raise CommandError(f"cannot read key file {args.key_file}: {exc.strerror}") from None
    elif KEY_ENVIRONMENT in os.environ:
        source, key = KEY_ENVIRONMENT, os.environ[KEY_ENVIRONMENT]
    else:
        config = load_optional_config(args.config)
        if config is None or not config.server.aes_key:
            raise CommandError(f"no AES key: give --key or --key-file, set {KEY_ENVIRONMENT}, "
                               "or -c a configuration with [htekd] aes_key")
        source, key = f"[htekd] aes_key of {config.source}", config.server.aes_key
    try:
        aes.parse_key(key)
    except aes.InvalidKey as exc:
        raise CommandError(f"invalid AES key ({source}): {exc}") from None
    return key
