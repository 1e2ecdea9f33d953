"""Time zones by name: an IANA zone (`Europe/Berlin`) -> the phone's P64 time-zone index (pure).

The index depends only on the zone's standard UTC offset (htekd/data/timezones.tsv). Daylight saving
time (P75, P23117-P23125) is not derived: the phone's encoding of the rules is not published.
"""

from __future__ import annotations

import datetime
import functools
import zoneinfo

from htekd.catalog import read_table

TIMEZONE_CODE = "P64"


class UnknownZone(ValueError):
    pass


@functools.cache
def _indexes() -> dict[int, str]:
    """Standard offset in minutes -> P64 index."""
    table = {}
    for offset, index, _seen_in in read_table("timezones.tsv"):
        hours, minutes = offset[1:].split(":")
        sign = -1 if offset.startswith("-") else 1
        table[sign * (int(hours) * 60 + int(minutes))] = index
    return table


def standard_offset(name: str, today: datetime.date | None = None) -> int:
    """The zone's standard UTC offset in minutes this year: the smaller of its January and July
    offsets, since daylight saving time moves clocks forward in either hemisphere."""
    try:
        zone = zoneinfo.ZoneInfo(name)
    except (zoneinfo.ZoneInfoNotFoundError, ValueError, OSError):  # also names of folders and non-zone files
        raise UnknownZone(f"unknown time zone {name!r} (an IANA name such as Europe/Berlin)") from None
    year = (today or datetime.date.today()).year
    offsets = [datetime.datetime(year, month, 1, tzinfo=zone).utcoffset() for month in (1, 7)]
    return int(min(offsets).total_seconds()) // 60


def format_offset(minutes: int) -> str:
    sign = "-" if minutes < 0 else "+"
    return f"UTC{sign}{abs(minutes) // 60:02d}:{abs(minutes) % 60:02d}"


def index_of(name: str) -> tuple[str | None, str]:
    """(P64 index, "") for a zone; (None, why) when the offset has no index. UnknownZone for a bad name."""
    offset = standard_offset(name)
    index = _indexes().get(offset)
    if index is None:
        return None, f"time zone {name} ({format_offset(offset)}) has no P64 index; P64 is left to the settings"
    return index, ""


@functools.lru_cache(maxsize=64)
def default_values(zone: str) -> dict[str, str]:
    """What `[htekd] timezone` fills in unless a layer sets P64 (nothing for no zone or an offset with no index)."""
    index = index_of(zone)[0] if zone else None
    return {TIMEZONE_CODE: index} if index else {}
