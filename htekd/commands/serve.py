"""`htekd serve`: run the provisioning daemon in the foreground (systemd starts it this way)."""

from __future__ import annotations

import argparse

from htekd.commands.common import add_config_argument


EPILOG = """\
Events go to standard error as "htekd: ..." lines; "htekd: ready" follows once every listener
is bound (and READY=1 goes to systemd when NOTIFY_SOCKET is set). Requests go to the config's
`log` destination. Signals: SIGHUP reloads the config and the content tree (a broken edit keeps
the last good state) and reopens the request log file; SIGTERM or SIGINT stops.
Exit status: 0 after a clean stop, 1 when the config, the content tree or a listener fails.
"""


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_argument(parser)


def run(args: argparse.Namespace) -> int:
    from htekd.daemon import serve

    return serve(args.config)
