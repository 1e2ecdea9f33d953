"""`htekd <command>`: one argparse front for the commands in htekd.commands.

Only the chosen command's module is imported, so one command's dependencies never slow or break another.
"""

from __future__ import annotations

import argparse
import importlib
import sys

from htekd import __version__

# command -> (module in htekd.commands, one-line help); each module has add_arguments(parser, name) and run(args)
COMMANDS = {
    "init": ("init", "create a content tree and a commented htekd.conf for it"),
    "serve": ("serve", "run the daemon: TFTP, FTP, HTTP and HTTPS listeners over one resolver"),
    "check": ("check", "validate the configuration, the content tree and every parameter value (like nginx -t)"),
    "render": ("render", "print exactly what a phone would get for cfg<mac>.xml or cfg<devcode>.xml"),
    "explain": ("explain", "print each parameter a phone or model gets and where its value comes from"),
    "models": ("models", "list models, device codes and firmware file names"),
    "encrypt": ("crypt", "encrypt a file as the phones and openssl enc -aes-128-cbc do"),
    "decrypt": ("crypt", "decrypt a file encrypted with htekd encrypt or openssl"),
    "import": ("importing", "turn a configuration downloaded from a phone into a settings layer: only what differs from the factory defaults"),
    "phones": ("phones", "list the phones seen by the daemon"),
    "notify": ("notify", "send SIP NOTIFY check-sync (--reboot: reboot=true) so phones re-provision now"),
    "dhcp": ("dhcp", "print dnsmasq, ISC dhcpd and Kea lines giving Htek phones the provisioning URL (option 66/128/150)"),
}


class CommandError(Exception):
    """A user-facing failure: printed as one line, exit status 1 (or .status)."""

    def __init__(self, message: str, status: int = 1):
        super().__init__(message)
        self.status = status


class ArgumentParser(argparse.ArgumentParser):
    """argparse with the one-line errors of every other failure: `htekd <command>: message`, status 2."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: {message} (see {self.prog} --help)\n")


def parse(argv: list[str]) -> argparse.Namespace:
    """The arguments; a mistake is reported by the command's own parser, so it names the command."""
    parser, commands = build_parser(argv)
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands[args.command].error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def build_parser(argv: list[str]) -> tuple[argparse.ArgumentParser, dict[str, argparse.ArgumentParser]]:
    parser = ArgumentParser(prog="htekd", description="Provisioning daemon for Htek IP phones.")
    parser.add_argument("--version", action="version", version=f"htekd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    chosen = next((arg for arg in argv if not arg.startswith("-")), None)
    commands = {}
    for name, (module_name, help_text) in COMMANDS.items():
        command = commands[name] = sub.add_parser(name, help=help_text, description=help_text)
        if name == chosen:
            module = importlib.import_module(f"htekd.commands.{module_name}")
            module.add_arguments(command, name)
            command.set_defaults(run=module.run)
    return parser, commands


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parse(argv)
    try:
        return args.run(args) or 0
    except CommandError as exc:
        print(f"htekd {args.command}: {exc}", file=sys.stderr)
        return exc.status
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 0
    except OSError as exc:  # standard output full or gone; the commands report their own files
        print(f"htekd {args.command}: cannot write: {exc.strerror or exc}", file=sys.stderr)
        return 1
