"""`htekd dhcp`: DHCP server lines that hand Htek phones the provisioning URL (option 66, 128 or 150).

Phones try SIP PnP first, then the DHCP option chosen by P1145 (66 by default, or 128 or 150),
then the server path in their flash. The lines match Htek phones by the OUI 00:1f:c1 of their
MAC, so other devices on the network keep their own option 66.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

from htekd.cli import CommandError
from htekd.config import DEFAULT_CONFIG, Config, ConfigError, load, url_problem


EPILOG = """\
The URL is the configuration's server_url as phones reach it (or --url). Option 66 is what a phone
reads by default; 128 and 150 are for phones set to prefer them (P1145 FirmwareUpGrade_AllowDHCPOption).
Every snippet is limited to MACs starting 00:1f:c1 (Htek); paste it into the server's configuration
and reload the DHCP server. Phones with SIP PnP on (P20165, the default) ask htekd itself first.
"""

HTEK_OUI = "00:1f:c1"
SERVERS = ("dnsmasq", "isc", "kea")
OPTIONS = (66, 128, 150)
CLASS = "htek"


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("servers", nargs="*", metavar="SERVER",
                        help=f"which DHCP servers: {', '.join(SERVERS)} (default all)")
    parser.add_argument("-c", "--config", type=Path, default=DEFAULT_CONFIG, metavar="FILE",
                        help=f"the configuration file giving the URL (default {DEFAULT_CONFIG})")
    parser.add_argument("--url", help="hand out this URL instead of the configuration's")
    parser.add_argument("--option", type=int, action="append", choices=OPTIONS, metavar="CODE",
                        help="the DHCP option to carry the URL: 66 (default), 128 or 150; repeat for several")


def run(args: argparse.Namespace) -> int:
    unknown = [server for server in args.servers if server not in SERVERS]
    if unknown:
        raise CommandError(f"unknown DHCP server {unknown[0]!r} (expected {', '.join(SERVERS)})")
    url = args.url if args.url is not None else _load(args.config).provisioning_url
    problem = url_problem(url)
    if problem:
        source = "--url" if args.url is not None else "server_url"
        raise CommandError(f"{source}: {problem}, got {url!r}")
    codes = sorted(set(args.option or [66]))
    servers = args.servers or SERVERS
    print("\n\n".join(SNIPPETS[server](url, codes) for server in SERVERS if server in servers))
    return 0


def _load(path: Path) -> Config:
    try:
        return load(path)
    except ConfigError as exc:
        raise CommandError(f"{exc} (or give --url)") from None


def dnsmasq(url: str, codes: list[int]) -> str:
    lines = [f"# dnsmasq (e.g. /etc/dnsmasq.d/htek.conf): Htek phones ({HTEK_OUI}) get the provisioning URL",
             f"dhcp-mac=set:{CLASS},{HTEK_OUI}:*:*:*"]
    for code in codes:
        if code == 66:
            lines.append(f'dhcp-option=tag:{CLASS},66,"{url}"')
        elif code == 128:  # sent even when the phone did not ask for it
            lines.append(f'dhcp-option-force=tag:{CLASS},128,"{url}"')
        else:
            lines.append("# option 150: dnsmasq sends only IP addresses in it; set the phones to 66 or 128 (P1145)")
    return "\n".join(lines)


def isc(url: str, codes: list[int]) -> str:
    lines = [f"# ISC dhcpd (dhcpd.conf): Htek phones ({HTEK_OUI}) get the provisioning URL"]
    lines += [f"option htek-url-{code} code {code} = text;" for code in codes if code != 66]
    lines += [f'class "{CLASS}" {{', f"    match if substring(hardware, 1, 3) = {HTEK_OUI};"]
    lines += [f'    option {"tftp-server-name" if code == 66 else f"htek-url-{code}"} "{url}";' for code in codes]
    lines.append("}")
    return "\n".join(lines)


def kea(url: str, codes: list[int]) -> str:
    # 128 and 150 have no standard definition in Kea: sent as raw bytes, whatever the client asked for.
    data = [{"name": "tftp-server-name", "data": url} if code == 66 else
            {"code": code, "space": "dhcp4", "csv-format": False, "data": url.encode().hex().upper(), "always-send": True}
            for code in codes]
    test = f"substring(pkt4.mac, 0, 3) == 0x{HTEK_OUI.replace(':', '')}"
    classes = json.dumps({"client-classes": [{"name": CLASS, "test": test, "option-data": data}]}, indent=4)
    body = textwrap.dedent(classes[1:-1].strip("\n"))  # the member itself, to paste inside "Dhcp4": { ... }
    return f'# Kea (kea-dhcp4.conf, inside "Dhcp4"; merge with an existing "client-classes" list)\n{body}'


SNIPPETS = {"dnsmasq": dnsmasq, "isc": isc, "kea": kea}
