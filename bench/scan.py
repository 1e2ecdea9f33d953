"""The enumeration benchmark: a scanner asks for 10,000 random cfg<mac>.xml while a real phone keeps
asking for its own file; prints what each got.

    python -m bench.scan                       # starts htekd on a copy of example/ (HTTP only)
    python -m bench.scan --url http://127.0.0.1:8080 --phone-mac 001fc1000001
    python -m bench.scan --rotate 255          # the scanner rotates 255 addresses of one IPv6 /64 (root)

The scanner is one keep-alive HTTP connection from 127.0.0.1; the phone asks every 50 ms from
127.0.0.2, with its User-Agent. Loopback only: any other address is refused. With the default
throttle (20 unknown phone files per network per minute) the scanner gets at most 20 answers.

With --rotate N the scanner connects to [::1] from N addresses of a random unique-local /64 that
are added to `lo` for the run and removed after (`ip`, as root), a new connection and the next
address for every request; the figure is its answers against the 20 a single address gets.
"""

from __future__ import annotations

import argparse
import http.client
import random
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
from pathlib import Path

from bench.net import NotLoopback, free_port, loopback

REPO = Path(__file__).resolve().parent.parent
SCANNER_ADDRESS, PHONE_ADDRESS = "127.0.0.1", "127.0.0.2"
PHONE_MAC = "001fc1000001"  # in example/root/phones.csv, a UC924
MAX_SECONDS = 300.0  # the whole run stops by itself after this, finished or not
THROTTLE_TARGET = 20


class Counts:
    def __init__(self):
        self.answered = self.refused = self.other = 0
        self.before_refused = None  # answers before the first refusal


def scan(host: str, port: int, requests: int, deadline: float, counts: Counts, sources: list[str]) -> None:
    """`requests` GETs of random MACs' files: over one keep-alive connection from a single source
    (reconnecting if closed), or a new connection from the next source each time."""
    connection = None
    for number in range(requests):
        if time.monotonic() > deadline:
            break
        if connection is None:
            source = sources[number % len(sources)]
            connection = http.client.HTTPConnection(host, port, timeout=10, source_address=(source, 0))
        try:
            connection.request("GET", f"/cfg{random.getrandbits(48):012x}.xml")
            response = connection.getresponse()
            response.read()
        except (OSError, http.client.HTTPException):
            counts.other += 1
            connection.close()
            connection = None
            continue
        if response.status == 200:
            counts.answered += 1
        elif response.status == 403:
            counts.refused += 1
            if counts.before_refused is None:
                counts.before_refused = counts.answered
        else:
            counts.other += 1
        if len(sources) > 1:
            connection.close()
            connection = None
    if connection is not None:
        connection.close()


class RotatingAddresses:
    """`count` addresses of a random unique-local /64 on lo while in use (root and `ip` needed)."""

    def __init__(self, count: int):
        import ipaddress
        import random

        self.network = ipaddress.ip_network((0xfd << 120 | random.getrandbits(56) << 64, 64))
        self.addresses = [str(self.network[n]) for n in range(1, count + 1)]
        self.commands = "".join(f"address add {address}/128 dev lo nodad\n" for address in self.addresses)

    def add(self) -> list[str]:
        added = subprocess.run(["ip", "-6", "-batch", "-"], input=self.commands, capture_output=True, text=True,
                               timeout=120)
        if added.returncode != 0:
            self.remove()
            raise SystemExit(f"cannot add IPv6 addresses to lo (run as root): {added.stderr.strip()}")
        return self.addresses

    def remove(self) -> None:
        subprocess.run(["ip", "-6", "-force", "-batch", "-"], input=self.commands.replace("address add", "address del"),
                       capture_output=True, text=True, timeout=120)


def phone(host: str, port: int, mac: str, model: str, stop: threading.Event, counts: Counts) -> None:
    """The phone's own file every 50 ms, a new connection each time as a phone does."""
    colons = ":".join(mac[i:i + 2] for i in range(0, 12, 2))
    headers = {"User-Agent": f"Htek {model} 2.0.4.2 {colons}"}
    while not stop.wait(0.05):
        connection = http.client.HTTPConnection(host, port, timeout=10, source_address=(PHONE_ADDRESS, 0))
        try:
            connection.request("GET", f"/cfg{mac}.xml", headers=headers)
            response = connection.getresponse()
            body = response.read()
            if response.status == 200 and body.startswith(b"<?xml"):
                counts.answered += 1
            else:
                counts.refused += 1
        except (OSError, http.client.HTTPException):
            counts.other += 1
        finally:
            connection.close()


class Daemon:
    """`htekd serve` on a temporary copy of example/, HTTP only, on a free loopback port."""

    def __init__(self):
        self.folder = Path(tempfile.mkdtemp(prefix="htekd-scan-"))
        shutil.copytree(REPO / "example" / "root", self.folder / "root")
        self.port = free_port(SCANNER_ADDRESS)
        (self.folder / "htekd.conf").write_text(
            f"[htekd]\nroot = root\nstate_dir = state\nserver_url = http://{SCANNER_ADDRESS}:{self.port}\n"
            f"log = requests.log\n\n[tftp]\nenabled = no\n\n[ftp]\nenabled = no\n\n"
            f"[http]\nlisten = {SCANNER_ADDRESS}:{self.port} [::1]:{self.port}\n\n[https]\nenabled = no\n\n"
            f"[pnp]\nenabled = no\n",
            encoding="utf-8")
        self.proc = subprocess.Popen([sys.executable, "-m", "htekd", "serve", "-c", str(self.folder / "htekd.conf")],
                                     cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.PIPE, text=True)
        for line in self.proc.stderr:
            if line.strip() == "htekd: ready":
                break
        else:
            raise SystemExit(f"htekd did not start: exit {self.proc.wait()}")

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(5)
        self.proc.stderr.close()
        shutil.rmtree(self.folder, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.scan", description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", help="a running htekd's HTTP URL (loopback); default: start one on example/")
    parser.add_argument("--requests", type=int, default=10_000, help="scanner requests (default 10000, at most 100000)")
    parser.add_argument("--phone-mac", default=PHONE_MAC, help="MAC of a phone in the inventory (default %(default)s)")
    parser.add_argument("--phone-model", default="UC924", help="its model, for the User-Agent (default %(default)s)")
    parser.add_argument("--rotate", type=int, default=0, metavar="N",
                        help="the scanner rotates N addresses of one IPv6 /64 (1-65536; root; default: one address)")
    args = parser.parse_args(argv)
    requests = max(1, min(args.requests, 100_000))
    if args.rotate and not 1 <= args.rotate <= 65536:
        parser.error("--rotate takes 1 to 65536 addresses")

    daemon = None
    if args.url:
        parts = urllib.parse.urlsplit(args.url)
        try:
            host = loopback(parts.hostname or "")
        except NotLoopback as exc:
            parser.error(str(exc))
        if ":" in host:
            parser.error("give a 127.0.0.0/8 URL: the scanner and the phone need two IPv4 source addresses")
        port = parts.port or 80
    else:
        daemon = Daemon()
        host, port = SCANNER_ADDRESS, daemon.port
    rotating = RotatingAddresses(args.rotate) if args.rotate else None
    try:
        sources = rotating.add() if rotating else [SCANNER_ADDRESS]
        scanner, phone_counts, stop = Counts(), Counts(), threading.Event()
        phone_thread = threading.Thread(target=phone, args=(host, port, args.phone_mac.lower(), args.phone_model,
                                                            stop, phone_counts), daemon=True)
        started = time.monotonic()
        phone_thread.start()
        scan("::1" if rotating else host, port, requests, started + MAX_SECONDS, scanner, sources)
        stop.set()
        phone_thread.join(15)
        elapsed = time.monotonic() - started
    finally:
        if rotating is not None:
            rotating.remove()
        if daemon is not None:
            daemon.stop()

    asked = scanner.answered + scanner.refused + scanner.other
    where = f"{len(sources)} addresses of {rotating.network}" if rotating else SCANNER_ADDRESS
    print(f"scanner ({where}): {asked} requests in {elapsed:.1f} s: {scanner.answered} answered "
          f"({scanner.before_refused if scanner.before_refused is not None else scanner.answered} before the first "
          f"refusal), {scanner.refused} refused, {scanner.other} errors")
    print(f"answers / the throttle's {THROTTLE_TARGET} for one address: {scanner.answered / THROTTLE_TARGET:.2f}")
    print(f"phone   ({PHONE_ADDRESS}): {phone_counts.answered} served, "
          f"{phone_counts.refused + phone_counts.other} failed")
    met = scanner.answered <= THROTTLE_TARGET and phone_counts.answered > 0 and not (phone_counts.refused + phone_counts.other)
    print(f"target: scanner answers <= {THROTTLE_TARGET} and every phone request served: {'met' if met else 'NOT met'}")
    return 0 if met else 1


if __name__ == "__main__":
    sys.exit(main())
