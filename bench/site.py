"""The benchmark's content tree: an inventory of N phones, realistic settings, a 32 MiB firmware,
an htekd.conf on loopback ports, and the same files pre-rendered for the peers."""

from __future__ import annotations

import os
import shutil
from dataclasses import dataclass
from pathlib import Path

from bench.net import loopback

REPO = Path(__file__).resolve().parent.parent
EXAMPLE_ROOT = REPO / "example" / "root"
COMMON = Path(__file__).resolve().parent / "settings" / "common.xml"
FIRMWARE = "fw920M.rom"
FIRMWARE_SIZE = 32 * 1024 * 1024
# (model, device code) of the phones in the inventory, in turn; all of them take fw920M.rom.
MODELS = (("UC924", "0012"), ("UC926", "0010"), ("UC923", "0013"), ("UC924E", "0112"))
GROUPS = ("sales", "support")
PROTOCOLS = ("tftp", "http", "ftp")


@dataclass(frozen=True)
class Phone:
    mac: str
    model: str
    devcode: str
    firmware: str = "2.0.4.6.40"

    @property
    def user_agent(self) -> str:
        colons = ":".join(self.mac[i:i + 2] for i in range(0, 12, 2))
        return f"Htek {self.model} {self.firmware} {colons}"

    def boot_files(self) -> tuple[str, str, str]:
        """What the phone asks for on boot, in order (the vendor's guide)."""
        return f"cfg{self.devcode}.xml", f"cfg{self.mac}", f"cfg{self.mac}.xml"


def phones(count: int) -> list[Phone]:
    return [Phone(f"001fc1{index + 1:06x}", *MODELS[index % len(MODELS)]) for index in range(count)]


@dataclass
class Site:
    folder: Path
    host: str
    ports: dict  # protocol -> htekd's port
    passive: tuple[int, int]
    phones: list[Phone]

    @property
    def config(self) -> Path:
        return self.folder / "htekd.conf"

    @property
    def root(self) -> Path:
        return self.folder / "root"

    @property
    def firmware(self) -> Path:
        return self.root / "files" / FIRMWARE

    def peer_dir(self, protocol: str) -> Path:
        return self.folder / "peer" / protocol


def write_inventory(path: Path, inventory: list[Phone]) -> None:
    rows = ["mac,model,group,Account1_SipUserId,Account1_AuthenticatePassword,Account1_DispalyName,Account1_Label,extension"]
    for index, phone in enumerate(inventory):
        extension = 10000 + index
        rows.append(f"{phone.mac},{phone.model},{GROUPS[index % len(GROUPS)]},{extension},"
                    f"pw-{phone.mac[-6:]}-{extension},Phone {extension},Desk {extension},{extension}")
    path.write_text("\n".join(rows) + "\n", encoding="utf-8")


def build(folder: Path, host: str, count: int, ports: dict, passive: tuple[int, int]) -> Site:
    """Write the tree and htekd.conf under `folder` (readable by the peers' unprivileged users)."""
    loopback(host)
    root = folder / "root"
    shutil.copytree(EXAMPLE_ROOT, root)
    shutil.copy(COMMON, root / "settings" / "common.xml")
    inventory = phones(count)
    write_inventory(root / "phones.csv", inventory)
    with open(root / "files" / FIRMWARE, "wb") as handle:
        for _ in range(FIRMWARE_SIZE // (1 << 20)):
            handle.write(os.urandom(1 << 20))
    write_config(folder / "htekd.conf", folder, host, ports, passive)
    for path in (folder, *folder.rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return Site(folder, host, dict(ports), passive, inventory)


def rendered(config: Path, host: str, storm: list[Phone]) -> dict[str, dict[str, bytes]]:
    """What the htekd of `config` serves each storm phone: {protocol: {name: bytes}} (names it
    answers "not found" left out). The listener's port is part of the URLs written in."""
    from htekd.config import load
    from htekd.resolution import Client
    from htekd.resolver import Resolver

    resolver = Resolver.from_config(load(config))
    expected: dict[str, dict[str, bytes]] = {}
    for protocol in PROTOCOLS:
        contents = expected.setdefault(protocol, {})
        for phone in storm:
            for name in phone.boot_files():
                if name not in contents:
                    resolution = resolver.resolve(name, Client(protocol, host, user_agent=phone.user_agent))
                    if resolution.ok:
                        contents[name] = resolution.content
    return expected


def prerender(site: Site, storm: list[Phone]) -> dict[str, dict[str, bytes]]:
    """rendered() for the site's htekd.conf, written under peer/<protocol>/ for the peers (the
    firmware hard-linked); returns it to check fetches against."""
    expected = rendered(site.config, site.host, storm)
    for protocol, contents in expected.items():
        folder = site.peer_dir(protocol)
        folder.mkdir(parents=True)
        os.link(site.firmware, folder / FIRMWARE)
        for name, content in contents.items():
            (folder / name).write_bytes(content)
    for path in (site.folder / "peer", *(site.folder / "peer").rglob("*")):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return expected


def write_config(path: Path, folder: Path, host: str, ports: dict, passive: tuple[int, int], workers: int = 1) -> None:
    """An htekd.conf for the tree under `folder`, with a state folder and request log of its own."""
    name = path.stem
    (folder / f"state-{name}").mkdir(exist_ok=True)
    bracketed = f"[{host}]" if ":" in host else host
    path.write_text(
        f"""[htekd]
root = root
state_dir = state-{name}
server_url = http://{bracketed}:{ports['http']}
unknown_phones = default
log = {folder / f'requests-{name}.log'}
log_format = text
workers = {workers}

[tftp]
enabled = yes
listen = {bracketed}:{ports['tftp']}

[ftp]
enabled = yes
listen = {bracketed}:{ports['ftp']}
passive_ports = {passive[0]}-{passive[1]}
connections_per_address = 256  ; the load generator is one host (200 parallel downloads)

[http]
enabled = yes
listen = {bracketed}:{ports['http']}
connections_per_address = 256

[https]
enabled = no

[pnp]
enabled = no

[admin]
enabled = yes
listen = {bracketed}:{ports['admin']}
""", encoding="utf-8")
