"""What several commands share: the -c option and loading config and content tree as one-line errors."""

from __future__ import annotations

from htekd import config as config_module
from htekd.cli import CommandError


def add_config_argument(parser) -> None:
    parser.add_argument("-c", "--config", default=str(config_module.DEFAULT_CONFIG), metavar="FILE",
                        help=f"configuration file (default {config_module.DEFAULT_CONFIG})")


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
