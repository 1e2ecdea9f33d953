"""Line keys as a table: settings/keys.csv -> the LineKeyN_* / ExpM_P_K_* parameters of each phone.

One row per key: `applies_to,key,type,value,label,account`. Rows layer like settings files
(all -> model -> group -> phone), a later layer replacing the whole key; the settings files and
phones.csv still win parameter by parameter, since the keys are the lowest layer of all.
Tables: htekd/data/key_types.tsv (type names and numbers), htekd/data/line_keys.tsv (keys per model).
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from htekd import csvfile
from htekd.catalog import CatalogError, catalog, read_table
from htekd.models import models
from htekd.tree import GROUP_NAME, PLACEHOLDER, Value, normalise_mac

FILE = "settings/keys.csv"
COLUMNS = ("applies_to", "key", "type", "value", "label", "account")
SCOPES = ("all", "model", "group", "phone")  # lowest first
ACCOUNTS = 16
# The phone numbers its accounts from 0 in LineKeyN_Account (factory defaults: 0 on keys 5-45, 255 "auto"
# on the line keys 1-4); keys.csv numbers them as the phone's screens and phones.csv do, from 1.
_KEY = re.compile(r"\A(?:([0-9]{1,3})|exp([0-9]{1,2})\.([0-9]{1,2})\.([0-9]{1,3}))\Z", re.IGNORECASE)


@dataclass(frozen=True)
class KeyType:
    number: int
    name: str
    needs_value: bool


@functools.cache
def key_types() -> dict[str, KeyType]:
    """Name and number (as text) -> key type."""
    table: dict[str, KeyType] = {}
    for number, name, needs_value, _seen_in in read_table("key_types.tsv"):
        kind = KeyType(int(number), name, needs_value == "yes")
        table[name] = table[number] = kind
    return table


@functools.cache
def line_key_counts() -> dict[str, int]:
    """Model -> number of line keys, where published."""
    return {model: int(count) for model, count, _seen_in in read_table("line_keys.tsv")}


@dataclass(frozen=True, order=True)
class Key:
    module: int  # 0: the phone's own line keys; 1-6: an expansion module
    page: int
    number: int

    def __str__(self) -> str:
        return str(self.number) if not self.module else f"exp{self.module}.{self.page}.{self.number}"

    @property
    def parameter_names(self) -> tuple[str, str, str, str]:
        """Catalog names of the key's type, value, label and account."""
        if not self.module:
            prefix = f"LineKey{self.number}_"
            return prefix + "Type", prefix + "Value", prefix + "Label", prefix + "Account"
        prefix = f"Exp{self.module}_{self.page}_{self.number}_"
        return prefix + "KeyType", prefix + "Value", prefix + "Label", prefix + "Account"


@functools.cache
def key_codes(key: Key) -> tuple[str, str, str, str] | None:
    """P-codes of the key's type, value, label and account; None for a key the phones do not have."""
    try:
        return tuple(catalog().lookup(name).code for name in key.parameter_names)
    except CatalogError:
        return None


Scope = tuple[str, str]  # ("all", ""), ("model", "UC924"), ("group", "sales"), ("phone", "001fc1000001")


@dataclass(frozen=True)
class KeyTable:
    scopes: Mapping[Scope, Mapping[Key, Mapping[str, Value]]] = field(default_factory=lambda: MappingProxyType({}))
    variables: frozenset = frozenset()  # placeholders used

    def for_phone(self, mac: str, model: str | None, group: str | None) -> dict[str, Value]:
        return self._values((("all", ""), ("model", model or ""), ("group", group or ""), ("phone", mac)), model)

    def for_model(self, model: str | None) -> dict[str, Value]:
        return self._values((("all", ""), ("model", model or "")), model)

    def _values(self, scopes: Iterable[Scope], model: str | None) -> dict[str, Value]:
        keys: dict[Key, Mapping[str, Value]] = {}
        for scope in scopes:
            keys.update(self.scopes.get(scope, {}))
        limit = line_key_counts().get(model) if model else None
        values: dict[str, Value] = {}
        for key, parameters in keys.items():
            if not (key.module == 0 and limit is not None and key.number > limit):
                values.update(parameters)
        return values


EMPTY = KeyTable()


def load(loader, root: Path, phones: Mapping, layers: Mapping, known_variables: Iterable[str]) -> KeyTable:
    """Read settings/keys.csv (an empty table when there is none). `layers` are the settings layers
    (common, models, groups, phone_layers) that decide which accounts each phone has active;
    `known_variables` the placeholders a value may use."""
    path = root / "settings" / "keys.csv"
    if not path.exists():
        return EMPTY
    table = csvfile.read(loader, path, FILE, lambda column: column in COLUMNS, ("applies_to", "key", "type"))
    if table is None:
        return EMPTY
    known = frozenset(known_variables)
    accounts = _ActiveAccounts(layers)
    reach = _Reach(phones)
    scopes: dict[Scope, dict[Key, Mapping[str, Value]]] = {}
    first_line: dict[tuple[Scope, Key], int] = {}
    used: set[str] = set()
    unlimited: set[str] = set()  # models keys.csv reaches with no published line-key count
    for row in table.rows:
        parsed = _Row(loader, row, known)
        if not parsed.ok:
            continue
        scope, key = parsed.scope, parsed.key
        if (scope, key) in first_line:
            loader.error(FILE, row.line, f"key {key} for {_scope_text(scope)} is set again (first on line {first_line[scope, key]})")
            continue
        first_line[scope, key] = row.line
        used |= parsed.variables
        scopes.setdefault(scope, {})[key] = MappingProxyType(parsed.parameters)
        reached = reach.phones(scope)
        if scope[0] == "phone" and not reached:
            loader.warn(FILE, row.line, f"phone {scope[1]} is not in phones.csv: this row is not used")
        if key.module == 0:
            _check_line_key_count(loader, row.line, scope, key, reached)
            unlimited |= {phone.model for phone in reached if phone.model not in line_key_counts()}
        if parsed.account:
            _check_account(loader, row.line, scope, parsed.account, reached, accounts)
    unlimited.discard(None)
    if unlimited:
        loader.warn(FILE, 0, f"no published line-key count for {', '.join(sorted(unlimited))}: "
                    "their line keys are not limited by model")
    return KeyTable(MappingProxyType({scope: MappingProxyType(keys) for scope, keys in scopes.items()}), frozenset(used))


class _Row:
    """One row of keys.csv checked on its own; `ok` is False after an error."""

    def __init__(self, loader, row: csvfile.Row, known: frozenset):
        self.loader, self.line, self.ok = loader, row.line, True
        cells = row.cells
        self.scope = self._scope(cells["applies_to"])
        self.key = self._key(cells["key"])
        kind = self._type(cells["type"])
        value, label, account = cells.get("value", ""), cells.get("label", ""), cells.get("account", "")
        if kind and kind.needs_value and not value:
            self.error(f"a {kind.name} key needs a value")
        self.account = self._account(account)
        self.variables = frozenset(PLACEHOLDER.findall(value)) | frozenset(PLACEHOLDER.findall(label))
        for name in sorted(self.variables - known):
            self.error(f"unknown placeholder {{{name}}} (not a column of phones.csv nor one of htekd's facts)")
        if not (self.ok and kind):
            return
        codes = key_codes(self.key)
        if kind.number == 0:
            value = label = ""  # a cleared key shows nothing
        source = f"{FILE}:{self.line}"
        default_account = catalog().get(codes[3]).default
        self.parameters = {
            codes[0]: Value(str(kind.number), source),
            codes[1]: loader.value(FILE, self.line, codes[1], value),
            codes[2]: loader.value(FILE, self.line, codes[2], label),
            codes[3]: Value(str(self.account - 1) if self.account else default_account, source),
        }

    def error(self, message: str) -> None:
        self.loader.error(FILE, self.line, message)
        self.ok = False

    def _scope(self, text: str) -> Scope | None:
        kind, colon, name = text.partition(":")
        kind = kind.strip().lower()
        if text.lower() == "all":
            return ("all", "")
        if colon and kind == "model":
            model = models().get(name.strip())
            if model is None:
                self.error(f"unknown model {name.strip()!r} (see htekd models)")
                return None
            return ("model", model.name)
        if colon and kind == "group":
            if not GROUP_NAME.match(name.strip()):
                self.error(f"bad group name {name.strip()!r} (letters, digits, '.', '_', '-')")
                return None
            return ("group", name.strip())
        mac = normalise_mac(text)
        if mac is None:
            self.error(f"applies_to {text!r}: expected all, model:<MODEL>, group:<GROUP> or a MAC")
            return None
        return ("phone", mac)

    def _key(self, text: str) -> Key | None:
        match = _KEY.match(text)
        key = None
        if match and match[1]:
            key = Key(0, 0, int(match[1]))
        elif match:
            key = Key(int(match[2]), int(match[3]), int(match[4]))
        if key is None or key_codes(key) is None:
            self.error(f"no key {text!r}: line keys are 1-{_line_key_max()}, expansion-module keys "
                       "exp<module>.<page>.<key> (exp1.1.1 to exp6.2.20)")
            return None
        return key

    def _type(self, text: str) -> KeyType | None:
        name = text.lower().replace(" ", "_") or "na"
        kind = key_types().get(name)
        if kind is not None:
            return kind
        if name.isascii() and name.isdigit():
            self.loader.warn(FILE, self.line, f"key type {name} is not in htekd's table of key types: written as it is")
            return KeyType(int(name), name, False)
        self.error(f"unknown key type {text!r} (one of: {', '.join(k for k in key_types() if not k.isdigit())}, or a number)")
        return None

    def _account(self, text: str) -> int:
        if not text:
            return 0
        if text.isascii() and text.isdigit() and 1 <= int(text) <= ACCOUNTS:
            return int(text)
        self.error(f"account {text!r}: expected an account number from 1 to {ACCOUNTS}")
        return 0


@functools.cache
def _line_key_max() -> int:
    number = 1
    while key_codes(Key(0, 0, number + 1)):
        number += 1
    return number


def _scope_text(scope: Scope) -> str:
    """As keys.csv writes it."""
    kind, name = scope
    if kind == "all":
        return kind
    return name if kind == "phone" else f"{kind}:{name}"


class _Reach:
    """The phones of the inventory a scope reaches, indexed once (thousands of phones, thousands of rows)."""

    def __init__(self, phones: Mapping):
        self.scopes: dict[Scope, list] = {("all", ""): list(phones.values())}
        for phone in phones.values():
            self.scopes[("phone", phone.mac)] = [phone]
            for kind, name in (("model", phone.model), ("group", phone.group)):
                if name:
                    self.scopes.setdefault((kind, name), []).append(phone)

    def phones(self, scope: Scope) -> list:
        return self.scopes.get(scope, [])


def _count(phones: list) -> str:
    macs = [phone.mac for phone in phones]
    return f"{len(macs)} phone{'s' * (len(macs) != 1)}: {', '.join(macs[:3])}{', ...' if len(macs) > 3 else ''}"


def _check_line_key_count(loader, line: int, scope: Scope, key: Key, reached: list) -> None:
    counts = line_key_counts()
    if scope[0] == "model":
        if key.number > counts.get(scope[1], key.number):
            loader.error(FILE, line, f"key {key}: a {scope[1]} has {counts[scope[1]]} line keys")
        return
    short = [phone for phone in reached if phone.model and key.number > counts.get(phone.model, key.number)]
    if not short:
        return
    models_short = sorted({f"{phone.model} ({counts[phone.model]})" for phone in short})
    message = f"key {key} is beyond the line keys of {', '.join(models_short)}"
    if scope[0] == "phone":
        loader.error(FILE, line, message)
    else:
        loader.warn(FILE, line, f"{message}: left out for {_count(short)}")


def _check_account(loader, line: int, scope: Scope, account: int, reached: list, accounts: "_ActiveAccounts") -> None:
    inactive = [phone for phone in reached if not accounts.active(phone, account)]
    if not inactive:
        return
    if scope[0] == "phone":
        loader.error(FILE, line, f"account {account} is not an active account of phone {scope[1]} "
                     f"(Account{account}_Active is off or Account{account}_SipUserId is empty)")
    else:
        loader.warn(FILE, line, f"account {account} is not active on {_count(inactive)}")


class _ActiveAccounts:
    """Whether account N of a phone is on (AccountN_Active, factory default included) and has a user ID."""

    def __init__(self, layers: Mapping):
        self.common, self.models = layers["common"], layers["models"]
        self.groups, self.phone_layers = layers["groups"], layers["phone_layers"]
        self.known: dict[tuple[str, int], bool] = {}  # (mac, account) -> active: many rows ask of one phone

    def active(self, phone, account: int) -> bool:
        key = (phone.mac, account)
        if key not in self.known:
            cat = catalog()
            active = cat.lookup(f"Account{account}_Active")
            user = cat.lookup(f"Account{account}_SipUserId").code
            merged = {active.code: Value(active.default, "")}
            for values in self._layers(phone):
                merged.update((code, values[code]) for code in (active.code, user) if code in values)
            self.known[key] = merged[active.code].value == "1" and bool(merged.get(user, Value("", "")).value)
        return self.known[key]

    def _layers(self, phone) -> list[Mapping[str, Value]]:
        layers = [self.common.values]
        if phone.model in self.models:
            layers.append(self.models[phone.model].values)
        if phone.group in self.groups:
            layers.append(self.groups[phone.group].values)
        layers.append(phone.values)
        if phone.mac in self.phone_layers:
            layers.append(self.phone_layers[phone.mac].values)
        return layers
