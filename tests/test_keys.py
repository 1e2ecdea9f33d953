"""Line keys as a table: settings/keys.csv, layered, checked by `htekd check`, shown by `htekd render`."""

from __future__ import annotations

from pathlib import Path

from contenttree import htekd, make_site, params_of, settings_xml, write

from htekd import keys
from htekd.catalog import catalog

CSV = """\
mac,model,group,Account1_SipUserId,Account2_SipUserId,manager_ext
00:1f:c1:00:00:01,UC926,reception,1001,2001,1009
00:1f:c1:00:00:02,UC912G,reception,1002,,1009
00:1f:c1:00:00:03,UC924,sales,1003,,1009
"""
KEYS = """\
applies_to,key,type,value,label,account
all,1,line,,,1
model:UC926,36,dnd,,,
group:reception,5,blf,1002,Alice,1
group:reception,6,blf,{manager_ext},Manager,1
00:1f:c1:00:00:01,7,speed_dial,+4930123456,Pizza,
group:reception,exp1.1.3,blf,1010,Door,1
all,5,3,1000,Operator,1
001FC1000001,5,na,,,
all,20,call park,701,Park,
"""


def site(tmp_path: Path, keys_csv: str = KEYS, csv: str = CSV, **layers) -> Path:
    conf = make_site(tmp_path, csv=csv, **layers)
    write(tmp_path / "root" / "settings" / "keys.csv", keys_csv)
    return conf


def rendered(conf: Path, target: str) -> dict[str, str]:
    done = htekd("render", "-c", str(conf), target)
    assert done.returncode == 0, done.stderr
    return params_of(done.stdout)


def check(conf: Path) -> tuple[int, list[str]]:
    done = htekd("check", "-c", str(conf))
    return done.returncode, [line for line in done.stdout.decode().splitlines() if "keys.csv" in line]


def test_rows_layer_all_model_group_phone_and_render_shows_the_parameters(tmp_path: Path):
    conf = site(tmp_path)
    assert check(conf)[0] == 0
    big, small, other = (rendered(conf, f"001fc100000{n}") for n in (1, 2, 3))
    # LineKey1: type 1 (line) on account 1, which the phone numbers from 0
    assert (big["P41200"], big["P41500"]) == ("1", "0")
    # key 5: all -> group (BLF Alice) -> phone (cleared) ; the group wins over all for the other phones
    assert (big["P20200"], big["P20201"], big["P20202"]) == ("0", "", "")
    assert (small["P20200"], small["P20201"], small["P20202"], small["P20203"]) == ("3", "1002", "Alice", "0")
    assert (other["P20200"], other["P20201"], other["P20202"]) == ("3", "1000", "Operator")
    # a placeholder from the phone's row, a phone's own speed dial
    assert (small["P20206"], small["P20207"]) == ("1009", "Manager")
    assert (big["P20210"], big["P20211"], big["P20212"]) == ("2", "+4930123456", "Pizza")
    assert "P20210" not in small
    # model rows reach that model only; expansion-module keys map to ExpM_P_K_*
    assert big["P20355"] == "21" and "P20355" not in other
    assert (small["P60010"], small["P60011"], small["P60012"], small["P60013"]) == ("3", "1010", "Door", "0")
    # key 20 is beyond a UC912G's 12 keys: left out of its file, kept for the others
    assert big["P20275"] == "8" and other["P20276"] == "701" and "P20275" not in small


def test_settings_files_and_raw_parameters_still_win(tmp_path: Path):
    conf = site(
        tmp_path,
        common=settings_xml(("P20202", "LineKey5_Label", "From common")),
        phones={"001fc1000002": settings_xml(("P20201", "LineKey5_Value", "1099"))},
    )
    small, other = rendered(conf, "001fc1000002"), rendered(conf, "001fc1000003")
    assert (small["P20200"], small["P20201"], small["P20202"]) == ("3", "1099", "From common")
    assert other["P20202"] == "From common"


def test_model_files_get_the_all_and_model_rows_only(tmp_path: Path):
    conf = site(tmp_path)
    model = rendered(conf, "0010")  # UC926
    assert model["P41200"] == "1" and model["P20355"] == "21" and model["P20201"] == "1000"
    assert "P20206" not in model  # group rows and phone placeholders are for phone files


def test_check_names_every_problem_with_its_line(tmp_path: Path):
    conf = site(tmp_path, KEYS.splitlines()[0] + "\n" + """\
model:UC912G,13,line,,,
all,9,bogus,,,
group:reception,8,blf,,,
all,50,line,,,
group:reception,5,speed_dial,123,,
group:reception,5,speed_dial,124,,
00:1f:c1:00:00:02,9,line,,,2
00:1f:c1:00:00:02,14,dnd,,,
all,10,line,,,17
nowhere,3,line,,,
all,11,speed_dial,{nobody},,
group:sales,12,line,,,2
all,4,99,,,
""")
    status, lines = check(conf)
    assert status == 1
    assert lines == [
        "settings/keys.csv:2: error: key 13: a UC912G has 12 line keys",
        "settings/keys.csv:3: error: unknown key type 'bogus' (one of: "
        + ", ".join(name for name in keys.key_types() if not name.isdigit()) + ", or a number)",
        "settings/keys.csv:4: error: a blf key needs a value",
        "settings/keys.csv:5: error: no key '50': line keys are 1-45, expansion-module keys "
        "exp<module>.<page>.<key> (exp1.1.1 to exp6.2.20)",
        "settings/keys.csv:7: error: key 5 for group:reception is set again (first on line 6)",
        "settings/keys.csv:8: error: account 2 is not an active account of phone 001fc1000002 "
        "(Account2_Active is off or Account2_SipUserId is empty)",
        "settings/keys.csv:9: error: key 14 is beyond the line keys of UC912G (12)",
        "settings/keys.csv:10: error: account '17': expected an account number from 1 to 16",
        "settings/keys.csv:11: error: applies_to 'nowhere': expected all, model:<MODEL>, group:<GROUP> or a MAC",
        "settings/keys.csv:12: error: unknown placeholder {nobody} (not a column of phones.csv nor one of htekd's facts)",
        "settings/keys.csv:13: warning: account 2 is not active on 1 phone: 001fc1000003",
        "settings/keys.csv:14: warning: key type 99 is not in htekd's table of key types: written as it is",
    ]


def test_rows_for_several_models_warn_and_unpublished_counts_are_said_once(tmp_path: Path):
    csv = CSV.replace("manager_ext", "#manager_ext") + "00:1f:c1:00:00:04,UC921E,sales,1004,,\n00:1f:c1:00:00:05,UC901,sales,1005,,\n"
    conf = site(tmp_path, "applies_to,key,type,value,label,account\nall,30,line,,,\nall,31,line,,,\n", csv=csv)
    status, lines = check(conf)
    assert status == 0
    assert lines == [
        "settings/keys.csv:2: warning: key 30 is beyond the line keys of UC912G (12), UC924 (28): "
        "left out for 2 phones: 001fc1000002, 001fc1000003",
        "settings/keys.csv:3: warning: key 31 is beyond the line keys of UC912G (12), UC924 (28): "
        "left out for 2 phones: 001fc1000002, 001fc1000003",
        "settings/keys.csv: warning: no published line-key count for UC901, UC921E: their line keys are not limited by model",
    ]
    assert rendered(conf, "001fc1000005")["P20325"] == "1"  # UC901: LineKey30 written


def test_a_broken_table_is_one_line_and_the_daemon_would_refuse_it(tmp_path: Path):
    conf = site(tmp_path, "applies_to,key,kind\nall,1,line\n")
    status, lines = check(conf)
    assert status == 1
    assert lines == ["settings/keys.csv:1: error: unknown column 'kind'; no 'type' column "
                     "(start a column's name with # to keep it as a note)"]
    (tmp_path / "root" / "settings" / "keys.csv").write_bytes(b"applies_to,key,type\nall,1,\xff\n")
    assert check(conf)[1] == ["settings/keys.csv:2: error: not UTF-8 text (save the spreadsheet as CSV UTF-8)"]
    done = htekd("render", "-c", str(conf), "001fc1000001")
    assert done.returncode != 0 and "settings/keys.csv:2: error" in done.stderr


def test_key_tables_are_consistent_with_the_catalog_and_models():
    from htekd.models import models

    assert keys.key_types()["blf"].number == 3 and keys.key_types()["3"].name == "blf"
    assert all(keys.key_codes(keys.Key(0, 0, n)) for n in range(1, 46))
    assert keys.key_codes(keys.Key(0, 0, 46)) is None
    assert keys.key_codes(keys.Key(6, 2, 20)) and keys.key_codes(keys.Key(7, 1, 1)) is None
    counts = keys.line_key_counts()
    assert counts["UC912"] == 12 and counts["UC926"] == 36
    known = [model.name for model in models().all if model.name in counts]
    assert len(known) >= 15


def test_a_key_value_may_name_a_parameter_column(tmp_path: Path):
    keys_csv = "applies_to,key,type,value,label,account\nall,2,speed_dial,{Account1_SipUserId},Me,\n" \
               "all,3,speed_dial,{P35}9,Me too,\n"
    conf = site(tmp_path, keys_csv=keys_csv, csv="mac,model,Account1.SipUserId\n00:1f:c1:00:00:01,UC926,1001\n")
    assert check(conf) == (0, [])
    values = rendered(conf, "001fc1000001")
    assert values[catalog().lookup("LineKey2_Value").code] == "1001"
    assert values[catalog().lookup("LineKey3_Value").code] == "10019"
