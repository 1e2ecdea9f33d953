"""Time zones by name: a phones.csv column and an htekd.conf default, written as the phone's P64 index."""

from __future__ import annotations

import datetime
from pathlib import Path

import pytest

from contenttree import htekd, make_site, params_of, settings_xml

from htekd import timezones

CSV = """\
mac,model,timezone,Account1_SipUserId
00:1f:c1:00:00:01,UC924,Europe/Berlin,1001
00:1f:c1:00:00:02,UC924,Australia/Sydney,1002
00:1f:c1:00:00:03,UC924,,1003
00:1f:c1:00:00:04,UC924,Asia/Kathmandu,1004
"""


def rendered(conf: Path, target: str) -> dict[str, str]:
    done = htekd("render", "-c", str(conf), target)
    assert done.returncode == 0, done.stderr
    return params_of(done.stdout)


def test_the_timezone_column_and_the_default_become_p64(tmp_path: Path):
    conf = make_site(tmp_path, csv=CSV, extra="timezone = America/New_York")
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 0, done.stdout
    assert ("phones.csv:5: warning: time zone Asia/Kathmandu (UTC+05:45) has no P64 index; P64 is left to the settings"
            in done.stdout.decode().splitlines())
    assert rendered(conf, "001fc1000001")["P64"] == "49"  # +01:00, whatever the season
    assert rendered(conf, "001fc1000002")["P64"] == "96"  # +10:00 standard, +11:00 in the southern summer
    assert rendered(conf, "001fc1000003")["P64"] == "18"  # the default: -05:00
    assert rendered(conf, "001fc1000004")["P64"] == "18"  # no index for +05:45: the default stays
    assert rendered(conf, "0012")["P64"] == "18"  # the default reaches the model file too


def test_layers_win_over_the_default_and_the_phones_own_zone_over_the_layers(tmp_path: Path):
    conf = make_site(tmp_path, csv=CSV, extra="timezone = America/New_York",
                     common=settings_xml(("P64", "Preference_TimeZone", "33")),
                     phones={"001fc1000002": settings_xml(("P64", "Preference_TimeZone", "94"))})
    assert rendered(conf, "001fc1000003")["P64"] == "33"  # common beats the default
    assert rendered(conf, "001fc1000001")["P64"] == "49"  # the row's zone beats common
    assert rendered(conf, "001fc1000002")["P64"] == "94"  # the phone's settings file beats its row
    # DST parameters are the layers' business: htekd writes none of them
    assert not {"P75", "P23117", "P23118", "P23125"} & rendered(conf, "001fc1000001").keys()


def test_unknown_names_are_errors_naming_the_line_or_the_key(tmp_path: Path):
    conf = make_site(tmp_path, csv=CSV.replace("Australia/Sydney", "Europe/Berln"))
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1
    assert ("phones.csv:3: error: timezone: unknown time zone 'Europe/Berln' (an IANA name such as Europe/Berlin)"
            in done.stdout.decode().splitlines())
    conf = make_site(tmp_path, csv=CSV, extra="timezone = ../../etc/passwd")
    done = htekd("check", "-c", str(conf))
    assert done.returncode != 0
    assert done.stdout.decode().strip().endswith("error: [htekd] timezone: unknown time zone '../../etc/passwd' "
                                                 "(an IANA name such as Europe/Berlin)")
    conf = make_site(tmp_path, csv=CSV, extra="timezone = Asia/Kathmandu")
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 0
    assert any(line.endswith(": warning: [htekd] timezone: time zone Asia/Kathmandu (UTC+05:45) has no P64 index; "
                             "P64 is left to the settings") for line in done.stdout.decode().splitlines())


@pytest.mark.parametrize("zone, index", [
    ("UTC", "33"), ("Europe/London", "33"), ("Europe/Dublin", "33"), ("Asia/Kolkata", "84"),
    ("America/St_Johns", "26"), ("Pacific/Chatham", "103"), ("Pacific/Auckland", "102"), ("Asia/Tokyo", "93"),
    ("America/Los_Angeles", "6"), ("Pacific/Pago_Pago", "105"),
])
def test_standard_offsets_and_their_indexes(zone: str, index: str):
    assert timezones.index_of(zone) == (index, "")


def test_the_standard_offset_is_the_same_in_every_season():
    for day in (datetime.date(2025, 1, 15), datetime.date(2025, 7, 15)):
        assert timezones.standard_offset("Australia/Sydney", day) == 600
        assert timezones.standard_offset("America/New_York", day) == -300
