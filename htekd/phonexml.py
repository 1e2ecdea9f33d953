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
# Where an "&" may stand: kept as it is inside comments and CDATA; elsewhere a character
# reference, an entity, or a bare "&" (group "bare"; group "name" for an entity).
_AMPERSAND = re.compile(
    rb"<!--.*?-->|<!\[CDATA\[.*?\]\]>|&#[0-9]{1,8};|&#x[0-9A-Fa-f]{1,8};|&(?P<name>[A-Za-z][A-Za-z0-9._-]{0,31});|(?P<bare>&)",
    re.DOTALL,
)
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
        return self.key.startswith("P") and PCODE.fullmatch(self.key) is not None


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
    """`data` with each bare `&` and undefined entity escaped, so the value keeps them as written."""
    counted = [0, 1]  # offset up to which newlines are counted, and the line there

    def repair(match: re.Match) -> bytes:
        name = match["name"]
        if match["bare"] is None and (name is None or name.decode() in _XML_ENTITIES
                                      or name.decode() + ";" in html.entities.html5):
            return match.group(0)
        counted[1] += data.count(b"\n", counted[0], match.start())
        counted[0] = match.start()
        line = counted[1]
        if name is None:
            found = Repair(line, "bare '&' kept as written (XML wants '&amp;')")
        else:
            shown = name.decode("ascii", "replace")
            found = Repair(line, f"undefined entity '&{shown};' kept as written (XML wants '&amp;{shown};')")
        if found not in repairs[-3:]:  # a line of URLs is one warning, not one per '&'
            repairs.append(found)
        return b"&amp;" + match.group(0)[1:]

    return _AMPERSAND.sub(repair, data)


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
        message = str(exc.msg or exc).split(", line ")[0]
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


def _escape_text(value: str) -> str:
    return value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _escape_attr(value: str) -> str:
    return _escape_text(value).replace('"', "&quot;")


HEADER = '<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1">\n    <config version="1">\n'
FOOTER = "    </config>\n</hl_provision>\n"


def element(code: str, para: str, value: str) -> str:
    """One parameter line in the phone's layout."""
    if value == "":
        return f'        <{code} para="{_escape_attr(para)}" />\n'
    return f'        <{code} para="{_escape_attr(para)}">{_escape_text(value)}</{code}>\n'


def comment(section: str) -> str:
    return f"        <!--{section.replace('--', '- -')}-->\n"


def document(lines: Iterable[str]) -> bytes:
    return (HEADER + "".join(lines) + FOOTER).encode("utf-8")
