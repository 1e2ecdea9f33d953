"""The content tree: phones.csv and the settings layers loaded into one snapshot; every problem names file and line."""

from __future__ import annotations

import pytest

from contenttree import make_site, settings_xml
from htekd import tree

HEADER = "mac,model,group,Account1_SipUserId,Account1_DispalyName\n"


def load(tmp_path, **layers):
    make_site(tmp_path, **layers)
    return tree.load(tmp_path / "root")


def errors(problems):
    return [str(p) for p in problems if p.severity == "error"]


def only_error(problems) -> str:
    found = errors(problems)
    assert len(found) == 1, found
    return found[0]


# -- phones.csv -----------------------------------------------------------------------------------


@pytest.mark.parametrize("bom", [b"", b"\xef\xbb\xbf"], ids=["plain", "bom"])
def test_csv_utf8_with_and_without_bom(tmp_path, bom):
    csv = bom + (HEADER + "001fc1000001,UC924,,1001,Zoë Müller\n001fc1000002,UC926,,1002,王伟\n").encode("utf-8")
    snapshot, problems = load(tmp_path, csv=csv)
    assert errors(problems) == []
    assert set(snapshot.phones) == {"001fc1000001", "001fc1000002"}
    assert snapshot.phones["001fc1000001"].values["P3"].value == "Zoë Müller"
    assert snapshot.phones["001fc1000002"].values["P3"].value == "王伟"
    assert snapshot.phones["001fc1000002"].model == "UC926"


def test_csv_quoted_cells_with_commas_quotes_and_newlines(tmp_path):
    csv = (
        "mac,Account1_DispalyName,#note\n"
        '001fc1000001,"Smith, John ""JJ""","desk 4,\nsecond floor"\n'
        '001fc1000002,"Doe, ""Jane""","a\n""quoted""\nnote"\n'
        "nonsense,x,y\n"
    )
    snapshot, problems = load(tmp_path, csv=csv)
    assert snapshot.phones["001fc1000001"].values["P3"].value == 'Smith, John "JJ"'
    assert snapshot.phones["001fc1000002"].values["P3"].value == 'Doe, "Jane"'
    assert snapshot.phones["001fc1000002"].line == 4  # the line where its row starts
    assert only_error(problems).startswith("phones.csv:7: error: bad MAC 'nonsense'")


@pytest.mark.parametrize("spelling", ["001FC1000001", "00:1f:c1:00:00:01", "00-1F-C1-00-00-01", "001fc1000001", " 00:1F:C1:00:00:01 "])
def test_mac_spellings_normalise(tmp_path, spelling):
    snapshot, problems = load(tmp_path, csv=f"mac\n{spelling}\n")
    assert errors(problems) == []
    assert list(snapshot.phones) == ["001fc1000001"]


@pytest.mark.parametrize("mac", ["001fc100000", "001fc10000011", "00:1f:c1-00:00:01", "001fc100000g", "00:1f:c1:00:00", "0:1f:c1:00:00:01"])
def test_bad_mac_names_file_and_line(tmp_path, mac):
    _, problems = load(tmp_path, csv=f"mac\n001fc1000009\n{mac}\n")
    assert only_error(problems) == f"phones.csv:3: error: bad MAC {mac!r} (12 hex digits, with or without : or -)"


def test_duplicate_mac_names_both_lines(tmp_path):
    csv = "mac,model\n001fc1000001,UC924\n001fc1000002,UC924\n00:1F:C1:00:00:01,UC926\n"
    snapshot, problems = load(tmp_path, csv=csv)
    message = only_error(problems)
    assert message.startswith("phones.csv:4: error: duplicate MAC 001fc1000001")
    assert "line 2" in message
    assert snapshot.phones["001fc1000001"].model == "UC924"  # the first row stands


def test_unknown_model_in_csv_and_as_a_settings_file(tmp_path):
    _, problems = load(tmp_path, csv="mac,model\n001fc1000001,UC999\n", models={"UC777": settings_xml(("P47", "a.example"))})
    found = errors(problems)
    assert "phones.csv:2: error: unknown model 'UC999' (see htekd models)" in found
    assert any(p.startswith("settings/models/UC777.xml: error: unknown model 'UC777'") for p in found)


def test_model_names_are_case_insensitive(tmp_path):
    snapshot, problems = load(tmp_path, csv="mac,model\n001fc1000001,uc924\n", models={"uc924": settings_xml(("P47", "a.example"))})
    assert errors(problems) == []
    assert snapshot.phones["001fc1000001"].model == "UC924"
    assert "UC924" in snapshot.models


def test_column_neither_parameter_nor_placeholder(tmp_path):
    csv = "mac,P35,Account1_DispalyName,room,#note,extension\n001fc1000001,1001,Zoë,12,anything goes,1001\n"
    common = settings_xml(("P36", "Account1_AuthenticateID", "{extension}"))
    snapshot, problems = load(tmp_path, csv=csv, common=common)
    message = only_error(problems)
    assert message.startswith("phones.csv:1: error: column 'room' is neither a parameter nor a placeholder")
    assert "#" in message  # tells how to keep it as a note
    phone = snapshot.phones["001fc1000001"]
    assert set(phone.values) == {"P35", "P3"}
    assert phone.variables["extension"] == "1001"


def test_note_columns_and_unnamed_columns_are_allowed(tmp_path):
    _, problems = load(tmp_path, csv="mac,#note,# who,\n001fc1000001,first floor,Zoë,\n")
    assert errors(problems) == []


def test_non_utf8_csv(tmp_path):
    csv = "mac,Account1_DispalyName\n001fc1000001,Zoe\n001fc1000002,Zoë Müller\n".encode("latin-1")
    _, problems = load(tmp_path, csv=csv)
    assert only_error(problems) == "phones.csv:3: error: not UTF-8 text (save the spreadsheet as CSV UTF-8)"


def test_csv_values_are_validated_with_their_line(tmp_path):
    _, problems = load(tmp_path, csv="mac,Account1_SipUserId,Account1_LocalSipPort\n001fc1000001,1001,5060\n001fc1000002,10 02,99999\n")
    found = errors(problems)
    assert len(found) == 2
    assert all(p.startswith("phones.csv:3: error: ") for p in found)
    assert any("P35" in p and "white space" in p for p in found)


# -- settings files --------------------------------------------------------------------------------


MALFORMED = '<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1">\n    <config version="1">\n        <P47 para="x">a</P48>\n    </config>\n</hl_provision>\n'


@pytest.mark.parametrize("where", ["common", "models", "groups", "phones"])
def test_malformed_xml_in_each_settings_folder_names_file_and_line(tmp_path, where):
    names = {"common": "settings/common.xml", "models": "settings/models/UC924.xml",
             "groups": "settings/groups/sales.xml", "phones": "settings/phones/001fc1000001.xml"}
    layers = {"common": MALFORMED} if where == "common" else {where: {names[where].rsplit("/", 1)[1][:-4]: MALFORMED}}
    _, problems = load(tmp_path, csv="mac,model,group\n001fc1000001,UC924,sales\n", **layers)
    message = only_error(problems)
    assert message.startswith(f"{names[where]}:4: error: malformed XML")


def test_settings_structure_errors(tmp_path):
    text = settings_xml(("P47", "a.example")).replace("<P47", "<Sipserver").replace("</P47>", "</Sipserver>")
    _, problems = load(tmp_path, common=text)
    assert only_error(problems) == ("settings/common.xml:4: error: <Sipserver> is not a parameter name htekd knows "
                                    "(write it as a P-code if the phone has it)")


def test_settings_values_are_validated_with_their_line(tmp_path):
    common = settings_xml(("P47", "Profile1_Sipserver", "pbx.example.com:5060"), ("P212", "FirmwareUpGrade_UrgrateMode", "7"))
    _, problems = load(tmp_path, common=common)
    assert only_error(problems).startswith("settings/common.xml:5: error: P212: expected one of 0,")


def test_phone_settings_file_must_be_named_by_mac(tmp_path):
    _, problems = load(tmp_path, phones={"reception": settings_xml(("P3", "x"))})
    assert only_error(problems).startswith("settings/phones/reception.xml: error: file name is not a MAC")


def test_phone_settings_file_accepts_any_mac_spelling(tmp_path):
    snapshot, problems = load(tmp_path, csv="mac\n001fc1000001\n", phones={"00-1F-C1-00-00-01": settings_xml(("P3", "x"))})
    assert errors(problems) == []
    assert list(snapshot.phone_layers) == ["001fc1000001"]


XXE = (
    '<?xml version="1.0" encoding="{encoding}" ?>\n'
    '<!DOCTYPE hl_provision [<!ENTITY secret SYSTEM "file://{path}">]>\n'
    '<hl_provision version="1">\n    <config version="1">\n'
    '        <P3 para="Account1_DispalyName">&secret;</P3>\n'
    "    </config>\n</hl_provision>\n"
)


@pytest.mark.parametrize("target", ["/etc/passwd", "planted"])
@pytest.mark.parametrize("encoding", ["UTF-8", "UTF-16"])
def test_doctype_and_external_entities_are_refused(tmp_path, target, encoding):
    planted = tmp_path / "outside-secret.txt"
    planted.write_text("TOP-SECRET-7f3a\n", encoding="utf-8")
    path = str(planted) if target == "planted" else target
    text = XXE.format(encoding=encoding, path=path)
    data = text.encode("utf-16") if encoding == "UTF-16" else text.encode("utf-8")
    snapshot, problems = load(tmp_path, common=data)
    message = only_error(problems)
    assert message.startswith("settings/common.xml:") and "DOCTYPE and entity declarations are not allowed" in message
    assert snapshot.common.values == {}
    assert "TOP-SECRET" not in message and "root:" not in message


def test_internal_entity_declarations_are_refused_too(tmp_path):
    text = ('<?xml version="1.0"?>\n<!DOCTYPE l [<!ENTITY a "aaaaaaaaaa"><!ENTITY b "&a;&a;&a;&a;&a;&a;">]>\n'
            '<hl_provision version="1"><config version="1"><P3 para="x">&b;</P3></config></hl_provision>\n')
    _, problems = load(tmp_path, common=text)
    assert only_error(problems).startswith("settings/common.xml:2: error: DOCTYPE and entity declarations")


def test_a_pcode_given_twice_with_different_values_warns_and_the_later_wins(tmp_path):
    common = settings_xml(("P47", "a.example"), ("P47", "b.example"))
    snapshot, problems = load(tmp_path, common=common)
    assert errors(problems) == []
    assert "settings/common.xml:5: warning: P47 is set twice in this file (first on line 4); the later value wins" in [str(p) for p in problems]
    assert snapshot.common.values["P47"].value == "b.example"


# -- placeholders -----------------------------------------------------------------------------------


def test_unknown_placeholder_is_an_error_at_load(tmp_path):
    common = settings_xml(("P47", "a.example"), ("P35", "Account1_SipUserId", "{extenson}"))
    _, problems = load(tmp_path, csv="mac,extension\n001fc1000001,1001\n", common=common)
    found = errors(problems)
    assert found[0].startswith("settings/common.xml:5: error: P35: unknown placeholder {extenson}")
    # the column meant by it is unused, so it is reported too
    assert found[1:] == [f for f in found if f.startswith("phones.csv:1: error: column 'extension'")]


def test_unknown_placeholder_in_a_csv_cell(tmp_path):
    _, problems = load(tmp_path, csv="mac,Account1_DispalyName\n001fc1000001,{name} desk\n")
    assert only_error(problems).startswith("phones.csv:2: error: P3: unknown placeholder {name} (not a column of phones.csv")


def test_facts_and_used_columns_are_known_placeholders(tmp_path):
    common = settings_xml(
        ("P35", "{extension}"), ("P3", "{mac} {mac_colons} {model} {group} {devcode} {protocol}"),
        ("P20000", "{server_url} {server_host} {config_url} {firmware_url} {firmware_file}"),
    )
    _, problems = load(tmp_path, csv="mac,extension\n001fc1000001,1001\n", common=common)
    assert errors(problems) == []


def test_a_column_named_after_a_fact_is_refused(tmp_path):
    _, problems = load(tmp_path, csv="mac,server_url\n001fc1000001,x\n")
    assert only_error(problems).startswith("phones.csv:1: error: column 'server_url': that name is one of htekd's own facts")


def test_warnings_do_not_make_a_tree_unusable(tmp_path):
    make_site(tmp_path, csv="mac,group\n001fc1000001,nowhere\n", common=settings_xml(("P99999", "x")))
    snapshot = tree.load_strict(tmp_path / "root")  # no TreeError
    _, problems = tree.load(tmp_path / "root")
    assert {p.severity for p in problems} == {"warning"}
    assert "phones.csv:2: warning: group 'nowhere' has no settings/groups/nowhere.xml" in [str(p) for p in problems]
    assert snapshot.common.values["P99999"].value == "x"


def test_load_strict_refuses_a_tree_with_errors_in_one_line(tmp_path):
    make_site(tmp_path, csv="mac\nbad\nworse\n")
    with pytest.raises(tree.TreeError) as caught:
        tree.load_strict(tmp_path / "root")
    assert str(caught.value) == "phones.csv:2: error: bad MAC 'bad' (12 hex digits, with or without : or -) " \
        "(and 1 more errors; run htekd check)"
    assert len(caught.value.problems) == 2


def test_snapshot_is_immutable(tmp_path):
    snapshot, _ = load(tmp_path, csv="mac\n001fc1000001\n", common=settings_xml(("P47", "a.example")))
    with pytest.raises(Exception):
        snapshot.phones["001fc1000002"] = snapshot.phones["001fc1000001"]
    with pytest.raises(Exception):
        snapshot.common.values["P47"] = None
    with pytest.raises(Exception):
        snapshot.common = None


def test_parameter_columns_by_code_name_or_unknown_code(tmp_path):
    csv = "mac,p47,Account1_dispalyname,P99999\n001fc1000001,pbx.example.com,Zoë,raw\n"
    snapshot, problems = load(tmp_path, csv=csv)
    assert errors(problems) == []
    assert "phones.csv:1: warning: column 'P99999': P99999 is not in the parameter catalog: sent as is, " \
        "not treated as a secret (add it to [htekd] secret_parameters if it holds a credential)" in [str(p) for p in problems]
    assert {code: v.value for code, v in snapshot.phones["001fc1000001"].values.items()} == {
        "P47": "pbx.example.com", "P3": "Zoë", "P99999": "raw"}


def test_ambiguous_and_repeated_columns(tmp_path):
    _, problems = load(tmp_path, csv="mac,FirmwareUpGrade_AllowDHCPOption,P3,Account1_DispalyName\n001fc1000001,66,a,b\n")
    found = errors(problems)
    assert len(found) == 2
    assert found[0].startswith("phones.csv:1: error: column 'FirmwareUpGrade_AllowDHCPOption': para name ")
    assert "P1145, P25091 (use the P-code)" in found[0]
    assert found[1] == "phones.csv:1: error: column 'Account1_DispalyName' sets P3 again (column 3)"


@pytest.mark.parametrize("csv,line,words", [
    ('mac,#note\n001fc1000001,"abc"def\n', 2, "malformed CSV"),
    ("", 1, "empty file"),
    ("\ufeff", 1, "empty file"),
    ("model,group\nUC924,sales\n", 1, "no 'mac' column"),
    ("mac\n001fc1000001,extra\n", 2, "2 cells but only 1 columns"),
    ("mac,group\n001fc1000001,../../etc\n", 2, "bad group name"),
    ("mac,aes_key\n001fc1000001,xyz\n", 2, "aes_key"),
])
def test_other_inventory_errors(tmp_path, csv, line, words):
    _, problems = load(tmp_path, csv=csv)
    message = only_error(problems)
    assert message.startswith(f"phones.csv:{line}: error: ") and words in message


@pytest.mark.parametrize("cell", ["a\ufffeb", "a\x01b", "{extension}\x0bx"])
def test_characters_xml_cannot_carry_are_refused_at_load(tmp_path, cell):
    csv = "mac,Account1_DispalyName,extension\n" f"001fc1000001,{cell},1001\n001fc1000002,ok,{cell}\n"
    _, problems = load(tmp_path, csv=csv, common=settings_xml(("P35", "{extension}")))
    found = errors(problems)
    assert [p.split(": error: ")[0] for p in found] == ["phones.csv:2", "phones.csv:3"], found
    assert "not allowed" in found[0] or "cannot be written" in found[0]
    assert "column 'extension'" in found[1]
