"""htekd.conf: parsed once into frozen values; every error names file, section and key."""

from __future__ import annotations

import ast
import configparser
import hashlib
import ipaddress
import os
import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path

DEFAULT_CONFIG = Path("/etc/htekd.conf")
CONNECTIONS_PER_ADDRESS = 16  # open connections one client address may have on FTP, HTTP or HTTPS
# OpenSSL cipher string for TLS 1.2: forward-secret suites only (every TLS 1.3 suite is one).
FORWARD_SECRET_CIPHERS = "ECDHE+AESGCM:ECDHE+CHACHA20:DHE+AESGCM:DHE+CHACHA20:ECDHE+AES:DHE+AES:!aNULL:!eNULL"
LOGIN_REALM = "htekd"  # of Digest, and of the hashed password form
HASHED_PASSWORD = "md5-ha1:"  # a password given as md5(user:htekd:password) in hex


def _is_number(text: str) -> bool:
    """ASCII digits only: str.isdigit() also takes "²", which int() refuses."""
    return text.isascii() and text.isdigit()


def url_problem(url: str) -> str | None:
    """Why `url` cannot be given to phones as this server's URL, or None."""
    try:
        parts = urllib.parse.urlsplit(url)
        parts.port  # raises on a port out of range
    except ValueError as exc:
        return f"not a URL ({exc})"
    if parts.scheme not in ("http", "https", "tftp", "ftp") or not parts.hostname:
        return "expected a URL such as http://192.168.0.10"
    if any(c.isspace() or c in '"\\' for c in url):
        return "spaces, quotes and backslashes do not belong in a URL"
    return None


def ha1(user: str, password: str) -> str:
    """HA1 = md5(user:htekd:password) in hex, as Digest computes it."""
    return hashlib.md5(f"{user}:{LOGIN_REALM}:{password}".encode("utf-8"), usedforsecurity=False).hexdigest()


def login_ha1(user: str, password: str) -> str:
    """The HA1 of a configured login: its password plain, or hashed already (md5-ha1:<hex>)."""
    if password.startswith(HASHED_PASSWORD):
        return password[len(HASHED_PASSWORD):].lower()
    return ha1(user, password)


class ConfigError(Exception):
    """A bad configuration; str() is the one line the administrator sees, in `htekd check`'s form:
    `file:line: error: [section] key: message` (no line when the key or section is missing)."""

    def __init__(self, file: Path | str, section: str | None, key: str | None, message: str, line: int = 0):
        self.file, self.section, self.key, self.line = str(file), section, key, line
        where = f"{self.file}:{line}" if line else self.file
        what = f"[{section}]" if section else ""
        if key:
            what += f" {key}"
        super().__init__(f"{where}: error: " + (f"{what}: " if what else "") + message)


def _line_numbers(text: str) -> dict[tuple[str, str | None], int]:
    """(section, key) -> the line it is on, and (section, None) -> its header's line, for error messages."""
    lines: dict[tuple[str, str | None], int] = {}
    section = None
    for number, line in enumerate(text.splitlines(), 1):
        header = re.match(r"\[([^\]]+)\]", line)
        if header:
            section = header.group(1).strip()
            lines.setdefault((section, None), number)
            continue
        item = re.match(r"([^\s;#=:][^=:]*)[=:]", line)
        if item and section is not None:
            lines.setdefault((section, item.group(1).strip().lower()), number)
    return lines


@dataclass(frozen=True)
class Address:
    host: str  # "0.0.0.0", "::", "127.0.0.1"
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True)
class ServerConfig:
    root: Path
    state_dir: Path
    server_url: str
    unknown_phones: str  # "default" | "deny"
    log: str  # "-" or a file path
    log_format: str  # "text" | "json"
    aes_key: str = ""  # default key for phone files; "" = no encryption
    encrypt: tuple[str, ...] = ("phone",)  # which generated files a key applies to
    aes_key_in_model_file: bool = False  # bootstrap: hand aes_key to phones in clear in cfg<devcode>.xml
    secret_parameters: frozenset = frozenset()  # P-codes secret beyond those the catalog and their names make so
    timezone: str = ""  # IANA zone for every phone's P64 unless phones.csv or a layer says otherwise
    state: str = "sqlite"  # "sqlite" (in state_dir) or a postgresql:// URL shared by several servers
    watch: bool = False  # reload by itself when something under root changes
    workers: int = 1  # processes serving the same ports ("auto": one per CPU this process may use)

    @property
    def path_prefix(self) -> str:
        """The path part of server_url without slashes ("" or e.g. "htek/cfg")."""
        return urllib.parse.urlsplit(self.server_url).path.strip("/")

    @property
    def server_host(self) -> str:
        return urllib.parse.urlsplit(self.server_url).hostname or ""


@dataclass(frozen=True)
class TftpConfig:
    enabled: bool
    listen: tuple[Address, ...]
    timeout: float = 5.0  # seconds before a block is sent again
    retries: int = 5  # sends of one block before the transfer is abandoned
    max_transfers: int = 1000  # transfers at once (also at most a quarter of the descriptor limit)


@dataclass(frozen=True)
class FtpConfig:
    enabled: bool
    listen: tuple[Address, ...]
    passive_ports: tuple[int, int] = (50000, 50100)
    user: str = ""  # "" = anonymous
    password: str = ""
    masquerade_address: str = ""  # address given in PASV replies, behind NAT
    timeout: float = 60.0  # idle control connection, stalled transfer
    connections_per_address: int = CONNECTIONS_PER_ADDRESS  # 0 = no limit


@dataclass(frozen=True)
class HttpConfig:
    enabled: bool
    listen: tuple[Address, ...]
    timeout: float = 60.0  # idle connection timeout
    user: str = ""  # "" = no authentication
    password: str = ""  # plain, or "md5-ha1:" + md5(user:htekd:password) in hex
    connections_per_address: int = CONNECTIONS_PER_ADDRESS  # 0 = no limit


@dataclass(frozen=True)
class HttpsConfig:
    enabled: bool
    listen: tuple[Address, ...]
    certificate: Path | None = None
    private_key: Path | None = None
    timeout: float = 60.0
    user: str = ""
    password: str = ""
    connections_per_address: int = CONNECTIONS_PER_ADDRESS
    ciphers: str = FORWARD_SECRET_CIPHERS  # TLS 1.2 suites offered, as an OpenSSL cipher string


ANYWHERE = (ipaddress.ip_network("0.0.0.0/0"), ipaddress.ip_network("::/0"))


@dataclass(frozen=True)
class AccessConfig:
    allow: tuple = ANYWHERE  # networks served at all
    phone_files: tuple = ANYWHERE  # networks that may have cfg<mac>.xml (they also need `allow`)
    user_agent_mac: str = "check"  # check: a User-Agent naming a MAC gets only that phone's file | ignore
    without_mac: str = "allow"  # HTTP(S) phone-file requests whose User-Agent names no MAC: allow | deny
    throttle: int = 20  # unknown or denied phone files per network per window; 0 = off
    throttle_window: float = 60.0
    throttle_penalty: float = 600.0  # seconds a network over the limit is refused everything
    throttle_ipv4_prefix: int = 32  # addresses counted together: one IPv4 address by default
    throttle_ipv6_prefix: int = 64  # a host may use every address of its IPv6 /64

    def allows(self, networks: tuple, address: str) -> bool:
        ip = client_ip(address)
        return ip is not None and any(ip in network for network in networks if network.version == ip.version)


def client_ip(address: str) -> ipaddress.IPv4Address | ipaddress.IPv6Address | None:
    """A client's address as listeners give it (an IPv6 scope, IPv4 seen on an IPv6 socket), or None."""
    try:
        ip = ipaddress.ip_address(address.split("%", 1)[0])
    except ValueError:
        return None
    return ip.ipv4_mapped if ip.version == 6 and ip.ipv4_mapped else ip


@dataclass(frozen=True)
class PnpConfig:
    enabled: bool = True
    interface: str = "0.0.0.0"  # IPv4 address of the interface joining 224.0.1.75; 0.0.0.0 = the kernel's choice
    port: int = 5060
    vendors: tuple[str, ...] = ("htek",)  # Event vendor= values answered, lower case
    ouis: tuple[str, ...] = ("001fc1",)  # MAC prefixes answered, 6 lower-case hex digits
    rate: float = 10.0  # PnP exchanges started per second, all phones together
    burst: int = 20  # exchanges that may start at once after a quiet spell


@dataclass(frozen=True)
class SipConfig:
    user: str = ""  # Digest credentials for phones with check-sync authentication on (P20983)
    password: str = ""
    realm: str = ""  # the only realm whose Digest challenge is answered; "" = any (see htekd notify --help)


@dataclass(frozen=True)
class PhonebookConfig:
    enabled: bool = True  # serve phonebook.xml and fill in P4401/P3316
    title: str = "Company"  # P3316: the book's name on the phone
    name: str = "Account1_DispalyName"  # phones.csv column of an entry's name
    numbers: tuple[str, ...] = ("Account1_SipUserId",)  # phones.csv columns of its numbers
    per_group: bool = False  # also phonebook-<group>.xml, given to the phones of that group

    @property
    def columns(self) -> tuple[str, ...]:
        """The phones.csv columns the book reads."""
        return (self.name, *self.numbers) if self.enabled else ()


@dataclass(frozen=True)
class AdminConfig:
    """The administrator's console (htekd.console): pages, /api/ and /metrics."""

    enabled: bool = False
    listen: tuple[Address, ...] = ()
    user: str = ""  # "" = no login, allowed on loopback addresses only
    password: str = ""  # plain, or "md5-ha1:" + md5(user:htekd:password) in hex
    tls: bool = False
    certificate: Path | None = None  # default: [https]'s
    private_key: Path | None = None
    history: int = 100_000  # requests kept in the state folder for the console; 0 = none
    connections_per_address: int = CONNECTIONS_PER_ADDRESS
    ciphers: str = FORWARD_SECRET_CIPHERS  # those of [https]


@dataclass(frozen=True)
class Config:
    source: Path
    server: ServerConfig
    tftp: TftpConfig
    ftp: FtpConfig
    http: HttpConfig
    https: HttpsConfig
    access: AccessConfig = AccessConfig()
    pnp: PnpConfig = PnpConfig()
    sip: SipConfig = SipConfig()
    phonebook: PhonebookConfig = PhonebookConfig()
    admin: AdminConfig = AdminConfig()

    @property
    def provisioning_url(self) -> str:
        """The URL PnP and DHCP give phones: server_url's protocol, as this server listens for it."""
        return self.public_url(urllib.parse.urlsplit(self.server.server_url).scheme)

    def public_url(self, protocol: str) -> str:
        """Base URL (no trailing slash) a phone uses to reach this server over `protocol`."""
        host = self.server.server_host
        if ":" in host:
            host = f"[{host}]"
        defaults = {"tftp": 69, "ftp": 21, "http": 80, "https": 443}
        listener = getattr(self, protocol)
        port = listener.listen[0].port if listener.listen else defaults[protocol]
        netloc = host if port == defaults[protocol] else f"{host}:{port}"
        prefix = self.server.path_prefix
        return f"{protocol}://{netloc}" + (f"/{prefix}" if prefix else "")


SECTIONS = {  # section -> its keys: every key htekd.conf may hold
    "htekd": {"root", "state_dir", "server_url", "unknown_phones", "log", "log_format", "aes_key", "encrypt",
              "aes_key_in_model_file", "secret_parameters", "timezone", "state", "watch",
              "workers"},
    "tftp": {"enabled", "listen", "timeout", "retries", "max_transfers"},
    "ftp": {"enabled", "listen", "passive_ports", "user", "password", "masquerade_address", "timeout",
            "connections_per_address"},
    "http": {"enabled", "listen", "timeout", "user", "password", "connections_per_address"},
    "https": {"enabled", "listen", "certificate", "private_key", "timeout", "user", "password",
              "connections_per_address", "ciphers"},
    "access": {"allow", "phone_files", "user_agent_mac", "without_mac", "throttle", "throttle_window", "throttle_penalty",
               "throttle_ipv4_prefix", "throttle_ipv6_prefix"},
    "pnp": {"enabled", "interface", "port", "vendors", "ouis", "rate", "burst"},
    "sip": {"user", "password", "realm"},
    "phonebook": {"enabled", "title", "name", "numbers", "per_group"},
    "admin": {"enabled", "listen", "user", "password", "tls", "certificate", "private_key", "history",
              "connections_per_address"},
}

_DEFAULT_LISTEN = {"tftp": "0.0.0.0:69", "ftp": "0.0.0.0:21", "http": "0.0.0.0:80", "https": "0.0.0.0:443",
                   "admin": "127.0.0.1:8081"}
_DEFAULT_ENABLED = {"tftp": True, "ftp": True, "http": True, "https": False}


class _Reader:
    """Typed access to one parsed file, raising ConfigError with file/section/key."""

    def __init__(self, file: Path, parser: configparser.ConfigParser, lines: dict):
        self.file, self.parser, self.lines = file, parser, lines

    def error(self, section: str, key: str | None, message: str) -> ConfigError:
        line = self.lines.get((section, key)) or self.lines.get((section, None), 0)
        return ConfigError(self.file, section, key, message, line)

    def get(self, section: str, key: str, default: str | None = None) -> str:
        value = self.parser.get(section, key, fallback=None) if self.parser.has_section(section) else None
        if value is None or value.strip() == "":
            if default is None:
                raise self.error(section, key, "is required")
            return default
        if "\0" in value:
            raise self.error(section, key, "contains a NUL character")
        return value.strip()

    def boolean(self, section: str, key: str, default: bool) -> bool:
        raw = self.get(section, key, "yes" if default else "no").lower()
        if raw in ("yes", "true", "on", "1"):
            return True
        if raw in ("no", "false", "off", "0"):
            return False
        raise self.error(section, key, f"expected yes or no, got {raw!r}")

    def number(self, section: str, key: str, default: float, low: float, high: float, kind=float):
        raw = self.get(section, key, str(default))
        try:
            value = kind(raw)
        except ValueError:
            raise self.error(section, key, f"expected a number, got {raw!r}") from None
        if not low <= value <= high:
            raise self.error(section, key, f"must be between {low} and {high}, got {raw}")
        return value

    def choice(self, section: str, key: str, default: str, choices: tuple[str, ...]) -> str:
        raw = self.get(section, key, default).lower()
        if raw not in choices:
            raise self.error(section, key, f"must be one of {', '.join(choices)}, got {raw!r}")
        return raw

    def path(self, section: str, key: str, default: str | None = None) -> Path:
        return (self.file.parent / self.get(section, key, default)).resolve()

    def addresses(self, section: str) -> tuple[Address, ...]:
        raw = self.get(section, "listen", _DEFAULT_LISTEN[section])
        return tuple(self._address(section, item) for item in raw.split())

    def connections(self, section: str) -> int:
        return self.number(section, "connections_per_address", CONNECTIONS_PER_ADDRESS, 0, 100000, int)

    def ciphers(self, section: str, key: str) -> str:
        """An OpenSSL cipher string that selects at least one cipher."""
        import ssl

        value = self.get(section, key, FORWARD_SECRET_CIPHERS)
        try:
            ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER).set_ciphers(value)
        except ssl.SSLError:
            raise self.error(section, key, f"selects no cipher OpenSSL knows, got {value!r}") from None
        return value

    def ipv4(self, section: str, key: str) -> str:
        """An optional IPv4 address ("" when unset)."""
        value = self.get(section, key, "")
        if value:
            try:
                ipaddress.IPv4Address(value)
            except ValueError:
                raise self.error(section, key, f"expected an IPv4 address, got {value!r}") from None
        return value

    def login(self, section: str) -> dict[str, str]:  # [http], [https], [ftp]
        """user and password, which go together; the password plain or as md5-ha1:<hex> (realm htekd)."""
        user, password = self.get(section, "user", ""), self.get(section, "password", "")
        if bool(user) != bool(password):
            raise self.error(section, "password" if user else "user", "user and password go together")
        if password.startswith(HASHED_PASSWORD) and not re.fullmatch(r"[0-9a-fA-F]{32}", password[len(HASHED_PASSWORD):]):
            raise self.error(section, "password", "md5-ha1: must be followed by 32 hex digits")
        return {"user": user, "password": password}

    def networks(self, section: str, key: str, default: str) -> tuple:
        networks = []
        for item in self.get(section, key, default).split():
            try:
                networks.append(ipaddress.ip_network(item, strict=False))
            except ValueError:
                raise self.error(section, key, f"{item!r} is not a network such as 192.168.0.0/24 or fd00::/8") from None
        return tuple(networks)

    def _address(self, section: str, item: str) -> Address:
        if item.startswith("["):
            host, sep, port = item[1:].partition("]:")
        else:
            host, sep, port = item.rpartition(":")
        if not sep or not _is_number(port) or not 0 < int(port) < 65536:
            raise self.error(section, "listen", f"expected host:port or [v6]:port, got {item!r}")
        try:
            ipaddress.ip_address(host)
        except ValueError:
            raise self.error(section, "listen", f"{host!r} is not an IP address") from None
        return Address(host, int(port))


def load(path: Path | str = DEFAULT_CONFIG) -> Config:
    path = Path(path).resolve()
    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"), interpolation=None)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(path, None, None, f"cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        line = exc.object.count(b"\n", 0, exc.start) + 1
        raise ConfigError(path, None, None, f"not UTF-8 text ({exc.reason})", line) from None
    lines = _line_numbers(text)
    try:
        parser.read_string(text, source=str(path))
    except configparser.Error as exc:
        raise ConfigError(path, None, None, _parser_message(exc, lines), _parser_line(exc)) from None
    read = _Reader(path, parser, lines)
    for section in parser.sections():
        known = SECTIONS.get(section)
        if known is None:
            raise read.error(section, None, "unknown section")
        for key in parser.options(section):
            if key not in known:
                raise read.error(section, key, "unknown key")
    if not parser.has_section("htekd"):
        raise read.error("htekd", None, "section is missing")

    server_url = read.get("htekd", "server_url")
    problem = url_problem(server_url)
    if problem:
        raise read.error("htekd", "server_url", f"{problem}, got {server_url!r}")
    log = read.get("htekd", "log", "-")
    encrypt = tuple(sorted({item.strip() for item in read.get("htekd", "encrypt", "phone").split(",") if item.strip()}))
    if not set(encrypt) <= {"phone", "model"}:
        raise read.error("htekd", "encrypt", f"expected phone, model or both, got {','.join(encrypt)!r}")
    server = ServerConfig(
        root=read.path("htekd", "root"),
        state_dir=read.path("htekd", "state_dir", "/var/lib/htekd"),
        server_url=server_url.rstrip("/"),
        unknown_phones=read.choice("htekd", "unknown_phones", "default", ("default", "deny")),
        log=log if log == "-" else str(read.path("htekd", "log")),
        log_format=read.choice("htekd", "log_format", "text", ("text", "json")),
        aes_key=read.get("htekd", "aes_key", ""),
        encrypt=encrypt,
        aes_key_in_model_file=read.boolean("htekd", "aes_key_in_model_file", False),
        secret_parameters=_secret_parameters(read),
        timezone=read.get("htekd", "timezone", ""),
        state=_state(read),
        watch=read.boolean("htekd", "watch", False),
        workers=_workers(read),
    )
    if server.timezone:
        from htekd.timezones import UnknownZone, standard_offset

        try:
            standard_offset(server.timezone)
        except UnknownZone as exc:
            raise read.error("htekd", "timezone", str(exc)) from None
    if server.aes_key_in_model_file and not server.aes_key:
        raise read.error("htekd", "aes_key_in_model_file", "needs aes_key")
    if server.aes_key_in_model_file and "model" in server.encrypt:
        raise read.error("htekd", "aes_key_in_model_file", "cfg<devcode>.xml cannot carry the key it is encrypted with "
                         "(remove model from encrypt)")
    if server.aes_key:
        from htekd.aes import InvalidKey, parse_key

        try:
            parse_key(server.aes_key)
        except InvalidKey as exc:
            raise read.error("htekd", "aes_key", str(exc)) from None

    low, _, high = read.get("ftp", "passive_ports", "50000-50100").partition("-")
    if not (_is_number(low.strip()) and _is_number(high.strip()) and 1024 <= int(low) <= int(high) < 65536):
        raise read.error("ftp", "passive_ports", "expected a range such as 50000-50100 (ports 1024-65535)")

    https_enabled = read.boolean("https", "enabled", _DEFAULT_ENABLED["https"])
    certificate = private_key = None
    if https_enabled:
        certificate = read.path("https", "certificate")
        private_key = read.path("https", "private_key", read.get("https", "certificate"))
        for key, file in (("certificate", certificate), ("private_key", private_key)):
            if not file.is_file():
                raise read.error("https", key, f"{file} does not exist")

    return Config(
        source=path,
        server=server,
        tftp=TftpConfig(
            enabled=read.boolean("tftp", "enabled", _DEFAULT_ENABLED["tftp"]),
            listen=read.addresses("tftp"),
            timeout=read.number("tftp", "timeout", 5.0, 0.1, 255.0),
            retries=read.number("tftp", "retries", 5, 1, 50, int),
            max_transfers=read.number("tftp", "max_transfers", 1000, 1, 1000000, int),
        ),
        ftp=FtpConfig(
            enabled=read.boolean("ftp", "enabled", _DEFAULT_ENABLED["ftp"]),
            listen=read.addresses("ftp"),
            passive_ports=(int(low), int(high)),
            **read.login("ftp"),
            masquerade_address=read.ipv4("ftp", "masquerade_address"),
            timeout=read.number("ftp", "timeout", 60.0, 1.0, 86400.0),
            connections_per_address=read.connections("ftp"),
        ),
        http=HttpConfig(
            enabled=read.boolean("http", "enabled", _DEFAULT_ENABLED["http"]),
            listen=read.addresses("http"),
            timeout=read.number("http", "timeout", 60.0, 1.0, 3600.0),
            **read.login("http"),
            connections_per_address=read.connections("http"),
        ),
        https=HttpsConfig(
            enabled=https_enabled,
            listen=read.addresses("https"),
            certificate=certificate,
            private_key=private_key,
            timeout=read.number("https", "timeout", 60.0, 1.0, 3600.0),
            **read.login("https"),
            connections_per_address=read.connections("https"),
            ciphers=read.ciphers("https", "ciphers"),
        ),
        access=_access(read),
        pnp=_pnp(read),
        sip=_sip(read),
        admin=_admin(read),
        phonebook=_phonebook(read),
    )


def _phonebook(read: _Reader) -> PhonebookConfig:
    defaults = PhonebookConfig()
    title = read.get("phonebook", "title", defaults.title)
    if any(unicodedata.category(c) == "Cc" for c in title):
        raise read.error("phonebook", "title", "control characters do not belong in a name")
    return PhonebookConfig(
        enabled=read.boolean("phonebook", "enabled", defaults.enabled),
        title=title,
        name=read.get("phonebook", "name", defaults.name),
        numbers=tuple(read.get("phonebook", "numbers", " ".join(defaults.numbers)).split()),
        per_group=read.boolean("phonebook", "per_group", defaults.per_group),
    )


def _parser_line(exc: configparser.Error) -> int:
    errors = getattr(exc, "errors", None)  # ParsingError; MissingSectionHeaderError has lineno only
    return getattr(exc, "lineno", None) or (errors[0][0] if errors else 0)


def _parser_message(exc: configparser.Error, lines: dict) -> str:
    """configparser's message without its "While reading from ... [line N]" preamble (the line is given apart)."""
    if isinstance(exc, configparser.DuplicateOptionError):
        return f"[{exc.section}] {exc.option}: given twice (first on line {lines.get((exc.section, exc.option), '?')})"
    if isinstance(exc, configparser.DuplicateSectionError):
        return f"[{exc.section}]: section given twice"
    if isinstance(exc, configparser.MissingSectionHeaderError):
        return f"{exc.line.strip()!r} is outside any [section]"
    if getattr(exc, "errors", None):
        line = ast.literal_eval(exc.errors[0][1])  # configparser keeps repr(line)
        return f"not a key = value line: {line.strip()!r}"
    return " ".join(str(exc).split())


def _pnp(read: _Reader) -> PnpConfig:
    interface = read.get("pnp", "interface", "0.0.0.0")
    try:
        if ipaddress.ip_address(interface).version != 4:
            raise ValueError
    except ValueError:
        raise read.error("pnp", "interface", f"expected the IPv4 address of an interface, got {interface!r}") from None
    ouis = []
    for item in re.split(r"[\s,]+", read.get("pnp", "ouis", "00:1f:c1").strip()):
        oui = re.sub(r"[:-]", "", item).lower()
        if not re.fullmatch(r"[0-9a-f]{6}", oui):
            raise read.error("pnp", "ouis", f"expected MAC prefixes such as 00:1f:c1, got {item!r}")
        ouis.append(oui)
    return PnpConfig(
        enabled=read.boolean("pnp", "enabled", True),
        interface=interface,
        port=read.number("pnp", "port", 5060, 1, 65535, int),
        vendors=tuple(item.lower() for item in re.split(r"[\s,]+", read.get("pnp", "vendors", "htek").strip())),
        ouis=tuple(ouis),
        rate=read.number("pnp", "rate", 10.0, 0.1, 1000.0),
        burst=read.number("pnp", "burst", 20, 1, 1000, int),
    )


def _workers(read: _Reader) -> int:
    if read.get("htekd", "workers", "1").lower() == "auto":
        return max(1, len(os.sched_getaffinity(0)))
    return read.number("htekd", "workers", 1, 1, 64, int)


def _state(read: _Reader) -> str:
    """"sqlite", or a PostgreSQL URL that psycopg takes (checked here, so serve and phones agree)."""
    from htekd.store import is_postgresql

    state = read.get("htekd", "state", "sqlite")
    if state == "sqlite":
        return state
    if not is_postgresql(state):
        raise read.error("htekd", "state", "expected sqlite or a URL such as postgresql://htekd@db.example/htekd")
    try:
        from htekd.store.postgresql import problem
    except ImportError:
        raise read.error("htekd", "state", "PostgreSQL needs the psycopg package (pip install 'psycopg[binary]')") from None
    why = problem(state)
    if why:
        raise read.error("htekd", "state", f"not a PostgreSQL URL: {why}")
    return state


def _secret_parameters(read: _Reader) -> frozenset:
    """P-codes or parameter names; a P-code the catalog does not know is the usual reason to list one."""
    from htekd.catalog import CatalogError, catalog, is_pcode

    codes = set()
    for item in re.split(r"[\s,]+", read.get("htekd", "secret_parameters", "").strip()):
        if not item:
            continue
        if is_pcode(item):
            codes.add(f"P{int(item[1:])}")
            continue
        try:
            codes.add(catalog().lookup(item).code)
        except CatalogError as exc:
            raise read.error("htekd", "secret_parameters", f"{exc} (give P-codes or parameter names)") from None
    return frozenset(codes)


def _admin(read: _Reader) -> AdminConfig:
    enabled = read.boolean("admin", "enabled", False)
    listen = read.addresses("admin")
    login = read.login("admin")
    if enabled and not login["user"]:
        for address in listen:
            if not ipaddress.ip_address(address.host).is_loopback:
                raise read.error("admin", "user", f"a login (user and password) is required to listen on {address}: "
                                 "only loopback addresses may go without")
    tls = read.boolean("admin", "tls", False)
    certificate = private_key = None
    if enabled and tls:
        certificate = read.path("admin", "certificate", read.get("https", "certificate", "") or None)
        private_key = read.path("admin", "private_key", read.get("admin", "certificate", "")
                                or read.get("https", "private_key", "") or read.get("https", "certificate", "") or None)
        for key, file in (("certificate", certificate), ("private_key", private_key)):
            if not file.is_file():
                raise read.error("admin", key, f"{file} does not exist")
    return AdminConfig(enabled, listen, tls=tls, certificate=certificate, private_key=private_key,
                       history=read.number("admin", "history", 100_000, 0, 10_000_000, int),
                       connections_per_address=read.connections("admin"), ciphers=read.ciphers("https", "ciphers"),
                       **login)


def _sip(read: _Reader) -> SipConfig:
    user, password = read.get("sip", "user", ""), read.get("sip", "password", "")
    if bool(user) != bool(password):
        raise read.error("sip", "password" if user else "user", "user and password go together")
    return SipConfig(user, password, read.get("sip", "realm", ""))


def _access(read: _Reader) -> AccessConfig:
    allow = read.networks("access", "allow", "0.0.0.0/0 ::/0")
    return AccessConfig(
        allow=allow,
        phone_files=read.networks("access", "phone_files", " ".join(str(n) for n in allow)),
        user_agent_mac=read.choice("access", "user_agent_mac", "check", ("check", "ignore")),
        without_mac=read.choice("access", "without_mac", "allow", ("allow", "deny")),
        throttle=read.number("access", "throttle", 20, 0, 100000, int),
        throttle_window=read.number("access", "throttle_window", 60.0, 1.0, 86400.0),
        throttle_penalty=read.number("access", "throttle_penalty", 600.0, 1.0, 604800.0),
        throttle_ipv4_prefix=read.number("access", "throttle_ipv4_prefix", 32, 8, 32, int),
        throttle_ipv6_prefix=read.number("access", "throttle_ipv6_prefix", 64, 16, 128, int),
    )
