"""Configurations from the world outside: other systems' templates, a phone's own download, and
secrets htekd has never heard of. Fixtures are written the way each peer writes (peer-facts.md)."""

from __future__ import annotations

import subprocess

import pytest
from lxml import etree

from contenttree import REAL_CONFIG, client, htekd, make_site, params_of, resolver_for, settings_xml
from htekd import tree
from htekd.catalog import catalog

MAC = "001fc1000001"
UNKNOWN_MAC = "001fc10000ff"
# Secrets the phone's download does not have (peer-facts.md), one the administrator marks, one
# code nobody knows whose name says it all.
PEER_SECRETS = {"P83": ("PPPoEPassword", "pppoe-Secret-83"),
                "P8524": ("BroadSoft1.PassWord", "broadsoft-Secret-8524"),
                "P8584": ("CallLog1.PassWord", "calllog-Secret-8584"),
                "P99001": ("Custom.Thing", "marked-Secret-99001"),
                "P99002": ("Vendor.ApiToken", "token-Secret-99002")}
SECRET_VALUES = [value for _, value in PEER_SECRETS.values()]
MARKED = "secret_parameters = P99001\n"  # a line of [htekd]


def peer_file(*elements: str) -> str:
    """A settings file as a peer's template renders it, flaws included; its first element is on line 4."""
    return ('<?xml version="1.0" encoding="UTF-8" ?>\n<hl_provision version="1">\n<config version="1">\n'
            + "".join(f"    {element}\n" for element in elements) + "</config>\n</hl_provision>\n")


# Wazo's base template: a bare & in the directory URL, and (old versions) line 1's codes reused.
WAZO = peer_file(
    '<P4401 para="RemotePhoneBook1_Url">http://10.0.0.2:9498/0.1/directories/lookup/default/htek?xivo_user_uuid=u1&term=</P4401>',
    '<P35 para="Account1_SipUserId">1001</P35>',
    '<P35 para="Account1_SipUserId">1002</P35>')
# FusionPBX's uc9xx templates: bare & in URLs and in a para name.
FPBX = peer_file(
    '<P4401 para="RemotePhoneBook1_Url">https://pbx.example.com/app/provision/?file=phonebook.xml&contacts=users</P4401>',
    '<P3316 para="RemotePhoneBook1_Name">Users & Groups</P3316>',
    '<P64 para="Setting.Date&Time.TimeZone">49</P64>')
# FusionPBX's uc924u/uc926u templates: elements keyed by name, dot names, peers' other names.
FPBX_U = peer_file(
    "<Profile1_Sipserver>pbx.example.com:5060</Profile1_Sipserver>",
    "<Profile1_FailoverSipserver />",
    "<Account1.SipUserId>1001</Account1.SipUserId>",
    "<IPLeaseTime>3600</IPLeaseTime>")
# fspbx numbers expansion-module keys from P60000 on: its Exp2 keys land on codes the phone lacks.
FSPBX = peer_file(
    '<P60200 para="Exp2_1_1_KeyType">3</P60200>',
    '<P61000 para="Exp6_1_1_KeyType">3</P61000>')


def secrets_layer() -> str:
    return settings_xml(("P47", "Profile1_Sipserver", "pbx.example.com"),
                        *[(code, para, value) for code, (para, value) in PEER_SECRETS.items()])


def strict_xml(data: bytes) -> etree._Element:
    return etree.fromstring(data, etree.XMLParser(resolve_entities=False))


# -- no secret out -------------------------------------------------------------------------------


def test_secrets_by_name_or_mark_stay_out_of_model_and_unknown_phone_files(tmp_path):
    conf = make_site(tmp_path, csv=f"mac,model\n{MAC},UC924\n", common=secrets_layer(), extra=MARKED)
    resolver = resolver_for(conf)
    assert resolver.snapshot.secrets >= set(PEER_SECRETS)
    for name in ("cfg0012.xml", f"cfg{UNKNOWN_MAC}.xml"):
        values = params_of(resolver.resolve(name, client("http")).content)
        assert values["P47"] == "pbx.example.com"
        assert not set(PEER_SECRETS) & values.keys(), name
    mine = params_of(resolver.resolve(f"cfg{MAC}.xml", client("http")).content)
    assert {code: mine[code] for code in PEER_SECRETS} == {code: value for code, (_, value) in PEER_SECRETS.items()}


@pytest.mark.parametrize("protocol", ["tftp", "ftp", "http", "https"])
def test_no_protocol_gives_a_stranger_a_secret_and_the_log_holds_none(daemon, site, protocol):
    (site / "root" / "settings" / "common.xml").write_text(secrets_layer(), encoding="utf-8")
    d = daemon({"htekd": {"secret_parameters": "P99001"}})
    for name in ("cfg0012.xml", f"cfg{UNKNOWN_MAC}.xml"):
        args = ["curl", "-sS", "--max-time", "30", d.url(protocol, name)]
        if protocol == "https":
            args[1:1] = ["--cacert", str(d.cacert)]
        fetched = subprocess.run(args, capture_output=True, timeout=60)
        assert fetched.returncode == 0, fetched.stderr
        assert b"pbx.example.com" in fetched.stdout
        assert not [secret for secret in SECRET_VALUES if secret.encode() in fetched.stdout], name
    d.wait_log(2)
    d.stop()
    seen = "\n".join(d.log_lines()) + d.stderr_text() + d.stdout_text()
    assert not [secret for secret in SECRET_VALUES if secret in seen]


def test_a_rejected_secret_is_never_quoted(tmp_path, daemon, site):
    make_site(tmp_path, common=settings_xml(("P8631", "FirmwareUpGrade_SetCommonAESKey", "zz-secret-key")))
    done = htekd("check", "-c", str(tmp_path / "htekd.conf"))
    assert done.returncode == 1
    assert "settings/common.xml:4: error: P8631: expected 1-16 hex digits, got a secret of 13 characters" in done.stdout.decode()
    assert "zz-secret-key" not in done.stdout.decode() + done.stderr

    d = daemon()
    common = site / "root" / "settings" / "common.xml"
    common.write_text(settings_xml(("P8631", "zz-secret-key")), encoding="utf-8")
    line = d.reload()
    assert line.startswith("htekd: reload failed") and "a secret of 13 characters" in line
    assert "zz-secret-key" not in d.stderr_text()


def test_secret_parameters_take_codes_and_names_and_refuse_what_is_no_parameter(tmp_path):
    from htekd import config

    conf = make_site(tmp_path, extra="secret_parameters = P99001, Account1_Label p4401\n")
    assert config.load(conf).server.secret_parameters == {"P99001", "P20000", "P4401"}
    conf.write_text(conf.read_text().replace("Account1_Label", "Acount1_Label"))
    with pytest.raises(config.ConfigError) as caught:
        config.load(conf)
    line = conf.read_text().splitlines().index("secret_parameters = P99001, Acount1_Label p4401") + 1
    assert str(caught.value) == (f"{conf}:{line}: error: [htekd] secret_parameters: unknown parameter 'Acount1_Label' "
                                 "(give P-codes or parameter names)")


# -- what peers write --------------------------------------------------------------------------------


@pytest.mark.parametrize("layer", [WAZO, FPBX, FPBX_U, FSPBX], ids=["wazo", "fpbx", "fpbx-u", "fspbx"])
def test_each_peer_template_loads_and_renders_well_formed_in_pcode_form(tmp_path, layer):
    conf = make_site(tmp_path, csv=f"mac,model\n{MAC},UC924\n", common=layer)
    _, problems = tree.load(tmp_path / "root")
    assert [str(p) for p in problems if p.severity == "error"] == []
    data = resolver_for(conf).resolve(f"cfg{MAC}.xml", client("http")).content
    root = strict_xml(data)  # well-formed: a bare & went out as &amp;
    assert all(element.tag.startswith("P") for element in root.iter() if element.tag not in ("hl_provision", "config")
               and isinstance(element.tag, str))
    values = params_of(data)
    if layer is WAZO:
        assert values["P4401"].endswith("?xivo_user_uuid=u1&term=") and values["P35"] == "1002"
        assert b"u1&amp;term=" in data
    elif layer is FPBX:
        assert values["P4401"].endswith("?file=phonebook.xml&contacts=users")
        assert values["P3316"] == "Users & Groups" and values["P64"] == "49"
    elif layer is FPBX_U:
        assert values["P47"] == "pbx.example.com:5060" and values["P967"] == "" and values["P35"] == "1001"
        assert b'<P112 para="IPLeaseTime">3600</P112>' in data  # a code the phone's download lacks, by its peer name
    else:
        assert values["P60200"] == values["P61000"] == "3"
        assert b'<P60200 para="Exp2_1_1_KeyType">3</P60200>' in data  # an unknown code keeps its para


def test_check_reports_what_templates_get_wrong_once_each(tmp_path):
    make_site(tmp_path, csv=f"mac,model\n{MAC},UC924\n", common=WAZO, models={"UC924": FPBX}, groups={"sales": FSPBX},
              phones={MAC: settings_xml(("P99003", "Thing", "a"), ("P99003", "Thing", "b"), ("P83", "", "x"))})
    done = htekd("check", "-c", str(tmp_path / "htekd.conf"))
    out = done.stdout.decode().splitlines()
    assert "settings/common.xml:4: warning: bare '&' kept as written (XML wants '&amp;')" in out
    assert ("settings/common.xml:6: warning: P35 is set twice in this file (first on line 5); the later value wins"
            in out)
    assert "settings/models/UC924.xml:4: warning: bare '&' kept as written (XML wants '&amp;')" in out
    assert "settings/models/UC924.xml:6: warning: bare '&' kept as written (XML wants '&amp;')" in out
    assert ("settings/groups/sales.xml:4: warning: P60200: para 'Exp2_1_1_KeyType' is the name of P61000, not of "
            "P60200; the phone keys on P60200") in out
    assert ("settings/groups/sales.xml:4: warning: P60200 (para 'Exp2_1_1_KeyType') is not in the parameter catalog: "
            "sent as is, not treated as a secret (add it to [htekd] secret_parameters if it holds a credential)") in out
    phone = [line for line in out if line.startswith(f"settings/phones/{MAC}.xml")]
    assert phone == [
        f"settings/phones/{MAC}.xml:4: warning: P99003 (para 'Thing') is not in the parameter catalog: sent as is, "
        "not treated as a secret (add it to [htekd] secret_parameters if it holds a credential)",
        f"settings/phones/{MAC}.xml:5: warning: P99003 is set twice in this file (first on line 4); the later value wins",
    ]


def test_an_unknown_element_name_is_an_error_with_the_closest_names(tmp_path):
    make_site(tmp_path, common=FPBX_U.replace("Profile1_Sipserver", "Profile1_SipServr"))
    done = htekd("check", "-c", str(tmp_path / "htekd.conf"))
    assert done.returncode == 1
    assert ("settings/common.xml:4: error: <Profile1_SipServr> is not a parameter name htekd knows "
            "(did you mean Profile1_Sipserver, Profile6_Sipserver, Profile5_Sipserver?)") in done.stdout.decode()


def test_peer_names_work_as_phones_csv_columns_and_placeholders_name_any_column(tmp_path):
    csv = f"mac,model,Account1.SipUserId,P3\n{MAC},UC924,1001,Alice\n"
    common = settings_xml(("P20200", "LineKey1_Value", "{Account1_SipUserId}"), ("P20201", "", "{P3} at {P35}"),
                          ("P4200", "Account1_DialPlan", "{xxxx|[x*]+}"))
    conf = make_site(tmp_path, csv=csv, common=common)
    _, problems = tree.load(tmp_path / "root")
    assert [str(p) for p in problems if p.severity == "error"] == []
    values = params_of(resolver_for(conf).resolve(f"cfg{MAC}.xml", client("http")).content)
    assert values["P35"] == "1001" and values["P20200"] == "1001" and values["P20201"] == "Alice at 1001"
    assert values["P4200"] == "{xxxx|[x*]+}"
    model = params_of(resolver_for(conf).resolve("cfg0012.xml", client("http")).content)
    assert "P20200" not in model  # no phone row: the parameter is left out, as for any placeholder


def test_a_plain_word_column_that_a_peer_uses_as_a_name_is_pointed_out(tmp_path):
    make_site(tmp_path, csv=f"mac,Type,IPLeaseTime\n{MAC},3,3600\n")
    snapshot, problems = tree.load(tmp_path / "root")
    assert [str(p) for p in problems if "column" in str(p)] == [
        "phones.csv:1: warning: column 'Type' sets P8725 (NW_Adv_Type), a name other systems use for it; "
        "prefix it with # if it is a note"]
    assert {code: value.value for code, value in snapshot.phones[MAC].values.items()} == {"P8725": "3", "P112": "3600"}


def test_catalog_knows_the_peers_codes_and_names_with_where_they_were_seen():
    cat = catalog()
    assert len(cat.peer_params) >= 160
    assert cat.lookup("Account1.SipUserId").code == "P35"
    assert cat.lookup("IpAddrFirst8Bit").code == "P9"
    param = cat.get("P83")
    assert (param.name, param.default_known, param.seen_in) == ("PPPoEPassword", False, "fpbx,fspbx")
    assert cat.is_secret("P83") and cat.is_secret("P8524") and cat.is_secret("P8584")
    assert not cat.is_secret("P82")


# -- a phone's own download --------------------------------------------------------------------------


@pytest.mark.skipif(not REAL_CONFIG.is_file(), reason=f"the phone's real configuration is not at {REAL_CONFIG}")
def test_a_phones_download_as_common_xml_gets_htekds_urls(tmp_path):
    conf = make_site(tmp_path, csv=f"mac,model\n{MAC},UC924\n", common=REAL_CONFIG.read_bytes(),
                     files={"Language.tar": b"L", "ring4.bin": b"R"})
    values = params_of(resolver_for(conf).resolve(f"cfg{MAC}.xml", client("tftp")).content)
    base = "tftp://127.0.0.1:6969"
    assert values["P237"] == values["P192"] == values["P20174"] == base
    assert values["P20175"] == f"{base}/Language.tar" and values["P212"] == "0"
    done = htekd("check", "-c", str(conf))
    assert "points away from this server" not in done.stdout.decode()


@pytest.mark.skipif(not REAL_CONFIG.is_file(), reason=f"the phone's real configuration is not at {REAL_CONFIG}")
def test_import_keeps_only_what_differs_from_the_factory(tmp_path):
    empty = tmp_path / "empty.xml"
    done = htekd("import", str(REAL_CONFIG), "--to", str(empty))
    assert done.returncode == 0, done.stderr
    assert params_of(empty.read_bytes()) == {}
    assert f"htekd import: 0 parameters -> {empty}" in done.stderr

    text = REAL_CONFIG.read_text(encoding="utf-8")
    for old, new in (('<P47 para="Profile1_Sipserver" />', '<P47 para="Profile1_Sipserver">pbx.example.com</P47>'),
                     ('<P64 para="Preference_TimeZone">18</P64>', '<P64 para="Preference_TimeZone">49</P64>'),
                     ('<P3 para="Account1_DispalyName" />', '<P3 para="Account1_DispalyName">Zoë &amp; Co</P3>'),
                     ('<P34 para="Account1_AuthenticatePassword" />',
                      '<P34 para="Account1_AuthenticatePassword">s3cret</P34>')):
        assert old in text
        text = text.replace(old, new)
    changed = tmp_path / "changed.xml"
    changed.write_text(text, encoding="utf-8")
    layer = tmp_path / "root" / "settings" / "models" / "UC924.xml"
    layer.parent.mkdir(parents=True)
    done = htekd("import", str(changed), "--to", str(layer))
    assert done.returncode == 0, done.stderr
    assert params_of(layer.read_bytes()) == {"P47": "pbx.example.com", "P64": "49", "P3": "Zoë & Co"}
    assert "left out: 3578 at their factory default, 1 secret (--include-secrets keeps them)" in done.stderr
    assert [line.strip()[:4] for line in layer.read_text().splitlines() if line.strip().startswith("<P")] == \
        ["<P47", "<P3 ", "<P64"]  # the phone's order

    refused = htekd("import", str(changed), "--to", str(layer), "--include-secrets")
    assert refused.returncode == 1 and refused.stderr == f"htekd import: {layer} exists (--force replaces it)\n"
    forced = htekd("import", str(changed), "--to", str(layer), "--include-secrets", "--force")
    assert forced.returncode == 0 and params_of(layer.read_bytes())["P34"] == "s3cret"


def test_import_writes_a_name_keyed_template_in_pcode_form(tmp_path):
    source = tmp_path / "uc924u.xml"
    source.write_text(FPBX_U, encoding="utf-8")
    done = htekd("import", str(source))
    assert done.returncode == 0, done.stderr
    strict_xml(done.stdout)
    assert params_of(done.stdout) == {"P47": "pbx.example.com:5060", "P35": "1001", "P112": "3600"}
    source.write_text(FPBX_U.replace("<Profile1_FailoverSipserver />", "<Profile1_FailoverSipserver>"), encoding="utf-8")
    broken = htekd("import", str(source))
    assert broken.returncode == 1 and broken.stderr.startswith(f"htekd import: {source}:")
    assert "error: malformed XML" in broken.stderr


# -- edges a review found ---------------------------------------------------------------------------


def test_a_factory_value_in_a_later_layer_does_not_undo_an_earlier_choice(tmp_path):
    factory = settings_xml(("P192", catalog().get("P192").default), ("P212", "1"))
    conf = make_site(tmp_path, csv=f"mac,model\n{MAC},UC924\n", phones={MAC: factory},
                     common=settings_xml(("P192", "http://fw.example.com/htek"), ("P237", "http://10.0.0.9/cfg")))
    values = params_of(resolver_for(conf).resolve(f"cfg{MAC}.xml", client("tftp")).content)
    assert values["P192"] == "http://fw.example.com/htek"
    assert (values["P237"], values["P212"]) == ("http://10.0.0.9/cfg", "1")  # moved to HTTP, as the layers say


def test_secrets_hidden_behind_a_separator_an_entity_or_a_placeholder_stay_hidden(tmp_path):
    common = settings_xml(("P99003", "Config AES Key", "0123abcd"), ("P99004", "Account1.AES.Key", "4567"),
                          ("P64", "Preference_TimeZone", "{Account1_AuthenticatePassword}"),
                          ("P34", "Account1_AuthenticatePassword", "hunter&pw99;two"),
                          ("P20175", "FirmwareUpGrade_LanguageUrl", "http://admin:LoginSecret@10.0.0.9/Language.tar"))
    conf = make_site(tmp_path, csv=f"mac,model,P34\n{MAC},UC924,pw-secret-1\n", common=common,
                     models={"UC924": settings_xml(("P99005", "Http.Password", "x"))}, files={"Language.tar": b"L"})
    done = htekd("check", "-c", str(conf))
    out = done.stdout.decode()
    for secret in ("pw-secret-1", "pw99", "LoginSecret", "0123abcd"):
        assert secret not in out + done.stderr
    assert "phones.csv:2: error: P64 for cfg001fc1000001.xml: expected an integer, got a secret of 11 characters" in out
    assert "settings/common.xml:7: warning: undefined entity kept as written (XML wants '&amp;' for a literal '&')" in out
    assert "'http://***@10.0.0.9/Language.tar'" in out
    assert ("settings/common.xml:4: warning: P99003 (para 'Config AES Key') is not in the parameter catalog: sent as is, "
            "treated as a secret: its name 'Config AES Key' says so") in out
    assert "P99005 (para 'Http.Password')" in out
    model = params_of(resolver_for(conf).resolve("cfg0012.xml", client("http")).content)
    assert not {"P99003", "P99004", "P99005", "P34"} & model.keys()


def test_the_reason_for_an_unknown_code_holds_for_the_whole_tree(tmp_path):
    make_site(tmp_path, common=settings_xml(("P99005", "", "a")),
              models={"UC924": settings_xml(("P99005", "Http.Password", "b"))})
    snapshot, problems = tree.load(tmp_path / "root")
    assert "P99005" in snapshot.secrets
    assert ("settings/common.xml:4: warning: P99005 is not in the parameter catalog: sent as is, treated as a secret: "
            "its name 'Http.Password' in settings/models/UC924.xml says so") in [str(p) for p in problems]
    assert snapshot.common.values["P99005"].para == ""  # the common layer came first and had no name
