"""SIP over UDP as htekd speaks it (RFC 3261): the check-sync NOTIFY and the PnP ua-profile exchange.

Pure: parsing one datagram, building requests and responses, Digest answers (RFC 2617, MD5).
No sockets; htekd.listeners.sip sends and receives. Twisted's MessagesParser is not used: it
carries state from one datagram to the next, logs a traceback for every undecodable packet and
lets a RuntimeError escape on a body shorter than its Content-Length.
"""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass, field

# Largest datagram parsed; anything longer is not a message a phone sends.
MAX_MESSAGE = 16384
MAX_HEADERS = 100
BRANCH_MAGIC = "z9hG4bK"  # RFC 3261 8.1.1.7: marks a branch unique per transaction
MAX_FORWARDS = "70"
# The Htek OUI and vendor name the PnP responder accepts by default.
HTEK_OUI = "001fc1"
HTEK_VENDOR = "htek"

COMPACT_FORMS = {
    "i": "call-id", "m": "contact", "e": "content-encoding", "l": "content-length", "c": "content-type",
    "f": "from", "s": "subject", "t": "to", "v": "via", "o": "event", "k": "supported", "u": "allow-events",
}
REASONS = {
    100: "Trying", 200: "OK", 202: "Accepted", 400: "Bad Request", 401: "Unauthorized", 403: "Forbidden",
    404: "Not Found", 405: "Method Not Allowed", 407: "Proxy Authentication Required", 408: "Request Timeout",
    480: "Temporarily Unavailable", 481: "Call/Transaction Does Not Exist", 486: "Busy Here", 489: "Bad Event",
    500: "Server Internal Error", 501: "Not Implemented", 503: "Service Unavailable",
}
_TOKEN = re.compile(r"\A[A-Za-z0-9.!%*_+`'~-]+\Z")
_STATUS_LINE = re.compile(r"\ASIP/2\.0 ([1-6][0-9]{2}) ?(.*)\Z")
_REQUEST_LINE = re.compile(r"\A([A-Za-z0-9.!%*_+`'~-]+) (\S+) SIP/2\.0\Z")
_HEADER_NAME = re.compile(r"\A[A-Za-z0-9.!%*_+`'~-]+\Z")
_HEX12 = re.compile(r"\A[0-9a-f]{12}\Z")
_MODEL_OR_VERSION = re.compile(r"\A[A-Za-z0-9][A-Za-z0-9._+-]{0,63}\Z")  # UC924, 2.0.4.6.41


@dataclass(frozen=True)
class Message:
    """One parsed SIP message. Header names are lower-case long forms, in arrival order."""

    method: str | None  # requests
    uri: str
    status: int | None  # responses
    reason: str
    headers: tuple[tuple[str, str], ...]
    body: bytes = b""

    @property
    def is_request(self) -> bool:
        return self.method is not None

    def header(self, name: str) -> str | None:
        name = name.lower()
        return next((value for key, value in self.headers if key == name), None)

    def all(self, name: str) -> list[str]:
        """Every value of a header, comma-joined lines split apart (Via may come either way)."""
        name = name.lower()
        return [item for key, value in self.headers if key == name for item in split_commas(value)]

    def header_lines(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self.headers if key == name]

    @property
    def cseq(self) -> tuple[int, str] | None:
        number, _, method = (self.header("cseq") or "").partition(" ")
        if not (number.isascii() and number.isdigit()) or not _TOKEN.match(method.strip()):
            return None
        return int(number), method.strip()


def parse(data: bytes) -> Message | None:
    """One datagram -> Message, or None when it is not a well-formed SIP message. Never raises."""
    if len(data) > MAX_MESSAGE:
        return None
    head, separator, body = data.partition(b"\r\n\r\n")
    if not separator:
        head, separator, body = data.partition(b"\n\n")
    try:
        text = head.lstrip(b"\r\n").decode("utf-8")
    except UnicodeDecodeError:
        return None
    lines = text.replace("\r\n", "\n").split("\n")
    first = lines[0].strip()
    headers: list[list[str]] = []
    for line in lines[1:]:
        if line[:1] in (" ", "\t"):  # folded continuation of the previous header
            if not headers:
                return None
            headers[-1][1] += " " + line.strip()
            continue
        name, colon, value = line.partition(":")
        name = name.strip().lower()
        if not colon or not _HEADER_NAME.match(name) or len(headers) >= MAX_HEADERS:
            return None
        headers.append([COMPACT_FORMS.get(name, name), value.strip()])
    if any(ord(char) < 32 and char != "\t" for _, value in headers for char in value):
        return None
    length = next((value for name, value in headers if name == "content-length"), None)
    if length is not None:
        if not (length.isascii() and length.isdigit()) or int(length) > len(body):
            return None
        body = body[: int(length)]
    status = _STATUS_LINE.match(first)
    if status:
        return Message(None, "", int(status[1]), status[2], tuple(map(tuple, headers)), body)
    request = _REQUEST_LINE.match(first)
    if request:
        return Message(request[1].upper(), request[2], None, "", tuple(map(tuple, headers)), body)
    return None


def split_commas(value: str) -> list[str]:
    """Split a header value at commas outside quotes and angle brackets."""
    items, current, quoted, bracket = [], [], False, False
    for char in value:
        if char == '"':
            quoted = not quoted
        elif char == "<" and not quoted:
            bracket = True
        elif char == ">" and not quoted:
            bracket = False
        if char == "," and not quoted and not bracket:
            items.append("".join(current).strip())
            current = []
        else:
            current.append(char)
    items.append("".join(current).strip())
    return [item for item in items if item]


def parameters(text: str) -> dict[str, str]:
    """`;a=1;b="x;y";c` -> {"a": "1", "b": "x;y", "c": ""}; names lower-cased."""
    result: dict[str, str] = {}
    for match in re.finditer(r';\s*([^=;\s]+)\s*(?:=\s*("(?:[^"\\]|\\.)*"|[^;]*))?', text):
        value = (match[2] or "").strip()
        if value.startswith('"') and value.endswith('"') and len(value) >= 2:
            value = value[1:-1]
        result[match[1].lower()] = value
    return result


@dataclass(frozen=True)
class Via:
    transport: str
    host: str
    port: int | None
    params: dict = field(default_factory=dict)

    @property
    def branch(self) -> str:
        return self.params.get("branch", "")


def parse_via(value: str) -> Via | None:
    sent, _, rest = value.partition(";")
    protocol, _, by = sent.strip().partition(" ")
    name, _, transport = protocol.rpartition("/")
    if name.upper().replace(" ", "") != "SIP/2.0" or not by.strip():
        return None
    host, port = split_hostport(by.strip())
    if host is None:
        return None
    return Via(transport.upper(), host, port, parameters(";" + rest) if rest else {})


def split_hostport(text: str) -> tuple[str | None, int | None]:
    """`host`, `host:port`, `[v6]`, `[v6]:port` -> (host, port or None); (None, None) when malformed."""
    if text.startswith("["):
        host, bracket, rest = text[1:].partition("]")
        if not bracket or (rest and not rest.startswith(":")):
            return None, None
        port = rest[1:] if rest else ""
    else:
        host, _, port = text.partition(":")
    if not host or (port and (not (port.isascii() and port.isdigit()) or not 0 < int(port) < 65536)):
        return None, None
    return host, int(port) if port else None


@dataclass(frozen=True)
class Uri:
    user: str
    host: str
    port: int | None


def parse_uri(text: str) -> Uri | None:
    """`sip:user@host:port;params` -> Uri (params and headers dropped); None for another scheme."""
    scheme, colon, rest = text.strip().partition(":")
    if not colon or scheme.lower() not in ("sip", "sips"):
        return None
    rest = re.split(r"[;?]", rest, maxsplit=1)[0]
    user, at, hostport = rest.rpartition("@")
    host, port = split_hostport(hostport)
    if host is None:
        return None
    return Uri(user.partition(":")[0] if at else "", host, port)


def name_addr(value: str) -> tuple[str, dict[str, str]]:
    """From/To/Contact value -> (URI, header parameters such as tag)."""
    value = value.strip()
    if "<" in value:
        uri, _, after = value.partition("<")[2].partition(">")
        return uri.strip(), parameters(after)
    uri, _, after = value.partition(";")
    return uri.strip(), parameters(";" + after) if after else {}


def event(value: str | None) -> tuple[str, dict[str, str]]:
    """Event header -> (package lower-cased, parameters); ("", {}) when absent."""
    if not value:
        return "", {}
    package, _, rest = value.partition(";")
    return package.strip().lower(), parameters(";" + rest) if rest else {}


def new_branch() -> str:
    return BRANCH_MAGIC + secrets.token_hex(8)


def new_tag() -> str:
    return secrets.token_hex(6)


def new_call_id(host: str) -> str:
    return f"{secrets.token_hex(10)}@{host}"


def hostport(host: str, port: int | None = None) -> str:
    host = f"[{host}]" if ":" in host and not host.startswith("[") else host
    return f"{host}:{port}" if port else host


def build_request(method: str, uri: str, headers: list[tuple[str, str]], body: bytes = b"") -> bytes:
    """Start line, headers in the order given, Content-Length, blank line, body."""
    lines = [f"{method} {uri} SIP/2.0"]
    lines += [f"{name}: {value}" for name, value in headers]
    lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8") + body


def build_response(request: Message, status: int, to_tag: str = "", extra: list[tuple[str, str]] = ()) -> bytes:
    """A response echoing the request's Via (all of them), From, To (+ our tag), Call-ID and CSeq."""
    lines = [f"SIP/2.0 {status} {REASONS.get(status, 'Unknown')}"]
    lines += [f"Via: {value}" for value in request.header_lines("via")]
    lines.append(f"From: {request.header('from')}")
    to = request.header("to") or ""
    if to_tag and "tag" not in name_addr(to)[1]:
        to += f";tag={to_tag}"
    lines.append(f"To: {to}")
    lines.append(f"Call-ID: {request.header('call-id')}")
    lines.append(f"CSeq: {request.header('cseq')}")
    lines += [f"{name}: {value}" for name, value in extra]
    lines.append("Content-Length: 0")
    return ("\r\n".join(lines) + "\r\n\r\n").encode("utf-8")


def request_is_complete(request: Message) -> bool:
    """Has the headers every request must carry to be answered (RFC 3261 8.1.1), top Via parsable."""
    vias = request.all("via")
    return bool(
        vias and parse_via(vias[0]) and request.header("from") and request.header("to")
        and request.header("call-id") and request.cseq and request.cseq[1] == request.method
    )


@dataclass(frozen=True)
class Leg:
    """Our side of an out-of-dialog request: where we send from and how we name ourselves."""

    host: str  # our address as the peer reaches it (Via, Contact)
    port: int
    user: str = "htekd"


def check_sync_notify(target_host: str, target_port: int, leg: Leg, reboot: bool, call_id: str, from_tag: str,
                      cseq: int, branch: str, authorization: tuple[str, str] | None = None) -> bytes:
    """The out-of-dialog NOTIFY `Event: check-sync` (`;reboot=true`) that makes a phone re-provision."""
    uri = f"sip:{hostport(target_host, target_port)}"
    headers = [
        ("Via", f"SIP/2.0/UDP {hostport(leg.host, leg.port)};branch={branch};rport"),
        ("Max-Forwards", MAX_FORWARDS),
        ("From", f"<sip:{leg.user}@{hostport(leg.host)}>;tag={from_tag}"),
        ("To", f"<{uri}>"),
        ("Call-ID", call_id),
        ("CSeq", f"{cseq} NOTIFY"),
        ("Contact", f"<sip:{leg.user}@{hostport(leg.host, leg.port)}>"),
        ("Event", "check-sync;reboot=true" if reboot else "check-sync"),
        ("Subscription-State", "terminated"),
    ]
    if authorization:
        headers.append(authorization)
    return build_request("NOTIFY", uri, headers)


def ua_profile_notify(subscribe: Message, leg: Leg, our_tag: str, branch: str, url: str) -> bytes:
    """The NOTIFY ending a PnP subscription: the provisioning URL as an application/url body."""
    contact = subscribe.header("contact")
    target = name_addr(contact)[0] if contact and parse_uri(name_addr(contact)[0]) else name_addr(subscribe.header("from"))[0]
    to = subscribe.header("to") or ""
    headers = [
        ("Via", f"SIP/2.0/UDP {hostport(leg.host, leg.port)};branch={branch};rport"),
        ("Max-Forwards", MAX_FORWARDS),
        ("From", to if "tag" in name_addr(to)[1] else f"{to};tag={our_tag}"),
        ("To", subscribe.header("from") or ""),
        ("Call-ID", subscribe.header("call-id") or ""),
        ("CSeq", "1 NOTIFY"),
        ("Contact", f"<sip:{leg.user}@{hostport(leg.host, leg.port)}>"),
        ("Event", subscribe.header("event") or "ua-profile"),
        ("Subscription-State", "terminated;reason=timeout"),
        ("Content-Type", "application/url"),
    ]
    return build_request("NOTIFY", target, headers, url.encode("utf-8"))


@dataclass(frozen=True)
class PnpPhone:
    """What a ua-profile SUBSCRIBE tells of the phone sending it."""

    mac: str | None  # 12 lower-case hex digits
    vendor: str
    model: str
    version: str
    user_agent: str


def pnp_phone(subscribe: Message) -> PnpPhone | None:
    """The phone behind a well-formed `SUBSCRIBE` with `Event: ua-profile`; None for anything else."""
    if subscribe.method != "SUBSCRIBE" or not request_is_complete(subscribe):
        return None
    package, params = event(subscribe.header("event"))
    if package != "ua-profile":
        return None
    # Model and version end up in the log and `htekd phones`: anything that is not one is left out.
    model, version = (value if _MODEL_OR_VERSION.match(value) else ""
                      for value in (params.get("model", ""), params.get("version", "")))
    return PnpPhone(_mac_of(subscribe), params.get("vendor", ""), model, version, subscribe.header("user-agent") or "")


def _mac_of(subscribe: Message) -> str | None:
    """Phones put their MAC as the user part of the Request-URI or From, often as `MAC%3a<mac>`."""
    candidates = [subscribe.uri, name_addr(subscribe.header("from") or "")[0]]
    for candidate in candidates:
        uri = parse_uri(candidate)
        if uri is None:
            continue
        user = re.sub(r"\A(?:mac(?:%3a|:))", "", uri.user.lower())
        user = re.sub(r"[:-]", "", user)
        if _HEX12.match(user):
            return user
    return None


# -- Digest (RFC 2617 / RFC 3261 22.4) ----------------------------------------------------------------

class DigestError(Exception):
    """A challenge htekd cannot answer; str() says why in one line."""


def parse_challenge(value: str) -> dict[str, str]:
    """`Digest realm="x", nonce="y", qop="auth"` -> {"realm": "x", "nonce": "y", "qop": "auth"}."""
    scheme, _, rest = value.strip().partition(" ")
    if scheme.lower() != "digest":
        raise DigestError(f"unsupported authentication scheme {scheme!r}")
    params = {}
    for item in split_commas(rest):
        name, equals, raw = item.partition("=")
        if not equals:
            continue
        raw = raw.strip()
        if raw.startswith('"') and raw.endswith('"') and len(raw) >= 2:
            raw = raw[1:-1].replace('\\"', '"').replace("\\\\", "\\")
        params[name.strip().lower()] = raw
    if "nonce" not in params or "realm" not in params:
        raise DigestError("challenge without realm or nonce")
    return params


def digest_authorization(challenge: str, method: str, uri: str, user: str, password: str,
                         cnonce: str | None = None, nc: int = 1, realm: str = "") -> str:
    """The Authorization value answering a Digest challenge (MD5 or MD5-sess, qop auth or none).

    With `realm`, a challenge for any other realm is refused (DigestError): an answer is an MD5 of the
    password that whoever challenged can try guesses against, so it goes only where it is expected."""
    params = parse_challenge(challenge)
    if realm and params["realm"] != realm:
        raise DigestError(f"challenge for realm {params['realm']!r}, not the configured {realm!r}: credentials not sent")
    algorithm = params.get("algorithm", "MD5")
    if algorithm.upper() not in ("MD5", "MD5-SESS"):
        raise DigestError(f"unsupported digest algorithm {algorithm!r}")
    qops = [item.strip().lower() for item in params.get("qop", "").split(",") if item.strip()]
    if qops and "auth" not in qops:
        raise DigestError(f"unsupported qop {params['qop']!r}")
    realm, nonce = params["realm"], params["nonce"]
    cnonce = cnonce or secrets.token_hex(8)
    ha1 = _md5(f"{user}:{realm}:{password}")
    if algorithm.upper() == "MD5-SESS":
        ha1 = _md5(f"{ha1}:{nonce}:{cnonce}")
    ha2 = _md5(f"{method}:{uri}")
    fields = [f'username="{_quote(user)}"', f'realm="{_quote(realm)}"', f'nonce="{_quote(nonce)}"',
              f'uri="{_quote(uri)}"']
    if qops:
        count = f"{nc:08x}"
        response = _md5(f"{ha1}:{nonce}:{count}:{cnonce}:auth:{ha2}")
        fields += [f'response="{response}"', "qop=auth", f"nc={count}", f'cnonce="{cnonce}"']
    else:
        fields.append(f'response="{_md5(f"{ha1}:{nonce}:{ha2}")}"')
    fields.append(f"algorithm={algorithm}")
    if "opaque" in params:
        fields.append(f'opaque="{_quote(params["opaque"])}"')
    return "Digest " + ", ".join(fields)


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8"), usedforsecurity=False).hexdigest()


def _quote(text: str) -> str:
    return text.replace("\\", "\\\\").replace('"', '\\"')
