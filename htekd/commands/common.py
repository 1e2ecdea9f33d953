"""What several commands share: the -c option, loading config and content tree as one-line errors,
and reading and writing the files they are given."""

from __future__ import annotations

import contextlib
import os
import secrets
import stat
import sys
from pathlib import Path

from htekd import config as config_module
from htekd.cli import CommandError


def add_config_argument(parser, what: str = "configuration file") -> None:
    parser.add_argument("-c", "--config", default=str(config_module.DEFAULT_CONFIG), metavar="FILE",
                        help=f"{what} (default {config_module.DEFAULT_CONFIG})")


def add_optional_config_argument(parser, needed_for: str) -> None:
    """-c for a command that also works without a configuration."""
    parser.add_argument("-c", "--config", default=None, metavar="FILE",
                        help=f"configuration file (default {config_module.DEFAULT_CONFIG} when it exists; "
                             f"needed for {needed_for})")


def load_optional_config(path: str | None) -> config_module.Config | None:
    """The configuration given, else the default one when it exists, else None."""
    if path is None and not config_module.DEFAULT_CONFIG.exists():
        return None
    return load_config(path or str(config_module.DEFAULT_CONFIG))


def add_phone_arguments(parser) -> None:
    """--protocol and --user-agent: what decides a generated file besides the tree."""
    parser.add_argument("--protocol", choices=("tftp", "ftp", "http", "https"), default="http",
                        help="the upgrade mode the phone uses; it decides the server URLs written in (default http)")
    parser.add_argument("--user-agent", default="", metavar="UA",
                        help="the phone's User-Agent, e.g. 'Htek UC924 2.0.4.2 00:1f:c1:00:00:01'")


def load_config(path: str) -> config_module.Config:
    try:
        return config_module.load(path)
    except config_module.ConfigError as exc:
        raise CommandError(str(exc)) from None


def load_resolver(path: str):
    from htekd.resolver import Resolver
    from htekd.tree import TreeError

    try:
        return Resolver.from_config(load_config(path))
    except TreeError as exc:
        raise CommandError(str(exc)) from None


def shown(path: str) -> str:
    return "standard input" if path == "-" else path


def read_input(path: str) -> bytes:
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise CommandError(f"cannot read {path}: {exc.strerror}") from None


def write_output(path: str, data: bytes) -> None:
    """Write `data` to `path` whole or not at all.

    A regular file is replaced by renaming a temporary file from the same folder over it, so an
    error never leaves half a file; a device or pipe (/dev/null, a FIFO) is written in place.
    """
    if path == "-":
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    target = os.path.realpath(path)  # write through a symbolic link rather than replace it
    try:
        try:
            mode = os.stat(target).st_mode
        except FileNotFoundError:
            mode = None
        if mode is None or stat.S_ISREG(mode):
            replace_file(target, data, None if mode is None else stat.S_IMODE(mode))
        elif stat.S_ISDIR(mode):
            raise CommandError(f"cannot write {path}: is a folder")
        else:
            with open(target, "wb") as stream:
                stream.write(data)
    except OSError as exc:
        raise CommandError(f"cannot write {path}: {exc.strerror}") from None


def replace_file(target: str, data: bytes, mode: int | None) -> None:
    """Replace `target` by a file holding `data`, keeping its `mode` (None: a new file)."""
    folder, name = os.path.split(target)
    temporary = os.path.join(folder, f".{name}.{secrets.token_hex(4)}.tmp")
    # a new file gets 0666 less the umask, as openssl's output would
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(descriptor, "wb") as stream:
            if mode is not None:
                os.fchmod(stream.fileno(), mode)
            stream.write(data)
            stream.flush()
            os.fsync(stream.fileno())
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise
