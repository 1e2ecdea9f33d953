"""What each console page shows, from the current snapshot, the phones seen and the request history.

No sockets and no HTML here: site.py turns these into pages and JSON. Passwords and keys never
leave this module unmasked (explain's "***").
"""

from __future__ import annotations

import csv
import io
import math
import re
import time
from dataclasses import asdict, dataclass, field
from typing import Iterable, Iterator

from htekd import render
from htekd.explain import explain_target
from htekd.state import PhoneSeen

PAGE_SIZE = 100
MAC = re.compile(r"[0-9a-f]{12}")
PHONE_COLUMNS = ("mac", "model", "group", "name", "extension", "address", "firmware", "protocol", "last_file",
                 "last_seen", "outcome", "requests")
NAME = "P3"  # Account1_DispalyName: what the phone shows as its owner
EXTENSION = "P35"  # Account1_SipUserId
FILTERS = ("mac", "address", "protocol", "outcome", "kind")


@dataclass
class PhoneRow:
    mac: str
    model: str = ""
    group: str = ""
    name: str = ""
    extension: str = ""
    address: str = ""
    firmware: str = ""
    protocol: str = ""
    last_file: str = ""
    last_seen: float = 0.0
    outcome: str = ""
    requests: int = 0
    in_inventory: bool = True
    offered: str | None = None
    upgrade: bool = False

    def as_dict(self) -> dict:
        return asdict(self)


def polite(items: Iterable, every: int = 200) -> Iterator:
    """`items`, letting other threads run every `every` items: the console works in a thread of the
    process that serves phones, and a long loop holding the interpreter lock would delay their packets."""
    for index, item in enumerate(items):
        if index % every == every - 1:
            time.sleep(0)
        yield item


def phone_rows(snapshot, seen: list[PhoneSeen]) -> list[PhoneRow]:
    """The inventory joined with the phones seen; phones seen but not in the inventory too."""
    by_mac = {phone.mac: phone for phone in seen}
    rows = []
    for mac, phone in polite(snapshot.phones.items()):
        name = phone.values.get(NAME)
        extension = phone.variables.get("extension") or (phone.values[EXTENSION].value if EXTENSION in phone.values else "")
        rows.append(_with_seen(PhoneRow(mac, phone.model or "", phone.group or "", name.value if name else "", extension),
                               by_mac.pop(mac, None)))
    rows.extend(_with_seen(PhoneRow(mac, in_inventory=False), phone) for mac, phone in by_mac.items())
    return rows


def _with_seen(row: PhoneRow, seen: PhoneSeen | None) -> PhoneRow:
    if seen is not None:
        row.model = row.model or seen.model or ""
        row.address, row.firmware, row.protocol = seen.address or "", seen.firmware or "", seen.protocol or ""
        row.last_file, row.last_seen, row.outcome, row.requests = seen.last_file or "", seen.last_seen, seen.outcome or "", seen.requests
    return row


@dataclass
class PhoneQuery:
    text: str = ""  # a piece of any column, letter case ignored
    sort: str = "mac"
    descending: bool = False
    page: int = 1
    state: str = ""  # "", "seen", "never", "failing", "unknown"

    @classmethod
    def parse(cls, args: dict[str, str]) -> PhoneQuery:
        sort = args.get("sort", "mac")
        try:
            page = max(1, int(args.get("page", "1")))
        except ValueError:
            page = 1
        state = args.get("state", "")
        return cls(args.get("q", "").strip()[:200], sort if sort in PHONE_COLUMNS else "mac", args.get("order") == "desc",
                   page, state if state in ("seen", "never", "failing", "unknown") else "")


@dataclass
class PhonesPage:
    rows: list[PhoneRow]
    total: int
    page: int
    pages: int
    query: PhoneQuery = field(default_factory=PhoneQuery)


def select_phones(rows: list[PhoneRow], query: PhoneQuery, size: int | None = PAGE_SIZE) -> PhonesPage:
    """Filter, sort and cut one page (`size` None: every row)."""
    if query.state:
        keep = {"seen": lambda r: r.last_seen > 0, "never": lambda r: r.last_seen == 0,
                "failing": lambda r: r.last_seen > 0 and r.outcome != "ok", "unknown": lambda r: not r.in_inventory}
        rows = [row for row in polite(rows, 1000) if keep[query.state](row)]
    if query.text:
        needle = query.text.casefold()
        rows = [row for row in polite(rows, 500) if needle in "\t".join(
            (row.mac, row.model, row.group, row.name, row.extension, row.address, row.firmware, row.last_file)).casefold()]
    keyed = [(_sort_key(getattr(row, query.sort)), row.mac, row) for row in polite(rows, 1000)]
    keyed.sort(key=lambda item: item[:2], reverse=query.descending)
    rows = [item[2] for item in keyed]
    if size is None:
        return PhonesPage(rows, len(rows), 1, 1, query)
    pages = max(1, math.ceil(len(rows) / size))
    page = min(query.page, pages)
    return PhonesPage(rows[(page - 1) * size: page * size], len(rows), page, pages, query)


def _sort_key(value):
    return value.casefold() if isinstance(value, str) else value


def phones_csv(rows: list[PhoneRow]) -> str:
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow((*PHONE_COLUMNS, "in_inventory"))
    for row in rows:
        cells = [getattr(row, column) for column in PHONE_COLUMNS]
        cells[PHONE_COLUMNS.index("last_seen")] = iso(row.last_seen) if row.last_seen else ""
        # A cell a spreadsheet would run as a formula is kept as text.
        writer.writerow([f"'{cell}" if isinstance(cell, str) and cell[:1] in ("=", "+", "-", "@") else cell
                         for cell in (*cells, "yes" if row.in_inventory else "no")])
    return out.getvalue()


def iso(moment: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(moment))


# -- overview ---------------------------------------------------------------------------------


@dataclass
class Overview:
    inventory: int
    seen_today: int
    never_seen: int
    failing: int
    unknown: int
    chart: list  # (minute, {protocol: count}) for the last hour, oldest first
    protocols: list[str]
    peak: int


def overview(rows: list[PhoneRow], per_minute: dict[tuple[int, str], int], now: float) -> Overview:
    midnight = time.mktime(time.localtime(now)[:3] + (0, 0, 0, 0, 0, -1))
    inventory = [row for row in rows if row.in_inventory]
    last = int(now // 60)
    protocols = sorted({protocol for _, protocol in per_minute})
    chart = [(minute, {protocol: per_minute.get((minute, protocol), 0) for protocol in protocols})
             for minute in range(last - 59, last + 1)]
    peak = max((sum(counts.values()) for _, counts in chart), default=0)
    return Overview(
        inventory=len(inventory),
        seen_today=sum(row.last_seen >= midnight for row in rows),
        never_seen=sum(row.last_seen == 0 for row in inventory),
        failing=sum(row.last_seen > 0 and row.outcome != "ok" for row in rows),
        unknown=len(rows) - len(inventory),
        chart=chart, protocols=protocols, peak=peak,
    )


# -- one phone --------------------------------------------------------------------------------


def phone_detail(resolver, mac: str, protocol: str) -> dict:
    """The configuration the phone gets, secrets as ***, and where each value comes from."""
    explained = explain_target(resolver, mac, protocol=protocol if protocol in ("tftp", "ftp", "http", "https") else "http")
    names = {line.code: line.name for line in explained.lines}
    shown = render.layout({line.code: line.value for line in explained.lines if line.sent},
                          lambda code: names.get(code, ""))
    return {"explained": explained, "config": shown.decode("utf-8")}


# -- problems ---------------------------------------------------------------------------------


@dataclass
class ProblemGroup:
    outcome: str
    kind: str
    reason: str
    who: str  # a MAC, a device code or an address
    count: int
    last: float

    @property
    def mac(self) -> str | None:
        return self.who if MAC.fullmatch(self.who or "") else None


def problem_groups(rows: list[tuple]) -> dict[str, list[ProblemGroup]]:
    """The store's problem rows sorted under headings: unknown phones, unknown device codes,
    throttled addresses, failed logins, failed transfers, other refusals."""
    groups: dict[str, list[ProblemGroup]] = {"unknown phones": [], "unknown device codes": [], "throttled addresses": [],
                                             "failed logins": [], "failed transfers": [], "other refusals": []}
    for row in rows:
        problem = ProblemGroup(*row)
        if problem.kind == "unknown-phone":
            heading = "unknown phones"
        elif problem.reason.startswith("unknown device code"):
            heading = "unknown device codes"
        elif problem.reason.startswith("throttled"):
            heading = "throttled addresses"
        elif problem.reason in ("authentication required", "wrong credentials"):
            heading = "failed logins"
        elif problem.outcome == "failed":
            heading = "failed transfers"
        else:
            heading = "other refusals"
        groups[heading].append(problem)
    return groups
