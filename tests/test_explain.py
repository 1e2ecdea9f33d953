"""`htekd explain`: each value a phone gets and where it comes from, as the administrator reads it."""

from __future__ import annotations

import json

from contenttree import htekd, make_site, params_of, resolver_for, settings_xml
from htekd.explain import FACTORY_DEFAULT, FILLED_IN, MASK, explain_target

MAC = "001fc1000001"
CSV = ("mac,model,group,P35,Account1_AuthenticatePassword,extension\n"
       "001fc1000009,UC926,,1009,other-pw,1009\n"
       f"{MAC},UC924,sales,1001,s3cret-1001,1001\n")


def site(tmp_path, **extra):
    return make_site(
        tmp_path,
        csv=CSV,
        common=settings_xml(("P47", "pbx.example.com:5060"), ("P36", "{extension}"), ("P30", "pool.ntp.org")),
        models={"UC924": settings_xml(("P30", "ntp.model.example"))},
        groups={"sales": settings_xml(("P47", "sales.example.com:5060"), ("P20000", "Sales {extension}"))},
        phones={MAC: settings_xml(("P30", "ntp.phone.example"))},
        **extra,
    )


def explained(conf, target, *args) -> dict:
    done = htekd("explain", "-c", str(conf), target, *args, "--json")
    assert done.returncode == 0, done.stderr
    return {row["code"]: row for row in json.loads(done.stdout)}


def test_every_value_names_the_layer_and_line_it_comes_from(tmp_path):
    conf = site(tmp_path)
    rows = explained(conf, "00:1F:C1:00:00:01")
    assert rows["P47"]["value"] == "sales.example.com:5060"
    assert rows["P47"]["source"] == "settings/groups/sales.xml:4"
    assert rows["P30"]["source"] == f"settings/phones/{MAC}.xml:4"
    assert rows["P35"]["source"] == "phones.csv:3 column P35"
    assert (rows["P36"]["value"], rows["P36"]["written"]) == ("1001", "{extension}")
    assert rows["P20000"]["value"] == "Sales 1001"
    assert rows["P237"]["source"] == FILLED_IN
    assert rows["P212"] == {**rows["P212"], "value": "1", "source": FILLED_IN}


def test_explanation_lists_exactly_what_the_phone_gets(tmp_path):
    conf = site(tmp_path)
    resolver = resolver_for(conf)
    for target in (MAC, "001fc1000009", "0012", "001fc10000ff"):
        rendered = params_of(resolver.render_target(target, "tftp", plain=True).content)
        lines = explain_target(resolver, target, protocol="tftp", show_secrets=True).lines
        assert {line.code: line.value for line in lines} == rendered, target
        assert resolver.settings_for(target, "tftp") == rendered, target  # what firmware offers are worked out from


def test_no_settings_for_a_phone_served_a_hand_made_file_or_refused(tmp_path):
    conf = site(tmp_path, files={f"cfg{MAC}.xml": b"<hand-made/>"}, unknown_phones="deny")
    resolver = resolver_for(conf)
    assert resolver.settings_for(MAC) is None and resolver.settings_for("001fc10000ff") is None
    assert resolver.settings_for("001fc1000009")["P35"] == "1009"


def test_secrets_are_masked_unless_asked(tmp_path):
    conf = site(tmp_path)
    rows = explained(conf, MAC)
    assert rows["P34"] == {**rows["P34"], "value": MASK, "secret": True, "source": "phones.csv:3 column Account1_AuthenticatePassword"}
    done = htekd("explain", "-c", str(conf), MAC)
    assert "s3cret" not in done.stdout.decode()
    assert explained(conf, MAC, "--show-secrets")["P34"]["value"] == "s3cret-1001"


def test_named_parameters_not_sent_show_the_factory_default_and_left_out_placeholders(tmp_path):
    conf = site(tmp_path)
    rows = explained(conf, "0012", "P36", "Profile1_Sipserver", "p30")
    assert list(rows) == ["P47", "P36", "P30"]  # in the phone's own order
    assert rows["P47"]["value"] == "pbx.example.com:5060"
    assert rows["P36"]["sent"] is False
    assert "left out: {extension} has no value in this file" in rows["P36"]["source"]
    assert rows["P30"]["source"] == "settings/models/UC924.xml:4"
    not_set = explained(conf, MAC, "P3")["P3"]
    assert (not_set["sent"], not_set["source"]) == (False, FACTORY_DEFAULT)


def test_text_output_is_one_line_per_parameter(tmp_path):
    conf = site(tmp_path)
    done = htekd("explain", "-c", str(conf), MAC, "P47", "P36")
    assert done.returncode == 0, done.stderr
    lines = done.stdout.decode().splitlines()
    assert lines[0].split() == ["CODE", "NAME", "VALUE", "FROM"]
    assert lines[1].split() == ["P47", "Profile1_Sipserver", '"sales.example.com:5060"', "settings/groups/sales.xml:4"]
    assert lines[2].split()[:4] == ["P36", "Account1_AuthenticateID", '"1001"', "settings/common.xml:5"]


def test_bad_targets_and_names_are_one_line_errors(tmp_path):
    conf = site(tmp_path)
    for args, words in ((["foo"], "neither a MAC nor a device code"), ([MAC, "NoSuchName"], "unknown parameter")):
        done = htekd("explain", "-c", str(conf), *args)
        assert done.returncode == 1 and done.stdout == b""
        assert len(done.stderr.splitlines()) == 1 and words in done.stderr, done.stderr


def test_a_hand_made_file_or_a_refused_phone_is_pointed_out(tmp_path):
    conf = site(tmp_path, files={f"cfg{MAC}.xml": b"<hand-made/>"}, unknown_phones="deny")
    assert "served as it is" in htekd("explain", "-c", str(conf), MAC).stderr
    assert "unknown phone" in htekd("explain", "-c", str(conf), "001fc10000ff").stderr
