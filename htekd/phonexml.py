"""The phone's own XML configuration format: reading what administrators paste, writing what phones read.

Reading is lenient where what phones take is not well-formed XML (HTML entities such as `&copy;`
in the phone's own download, a bare `&` in the URLs other provisioning systems write, a P-code
listed twice, elements keyed by name instead of P-code) and strict where the input is dangerous
(DOCTYPE, external entities).
Writing reproduces the phone's byte layout (` />` for blanks, the declaration with a space
before `?>`), which lxml's serializer cannot, so it is done by hand with full escaping.
"""

from __future__ import annotations

import html.entities
import re
from dataclasses import dataclass
from typing import Iterable

from lxml import etree

from htekd.catalog import PCODE

_XML_ENTITIES = {"amp", "lt", "gt", "quot", "apos"}
_ENTITY = re.compile(rb"&([A-Za-z][A-Za-z0-9]{1,31});")
# What may hold an "&" (or text that looks like one): comments and CDATA, where it is kept as it is, and
# the "&" itself, a reference when _REFERENCE matches there (group "name": an entity) and bare otherwise.
_SPECIAL = re.compile(rb"<!--|<!\[CDATA\[|&")
_SECTION_END = {b"<!--": b"-->", b"<![CDATA[": b"]]>"}
_REFERENCE = re.compile(rb"&(?:#[0-9]{1,8}|#x[0-9A-Fa-f]{1,8}|(?P<name>[A-Za-z][A-Za-z0-9._-]{0,31}));")
_TAG_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.]*")
PARSER = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False, remove_comments=False)


class PhoneXmlError(ValueError):
    def __init__(self, line: int, message: str):
        self.line = line
        super().__init__(message)


@dataclass(frozen=True)
class Setting:
    key: str  # the element's name: a P-code ("P47") or a parameter name ("Profile1_Sipserver")
    para: str  # the para attribute as written (for people; the phone keys on the code)
    value: str
    line: int

    @property
    def by_code(self) -> bool:
        return PCODE.fullmatch(self.key) is not None


@dataclass(frozen=True)
class Repair:
    """Something not well-formed that was read the way phones read it."""

    line: int
    message: str


@dataclass(frozen=True)
class Document:
    settings: list[Setting]
    repairs: list[Repair]


def readable(data: bytes) -> bytes:
    """`data` with the HTML entities XML does not define (`&copy;`) as character references."""
    return _ENTITY.sub(_html_entity, data)


def _html_entity(match: re.Match) -> bytes:
    name = match.group(1).decode("ascii")
    if name in _XML_ENTITIES:
        return match.group(0)
    char = html.entities.html5.get(name + ";")
    if char is None:
        return match.group(0)  # left for the XML parser to report
    return "".join(f"&#{ord(c)};" for c in char).encode("ascii")


def _well_formed(data: bytes, repairs: list[Repair]) -> bytes:
    """`data` with each bare `&` and undefined entity escaped, so the value keeps them as written.

    One pass, each byte looked at once: an unterminated comment or CDATA ends the repairs there
    and is left for the XML parser to report."""
    pieces: list[bytes] = []
    done = position = 0
    line, counted = 1, 0  # the line at offset `counted`
    while match := _SPECIAL.search(data, position):
        token = match.group()
        if token != b"&":
            end = data.find(_SECTION_END[token], match.end())
            if end < 0:
                break
            position = end + len(_SECTION_END[token])
            continue
        position = match.end()
        reference = _REFERENCE.match(data, match.start())
        name = reference["name"] if reference else None
        if reference and (name is None or name.decode() in _XML_ENTITIES or name.decode() + ";" in html.entities.html5):
            continue
        line += data.count(b"\n", counted, match.start())
        counted = match.start()
        # The entity's text is not quoted: it may stand inside a password.
        found = Repair(line, "bare '&' kept as written (XML wants '&amp;')" if reference is None else
                       "undefined entity kept as written (XML wants '&amp;' for a literal '&')")
        if found not in repairs[-2:]:  # a line of URLs is one warning, not one per '&'
            repairs.append(found)
        pieces += (data[done:match.start()], b"&amp;")
        done = match.end()
    return b"".join(pieces) + data[done:] if pieces else data


def parse(data: bytes) -> list[Setting]:
    """The settings of an hl_provision document, in document order (see read())."""
    return read(data).settings


def read(data: bytes) -> Document:
    """Parse an hl_provision document into its settings, in document order, and what was repaired.

    A parameter given twice keeps both entries here; the caller decides (later wins). Elements
    are keyed by P-code or by name; the caller resolves names.
    """
    if b"<!DOCTYPE" in data or b"<!ENTITY" in data:
        raise PhoneXmlError(1 + data[: data.find(b"<!")].count(b"\n"), "DOCTYPE and entity declarations are not allowed")
    repairs: list[Repair] = []
    try:
        root = etree.fromstring(readable(_well_formed(data, repairs)), PARSER)
    except etree.XMLSyntaxError as exc:
        line = exc.lineno or 1
        # libxml2 may quote the document after a newline (an unfinished CDATA): that text can be a secret.
        message = str(exc.msg or exc).split(", line ")[0].split("\n")[0]
        raise PhoneXmlError(line, f"malformed XML: {message}") from None
    if root.getroottree().docinfo.doctype:  # declared in an encoding the byte check above cannot see (UTF-16)
        raise PhoneXmlError(1, "DOCTYPE and entity declarations are not allowed")
    if root.tag != "hl_provision":
        raise PhoneXmlError(root.sourceline or 1, f"expected <hl_provision> as the root element, found <{root.tag}>")
    settings: list[Setting] = []
    for config in root:
        if not isinstance(config.tag, str):
            continue  # comments
        if config.tag != "config":
            raise PhoneXmlError(config.sourceline or 1, f"unexpected element <{config.tag}> (only <config> belongs here)")
        for element in config:
            if not isinstance(element.tag, str):
                continue
            if not _TAG_NAME.fullmatch(element.tag):  # a namespace: nothing a phone or a peer writes
                raise PhoneXmlError(element.sourceline or 1, f"unexpected element <{element.tag}> "
                                    "(expected a P-code such as <P47> or a parameter name)")
            if len(element):
                raise PhoneXmlError(element.sourceline or 1, f"<{element.tag}> must hold text only")
            # The vendor's own download spells the attribute "papr" once.
            para = element.get("para") or element.get("Para") or element.get("papr") or ""
            settings.append(Setting(element.tag, para, element.text or "", element.sourceline or 1))
    return Document(settings, repairs)


def escape_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(value: str) -> str:
    """As escape_text, and the white space an attribute would otherwise lose to normalisation."""
    return (escape_text(value).replace('"', "&quot;").replace("\n", "&#10;").replace("\r", "&#13;")
            .replace("\t", "&#9;"))


HEADER = '<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1">\n    <config version="1">\n'
FOOTER = "    </config>\n</hl_provision>\n"


def element(code: str, para: str, value: str) -> str:
    """One parameter line in the phone's layout."""
    if value == "":
        return f'        <{code} para="{_escape_attr(para)}" />\n'
    return f'        <{code} para="{_escape_attr(para)}">{escape_text(value)}</{code}>\n'


def comment(section: str) -> str:
    return f"        <!--{section.replace('--', '- -')}-->\n"


def document(lines: Iterable[str]) -> bytes:
    return (HEADER + "".join(lines) + FOOTER).encode("utf-8")
