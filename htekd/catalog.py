"""The catalog of Htek phone parameters: P-code <-> para name <-> section <-> factory default,
the other names people use for them, and the rules a value must follow.

The tables are data shipped with the package: htekd/data/catalog.tsv (generated from a phone's
own configuration download by tools/build_catalog.py), htekd/data/peer-names.tsv (the names
other provisioning systems write, and the codes their templates set that the download lacks;
tools/build_peer_names.py) and htekd/data/rules.tsv (hand-written).
"""

from __future__ import annotations

import difflib
import functools
import ipaddress
import re
from dataclasses import dataclass
from importlib import resources

PCODE = re.compile(r"[Pp]([0-9]{1,6})")  # the phone's codes have at most 5 digits
INTEGER = re.compile(r"-?[0-9]+")
CONTROL_CHARACTER = re.compile("[\x00-\x1f\x7f-\x9f]")  # Unicode's category Cc, all of it
HEX = re.compile(r"[0-9A-Fa-f]+")
DNS_LABEL = re.compile(r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?")
SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.-]*)://")
SERVER_SCHEMES = ("tftp", "ftp", "http", "https")
TSV_ESCAPE = re.compile(r"\\(.)")
TSV_UNESCAPED = {"\\": "\\", "t": "\t", "n": "\n", "r": "\r"}
RULE_TYPES = ("bool", "enum", "int", "hex", "host", "hostport", "server_path", "token", "text", "dialplan")
# A parameter whose name says this holds a credential, whether or not the catalog knows the code;
# words may be split by any separator ("AES Key", "Pass.Word", "aes-key").
SECRET_NAME = re.compile(r"pass[\W_]*w(?:or)?d|pwd|secret|aes[\W_]*key|token", re.IGNORECASE)
OTHER_SECTION = "Other"  # codes the phone's download lacks, after the phone's own sections


class CatalogError(LookupError):
    """A parameter name or code the catalog cannot turn into one parameter."""

    def __str__(self) -> str:
        return self.args[0] if self.args else ""


class UnknownParameter(CatalogError):
    pass


class AmbiguousName(CatalogError):
    def __init__(self, name: str, codes: tuple[str, ...]):
        super().__init__(f"para name {name!r} is ambiguous: {', '.join(codes)} (use the P-code)")
        self.name = name
        self.codes = codes


@dataclass(frozen=True)
class Param:
    code: str  # "P47"
    number: int  # 47
    name: str  # para name as the vendor spells it, e.g. "Account1_DispalyName"
    section: str  # the section comment it follows, e.g. "Profile1/Basic"
    default: str  # factory default; "" for a blank parameter (or, for a peer code, not known)
    index: int  # position in the phone's own file; peer codes come after the phone's own
    seen_in: str = ""  # for a code the phone's download lacks: the systems whose templates set it

    @property
    def default_known(self) -> bool:
        """False for codes known only from other systems' templates: their factory value is not published."""
        return not self.seen_in


@dataclass(frozen=True)
class Section:
    name: str
    params: tuple[Param, ...]


@dataclass(frozen=True)
class Rule:
    """What a value must look like; `pattern` is a P-code or a regex over the whole para name."""

    pattern: str
    type: str
    values: tuple[str, ...] = ()
    min: int | None = None
    max: int | None = None
    max_length: int | None = None
    secret: bool = False
    note: str = ""

    def matches(self, param: Param) -> bool:
        if PCODE.fullmatch(self.pattern):
            return param.code == self.pattern
        return re.fullmatch(self.pattern, param.name) is not None


def name_key(name: str) -> str:
    """How names are compared: `Account1.SipUserId` and `account1_sipuserid` are one name."""
    return name.replace(".", "_").casefold()


def secret_name(name: str) -> bool:
    return SECRET_NAME.search(name) is not None


def is_pcode(text: str) -> bool:
    """True for text shaped like a P-code ("P47", "p47"), whether or not the catalog knows it."""
    return PCODE.fullmatch(text) is not None


def _control_character(value: str) -> str | None:
    match = CONTROL_CHARACTER.search(value)
    return f"control character U+{ord(match.group()):04X} not allowed" if match else None


def _valid_host(text: str) -> bool:
    """A DNS name, an IPv4 address or an IPv6 address (bare or in brackets)."""
    if text.startswith("[") and text.endswith("]"):
        text = text[1:-1]
        return ":" in text and _ip_address(text)
    if ":" in text:
        return _ip_address(text)
    name = text[:-1] if text.endswith(".") else text
    labels = name.split(".")
    if all(label.isdigit() for label in labels):
        return _ip_address(name)
    return 0 < len(name) <= 253 and all(DNS_LABEL.fullmatch(label) for label in labels)


def _ip_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


def _valid_port(text: str) -> bool:
    return text.isascii() and text.isdigit() and 1 <= int(text) <= 65535


def _valid_hostport(text: str) -> bool:
    if text.startswith("["):
        host, bracket, rest = text.partition("]")
        if not bracket or (rest and not (rest.startswith(":") and _valid_port(rest[1:]))):
            return False
        return _valid_host(host + "]")
    if text.count(":") == 1:
        host, _, port = text.partition(":")
        return _valid_host(host) and _valid_port(port)
    return _valid_host(text)


def _check_server_path(value: str, shown: str) -> str | None:
    expected = f"expected [tftp|ftp|http|https://]host[:port][/path], got {shown}"
    rest = value
    scheme = SCHEME.match(value)
    if scheme:
        if scheme.group(1).lower() not in SERVER_SCHEMES:
            return expected
        rest = value[scheme.end():]
    if any(char.isspace() for char in rest):
        return expected
    authority = rest.split("/", 1)[0]
    authority = authority.rpartition("@")[2]  # an optional user[:password]@
    return None if _valid_hostport(authority) else expected


def _check_rule(rule: Rule, value: str, shown: str) -> str | None:
    """Why `value` breaks `rule`, or None; `shown` is how the value may be quoted in the message."""
    kind = rule.type
    if kind == "bool":
        return None if value in ("0", "1") else f"expected 0 or 1, got {shown}"
    if kind == "enum":
        if value in rule.values:
            return None
        return f"expected one of {', '.join(rule.values)}, got {shown}"
    if kind == "int":
        if not (value.isascii() and INTEGER.fullmatch(value)):
            return f"expected an integer, got {shown}"
        number = int(value)
        if (rule.min is not None and number < rule.min) or (rule.max is not None and number > rule.max):
            if rule.max is None:
                return f"expected an integer >= {rule.min}, got {shown}"
            if rule.min is None:
                return f"expected an integer <= {rule.max}, got {shown}"
            return f"expected an integer from {rule.min} to {rule.max}, got {shown}"
        return None
    if kind == "hex":
        limit = rule.max_length
        if value.isascii() and HEX.fullmatch(value) and (limit is None or len(value) <= limit):
            return None
        return f"expected {'1-' + str(limit) if limit else 'only'} hex digits, got {shown}"
    if rule.max_length is not None and len(value) > rule.max_length:
        return f"expected at most {rule.max_length} characters, got {len(value)}"
    if kind == "host":
        return None if _valid_host(value) else f"expected a host name or IP address, got {shown}"
    if kind == "hostport":
        return None if _valid_hostport(value) else f"expected host[:port], got {shown}"
    if kind == "server_path":
        return _check_server_path(value, shown)
    if kind == "token":
        return f"expected no white space, got {shown}" if any(c.isspace() for c in value) else None
    return None  # text and dialplan: anything without control characters


class Catalog:
    """Every parameter of the phone, in the phone's own order, the codes other systems' templates
    set that the phone's download lacks, every name people use for them, and the rules for values."""

    def __init__(self, sections: tuple[Section, ...], rules: tuple[Rule, ...],
                 peer_names: tuple[tuple[str, str, bool, str], ...] = ()):
        self.sections = sections
        self.params = tuple(param for section in sections for param in section.params)
        self.rules = rules
        self.peer_params = _peer_params(peer_names, len(self.params))
        self._by_code = {param.code: param for param in (*self.params, *self.peer_params)}
        names: dict[str, list[str]] = {}  # code -> every name it is known by, the catalog's first
        for param in self._by_code.values():
            names[param.code] = [param.name]
        for code, name, _, _ in peer_names:
            if code in names and name not in names[code]:
                names[code].append(name)
        self._names = {code: tuple(known) for code, known in names.items()}
        by_name: dict[str, dict[str, Param]] = {}
        for code, known in self._names.items():
            for name in known:
                by_name.setdefault(name_key(name), {})[code] = self._by_code[code]
        self._by_name = {key: tuple(params.values()) for key, params in by_name.items()}
        self._spelling = {name_key(name): name for known in self._names.values() for name in known}
        self._rule_of: dict[str, Rule | None] = {}
        self._secret_of: dict[str, bool] = {}

    def __len__(self) -> int:
        return len(self.params)

    def get(self, code: str) -> Param | None:
        """The parameter for a P-code ("P47", "p47", "P047"); None for anything else."""
        param = self._by_code.get(code)  # the usual spelling: no pattern to match (a reload asks per cell)
        if param is not None:
            return param
        match = PCODE.fullmatch(code)
        return self._by_code.get(f"P{int(match.group(1))}") if match else None

    def names(self, param: Param) -> tuple[str, ...]:
        """The catalog's name for the parameter, then the other names peers write for it."""
        return self._names.get(param.code, (param.name,))

    def lookup(self, key: str) -> Param:
        """The parameter for a P-code or a name (letter case and "." for "_" do not matter).

        Raises UnknownParameter, or AmbiguousName for a name given to two P-codes."""
        if is_pcode(key):
            param = self.get(key)
            if param is None:
                raise UnknownParameter(f"unknown P-code {key.upper()}")
            return param
        params = self._by_name.get(name_key(key), ())
        if not params:
            raise UnknownParameter(f"unknown parameter {key!r}")
        if len(params) > 1:
            raise AmbiguousName(key, tuple(param.code for param in params))
        return params[0]

    def suggest(self, name: str, count: int = 3) -> list[str]:
        """The known names closest to `name`, for an error message."""
        close = difflib.get_close_matches(name_key(name), self._spelling.keys(), n=count, cutoff=0.75)
        return [self._spelling[key] for key in close]

    def rule(self, param_or_code: Param | str) -> Rule | None:
        """The first rule that matches the parameter, or None (checked by its default's type)."""
        param = self._param(param_or_code)
        if param is None:
            return None
        if param.code not in self._rule_of:
            self._rule_of[param.code] = next((rule for rule in self.rules if rule.matches(param)), None)
        return self._rule_of[param.code]

    def is_secret(self, param_or_code: Param | str) -> bool:
        """True for passwords and keys: never logged, never given to unknown phones. A rule says
        so, or one of the parameter's names does (password, passwd, pwd, secret, AES key, token)."""
        param = self._param(param_or_code)
        if param is None:
            return False
        secret = self._secret_of.get(param.code)
        if secret is None:
            rule = self.rule(param)
            secret = (rule is not None and rule.secret) or any(secret_name(name) for name in self.names(param))
            self._secret_of[param.code] = secret
        return secret

    def takes_placeholders(self, param_or_code: Param | str) -> bool:
        """False where braces are the phone's own syntax (dial plans, digit maps)."""
        rule = self.rule(param_or_code)
        return rule is None or rule.type != "dialplan"

    def check(self, param_or_code: Param | str, value: str, secret: bool = False) -> str | None:
        """None if `value` is valid for the parameter, else a short reason. The reason quotes the
        value unless the parameter is secret (by the catalog, or `secret` from elsewhere).

        An empty value is always valid (a blank parameter). A P-code the catalog does not know
        is checked for control characters only; an unknown or ambiguous name raises CatalogError."""
        if value == "":
            return None
        problem = _control_character(value)
        if problem:
            return problem
        param = self._param(param_or_code)
        if param is None:
            return None
        problem = self._problem(param, value, repr(value))
        if problem and (secret or self.is_secret(param)):
            return self._problem(param, value, f"a secret of {len(value)} characters")
        return problem

    def _problem(self, param: Param, value: str, shown: str) -> str | None:
        rule = self.rule(param)
        if rule is not None:
            return _check_rule(rule, value, shown)
        if INTEGER.fullmatch(param.default) and not (value.isascii() and INTEGER.fullmatch(value)):
            return f"expected an integer, got {shown}"
        return None

    def _param(self, param_or_code: Param | str) -> Param | None:
        if isinstance(param_or_code, Param):
            return param_or_code
        if is_pcode(param_or_code):
            return self.get(param_or_code)
        return self.lookup(param_or_code)


def _peer_params(peer_names: tuple[tuple[str, str, bool, str], ...], first_index: int) -> tuple[Param, ...]:
    """Codes the phone's download lacks, each under the first name seen in the phone's own style
    (`Profile1_UseNatIP` over `Account1.UseNatIP`), after the phone's parameters in code order."""
    seen: dict[str, list[tuple[str, str]]] = {}
    for code, name, in_phone_download, seen_in in peer_names:
        if not in_phone_download:
            seen.setdefault(code, []).append((name, seen_in))
    params = []
    for offset, code in enumerate(sorted(seen, key=lambda code: int(code[1:]))):
        name, _ = next((entry for entry in seen[code] if "." not in entry[0]), seen[code][0])
        where = ",".join(sorted({system for _, systems in seen[code] for system in systems.split(",")}))
        params.append(Param(code, int(code[1:]), name, OTHER_SECTION, "", first_index + offset, where))
    return tuple(params)


def read_table(name: str) -> list[list[str]]:
    """The rows of a data table shipped in htekd/data/."""
    return parse_tsv(resources.files("htekd").joinpath("data", name).read_text(encoding="utf-8"))


def parse_tsv(text: str) -> list[list[str]]:
    """The rows after the header of a data table; lines starting with "#" are comments."""
    rows = []
    for line in text.split("\n"):
        if line and not line.startswith("#"):
            rows.append([TSV_ESCAPE.sub(lambda m: TSV_UNESCAPED.get(m.group(1), m.group(0)), field)
                         for field in line.split("\t")])
    return rows[1:]  # the header row


def _load_sections() -> tuple[Section, ...]:
    sections: list[tuple[str, list[Param]]] = []
    index = 0
    for code, name, section, default in read_table("catalog.tsv"):
        if not code:  # a section comment
            sections.append((section, []))
            continue
        if not sections or sections[-1][0] != section:
            sections.append((section, []))
        sections[-1][1].append(Param(code, int(code[1:]), name, section, default, index))
        index += 1
    return tuple(Section(name, tuple(params)) for name, params in sections)


def _load_rules() -> tuple[Rule, ...]:
    rules = []
    for pattern, kind, values, low, high, max_length, secret, note in read_table("rules.tsv"):
        if kind not in RULE_TYPES:
            raise ValueError(f"rules.tsv: {pattern}: unknown type {kind!r}")
        re.compile(pattern)  # a broken expression fails at load, not at the first check
        rules.append(Rule(
            pattern=pattern,
            type=kind,
            values=tuple(values.split(",")) if values else (),
            min=int(low) if low else None,
            max=int(high) if high else None,
            max_length=int(max_length) if max_length else None,
            secret=secret == "yes",
            note=note,
        ))
    return tuple(rules)


def _load_peer_names() -> tuple[tuple[str, str, bool, str], ...]:
    return tuple((code, name, in_download == "yes", seen_in) for code, name, in_download, seen_in in read_table("peer-names.tsv"))


@functools.cache
def catalog() -> Catalog:
    """The catalog shipped with htekd (loaded once)."""
    return Catalog(_load_sections(), _load_rules(), _load_peer_names())
