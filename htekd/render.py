"""Rendering: layered settings + facts -> the bytes of one configuration file (pure)."""

from __future__ import annotations

import re
from operator import attrgetter
from typing import Callable, Iterable, Mapping, NamedTuple

from htekd import phonexml
from htekd.catalog import OTHER_SECTION, catalog
from htekd.models import Model
from htekd.resources import FIRMWARE_SERVER_PATH, SCREENSAVER_URL, WALLPAPER_URL, WEB_LOGO_URL, image_urls
from htekd.tree import Value

# Upgrade mode (P212) per protocol. FTP's value is not published, so it is never filled in.
UPGRADE_MODE = {"tftp": "0", "http": "1", "https": "3"}
CONFIG_SERVER_PATH = "P237"
UPGRADE_MODE_CODE = "P212"
AUTHENTICATE_CFG_FILE = "P240"  # the phone expects cfg<mac>.xml encrypted
COMMON_AES_KEY = "P8631"
# Resource URL parameters filled in when the file is present under files/ (seed section 6).
RESOURCE_URLS = {"P20175": "Language.tar", "P20176": "hlpres.tar", "P20177": "exp_pres.tar"}
RING_URL = "P20174"  # a folder: the phone fetches ring4.bin .. ring8.bin from it
RING_FILES = frozenset(f"ring{n}.bin" for n in range(4, 9))
# Every parameter server_values() may fill in.
FILLED_IN = frozenset({CONFIG_SERVER_PATH, FIRMWARE_SERVER_PATH, UPGRADE_MODE_CODE, RING_URL, *RESOURCE_URLS,
                       SCREENSAVER_URL, WALLPAPER_URL, WEB_LOGO_URL})
_TOKEN = re.compile(r"\{\{|\}\}|\{([A-Za-z_][A-Za-z0-9_]*)\}")  # an escaped brace, or a placeholder
_index = attrgetter("index")


def merge(layers: Iterable[Mapping[str, Value]]) -> dict[str, Value]:
    """Later layers win, parameter by parameter; for what htekd fills in, a factory value (a phone's
    download as a layer) does not undo an earlier layer's choice."""
    merged: dict[str, Value] = {}
    for layer in layers:
        chosen = [(code, merged[code]) for code in FILLED_IN if code in merged and not merged[code].factory]
        merged.update(layer)
        for code, value in chosen:
            if merged[code].factory:
                merged[code] = value
    return merged


def server_values(base_url: str, protocol: str, resource_names: frozenset, model: Model | None) -> dict[str, str]:
    """What htekd fills in unless a layer sets it: where the phone finds this server and its files."""
    values = {CONFIG_SERVER_PATH: base_url, FIRMWARE_SERVER_PATH: base_url}
    if protocol in UPGRADE_MODE:
        values[UPGRADE_MODE_CODE] = UPGRADE_MODE[protocol]
    for code, name in RESOURCE_URLS.items():
        if name in resource_names:
            values[code] = f"{base_url}/{name}"
    if RING_FILES & resource_names:
        values[RING_URL] = base_url
    values.update(image_urls(resource_names, model, base_url))
    return values


def substitute(value: Value, facts: Mapping[str, str]) -> str | None:
    """Fill {placeholders}; None when one has no value in this file (the parameter is left out).

    `{{name}}` stands for a literal `{name}`. In dial plans braces are the phone's, never placeholders.
    """
    if not value.variables <= facts.keys():
        return None
    if not value.variables and "{{" not in value.value and "}}" not in value.value:
        return value.value
    if value.literal:  # a dial plan: no placeholders, but `{{` written before htekd knew that still means `{`
        return value.value.replace("{{", "{").replace("}}", "}")
    # One pass, so text that came from a fact or a cell is never unescaped again.
    return _TOKEN.sub(lambda match: facts[match[1]] if match[1] else match[0][0], value.value)


class Inputs(NamedTuple):
    """What one configuration file is made of (render(*inputs)): the layered values, htekd's fill-ins
    and the facts for placeholders."""

    values: Mapping[str, Value]
    defaults: Mapping[str, str]
    facts: Mapping[str, str]


def settle(values: Mapping[str, Value], defaults: Mapping[str, str], facts: Mapping[str, str]
           ) -> tuple[dict[str, str], frozenset]:
    """Each parameter's final text, placeholders filled in, and the P-codes htekd filled in.

    `defaults` (server paths, upgrade mode, resource URLs) apply where no layer set the parameter,
    or a layer left it at the phone's factory value (a phone's own download as a layer). A value
    whose placeholder has no value in this file is left out.
    """
    filled = frozenset(code for code in defaults if _unset(values, code))
    final: dict[str, str] = {code: defaults[code] for code in filled}
    for code, value in values.items():
        if code in filled:
            continue
        text = substitute(value, facts)
        if text is not None:
            final[code] = text
    return final, filled


def render(values: Mapping[str, Value], defaults: Mapping[str, str], facts: Mapping[str, str]) -> bytes:
    """The phone's XML for these layered values (see settle() and layout())."""
    final, _ = settle(values, defaults, facts)
    return layout(final, lambda code: values[code].para if code in values else "")


def _unset(values: Mapping[str, Value], code: str) -> bool:
    """Whether htekd may fill `code` in: no layer set it, or left it at the factory value. A factory
    upgrade mode still counts beside a config server path of the administrator's: together they
    move phones to that protocol."""
    value = values.get(code)
    if value is None:
        return True
    if not value.factory:
        return False
    if code == UPGRADE_MODE_CODE:
        server = values.get(CONFIG_SERVER_PATH)
        return server is None or server.factory
    return True


def layout(final: Mapping[str, str], para_of: Callable[[str], str]) -> bytes:
    """`final` (P-code -> value) in the phone's XML: catalog order with section comments, codes the
    catalog does not know last, under the name `para_of` gives them (kept for the people who read the file)."""
    cat = catalog()
    known, unknown = [], []
    for code in final:  # one catalog look-up per parameter: this is the hot path of every request
        param = cat.get(code)
        if param is None:
            unknown.append(code)
        else:
            known.append(param)
    known.sort(key=_index)
    lines: list[str] = []
    section = None
    for param in known:
        if param.section != section:
            section = param.section
            lines.append(phonexml.comment(section))
        lines.append(phonexml.element(param.code, param.name, final[param.code]))
    unknown.sort(key=lambda code: int(code[1:]))
    if unknown and section != OTHER_SECTION:
        lines.append(phonexml.comment(OTHER_SECTION))
    lines.extend(phonexml.element(code, para_of(code), final[code]) for code in unknown)
    return phonexml.document(lines)
