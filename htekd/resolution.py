"""What a request resolves to: the one value the resolver hands every listener."""

from __future__ import annotations

import enum
import io
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO


class Kind(str, enum.Enum):
    MODEL_CONFIG = "model-config"  # cfg<devcode>.xml
    PHONE_CONFIG = "phone-config"  # cfg<mac>.xml of a phone in the inventory
    UNKNOWN_PHONE = "unknown-phone"  # cfg<mac>.xml of a phone not in the inventory
    PHONEBOOK = "phonebook"  # phonebook.xml, phonebook-<group>.xml: generated from the inventory
    PRIVATE = "private"  # cfg<mac>: the vendor's binary backup format, never served
    FIRMWARE = "firmware"  # fw*.rom, boot_*.bin, img_*.bin
    RESOURCE = "resource"  # ring tones, language and help tars, images
    STATIC = "static"  # any other file under files/
    PNP = "pnp"  # a SIP PnP exchange: the provisioning URL given to a phone
    CHECK_SYNC = "check-sync"  # a SIP NOTIFY check-sync sent to a phone
    NONE = "none"  # nothing by that name


class Status(str, enum.Enum):
    OK = "ok"
    NOT_FOUND = "not-found"
    DENIED = "denied"


@dataclass(frozen=True)
class Client:
    """What a listener knows of the requester; the resolver needs nothing else."""

    protocol: str  # "tftp" | "ftp" | "http" | "https"
    address: str  # IP address, no port
    port: int = 0
    user_agent: str = ""
    # The peer has shown it receives at `address` (a TCP handshake). A UDP request has not: anyone can
    # send one with another host's address, so it is never evidence against that host.
    confirmed: bool = True


@dataclass(frozen=True)
class Resolution:
    name: str  # as requested
    path: str  # normalised, without leading "/" or the server's path prefix
    kind: Kind
    status: Status
    reason: str = ""  # why not found / denied, for the log and the error a client gets
    mac: str | None = None
    model: str | None = None
    firmware: str | None = None
    devcode: str | None = None
    content: bytes | None = None  # generated files
    file: Path | None = None  # static files: a real path inside files/
    size: int = 0
    mtime: float = 0.0  # seconds since the epoch
    etag: str = ""

    @property
    def ok(self) -> bool:
        return self.status is Status.OK

    def open(self) -> BinaryIO:
        """A fresh reader of the content; the caller closes it. Files are streamed, never read whole."""
        if self.content is not None:
            return io.BytesIO(self.content)
        if self.file is not None:
            return open(self.file, "rb")
        raise ValueError(f"{self.path}: nothing to read ({self.status.value})")


@dataclass(frozen=True)
class Entry:
    """One served file or folder, as FTP lists it."""

    name: str
    is_dir: bool
    size: int
    mtime: float
