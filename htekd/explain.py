"""Why each parameter of a generated file has its value: the layer and line it comes from (pure).

Built on the renderer's own inputs and render.settle(), so an explanation can never differ from
the file a phone gets.
"""

from __future__ import annotations

from dataclasses import dataclass
from types import MappingProxyType
from typing import Iterable, Mapping

from htekd import render
from htekd.catalog import catalog
from htekd.tree import Value

FILLED_IN = "filled in by htekd"
FACTORY_DEFAULT = "factory default"
MASK = "***"
_NONE = MappingProxyType({})


@dataclass(frozen=True)
class Line:
    code: str
    name: str  # the catalog's name, or the para a settings file gave an unknown code
    value: str  # as the phone gets it (MASK for a secret not shown); a factory default when not sent
    source: str  # "settings/groups/sales.xml:12", "phones.csv:7 column P35", FILLED_IN, FACTORY_DEFAULT...
    sent: bool = True  # False: not in the file, the phone keeps its own value
    secret: bool = False
    written: str = ""  # the value as written, when placeholders were filled in

    def as_dict(self) -> dict:
        return {"code": self.code, "name": self.name, "value": self.value, "source": self.source, "sent": self.sent,
                "secret": self.secret, "written": self.written}


def explain(inputs: render.Inputs, secrets: frozenset, columns: Mapping[str, str] = _NONE,
            row: Mapping[str, Value] = _NONE, codes: Iterable[str] | None = None, show_secrets: bool = False) -> list[Line]:
    """One Line per parameter of the file `inputs` make (or per P-code of `codes`, sent or not).

    `secrets`: P-codes whose values are masked unless `show_secrets`; `row`: the phone's own
    phones.csv values, whose source names their column (`columns`: P-code -> heading)."""
    final, filled = render.settle(*inputs)
    cat = catalog()
    wanted = list(final) if codes is None else list(dict.fromkeys(codes))
    lines = []
    for code in wanted:
        param = cat.get(code)
        value = inputs.values.get(code)
        name = param.name if param else (value.para if value else "")
        secret = code in secrets or cat.is_secret(code)
        written = ""
        if code in final:
            text = final[code]
            if code in filled:
                source = FILLED_IN
            else:
                source = _source(code, value, columns, row)
                written = value.value if value.value != text else ""
        elif value is not None:  # a placeholder without a value in this file
            missing = ", ".join(f"{{{name}}}" for name in sorted(value.variables - inputs.facts.keys()))
            text = ""
            source = f"{_source(code, value, columns, row)}, left out: {missing} has no value in this file"
        else:
            text = param.default if param and param.default_known else ""
            source = FACTORY_DEFAULT if param and param.default_known else "not set (no factory default known)"
        if secret and not show_secrets:
            text = MASK if text else ""
            written = MASK if written else ""
        lines.append(Line(code, name, text, source, code in final, secret, written))
    lines.sort(key=lambda line: _order(cat, line.code))
    return lines


def _source(code: str, value: Value, columns: Mapping[str, str], row: Mapping[str, Value]) -> str:
    if row.get(code) is value:
        return f"{value.source} column {columns.get(code, code)}"
    return value.source


def _order(cat, code: str) -> tuple:
    param = cat.get(code)
    return (0, param.index, 0) if param else (1, 0, int(code[1:]))


@dataclass(frozen=True)
class Explained:
    name: str  # cfg<mac>.xml or cfg<devcode>.xml
    kind: str
    model: str | None
    lines: list[Line]
    note: str = ""  # when the phone does not get this generated file: why

    def as_dict(self) -> dict:
        return {"name": self.name, "kind": self.kind, "model": self.model, "note": self.note,
                "parameters": [line.as_dict() for line in self.lines]}


def explain_target(resolver, target: str, codes: Iterable[str] | None = None, protocol: str = "http",
                   user_agent: str = "", show_secrets: bool = False) -> Explained:
    """The explanation of what `resolver` generates for a MAC or device code (ValueError for anything else)."""
    chosen = resolver.inputs_for(target, protocol, user_agent)
    snapshot = chosen.snapshot
    row = chosen.phone.values if chosen.phone else _NONE
    lines = explain(chosen.inputs, snapshot.secrets, snapshot.columns, row, codes, show_secrets)
    served = resolver.render_target(chosen.name, protocol, plain=True, user_agent=user_agent)
    note = ""
    if not served.ok:
        note = f"{served.path}: {served.status.value}: {served.reason}"
    elif served.content is None:
        note = f"files/{served.path} is served as it is, instead of this generated file"
    return Explained(chosen.name, chosen.kind.value, chosen.model, lines, note)
