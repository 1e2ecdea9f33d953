"""The company phonebook: phones.csv (+ settings/contacts.csv) -> phonebook.xml in the phone's
remote-phonebook format (pure, except for reading contacts.csv at load).

phonebook.xml holds every phone with a name and a number and every contact; phonebook-<group>.xml
(with `[phonebook] per_group = yes`) the phones of that group, its contacts and the contacts that
name no group.
"""

from __future__ import annotations

import re
import unicodedata
import urllib.parse
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Mapping

from htekd import csvfile
from htekd.phonexml import escape_text
from htekd.catalog import CatalogError, catalog
from htekd.config import HASHED_PASSWORD, Config, PhonebookConfig
from htekd.render import substitute
from htekd.tree import GROUP_NAME, GROUP_PATTERN, Phone

FILE = "settings/contacts.csv"
URL_CODE = "P4401"  # RemotePhoneBook1_Url
NAME_CODE = "P3316"  # RemotePhoneBook1_Name
BOOK = re.compile(rf"\Aphonebook(?:-({GROUP_PATTERN}))?\.xml\Z")


@dataclass(frozen=True)
class Entry:
    name: str
    numbers: tuple[str, ...]
    group: str | None
    shared: bool = False  # in every book: a contact that names no group

    @property
    def sort_key(self) -> tuple:
        # Accents aside first, so "Émile" sorts with "Emile", not after "Zoë".
        bare = "".join(c for c in unicodedata.normalize("NFKD", self.name.casefold()) if not unicodedata.combining(c))
        return bare, self.name.casefold(), self.name, self.numbers


def _is_number_column(column: str) -> bool:
    return column.startswith("number")


def load_contacts(loader, root: Path) -> tuple[Entry, ...]:
    """settings/contacts.csv: name, one or more number columns (number, number2, ...), optional group."""
    path = root / "settings" / "contacts.csv"
    if not path.exists():
        return ()
    table = csvfile.read(loader, path, FILE, lambda c: c in ("name", "group") or _is_number_column(c), ("name",))
    if table is None:
        return ()
    number_columns = [column for column in table.columns if _is_number_column(column)]
    if not number_columns:
        loader.error(FILE, 1, "no number column (number, number2, ...)")
        return ()
    contacts = []
    for row in table.rows:
        name, group = row.cells["name"], row.cells.get("group", "")
        numbers = tuple(row.cells[column] for column in number_columns if row.cells[column])
        if not name or not numbers:
            loader.error(FILE, row.line, "a contact needs a name and at least one number")
        elif group and not GROUP_NAME.match(group):
            loader.error(FILE, row.line, f"bad group name {group!r} (letters, digits, '.', '_', '-')")
        else:
            contacts.append(Entry(name, numbers, group or None, shared=not group))
    return tuple(contacts)


def _column_reader(column: str):
    """A function phone -> that column's text (a parameter's value or a variable column), or ""."""
    try:
        code = catalog().lookup(column).code
    except CatalogError:
        code = None

    def read(phone: Phone) -> str:
        value = phone.values.get(code) if code else None
        if value is None:
            return phone.variables.get(column, "")
        facts = {**phone.variables, "mac": phone.mac, "model": phone.model or "", "group": phone.group or ""}
        return substitute(value, facts) or ""

    return read


@dataclass(frozen=True)
class Book:
    """Every entry of the inventory and contacts, sorted by name; the books are views of it."""

    entries: tuple[Entry, ...]
    groups: frozenset  # groups that have a book of their own: their phones' and contacts' groups
    filled: frozenset  # groups with entries of their own
    shared: bool  # some entries are in every book

    def entries_for(self, group: str | None) -> list[Entry]:
        if group is None:
            return list(self.entries)
        return [entry for entry in self.entries if entry.shared or entry.group == group]

    def has(self, group: str | None) -> bool:
        return group is None or group in self.groups

    def is_empty(self, group: str | None) -> bool:
        return not self.entries if group is None else not (self.shared or group in self.filled)


def build(phones: Mapping[str, Phone], contacts: Iterable[Entry], settings: PhonebookConfig) -> Book:
    name_of = _column_reader(settings.name)
    number_readers = [_column_reader(column) for column in settings.numbers]
    entries = list(contacts)
    for phone in phones.values():
        if not phone.in_phonebook:
            continue
        name = name_of(phone)
        numbers = tuple(number for number in (read(phone) for read in number_readers) if number)
        if name and numbers:
            entries.append(Entry(name, numbers, phone.group))
    filled = frozenset(entry.group for entry in entries if entry.group)
    groups = frozenset(phone.group for phone in phones.values() if phone.group) | filled
    shared = any(entry.shared for entry in entries)
    return Book(tuple(sorted(entries, key=lambda entry: entry.sort_key)), groups, filled, shared)


def document(entries: Iterable[Entry]) -> bytes:
    """The phone's remote-phonebook XML."""
    lines = ['<?xml version="1.0" encoding="UTF-8"?>\n', "<PhoneDirectory>\n"]
    for entry in entries:
        lines.append(f"  <DirectoryEntry>\n    <Name>{escape_text(entry.name)}</Name>\n")
        lines.extend(f"    <Telephone>{escape_text(number)}</Telephone>\n" for number in entry.numbers)
        lines.append("  </DirectoryEntry>\n")
    lines.append("</PhoneDirectory>\n")
    return "".join(lines).encode("utf-8")


def requested_group(leaf: str, settings: PhonebookConfig) -> str | None | bool:
    """For a requested file name: None for phonebook.xml, the group for phonebook-<group>.xml (when
    per-group books are on), False for any other name."""
    match = BOOK.match(leaf) if settings.enabled else None
    if not match or (match[1] and not settings.per_group):
        return False
    return match[1]


def book_url(config: Config) -> str | None:
    """Where phones fetch the book (it is fetched over HTTP): server_url's scheme when it is HTTP(S),
    else HTTP, else HTTPS; with the listener's login in it. None when no listener can serve it."""
    scheme = urllib.parse.urlsplit(config.server.server_url).scheme
    candidates = [scheme] if scheme in ("http", "https") else []
    for protocol in (*candidates, "http", "https"):
        listener = getattr(config, protocol)
        if not listener.enabled:
            continue
        url = config.public_url(protocol)
        if listener.user:
            if listener.password.startswith(HASHED_PASSWORD):
                return None  # a phone cannot log in with the hash
            login = f"{urllib.parse.quote(listener.user, safe='')}:{urllib.parse.quote(listener.password, safe='')}@"
            url = url.replace("://", "://" + login, 1)
        return url
    return None


def phone_values(config: Config, book: Book, phone: Phone) -> dict[str, str]:
    """P4401 and P3316 for a phone's file, unless the book is empty or cannot be reached."""
    settings = config.phonebook
    group = phone.group if settings.per_group and phone.group else None
    url = book_url(config) if settings.enabled else None
    if url is None or book.is_empty(group):
        return {}
    name = f"phonebook-{group}.xml" if group else "phonebook.xml"
    return {URL_CODE: f"{url}/{name}", NAME_CODE: settings.title}


def login_problem(config: Config) -> str | None:
    """Why P4401 cannot be filled in, for htekd check."""
    if not config.phonebook.enabled:
        return None
    if book_url(config) is None:
        if not (config.http.enabled or config.https.enabled):
            return "[phonebook] phones fetch the phonebook over HTTP(S), and neither listener is enabled: P4401 is not filled in"
        return ("[phonebook] the HTTP(S) password is hashed (md5-ha1:), so it cannot go into the phonebook URL: "
                "P4401 is not filled in; set it in a settings layer")
    return None
