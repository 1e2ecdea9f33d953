"""Rendering: the phone's exact XML layout, the layers in order, placeholders, the values htekd fills in,
and the real 3,582-parameter configuration given back unchanged."""

from __future__ import annotations

import re

import pytest

from contenttree import REAL_CONFIG, client, make_site, params_of, resolver_for, settings_xml
from htekd import phonexml, tree
from htekd.catalog import catalog

MAC = "001fc1000001"


def render(tmp_path, name: str, protocol: str = "http", **site) -> bytes:
    resolution = resolver_for(make_site(tmp_path, **site)).resolve(name, client(protocol))
    assert resolution.ok, resolution.reason
    return resolution.content


# -- the exact format -------------------------------------------------------------------------------


def test_exact_layout_of_a_rendered_file(tmp_path):
    common = settings_xml(
        ("P30", "NW_Adv_UrlOrIpAddress", "pool.ntp.org"),
        ("P3", "Account1_DispalyName", "Zoë Müller"),
        ("P47", "Profile1_Sipserver", "pbx.example.com:5060"),
        ("P967", "Profile1_FailoverSipserver", ""),
        ("P20000", "Account1_Label", "王伟"),
        ("P99999", "Whatever", "kept"),
        ("P88888", "", "also kept"),
    )
    expected = (
        '<?xml version="1.0" encoding="UTF-8" ?>\n'
        '<hl_provision version="1">\n'
        '    <config version="1">\n'
        "        <!--Profile1/Basic-->\n"
        '        <P47 para="Profile1_Sipserver">pbx.example.com:5060</P47>\n'
        '        <P967 para="Profile1_FailoverSipserver" />\n'
        "        <!--Account1/Basic-->\n"
        '        <P20000 para="Account1_Label">王伟</P20000>\n'
        '        <P3 para="Account1_DispalyName">Zoë Müller</P3>\n'
        "        <!--Network/Advance/NTP Server-->\n"
        '        <P30 para="NW_Adv_UrlOrIpAddress">pool.ntp.org</P30>\n'
        "        <!--Management/AutoProvision-->\n"
        '        <P212 para="FirmwareUpGrade_UrgrateMode">1</P212>\n'
        '        <P192 para="FirmwareUpGrade_FirmwareServerPath">http://127.0.0.1:8080</P192>\n'
        '        <P237 para="FirmwareUpGrade_ConfigServerPath">http://127.0.0.1:8080</P237>\n'
        "        <!--Other-->\n"
        '        <P88888 para="">also kept</P88888>\n'
        '        <P99999 para="Whatever">kept</P99999>\n'
        "    </config>\n"
        "</hl_provision>\n"
    )
    assert render(tmp_path, "cfg0012.xml", common=common) == expected.encode("utf-8")


def test_catalog_order_and_section_comments_whatever_the_input_order(tmp_path):
    from htekd.catalog import catalog

    params = [p for p in catalog().params if p.default and p.code not in ("P212", "P237", "P192")][::7]
    shuffled = sorted(params, key=lambda p: (p.number * 7919) % 1009)
    data = render(tmp_path, "cfg0012.xml", common=settings_xml(*[(p.code, p.name, p.default) for p in shuffled]))
    expected: list[str] = []
    section = None
    for param in sorted([*params, *(catalog().get(c) for c in ("P212", "P237", "P192"))], key=lambda p: p.index):
        if param.section != section:
            section = param.section
            expected.append(f"<!--{section}-->")
        expected.append(param.code)
    body = data.decode("utf-8").splitlines()[3:-2]
    assert [line.strip() if "<!--" in line else line.split()[0][1:] for line in body] == expected


def test_non_ascii_is_written_as_utf8_bytes(tmp_path):
    data = render(tmp_path, f"cfg{MAC}.xml", csv="mac,Account1_DispalyName,Account2_DispalyName\n" f"{MAC},Zoë Müller,王伟\n")
    assert "<P3 para=\"Account1_DispalyName\">Zoë Müller</P3>".encode("utf-8") in data
    assert "<P703 para=\"Account2_DispalyName\">王伟</P703>".encode("utf-8") in data
    assert b"&#" not in data
    data.decode("utf-8")


def test_xml_special_characters_are_escaped(tmp_path):
    csv = 'mac,Account1_DispalyName,Account1_Label\n' f'{MAC},"A&B <sales> ""C""",x & y\n'
    data = render(tmp_path, f"cfg{MAC}.xml", csv=csv)
    assert b'<P3 para="Account1_DispalyName">A&amp;B &lt;sales&gt; "C"</P3>' in data
    assert b"x &amp; y" in data
    values = params_of(data)
    assert values["P3"] == 'A&B <sales> "C"' and values["P20000"] == "x & y"


def test_para_attribute_is_escaped():
    line = phonexml.element("P1", 'a"b&c<d>', "v")
    assert line == '        <P1 para="a&quot;b&amp;c&lt;d&gt;">v</P1>\n'
    assert phonexml.parse(phonexml.document([line]))[0].para == 'a"b&c<d>'


def test_comment_text_cannot_break_out_of_the_comment():
    assert "--" not in phonexml.comment("a--b").strip()[4:-3]


def test_settings_with_html_entities_are_read(tmp_path):
    common = settings_xml(("P3", "Account1_DispalyName", "Caf&eacute; &copy; &amp; more"))
    data = render(tmp_path, "cfg0012.xml", common=common)
    assert params_of(data)["P3"] == "Café © & more"


# -- layers ---------------------------------------------------------------------------------------


LAYERED = dict(
    csv="mac,model,group,Account1_Label,P36\n" f"{MAC},UC924,sales,row,row\n" "001fc1000002,UC926,,,\n",
    common=settings_xml(("P47", "c.example"), ("P30", "c.example"), ("P3", "common"), ("P20000", "common"), ("P36", "common")),
    models={"UC924": settings_xml(("P30", "m.example"), ("P3", "model"), ("P20000", "model"), ("P36", "model"))},
    groups={"sales": settings_xml(("P3", "group"), ("P20000", "group"), ("P36", "group"))},
    phones={MAC: settings_xml(("P36", "phone"))},
)


def test_phone_config_layers_later_wins(tmp_path):
    values = params_of(render(tmp_path, f"cfg{MAC}.xml", **LAYERED))
    assert {code: values[code] for code in ("P47", "P30", "P3", "P20000", "P36")} == {
        "P47": "c.example", "P30": "m.example", "P3": "group", "P20000": "row", "P36": "phone",
    }


def test_model_config_is_common_then_model_only(tmp_path):
    make_site(tmp_path, **LAYERED)
    resolver = resolver_for(tmp_path / "htekd.conf")
    values = params_of(resolver.resolve("cfg0012.xml", client()).content)
    assert {code: values[code] for code in ("P47", "P30", "P3", "P20000", "P36")} == {
        "P47": "c.example", "P30": "m.example", "P3": "model", "P20000": "model", "P36": "model",
    }
    other = params_of(resolver.resolve("cfg0010.xml", client()).content)  # UC926: no model file
    assert {code: other[code] for code in ("P47", "P30", "P3", "P20000", "P36")} == {
        "P47": "c.example", "P30": "c.example", "P3": "common", "P20000": "common", "P36": "common",
    }
    plain_phone = params_of(resolver.resolve("cfg001fc1000002.xml", client()).content)
    assert plain_phone["P3"] == "common"  # a row with empty cells leaves lower layers alone


# -- placeholders ----------------------------------------------------------------------------------


PLACEHOLDERS = dict(
    csv="mac,model,group,extension,Account1_SipUserId\n" f"{MAC},UC924,sales,1001,{{extension}}\n",
    common=settings_xml(
        ("P3", "{extension} at {mac}"),
        ("P20000", "{mac_colons}"),
        ("P36", "{model}/{devcode}/{firmware_file}"),
        ("P703", "{server_url} {server_host}"),
        ("P20001", "{config_url} {firmware_url} {protocol}"),
        ("P736", "{group}"),
        ("P4200", "{{[x*]+}} {{extension}}"),
        ("P1360", "literal {{mac}}"),
        ("P4201", "{xxxx|[x*]+}"),
        ("P24794", "{xxxx|[x*]+}"),
    ),
    groups={"sales": settings_xml()},
)


def test_placeholders_filled_in_the_phone_config(tmp_path):
    values = params_of(render(tmp_path, f"cfg{MAC}.xml", "tftp", **PLACEHOLDERS))
    assert values["P35"] == "1001"
    assert values["P3"] == "1001 at 001fc1000001"
    assert values["P20000"] == "00:1f:c1:00:00:01"
    assert values["P36"] == "UC924/0012/fw920M.rom"
    assert values["P703"] == "http://127.0.0.1:8080 127.0.0.1"
    assert values["P20001"] == "tftp://127.0.0.1:6969 tftp://127.0.0.1:6969 tftp"
    assert values["P736"] == "sales"
    assert values["P4200"] == "{[x*]+} {extension}"
    assert values["P1360"] == "literal {mac}"
    assert values["P4201"] == values["P24794"] == "{xxxx|[x*]+}"  # a dial plan's braces are the phone's


def test_phone_only_values_are_left_out_of_the_model_config(tmp_path):
    values = params_of(render(tmp_path, "cfg0012.xml", **PLACEHOLDERS))
    for code in ("P3", "P20000", "P736", "P35"):  # a row variable, {mac}, {mac_colons}, {group}
        assert code not in values
    assert values["P36"] == "UC924/0012/fw920M.rom"
    assert values["P20001"] == "http://127.0.0.1:8080 http://127.0.0.1:8080 http"
    assert values["P4200"] == "{[x*]+} {extension}"
    assert values["P1360"] == "literal {mac}"


# -- what htekd fills in -------------------------------------------------------------------------


@pytest.mark.parametrize("protocol,mode,url", [
    ("tftp", "0", "tftp://127.0.0.1:6969"),
    ("http", "1", "http://127.0.0.1:8080"),
    ("https", "3", "https://127.0.0.1"),
    ("ftp", None, "ftp://127.0.0.1:2121"),
])
@pytest.mark.parametrize("name", ["cfg0012.xml", f"cfg{MAC}.xml", "cfg001fc10000ff.xml"], ids=["model", "phone", "unknown"])
def test_server_paths_and_upgrade_mode_filled_per_protocol(tmp_path, protocol, mode, url, name):
    values = params_of(render(tmp_path, name, protocol, csv=f"mac,model\n{MAC},UC924\n", common=settings_xml(("P47", "a.example"))))
    assert values["P237"] == url and values["P192"] == url
    assert values.get("P212") == mode


def test_server_paths_carry_the_path_prefix(tmp_path):
    values = params_of(render(tmp_path, "cfg0012.xml", server_url="http://127.0.0.1:8080/htek"))
    assert values["P237"] == values["P192"] == "http://127.0.0.1:8080/htek"


@pytest.mark.parametrize("where", ["common", "models", "groups", "phones", "csv"])
def test_a_layer_setting_them_wins(tmp_path, where):
    chosen = settings_xml(("P212", ""), ("P237", "tftp://10.0.0.1"), ("P192", "http://fw.example.com/htek"))
    site = dict(csv=f"mac,model,group\n{MAC},UC924,sales\n")
    if where == "common":
        site["common"] = chosen
    elif where == "csv":
        site["csv"] = f"mac,model,group,P212,P237,P192\n{MAC},UC924,sales,2,tftp://10.0.0.1,http://fw.example.com/htek\n"
    else:
        site[where] = {{"models": "UC924", "groups": "sales", "phones": MAC}[where]: chosen}
    data = render(tmp_path, f"cfg{MAC}.xml", "tftp", **site)
    values = params_of(data)
    if where == "csv":
        assert (values["P212"], values["P237"]) == ("2", "tftp://10.0.0.1")
    else:
        assert (values["P212"], values["P237"]) == ("", "tftp://10.0.0.1")
        assert b'<P212 para="FirmwareUpGrade_UrgrateMode" />' in data
    assert values["P192"] == "http://fw.example.com/htek"


def test_factory_values_do_not_keep_htekd_from_filling_in(tmp_path):
    """A phone's own download as a layer: its factory P192, blank P237 and blank resource URLs."""
    cat = catalog()
    factory = settings_xml(*[(code, cat.get(code).name, cat.get(code).default)
                             for code in ("P212", "P237", "P192", "P20174", "P20175", "P20176", "P20177")])
    values = params_of(render(tmp_path, "cfg0012.xml", "tftp", common=factory,
                              files={"Language.tar": b"L", "ring4.bin": b"R"}))
    assert values["P237"] == values["P192"] == values["P20174"] == "tftp://127.0.0.1:6969"
    assert values["P20175"] == "tftp://127.0.0.1:6969/Language.tar"
    assert values["P212"] == "0"
    assert values["P20176"] == values["P20177"] == ""  # no file to point at: the factory value stays


def test_resource_urls_filled_for_files_present(tmp_path):
    files = {"Language.tar": b"L", "ring4.bin": b"R", "hlpres.tar": b"H"}
    values = params_of(render(tmp_path, "cfg0012.xml", server_url="http://127.0.0.1:8080/htek", files=files))
    assert values["P20175"] == "http://127.0.0.1:8080/htek/Language.tar"
    assert values["P20176"] == "http://127.0.0.1:8080/htek/hlpres.tar"
    assert values["P20174"] == "http://127.0.0.1:8080/htek"
    assert "P20177" not in values  # exp_pres.tar is absent


# -- the real configuration --------------------------------------------------------------------------


def raw_paras(data: bytes) -> dict[str, str]:
    """code -> the name in its attribute, whatever the attribute is called (the phone's file has one `papr=`)."""
    text = data.decode("utf-8")
    return dict(re.findall(r'<(P[0-9]+) [A-Za-z]+="([^"]*)"', text))


@pytest.mark.skipif(not REAL_CONFIG.is_file(), reason=f"the phone's real configuration is not at {REAL_CONFIG}")
def test_real_3582_parameter_configuration_round_trip(tmp_path):
    original = REAL_CONFIG.read_bytes()
    assert b"&copy;" in original and original.count(b"<P5008 ") == 2  # the quirks are there
    make_site(tmp_path, common=original, csv="mac,model\n001fc1000001,UC924\n")
    snapshot, problems = tree.load(tmp_path / "root")
    assert [str(p) for p in problems if p.severity == "error"] == []  # factory values pass every rule
    resolver = resolver_for(tmp_path / "htekd.conf")
    from htekd.catalog import catalog

    before = {s.key: s.value for s in phonexml.parse(original)}
    assert len(before) == 3582
    secrets = {code for code in before if catalog().is_secret(code)}
    assert secrets
    for name in ("cfg001fc1000001.xml", "cfg0012.xml", "cfg001fc10000ff.xml"):
        data = resolver.resolve(name, client("http")).content
        after_settings = phonexml.parse(data)
        after = {s.key: s.value for s in after_settings}
        # The download's factory server paths do not count as the administrator's: htekd fills them in.
        assert after["P237"] == after["P192"] == "http://127.0.0.1:8080"
        expected = {**before, "P237": after["P237"], "P192": after["P192"]}
        if name == "cfg001fc1000001.xml":  # a phone of the inventory gets every parameter, each once
            assert len(after_settings) == len(after) == 3582
            assert after == expected
        else:  # model files and unknown phones get everything but passwords and keys
            assert set(after) == set(before) - secrets
            assert after == {code: value for code, value in expected.items() if code not in secrets}
    assert after["P8685"].startswith("Copyright © ")

    data = resolver.resolve("cfg001fc1000001.xml", client("http")).content
    assert raw_paras(data) == raw_paras(original)
    original_comments = {line.strip() for line in original.decode("utf-8").splitlines() if line.strip().startswith("<!--")}
    rendered_comments = [line.strip() for line in data.decode("utf-8").splitlines() if line.strip().startswith("<!--")]
    assert len(rendered_comments) > 140
    assert all(c in {o.replace(" -->", "-->") for o in original_comments} for c in rendered_comments)
    assert b"\n        <P24749 para=\"Preference_VisualVoiceMail\">0</P24749>\n" in data
