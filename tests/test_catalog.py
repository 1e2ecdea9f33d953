"""The parameter catalog against the phone's own configuration download, and value validation."""

from __future__ import annotations

import html
import re
import subprocess
import sys
from pathlib import Path

import pytest

from htekd.catalog import AmbiguousName, CatalogError, Param, UnknownParameter, catalog, is_pcode, parse_tsv

REPO = Path(__file__).resolve().parents[1]
REFERENCE_DIR = Path(__file__).resolve().parents[2] / "shared" / "reference"
REFERENCE = REFERENCE_DIR / "htek-uc920u-default-config.xml"
CATALOG_TSV = REPO / "htekd" / "data" / "catalog.tsv"
BUILD = REPO / "tools" / "build_catalog.py"

needs_reference = pytest.mark.skipif(
    not REFERENCE.is_file(), reason=f"reference configuration not found at {REFERENCE}"
)

ELEMENT = re.compile(r'<(P[0-9]+) pa(?:ra|pr)="([^"]*)"\s*(?:/>|>(.*?)</\1>)')
COMMENT = re.compile(r"<!--(.*?)-->")


def reference_entries() -> tuple[list[str], list[tuple[str, str, str, str]]]:
    """(section names, (code, name, section, default) per element) read line by line from the file,
    independently of tools/build_catalog.py."""
    sections: list[str] = []
    elements: list[tuple[str, str, str, str]] = []
    for line in REFERENCE.read_text(encoding="utf-8").splitlines():
        comment = COMMENT.search(line)
        if comment:
            sections.append(comment.group(1).strip())
            continue
        element = ELEMENT.search(line)
        if element:
            code, name, value = element.groups()
            elements.append((code, html.unescape(name), sections[-1], html.unescape(value or "")))
    return sections, elements


# -- the catalog against the reference file ---------------------------------------------------------


@needs_reference
def test_reference_file_has_the_documented_shape():
    sections, elements = reference_entries()
    assert len(sections) == 153
    assert len(elements) == 3583
    assert len({code for code, *_ in elements}) == 3582


def test_catalog_has_every_parameter_once_in_file_order():
    params = catalog().params
    assert len(params) == len(catalog()) == 3582
    assert len({param.code for param in params}) == 3582
    assert [param.index for param in params] == list(range(3582))
    assert all(param.code == f"P{param.number}" for param in params)


@needs_reference
def test_every_element_of_the_reference_is_in_the_catalog():
    _, elements = reference_entries()
    first: dict[str, tuple[str, str, str, str]] = {}
    for entry in elements:
        first.setdefault(entry[0], entry)
    assert [param.code for param in catalog().params] == list(first)
    for code, name, section, default in first.values():
        param = catalog().get(code)
        assert (param.name, param.section, param.default) == (name, section, default), code


@needs_reference
def test_sections_follow_the_reference_comments_including_empty_ones():
    sections, _ = reference_entries()
    assert [section.name for section in catalog().sections] == sections
    assert [p for section in catalog().sections for p in section.params] == list(catalog().params)
    empty = [section.name for section in catalog().sections if not section.params]
    assert "Directory" in empty and "Network/Advance" in empty
    assert all(param.section == section.name for section in catalog().sections for param in section.params)


def test_html_entity_default_is_decoded():
    assert catalog().get("P8685").default == "Copyright \u00a9 2005-2021 All Rights Reserved"


def test_vendor_spellings_are_kept():
    assert catalog().lookup("Account1_DispalyName").code == "P3"
    assert catalog().lookup("FirmwareUpGrade_UrgrateMode").code == "P212"
    assert catalog().lookup("FirmwareUpGrade_SeverPnpPort").code == "P25073"
    # the vendor's file names P24749 with a misspelled attribute (papr="...")
    assert catalog().get("P24749").name == "Preference_VisualVoiceMail"


def test_name_used_for_two_pcodes_is_ambiguous_but_pcodes_work():
    with pytest.raises(AmbiguousName) as caught:
        catalog().lookup("FirmwareUpGrade_AllowDHCPOption")
    assert "P1145" in str(caught.value) and "P25091" in str(caught.value)
    assert caught.value.codes == ("P1145", "P25091")
    assert catalog().lookup("P1145").default == "66"
    assert catalog().lookup("P25091").default == "1"
    assert catalog().get("P1145").name == catalog().get("P25091").name == "FirmwareUpGrade_AllowDHCPOption"


def test_pcode_listed_twice_is_one_parameter_at_its_first_position():
    params = [param for param in catalog().params if param.name == "HDMS_Server_Url"]
    assert len(params) == 1
    assert catalog().lookup("HDMS_Server_Url") is params[0]
    assert catalog().params[params[0].index - 1].code == "P5007"
    assert catalog().params[params[0].index + 1].code == "P24882"


def test_get_and_lookup():
    c = catalog()
    assert c.get("P47") is c.get("p47") is c.lookup("Profile1_Sipserver") is c.lookup("profile1_sipserver")
    assert c.get("P47") == Param("P47", 47, "Profile1_Sipserver", "Profile1/Basic", "", 0)
    assert c.get("P99999") is None
    assert c.get("Profile1_Sipserver") is None
    with pytest.raises(UnknownParameter, match="unknown P-code P99999"):
        c.lookup("p99999")
    with pytest.raises(UnknownParameter, match="unknown parameter 'Account1_SipUser'"):
        c.lookup("Account1_SipUser")


def test_is_pcode():
    assert is_pcode("P47") and is_pcode("p65199") and is_pcode("P99999")
    assert not any(is_pcode(text) for text in ("P", "47", "P47x", " P47", "Profile1_Sipserver", "P-1"))


# -- tools/build_catalog.py ----------------------------------------------------------------------------


@needs_reference
def test_build_script_regenerates_the_shipped_catalog_byte_for_byte(tmp_path):
    output = tmp_path / "catalog.tsv"
    result = subprocess.run([sys.executable, str(BUILD), str(REFERENCE), "-o", str(output)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stderr
    assert "3582 parameters, 153 sections" in result.stdout
    assert output.read_bytes() == CATALOG_TSV.read_bytes()


def test_build_script_escapes_and_the_loader_reads_back(tmp_path):
    source = tmp_path / "phone.xml"
    source.write_text(
        '<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1">\n  <config version="1">\n'
        "    <!--A/B-->\n"
        '    <P1 para="Tab">a\tb\\c&#10;d&reg;&amp;</P1>\n'
        "    <!--Empty-->\n"
        "    <!--C-->\n"
        '    <P2 para="Blank" />\n'
        '    <P2 para="Blank" />\n'
        "  </config>\n</hl_provision>\n",
        encoding="utf-8",
    )
    output = tmp_path / "catalog.tsv"
    subprocess.run([sys.executable, str(BUILD), str(source), "-o", str(output)], check=True,
                   capture_output=True, timeout=60)
    text = output.read_text(encoding="utf-8")
    assert "a\\tb\\\\c\\nd\u00ae&" in text
    assert parse_tsv(text) == [
        ["", "", "A/B", ""],
        ["P1", "Tab", "A/B", "a\tb\\c\nd\u00ae&"],
        ["", "", "Empty", ""],
        ["", "", "C", ""],
        ["P2", "Blank", "C", ""],
    ]


@pytest.mark.parametrize("content, message", [
    ("<hl_provision><config><P1 para='x'>1</P1>", "build_catalog: "),
    ("<hl_provision><config><P1 para='x'>1</P1><P1 para='x'>2</P1></config></hl_provision>",
     "P1 listed twice with different contents"),
    ("<hl_provision><config><Q1 para='x'>1</Q1></config></hl_provision>", "unexpected element <Q1>"),
])
def test_build_script_rejects_broken_input_with_one_line(tmp_path, content, message):
    source = tmp_path / "broken.xml"
    source.write_text(content, encoding="utf-8")
    output = tmp_path / "catalog.tsv"
    result = subprocess.run([sys.executable, str(BUILD), str(source), "-o", str(output)],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 1
    assert message in result.stderr and len(result.stderr.strip().splitlines()) == 1
    assert not output.exists()


# -- validation -------------------------------------------------------------------------------------

# (parameter, valid values, invalid values) for every curated rule
CURATED = [
    ("Profile1_Sipserver", ["192.168.0.68:5060", "pbx.example.com", "pbx.example.com.:5080", "[2001:db8::1]:5060",
                            "2001:db8::1", "10.0.0.1"],
     ["pbx example", "192.168.0.68:0", "192.168.0.68:65536", "host:port", "sip:pbx", "256.1.1.1", "-bad-.com"]),
    ("Profile6_BackUpOutboundProxy", ["proxy.example.com:5061"], ["proxy.example.com:"]),
    ("P130", ["0", "1", "2"], ["udp", "-1"]),
    ("Profile3_Choice6", ["0", "8", "120"], ["PCMU", "-8"]),
    ("Account1_Profile", ["0", "5"], ["6", "-1", "one"]),
    ("Account16_Profile", ["3"], ["9"]),
    ("Account1_Active", ["0", "1"], ["yes", "2", "true"]),
    ("Account12_Active", ["1"], ["on"]),
    ("Account1_SipUserId", ["1001", "alice.smith", "+4930123"], ["10 01", "1001 "]),
    ("Account1_AuthenticateID", ["1001", "any thing"], []),
    ("Account1_AuthenticatePassword", ["s3cr3t p@ss!"], ["a\tb"]),
    ("Account2_DispalyName", ["Alice Smith", "Zoë \u00e9"], ["Alice\nSmith"]),
    ("Account3_Label", ["Reception"], ["Re\x00ception"]),
    ("Account1_LocalSipPort", ["5060", "1", "65535"], ["0", "65536", "sip"]),
    ("Account5_HotelingPassWord", ["1234"], ["\x1b[0m"]),
    ("Account1_DialPlan", ["{[x*]+}", "{xxxx|9xxxxxxx|*x+}"], ["{x}\x07"]),
    ("P24794", ["{[x*]+}"], ["\x00"]),
    ("P30", ["time.windows.com", "pool.ntp.org", "192.168.0.1", "fe80::1"], ["time server", "ntp:123", "a..b"]),
    ("P8622", ["0.pool.ntp.org"], ["http://pool.ntp.org"]),
    ("P64", ["0", "18", "99"], ["UTC+1", "-1"]),
    ("P8621", ["0", "19"], ["English"]),
    ("P2525", ["0", "10"], ["-2"]),
    ("P212", ["0", "1", "2", "3"], ["4", "http", "01"]),
    ("P237", ["http://192.168.0.254/cfg", "https://prov.example.com:8443/htek/", "tftp://10.0.0.5",
              "ftp://user:pw@10.0.0.5/cfg", "firmware.mycompany.com:5688/Htek", "218.2.83.110", "HTTP://Prov.Example.com"],
     ["file:///etc/passwd", "http://", "http://bad host/", "http://host:99999/", "gopher://x"]),
    ("P192", ["www.mycompany.com:5688/fm/Htek"], ["http:// x"]),
    ("P1360", ["provision"], []),
    ("P1361", ["pa ss"], ["pa\rss"]),
    ("P1145", ["66", "128", "150"], ["67", "0", "option66"]),
    ("P193", ["10080", "0", "60"], ["1 week", "-5"]),
    ("P194", ["0", "1"], ["Yes"]),
    ("P240", ["1", "0"], ["2"]),
    ("P8631", ["001FC1BC", "0", "0123456789abcdef", "A"], ["0123456789ABCDEF0", "xyz", "00 1F", "g"]),
    ("P20174", ["http://192.168.0.254"], ["192.168.0.254 /ring"]),
    ("P20175", ["https://192.168.0.254/Language.tar"], ["ldap://x"]),
    ("P20176", ["http://192.168.0.254/hlpres.tar"], ["http://"]),
    ("P20177", ["http://192.168.0.254/exp_pres.tar"], ["http:///exp_pres.tar"]),
    ("P20051", ["http://192.168.0.254/Screensaver.jpg"], ["screensaver.jpg?"]),
    ("P20052", ["http://192.168.0.254/wallpaper.jpg"], ["wall paper"]),
    ("P24885", ["http://192.168.0.254/logo.jpg"], ["smb://x/logo.jpg"]),
    ("P2", ["admin 123!"], ["adm\x7fin"]),
    ("P196", ["user"], ["u\x85ser"]),
    ("P20653", ["var"], ["v\nar"]),
    ("LDAP_Password", ["secret"], ["se\tcret"]),
    ("P25073", ["5060"], ["0", "70000"]),
    ("P901", ["80", "8080"], ["http"]),
    ("P8724", ["443"], ["-443"]),
    ("P39", ["12100"], ["65536"]),
    ("P24809", ["0", "1"], ["off"]),
    ("NW_LLDP_Active", ["0", "1"], ["2"]),
    ("CallWaiting_OnOff", ["1"], ["On"]),
    ("Account1_EnableHoteling", ["0"], ["enabled"]),
    ("Preference_ItemLevelLcdEnable", ["1"], ["10"]),
]


@pytest.mark.parametrize("key, good, bad", CURATED, ids=[entry[0] for entry in CURATED])
def test_curated_rules_accept_and_reject(key, good, bad):
    c = catalog()
    param = c.lookup(key)
    assert c.rule(param) is not None, f"{key} has no curated rule"
    for value in good + [""]:
        assert c.check(param, value) is None, (key, value, c.check(param, value))
        assert c.check(param.code, value) is None
    for value in bad:
        problem = c.check(param, value)
        assert problem, (key, value)
        assert "\n" not in problem


def test_every_curated_rule_is_tested_and_matches_parameters():
    c = catalog()
    tested = {id(c.rule(c.lookup(key))) for key, *_ in CURATED}
    for rule in c.rules:
        assert any(rule.matches(param) for param in c.params), f"rule {rule.pattern} matches nothing"
        assert id(rule) in tested, f"rule {rule.pattern} has no test"


def test_rules_accept_every_factory_default():
    c = catalog()
    for param in c.params:
        assert c.check(param, param.default) is None, (param, c.check(param, param.default))


def test_on_off_rule_only_covers_switches():
    c = catalog()
    switches = [param for param in c.params if c.rule(param) and c.rule(param).type == "bool"]
    assert all(param.default in ("0", "1") for param in switches)
    names = {param.name for param in switches}
    assert "LEDStatus.LEDStatus_ActiveCall_Speed" not in names  # "Active" as an adjective
    assert "Preference_BacklightInactiveLevel" not in names


def test_messages_say_what_was_expected():
    c = catalog()
    assert c.check("P194", "yes") == "expected 0 or 1, got 'yes'"
    assert c.check("P1145", "67") == "expected one of 66, 128, 150, got '67'"
    assert c.check("P40", "0") == "expected an integer from 1 to 65535, got '0'"
    assert c.check("P8631", "xyz") == "expected 1-16 hex digits, got a secret of 3 characters"  # never quoted
    assert c.check("P35", "a\tb") == "control character U+0009 not allowed"


def test_uncurated_parameters_follow_their_default_type():
    c = catalog()
    assert c.rule("P52") is None and c.get("P52").default == "2"  # Profile1_NatTraversal
    assert c.check("P52", "1") is None and c.check("P52", "-1") is None
    assert c.check("P52", "stun") == "expected an integer, got 'stun'"
    assert c.check("P52", "1.5") and c.check("P52", " 1") and c.check("P52", "\uff11")
    assert c.rule("P4201").type == "dialplan"  # any text, braces included
    assert c.check("P4200", "{[x*]+|911}") is None
    assert c.check("Account1_VoiceMailId", "*97 now") is None  # blank default: any text


def test_empty_value_always_allowed_and_control_characters_never():
    c = catalog()
    for param in c.params:
        assert c.check(param, "") is None
    for value in ("a\x00", "\x1f", "a\r\n", "\x7f", "\x9b"):
        assert c.check("P4200", value), repr(value)
        assert c.check("P3", value), repr(value)


def test_check_of_unknown_pcode_and_names():
    c = catalog()
    assert c.check("P99999", "anything at all") is None
    assert c.check("P99999", "bad\x00") == "control character U+0000 not allowed"
    assert c.check("Account1_SipUserId", "10 01")
    with pytest.raises(AmbiguousName):
        c.check("FirmwareUpGrade_AllowDHCPOption", "66")
    with pytest.raises(CatalogError):
        c.check("NoSuchParameter", "1")


def test_secrets():
    c = catalog()
    secrets = {param.code for param in c.params if c.is_secret(param)}
    assert {"P34", "P2", "P196", "P1361", "P8631", "P20653"} <= secrets
    assert "P35" not in secrets and "P47" not in secrets and "P1360" not in secrets
    assert c.is_secret("P99999") is False
    names = [c.get(code).name.lower() for code in secrets - {"P8631"}]
    assert all("password" in name or name.endswith("hotelingpin") for name in names)
