"""`htekd init DIR`: a working content tree in DIR and a commented htekd.conf that serves it.

Asks nothing. The configuration is htekd's own commented reference (htekd/data/htekd.conf, every
key with its default) with the root, the state folder, the server URL and the listen addresses
filled in; the tree comes from htekd/data/init/. Nothing that exists is ever overwritten.
"""

from __future__ import annotations

import argparse
import grp
import ipaddress
import os
import re
from importlib import resources
from pathlib import Path

from htekd.cli import CommandError
from htekd.commands.common import add_config_argument
from htekd.config import Address, url_problem

SERVICE_GROUP = "htekd"
LISTENERS = {"tftp": 69, "ftp": 21, "http": 80, "https": 443}
SETTINGS_FOLDERS = ("settings/models", "settings/groups", "settings/phones", "files")

EPILOG = """\
Writes DIR/phones.csv, DIR/settings/common.xml, DIR/settings/{models,groups,phones}/, DIR/files/
and the configuration FILE (-c, default /etc/htekd.conf; mode 0640, group htekd when that group
exists, as it will hold passwords), then says what to do next.
Refuses, changing nothing, when FILE exists or DIR holds anything.
"""


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    add_config_argument(parser, "configuration file to write")
    parser.add_argument("root", metavar="DIR", help="the content tree to create (e.g. /srv/htekd)")
    parser.add_argument("--server-url", metavar="URL",
                        help="how phones reach this server (default http:// and this host's address on its default route)")
    parser.add_argument("--listen", action="append", default=[], metavar="ADDRESS",
                        help="an IP address every listener binds on the standard ports (repeat for several; "
                             "default 0.0.0.0, all IPv4 addresses)")
    parser.add_argument("--state-dir", default="/var/lib/htekd", metavar="DIR",
                        help="where the daemon keeps the phones seen (default /var/lib/htekd, the unit's state folder)")


def run(args: argparse.Namespace) -> int:
    server_url = args.server_url or _guessed_server_url()
    problem = url_problem(server_url)
    if problem:
        raise CommandError(f"--server-url: {problem}, got {server_url!r}")
    hosts = [_address(text) for text in args.listen] or ["0.0.0.0"]
    root, config_path = Path(args.root).absolute(), Path(args.config).absolute()
    if config_path.exists():
        raise CommandError(f"{config_path} exists: not overwritten (give another -c FILE)")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise CommandError(f"{root} exists and is not an empty folder: not overwritten")
    values = {
        ("htekd", "root"): str(root),
        ("htekd", "state_dir"): str(Path(args.state_dir).absolute()),
        ("htekd", "server_url"): server_url.rstrip("/"),
        **{(listener, "listen"): " ".join(str(Address(host, port)) for host in hosts)
           for listener, port in LISTENERS.items()},
    }
    ipv4 = [host for host in hosts if ":" not in host and host != "0.0.0.0"]
    if len(ipv4) == 1:
        values[("pnp", "interface")] = ipv4[0]  # PnP joins the multicast group on that interface only
    data = resources.files("htekd").joinpath("data")
    text = fill(data.joinpath("htekd.conf").read_text(encoding="utf-8"), values)
    root_existed, wrote_config = root.exists(), False
    try:
        config_path.parent.mkdir(parents=True, exist_ok=True)
        with open(config_path, "x", encoding="utf-8") as handle:
            wrote_config = True
            config_path.chmod(0o640)  # it will hold passwords and keys
            _give_to_service_group(config_path)
            handle.write(text)
        _copy_tree(data.joinpath("init"), root)
        for folder in SETTINGS_FOLDERS:
            (root / folder).mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        _undo(config_path if wrote_config else None, root, root_existed)
        raise CommandError(f"cannot write {exc.filename}: {exc.strerror}; nothing written") from None
    print(f"htekd init: wrote {config_path} and the content tree {root}")
    if args.server_url is None:
        print(f"htekd init: server_url = {server_url}, this host's address on its default route "
              "(phones must reach it; --server-url chooses another)")
    print(f"next: add phones to {root / 'phones.csv'}, settings to {root / 'settings/common.xml'}, "
          f"firmware to {root / 'files'}; then htekd check -c {config_path}")
    return 0


def fill(text: str, values: dict[tuple[str, str], str]) -> str:
    """`text` (an INI file) with the value of each (section, key) of `values` replaced in place; the
    line's own comment stays. A key written commented out (";key = ...") is uncommented."""
    lines, section = [], None
    for line in text.splitlines(keepends=True):
        header = re.match(r"\[([^\]]+)\]", line)
        if header:
            section = header.group(1)
        item = re.match(r";?(([a-z_]+) *= *)\S*( *;.*)?$", line.rstrip("\n"))
        if item and (section, item.group(2)) in values:
            head = item.group(1) + values.pop((section, item.group(2)))
            comment = (item.group(3) or "").lstrip()
            column = item.end(3) - len(comment) if comment else 0  # where the comment started
            line = f"{head}{' ' * max(1, column - len(head))}{comment}\n" if comment else f"{head}\n"
        lines.append(line)
    if values:
        raise ValueError(f"htekd.conf template lacks {sorted(values)}")
    return "".join(lines)


def _guessed_server_url() -> str:
    from htekd.listeners.sip import local_address

    return f"http://{local_address('192.0.2.1')}"  # TEST-NET-1: the route is looked up, nothing is sent


def _give_to_service_group(path: Path) -> None:
    """Group htekd (made by systemd/htekd.sysusers) may read the file, as the service runs as htekd."""
    try:
        os.chown(path, -1, grp.getgrnam(SERVICE_GROUP).gr_gid)
    except (KeyError, PermissionError):
        pass  # no such group (not installed as a service) or not root: the file stays its writer's


def _undo(config_path: Path | None, root: Path, root_existed: bool) -> None:
    """Remove what a failed init wrote: the configuration and the tree (an existing DIR was empty)."""
    import shutil

    if config_path is not None:
        config_path.unlink(missing_ok=True)
    if root.is_dir():
        for child in root.iterdir():
            shutil.rmtree(child) if child.is_dir() else child.unlink()
        if not root_existed:
            root.rmdir()


def _copy_tree(source, target: Path) -> None:
    for item in source.iterdir():
        if item.is_dir():
            _copy_tree(item, target / item.name)
        else:
            target.mkdir(parents=True, exist_ok=True)
            (target / item.name).write_bytes(item.read_bytes())


def _address(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise CommandError(f"--listen: expected an IP address such as 192.168.0.10 or ::, got {text!r}") from None
