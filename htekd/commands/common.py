"""What several commands share: the -c option and loading config and content tree as one-line errors."""

from __future__ import annotations

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
