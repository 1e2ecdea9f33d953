"""The content tree: what the administrator writes, loaded into one immutable snapshot.

Loading never stops at the first problem: every problem is collected with its file and line so
`htekd check` can list them all; the daemon refuses a snapshot that has errors.
"""

from __future__ import annotations

import csv
import dataclasses
import io
import re
import time
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Iterable, Mapping

from htekd import phonexml
from htekd.catalog import (AmbiguousName, CatalogError, Param, UnknownParameter, catalog, is_pcode, name_key,
                           secret_name)
from htekd.models import models

MAC_INPUT = re.compile(r"\A(?:[0-9A-Fa-f]{12}|[0-9A-Fa-f]{2}(?:([:-])[0-9A-Fa-f]{2})(?:\1[0-9A-Fa-f]{2}){4})\Z")
PLACEHOLDER = re.compile(r"(?<!\{)\{([A-Za-z_][A-Za-z0-9_]*)\}(?!\})")
# Columns of phones.csv that are not parameters.
RESERVED_COLUMNS = ("mac", "model", "group", "aes_key", "timezone", "phonebook")
# Facts htekd knows about every request; usable as {placeholders} anywhere.
FACTS = (
    "mac", "mac_colons", "model", "group", "devcode", "protocol",
    "server_url", "server_host", "config_url", "firmware_url", "firmware_file",
)
SUGGESTED_NAMES = 10  # unknown element names per file that get the closest known names suggested
GROUP_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}"  # a group name, as a file name and a phonebook's
GROUP_NAME = re.compile(rf"\A{GROUP_PATTERN}\Z")
# Characters XML 1.0 cannot carry: a file holding one is unreadable for the phone.
_NOT_XML = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def normalise_mac(text: str) -> str | None:
    text = text.strip()
    if not MAC_INPUT.match(text):
        return None
    return re.sub(r"[:-]", "", text).lower()


@dataclass(frozen=True)
class Problem:
    file: str
    line: int
    message: str
    severity: str = "error"  # "error" | "warning"

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else self.file
        # One line per problem, whatever a file name or a quoted value holds.
        return f"{where}: {self.severity}: {self.message}".replace("\r", "\\r").replace("\n", "\\n")


class TreeError(Exception):
    """A content tree with errors; str() is one line, .problems has them all."""

    def __init__(self, problems: list[Problem]):
        self.problems = problems
        errors = [p for p in problems if p.severity == "error"]
        more = f" (and {len(errors) - 1} more errors; run htekd check)" if len(errors) > 1 else ""
        super().__init__(f"{errors[0]}{more}" if errors else "content tree has errors")


@dataclass(frozen=True)
class Value:
    value: str
    source: str  # "file:line", for check messages
    variables: frozenset = frozenset()  # placeholders used
    para: str = ""  # the name it was given, printed for a code the catalog does not know
    factory: bool = False  # equal to the phone's factory default: not a choice htekd's fill-ins must respect
    literal: bool = False  # braces are the phone's own syntax (dial plans), never placeholders


@dataclass(frozen=True)
class Layer:
    name: str  # path relative to the root, e.g. "settings/common.xml"
    values: Mapping[str, Value]  # P-code -> value


@dataclass(frozen=True)
class Phone:
    mac: str
    model: str | None
    group: str | None
    line: int
    values: Mapping[str, Value]  # parameters from the row (non-empty cells)
    variables: Mapping[str, str]  # other columns, for {placeholders}
    aes_key: str = ""
    in_phonebook: bool = True  # phones.csv column phonebook = no keeps a phone out of phonebook.xml


EMPTY_LAYER = Layer("", MappingProxyType({}))


@dataclass(frozen=True)
class Snapshot:
    root: Path
    files: Path  # the real path of files/
    common: Layer
    models: Mapping[str, Layer]  # model name -> layer
    groups: Mapping[str, Layer]
    phone_layers: Mapping[str, Layer]  # mac -> settings/phones/<mac>.xml
    phones: Mapping[str, Phone]
    resource_names: frozenset  # files present directly under files/ at load time
    secrets: frozenset = frozenset()  # P-codes set anywhere in the tree that hold a credential
    keys: object = None  # keys.KeyTable of settings/keys.csv (None: no table)
    contacts: tuple = ()  # phonebook.Entry rows of settings/contacts.csv
    columns: Mapping[str, str] = field(default_factory=lambda: MappingProxyType({}))  # P-code -> the phones.csv column heading that sets it
    loaded_at: float = field(default_factory=time.time)


class SettingsReader:
    """Reads settings in the phone's XML (or the forms peers write) into P-code -> Value, collecting
    every problem and the P-codes that hold secrets."""

    def __init__(self, secret_parameters: frozenset = frozenset()):
        self.problems: list[Problem] = []
        self.marked_secret = secret_parameters  # P-codes the administrator marked in htekd.conf
        self.secrets: set[str] = set()  # every secret P-code met
        self.secret_names: dict[str, tuple[str, str]] = {}  # P-code -> (name, file) that made it secret
        # Unknown P-codes, once per file: (file, code) -> (where in problems, line, para, prefix); reported
        # by report_unknown_codes() once every file is read, since a name in one file makes a code secret in all.
        self.unknown_found: dict[tuple[str, str], tuple[int, int, str, str]] = {}
        self.unknown_paras: dict[str, str] = {}  # unknown P-code -> the first name it was given
        self.suggestions_left: dict[str, int] = {}  # file -> unknown element names still given suggestions

    def error(self, file: str, line: int, message: str) -> None:
        self.problems.append(Problem(file, line, message))

    def warn(self, file: str, line: int, message: str) -> None:
        self.problems.append(Problem(file, line, message, "warning"))

    def read(self, file: str, data: bytes) -> dict[str, Value]:
        """The values `data` sets, a later one for the same P-code winning (PhoneXmlError if unreadable)."""
        document = phonexml.read(data)
        for repair in document.repairs:
            self.warn(file, repair.line, repair.message)
        values: dict[str, Value] = {}
        first_line: dict[str, int] = {}
        for setting in document.settings:
            code = self.setting_code(file, setting)
            if code is None:
                continue
            if code in first_line:
                self.warn(file, setting.line, f"{code} is set twice in this file (first on line {first_line[code]}); "
                          "the later value wins")
            else:
                first_line[code] = setting.line
            values[code] = self.value(file, setting.line, code, setting.value, setting.para)
        return values

    def setting_code(self, file: str, setting: phonexml.Setting) -> str | None:
        """The P-code a setting sets, reporting what a template may have got wrong; None if it names nothing known."""
        cat = catalog()
        if not setting.by_code:
            try:
                param = cat.lookup(setting.key)
            except AmbiguousName as exc:
                self.error(file, setting.line, f"<{setting.key}>: {exc}")
                return None
            except UnknownParameter:
                left = self.suggestions_left.setdefault(file, SUGGESTED_NAMES)
                self.suggestions_left[file] = left - 1
                close = cat.suggest(setting.key) if left > 0 else []  # each costs a scan of every name
                hint = f" (did you mean {', '.join(close)}?)" if close else " (write it as a P-code if the phone has it)"
                self.error(file, setting.line, f"<{setting.key}> is not a parameter name htekd knows{hint}")
                return None
            return param.code
        code = f"P{int(setting.key[1:])}"
        param = cat.get(code)
        named = _named_code(setting.para)
        if named is not None and named != code:
            self.warn(file, setting.line, f"{code}: para {setting.para!r} is the name of {named}, not of {code}; "
                      f"the phone keys on {code}")
        if param is None:
            self.unknown_code(file, setting.line, code, setting.para)
        return code

    def unknown_code(self, file: str, line: int, code: str, para: str, where: str = "") -> None:
        """Note an unknown code, reported once per file (`where`: e.g. the column) by report_unknown_codes()."""
        self.unknown_found.setdefault((file, code), (len(self.problems), line, para, where))

    def report_unknown_codes(self) -> None:
        """One warning per unknown code and file, saying how it is treated and why, where it was found."""
        for (file, code), (index, line, para, where) in reversed(self.unknown_found.items()):
            named = f" (para {para!r})" if para else ""
            if code in self.marked_secret:
                how = "treated as a secret: [htekd] secret_parameters marks it"
            elif code in self.secret_names:
                name, source = self.secret_names[code]
                how = f"treated as a secret: its name {name!r}{'' if source == file else f' in {source}'} says so"
            else:
                how = "not treated as a secret (add it to [htekd] secret_parameters if it holds a credential)"
            self.problems.insert(index, Problem(file, line, f"{where}{code}{named} is not in the parameter catalog: "
                                                f"sent as is, {how}", "warning"))
        self.unknown_found.clear()

    def value(self, file: str, line: int, code: str, text: str, para: str = "") -> Value:
        cat = catalog()
        param = cat.get(code)
        if param is None:  # a name given once is kept for the rendered file, whichever layer wins
            para = para or self.unknown_paras.get(code, "")
            if para:
                self.unknown_paras.setdefault(code, para)
        if para and secret_name(para):
            self.secret_names.setdefault(code, (para, file))
        secret = code in self.marked_secret or (param is not None and cat.is_secret(param)) or code in self.secret_names
        if secret:
            self.secrets.add(code)
        literal = param is not None and not cat.takes_placeholders(param)
        used = frozenset() if literal else frozenset(PLACEHOLDER.findall(text))
        problem = (cat.check(param or code, text, secret) if not used else None) or _not_xml(text)
        if problem:
            self.error(file, line, f"{code}: {problem}")
        return Value(text, f"{file}:{line}", used, para=para if param is None else "",
                     factory=_is_factory(param, text), literal=literal)


class _Loader(SettingsReader):
    def __init__(self, root: Path, secret_parameters: frozenset = frozenset()):
        super().__init__(secret_parameters)
        self.root = root

    def rel(self, path: Path) -> str:
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # -- settings layers -------------------------------------------------------------------

    def layer(self, path: Path) -> Layer:
        name = self.rel(path)
        try:
            values = self.read(name, path.read_bytes())
        except OSError as exc:
            self.error(name, 0, f"cannot read: {exc.strerror}")
            return Layer(name, MappingProxyType({}))
        except phonexml.PhoneXmlError as exc:
            self.error(name, exc.line, str(exc))
            return Layer(name, MappingProxyType({}))
        return Layer(name, MappingProxyType(values))

    def layer_dir(self, folder: str, kind: str) -> dict[str, Layer]:
        layers: dict[str, Layer] = {}
        directory = self.root / "settings" / folder
        if not directory.is_dir():
            return layers
        try:
            paths = sorted(directory.iterdir())
        except OSError as exc:
            self.error(self.rel(directory), 0, f"cannot read: {exc.strerror}")
            return layers
        for path in paths:
            if path.name.startswith("."):
                continue
            if path.suffix.lower() != ".xml" or not path.is_file():
                self.warn(self.rel(path), 0, f"ignored: {kind} settings are <name>.xml files")
                continue
            layers[path.stem] = self.layer(path)
        return layers

    # -- inventory -------------------------------------------------------------------------

    def phones(self, path: Path) -> tuple[dict[str, Phone], list[str], dict[str, str]]:
        """The phones, the columns that are only placeholders, and the parameter columns (name -> P-code)."""
        name = self.rel(path)
        if not path.exists():
            self.warn(name, 0, "no inventory: every phone is unknown")
            return {}, [], {}
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as exc:
            line = path.read_bytes()[: exc.start].count(b"\n") + 1
            self.error(name, line, "not UTF-8 text (save the spreadsheet as CSV UTF-8)")
            return {}, [], {}
        except OSError as exc:
            self.error(name, 0, f"cannot read: {exc.strerror}")
            return {}, [], {}
        reader = csv.reader(io.StringIO(text, newline=""), strict=True)
        try:
            header = next(reader, None)
        except csv.Error as exc:
            self.error(name, 1, f"malformed CSV: {exc}")
            return {}, [], {}
        if not header:
            self.error(name, 1, "empty file: the first line must name the columns (mac, model, group, ...)")
            return {}, [], {}
        header = [column.strip() for column in header]
        lowered = [column.lower() for column in header]
        if "mac" not in lowered:
            self.error(name, 1, "no 'mac' column")
            return {}, [], {}
        columns: dict[int, str] = {}  # index -> P-code, or "" for a variable column
        variables: list[str] = []
        seen_columns: dict[str, int] = {}
        for index, column in enumerate(header):
            key = column.lower()
            if not column or column.startswith("#"):
                continue  # unnamed and comment columns are the administrator's own
            if key in RESERVED_COLUMNS:
                columns[index] = key
            elif is_pcode(column) or _is_parameter_name(column):
                try:
                    param = catalog().lookup(column)
                    code = param.code
                    if re.fullmatch(r"[A-Za-z]+", column) and name_key(column) != name_key(param.name):
                        # One plain word another system gives a parameter ("Type", "Active") may be a note.
                        self.warn(name, 1, f"column {column!r} sets {code} ({param.name}), a name other systems use "
                                  "for it; prefix it with # if it is a note")
                except UnknownParameter:
                    code = f"P{int(column[1:])}"
                    self.unknown_code(name, 1, code, "", f"column {column!r}: ")
                except AmbiguousName as exc:
                    self.error(name, 1, f"column {column!r}: {exc}")
                    continue
                columns[index] = code
            elif key in FACTS:
                self.error(name, 1, f"column {column!r}: that name is one of htekd's own facts; rename the column")
                continue
            else:
                columns[index] = ""
                variables.append(column)
            if columns[index] and columns[index] in seen_columns:
                self.error(name, 1, f"column {column!r} sets {columns[index]} again (column {seen_columns[columns[index]] + 1})")
            seen_columns.setdefault(columns[index] or column, index)
        phones: dict[str, Phone] = {}
        first_line: dict[str, int] = {}
        line = 1
        try:
            for row in reader:
                line = reader.line_num - _trailing_newlines(row)
                if not any(cell.strip() for cell in row):
                    continue
                phone = self.phone(name, line, row, header, columns)
                if phone is None:
                    continue
                if phone.mac in phones:
                    self.error(name, line, f"duplicate MAC {phone.mac} (first on line {first_line[phone.mac]})")
                    continue
                phones[phone.mac] = phone
                first_line[phone.mac] = line
        except csv.Error as exc:
            self.error(name, reader.line_num, f"malformed CSV: {exc}")
        return phones, variables, {header[index]: code for index, code in columns.items() if code.startswith('P')}

    def phone(self, file: str, line: int, row: list[str], header: list[str], columns: dict[int, str]) -> Phone | None:
        if len(row) > len(header) and any(cell.strip() for cell in row[len(header):]):
            self.error(file, line, f"{len(row)} cells but only {len(header)} columns")
        cells = {index: row[index].strip() if index < len(row) else "" for index in columns}
        by_key = {columns[index]: cells[index] for index in columns if columns[index] in RESERVED_COLUMNS}
        raw_mac = by_key.get("mac", "")
        mac = normalise_mac(raw_mac)
        if mac is None:
            self.error(file, line, f"bad MAC {raw_mac!r} (12 hex digits, with or without : or -)")
            return None
        model_name = by_key.get("model") or None
        if model_name:
            model = models().get(model_name)
            if model is None:
                self.error(file, line, f"unknown model {model_name!r} (see htekd models)")
                model_name = None
            else:
                model_name = model.name
        group = by_key.get("group") or None
        if group and not GROUP_NAME.match(group):
            self.error(file, line, f"bad group name {group!r} (letters, digits, '.', '_', '-')")
            group = None
        values: dict[str, Value] = {}
        variables: dict[str, str] = {}
        for index, key in columns.items():
            if key in RESERVED_COLUMNS:
                continue
            cell = cells[index]
            if key == "":
                variables[header[index]] = cell
                problem = _not_xml(cell)
                if problem:
                    self.error(file, line, f"column {header[index]!r}: {problem}")
            elif cell != "":
                values[key] = self.value(file, line, key, cell)
        _timezone_value(self, file, line, by_key.get("timezone", ""), values)
        in_phonebook = by_key.get("phonebook", "").lower()
        if in_phonebook not in ("", "yes", "no"):
            self.error(file, line, f"phonebook: expected yes, no or empty, got {in_phonebook!r}")
        aes_key = by_key.get("aes_key", "")
        if aes_key:
            from htekd.aes import InvalidKey, parse_key

            try:
                parse_key(aes_key)
            except InvalidKey as exc:
                self.error(file, line, f"aes_key: {exc}")
                aes_key = ""
        return Phone(mac, model_name, group, line, MappingProxyType(values), MappingProxyType(variables), aes_key,
                     in_phonebook != "no")


def _timezone_value(loader: _Loader, file: str, line: int, zone: str, values: dict[str, Value]) -> None:
    """A phone's timezone column, as the P64 of its row unless the row sets P64 itself."""
    from htekd.timezones import TIMEZONE_CODE, UnknownZone, index_of

    if not zone:
        return
    try:
        index, problem = index_of(zone)
    except UnknownZone as exc:
        loader.error(file, line, f"timezone: {exc}")
        return
    if problem:
        loader.warn(file, line, problem)
    elif TIMEZONE_CODE not in values:
        values[TIMEZONE_CODE] = Value(index, f"{file}:{line}")


def _not_xml(text: str) -> str | None:
    match = _NOT_XML.search(text)
    return f"character U+{ord(match.group()):04X} cannot be written in the phone's XML" if match else None


def _trailing_newlines(row: list[str]) -> int:
    """Newlines inside quoted cells, so an error names the line where the row starts."""
    return sum(cell.count("\n") for cell in row)


def _named_code(para: str) -> str | None:
    """The P-code a para attribute names, when it names exactly one."""
    if not para:
        return None
    try:
        return catalog().lookup(para).code
    except CatalogError:
        return None


def _is_factory(param: Param | None, text: str) -> bool:
    return param is not None and param.default_known and text == param.default


def _column_code(placeholder: str, parameter_columns: Mapping[str, str]) -> str | None:
    """The P-code of the phones.csv column a placeholder names: by the column's own heading, or by
    any name of the parameter it sets (`{Account1_SipUserId}` for a column headed P35)."""
    if placeholder in parameter_columns:
        return parameter_columns[placeholder]
    try:
        return catalog().lookup(placeholder).code
    except CatalogError:
        return None


def _column_names(parameter_columns: Mapping[str, str]) -> set[str]:
    """Every placeholder that names a parameter column: its heading, its P-code, its parameter's names."""
    names = set(parameter_columns)
    for code in parameter_columns.values():
        param = catalog().get(code)
        names |= {code, *(catalog().names(param) if param else ())}
    return names


def _with_column_placeholders(phone: Phone, from_columns: Mapping[str, str]) -> Phone:
    cells = {name: phone.values[code].value for name, code in from_columns.items() if code in phone.values}
    return dataclasses.replace(phone, variables=MappingProxyType({**phone.variables, **cells}))


def _is_parameter_name(column: str) -> bool:
    try:
        catalog().lookup(column)
    except UnknownParameter:
        return False
    except AmbiguousName:
        return True
    return True


def load(root: Path, secret_parameters: frozenset = frozenset(), used_columns: Iterable[str] = ()) -> tuple[Snapshot, list[Problem]]:
    """Read the whole tree. Returns the snapshot and every problem found (errors and warnings).

    `secret_parameters`: P-codes the administrator marked secret, beyond the catalog's;
    `used_columns`: phones.csv columns htekd.conf names (the phonebook's), which are not notes."""
    root = Path(root)
    loader = _Loader(root, frozenset(secret_parameters))
    try:
        snapshot = _load(root, loader, frozenset(used_columns))
        loader.report_unknown_codes()
        return snapshot, loader.problems
    except OSError as exc:  # a folder htekd may not enter, say: every other read reports its own file
        loader.error(loader.rel(Path(exc.filename or root)), 0, f"cannot read: {exc.strerror}")
    except _NoRoot:
        loader.error(str(root), 0, "content tree root does not exist")
    empty = MappingProxyType({})
    return Snapshot(root, root / "files", EMPTY_LAYER, empty, empty, empty, empty, frozenset()), loader.problems


class _NoRoot(Exception):
    pass


def _load(root: Path, loader: _Loader, used_columns: frozenset) -> Snapshot:
    if not root.is_dir():
        raise _NoRoot
    files = root / "files"
    if not files.is_dir():
        loader.warn("files", 0, "no files/ folder: only generated configurations are served")
    common_path = root / "settings" / "common.xml"
    common = loader.layer(common_path) if common_path.is_file() else Layer("settings/common.xml", MappingProxyType({}))
    model_layers = loader.layer_dir("models", "model")
    for model_name in list(model_layers):
        model = models().get(model_name)
        if model is None:
            loader.error(model_layers[model_name].name, 0, f"unknown model {model_name!r} (see htekd models)")
            del model_layers[model_name]
        elif model.name != model_name:
            model_layers[model.name] = model_layers.pop(model_name)
    group_layers = loader.layer_dir("groups", "group")
    phone_layers: dict[str, Layer] = {}
    for stem, layer in loader.layer_dir("phones", "phone").items():
        mac = normalise_mac(stem)
        if mac is None:
            loader.error(layer.name, 0, "file name is not a MAC (expected settings/phones/<mac>.xml)")
            continue
        phone_layers[mac] = layer
    phones, variables, parameter_columns = loader.phones(root / "phones.csv")
    from htekd import keys, phonebook  # here, not at the top: both build on this module's Value and Phone

    known = set(FACTS) | set(variables)
    columns_by_code = {code: column for column, code in parameter_columns.items()}
    from_columns: dict[str, str] = {}  # placeholder -> P-code of the phones.csv column it names

    def check_placeholders(value: Value, file: str, line: int, code: str) -> None:
        for variable in sorted(value.variables - known - from_columns.keys()):
            column_code = _column_code(variable, parameter_columns)
            if column_code in columns_by_code:
                from_columns[variable] = column_code
                continue
            loader.error(file, line, f"{code}: unknown placeholder {{{variable}}} (not a column of phones.csv "
                         f"nor one of: {', '.join(FACTS)})")

    layers = {"common": common, "models": model_layers, "groups": group_layers, "phone_layers": phone_layers}
    key_table = keys.load(loader, root, phones, layers, known | _column_names(parameter_columns))
    for variable in key_table.variables:
        if variable not in known:
            from_columns[variable] = _column_code(variable, parameter_columns)
    contacts = phonebook.load_contacts(loader, root)

    used: set[str] = set(key_table.variables) | used_columns
    for layer in (common, *model_layers.values(), *group_layers.values(), *phone_layers.values()):
        for code, value in layer.values.items():
            used |= value.variables
            file, _, line = value.source.rpartition(":")
            check_placeholders(value, file, int(line), code)
    for phone in phones.values():
        for code, value in phone.values.items():
            used |= value.variables
            check_placeholders(value, "phones.csv", phone.line, code)
    for variable in variables:
        if variable not in used:
            loader.error("phones.csv", 1, f"column {variable!r} is neither a parameter nor a placeholder used in settings "
                         "(prefix it with # to keep it as a note)")
    if from_columns:  # each phone's cells of those columns become its placeholders' values
        phones = {mac: _with_column_placeholders(phone, from_columns) for mac, phone in phones.items()}
    for mac, phone in phones.items():
        if phone.group and phone.group not in group_layers:
            loader.warn("phones.csv", phone.line, f"group {phone.group!r} has no settings/groups/{phone.group}.xml")
    for mac, layer in phone_layers.items():
        if mac not in phones:
            loader.warn(layer.name, 0, f"phone {mac} is not in phones.csv: this file is not used")

    resource_names = frozenset()
    if files.is_dir():
        try:
            resource_names = frozenset(p.name for p in files.iterdir() if p.is_file())
        except OSError as exc:
            loader.error("files", 0, f"cannot read: {exc.strerror}")
    return Snapshot(
        root=root,
        files=files.resolve() if files.is_dir() else files,
        common=common,
        models=MappingProxyType(model_layers),
        groups=MappingProxyType(group_layers),
        phone_layers=MappingProxyType(phone_layers),
        phones=MappingProxyType(phones),
        resource_names=resource_names,
        secrets=frozenset(loader.secrets),
        keys=key_table,
        contacts=contacts,
        columns=MappingProxyType(columns_by_code),
    )


def sources(config) -> tuple[Path, frozenset, tuple[str, ...]]:
    """What htekd.conf says of the tree: its root, the parameters marked secret, the phonebook's columns."""
    return config.server.root, config.server.secret_parameters, config.phonebook.columns


def load_for(config) -> tuple[Snapshot, list[Problem]]:
    """load() the tree `config` (htekd.conf) names, as the daemon will."""
    return load(*sources(config))


def load_strict(root: Path, secret_parameters: frozenset = frozenset(), used_columns: Iterable[str] = ()) -> Snapshot:
    """The snapshot the daemon serves: any error refuses the whole tree."""
    snapshot, problems = load(root, secret_parameters, used_columns)
    if any(p.severity == "error" for p in problems):
        raise TreeError(problems)
    return snapshot
