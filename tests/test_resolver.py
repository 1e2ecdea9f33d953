"""The resolver's policy: what each requested name resolves to, for which phone, from which snapshot."""

from __future__ import annotations

import io
import os
import threading
import time

import pytest

from contenttree import client, load_config, make_site, params_of, resolver_for, settings_xml
from htekd.resolution import Kind, Status
from htekd.resolver import Resolver, parse_user_agent
from htekd.tree import TreeError

MAC = "001fc1000001"
UNKNOWN = "001fc10000ff"
FIRMWARE = bytes(range(256)) * 4096  # 1 MiB
SITE = dict(
    csv=("mac,model,group,Account1_SipUserId,Account1_AuthenticatePassword,Account1_DispalyName\n"
         f"{MAC},UC924,,1001,row-secret-1001,Zoë Müller\n"
         "001fc1000002,UC926,,1002,row-secret-1002,王伟\n"),
    common=settings_xml(("P47", "pbx.example.com:5060"), ("P1361", "FirmwareUpGrade_ServerPassWord", "common-secret"),
                        ("P36", "{mac}")),
    models={"UC924": settings_xml(("P30", "ntp.uc924.example"))},
    files={"fw920M.rom": FIRMWARE, "ring4.bin": b"ring", "README.txt": b"readme\n", "sub/dir/notes.txt": b"notes\n",
           "factory0001.bin": b"factory", "sub/factory0002.bin": b"factory"},
)


@pytest.fixture
def site(tmp_path):
    return make_site(tmp_path, **SITE)


@pytest.fixture
def resolver(site):
    return resolver_for(site)


def test_names_with_and_without_leading_slash_and_path_prefix(tmp_path):
    resolver = resolver_for(make_site(tmp_path, server_url="http://127.0.0.1:8080/htek", **SITE))
    contents = set()
    for name in ("cfg0012.xml", "/cfg0012.xml", "htek/cfg0012.xml", "/htek/cfg0012.xml", "//htek//cfg0012.xml", "./htek/./cfg0012.xml"):
        resolution = resolver.resolve(name, client())
        assert resolution.ok and resolution.kind is Kind.MODEL_CONFIG, name
        assert resolution.path == "cfg0012.xml" and resolution.name == name
        contents.add(resolution.content)
    assert len(contents) == 1
    for name in ("fw920M.rom", "/htek/fw920M.rom", "htek/sub/dir/notes.txt", "sub/dir/notes.txt"):
        assert resolver.resolve(name, client()).ok, name
    assert not resolver.resolve("other/cfg0012.xml", client()).ok
    assert not resolver.resolve("htek", client()).ok


def test_uppercase_mac_is_accepted_and_normalised(resolver):
    lower = resolver.resolve(f"cfg{MAC}.xml", client())
    for name in ("cfg001FC1000001.xml", "CFG001FC1000001.XML", "/cfg001Fc1000001.xml"):
        upper = resolver.resolve(name, client())
        assert upper.ok and upper.kind is Kind.PHONE_CONFIG
        assert upper.mac == MAC and upper.content == lower.content


def test_model_config(resolver):
    resolution = resolver.resolve("cfg0012.xml", client())
    assert (resolution.kind, resolution.status, resolution.devcode, resolution.model) == (Kind.MODEL_CONFIG, Status.OK, "0012", "UC924")
    assert resolution.size == len(resolution.content) and resolution.etag
    values = params_of(resolution.content)
    assert values["P30"] == "ntp.uc924.example" and "P36" not in values


def test_phone_config(resolver):
    resolution = resolver.resolve(f"cfg{MAC}.xml", client())
    assert (resolution.kind, resolution.status, resolution.mac, resolution.model) == (Kind.PHONE_CONFIG, Status.OK, MAC, "UC924")
    values = params_of(resolution.content)
    assert values["P34"] == "row-secret-1001" and values["P1361"] == "common-secret" and values["P36"] == MAC
    assert resolution.open().read() == resolution.content


def test_unknown_phone_default_policy_gets_common_and_model_without_secrets(resolver):
    agent = "Htek UC924 2.0.4.2 00:1f:c1:00:00:ff"
    resolution = resolver.resolve(f"cfg{UNKNOWN}.xml", client(user_agent=agent))
    assert (resolution.kind, resolution.status, resolution.mac, resolution.model) == (Kind.UNKNOWN_PHONE, Status.OK, UNKNOWN, "UC924")
    assert "unknown" in resolution.reason
    values = params_of(resolution.content)
    assert values["P47"] == "pbx.example.com:5060" and values["P30"] == "ntp.uc924.example" and values["P36"] == UNKNOWN
    assert "P1361" not in values  # a password from common.xml
    assert not {"P34", "P35", "P3"} & values.keys()  # nothing from any row
    assert b"secret" not in resolution.content


def test_unknown_phone_deny_policy(tmp_path):
    resolver = resolver_for(make_site(tmp_path, unknown_phones="deny", **SITE))
    resolution = resolver.resolve(f"cfg{UNKNOWN}.xml", client())
    assert (resolution.kind, resolution.status, resolution.mac) == (Kind.UNKNOWN_PHONE, Status.DENIED, UNKNOWN)
    assert resolution.content is None and resolution.reason
    assert resolver.resolve(f"cfg{MAC}.xml", client()).ok  # known phones still served


def test_private_cfg_mac_is_never_served(resolver):
    for name in (f"cfg{MAC}", f"cfg{UNKNOWN}", "CFG001FC1000001"):
        resolution = resolver.resolve(name, client())
        assert (resolution.kind, resolution.status) == (Kind.PRIVATE, Status.NOT_FOUND)
        assert resolution.mac == name[3:].lower()


def test_files_are_served_with_their_kind(resolver, site):
    cases = {"fw920M.rom": Kind.FIRMWARE, "ring4.bin": Kind.RESOURCE, "README.txt": Kind.STATIC, "sub/dir/notes.txt": Kind.STATIC}
    for name, kind in cases.items():
        resolution = resolver.resolve(name, client())
        assert (resolution.kind, resolution.status) == (kind, Status.OK), name
        assert resolution.size == (site.parent / "root" / "files" / name).stat().st_size
        with resolution.open() as reader:
            assert reader.read() == (site.parent / "root" / "files" / name).read_bytes()


def test_static_files_are_streamed_from_an_open_file(resolver):
    resolution = resolver.resolve("fw920M.rom", client())
    assert resolution.content is None  # never read into memory
    assert resolution.size == len(FIRMWARE)
    with resolution.open() as first, resolution.open() as second:
        assert isinstance(first, io.BufferedReader) and os.fstat(first.fileno()).st_size == len(FIRMWARE)
        assert first.read(1000) == FIRMWARE[:1000]
        assert second.read(10) == FIRMWARE[:10]  # each open() is a fresh reader
        assert first.read() == FIRMWARE[1000:]


def test_missing_names_are_not_found(resolver):
    for name in ("fw999M.rom", "nothing.txt", "sub/dir/none", "", "/", "sub"):
        resolution = resolver.resolve(name, client())
        assert resolution.status is Status.NOT_FOUND, name
    assert resolver.resolve("fw999M.rom", client()).kind is Kind.FIRMWARE


def test_files_win_over_generation(tmp_path):
    files = {**SITE["files"], f"cfg{MAC}.xml": b"<hand-made phone/>", "cfg0012.xml": b"<hand-made model/>"}
    resolver = resolver_for(make_site(tmp_path, **{**SITE, "files": files}))
    for name, body in ((f"cfg{MAC}.xml", b"<hand-made phone/>"), ("cfg001FC1000001.xml", b"<hand-made phone/>"),
                       ("cfg0012.xml", b"<hand-made model/>")):
        resolution = resolver.resolve(name, client())
        assert resolution.ok and resolution.kind is Kind.STATIC and resolution.content is None
        with resolution.open() as reader:
            assert reader.read() == body
    assert resolver.resolve(f"cfg{MAC}.xml", client()).mac == MAC


@pytest.mark.parametrize("name", ["factory0001.bin", "/factory0001.bin", "FACTORY0001.BIN", "sub/factory0002.bin",
                                  "factory0003.bin", "factory.bin", "factory0001.bin/"])
def test_factory_files_never(tmp_path, name):
    resolver = resolver_for(make_site(tmp_path, server_url="http://127.0.0.1:8080/htek", **SITE))
    for spelling in (name, f"htek/{name}"):
        resolution = resolver.resolve(spelling, client())
        assert not resolution.ok and resolution.content is None and resolution.file is None


def test_inventory_and_settings_never_served(resolver):
    for name in ("phones.csv", "/phones.csv", "settings/common.xml", "settings/models/UC924.xml", "settings",
                 "../phones.csv", "files/../phones.csv", "../settings/common.xml", "root/phones.csv"):
        resolution = resolver.resolve(name, client())
        assert not resolution.ok, name
        assert resolution.content is None and resolution.file is None


def test_user_agent_facts_on_the_resolution(resolver):
    resolution = resolver.resolve("cfg0012.xml", client(user_agent="Htek UC924 2.0.4.2 00:1f:c1:1c:22:a9"))
    assert (resolution.model, resolution.firmware, resolution.mac) == ("UC924", "2.0.4.2", "001fc11c22a9")
    firmware = resolver.resolve("fw920M.rom", client(user_agent="Htek UC926 2.0.4.6.33 001FC11C22AA"))
    assert (firmware.model, firmware.firmware, firmware.mac) == ("UC926", "2.0.4.6.33", "001fc11c22aa")
    assert parse_user_agent("Htek UC924 2.0.4.2") == parse_user_agent("Htek UC924 2.0.4.2 ")
    assert parse_user_agent("Htek UC924 2.0.4.2").mac is None
    assert parse_user_agent("Mozilla/5.0").model is None and parse_user_agent("").firmware is None


def test_devcode_not_in_the_table_is_answered_from_common(resolver):
    resolution = resolver.resolve("cfg0099.xml", client(user_agent="Htek UC924U 2.0.4.2 00:1f:c1:1c:22:a9"))
    assert (resolution.kind, resolution.status, resolution.devcode) == (Kind.MODEL_CONFIG, Status.OK, "0099")
    assert resolution.model == "UC924U"  # what a learner pairs with the code
    values = params_of(resolution.content)
    assert values["P47"] == "pbx.example.com:5060" and "P30" not in values  # no model layer
    plain = resolver.resolve("cfg0099.xml", client())
    assert plain.ok and plain.devcode == "0099" and plain.model is None


def test_rendered_configs_are_cached_per_snapshot(resolver, site):
    for name in ("cfg0012.xml", f"cfg{MAC}.xml"):
        first = resolver.resolve(name, client())
        assert resolver.resolve(name, client()).content is first.content
        assert resolver.resolve(name, client("tftp")).content != first.content  # URLs differ per protocol


def test_reload_swaps_snapshot_and_earlier_resolutions_keep_their_content(resolver, site):
    before = resolver.resolve(f"cfg{MAC}.xml", client())
    common = site.parent / "root" / "settings" / "common.xml"
    common.write_text(settings_xml(("P47", "new-pbx.example.com:5060")), encoding="utf-8")
    resolver.reload(load_config(site))
    after = resolver.resolve(f"cfg{MAC}.xml", client())
    assert params_of(after.content)["P47"] == "new-pbx.example.com:5060"
    assert params_of(before.content)["P47"] == "pbx.example.com:5060"
    assert after.content is not before.content


def test_broken_tree_on_reload_keeps_the_old_snapshot(resolver, site):
    before = resolver.resolve(f"cfg{MAC}.xml", client()).content
    snapshot = resolver.snapshot
    (site.parent / "root" / "phones.csv").write_text("mac\nnot-a-mac\n", encoding="utf-8")
    with pytest.raises(TreeError) as caught:
        resolver.reload(load_config(site))
    assert str(caught.value).startswith("phones.csv:2: error: bad MAC")
    assert resolver.snapshot is snapshot
    assert resolver.resolve(f"cfg{MAC}.xml", client()).content is before


def test_from_config_refuses_a_broken_tree(tmp_path):
    with pytest.raises(TreeError):
        resolver_for(make_site(tmp_path, csv="mac\n001fc1000001\n001fc1000001\n"))


def test_resolving_during_reloads_from_many_threads(resolver, site):
    config = load_config(site)
    failures: list[BaseException] = []
    old = resolver.resolve(f"cfg{MAC}.xml", client()).content

    stop = threading.Event()
    during_reloads = [0] * 6

    def worker(index: int) -> None:
        try:
            for _ in range(100_000):  # until the reloads are over
                resolution = resolver.resolve(f"cfg{MAC}.xml", client())
                assert resolution.ok and resolution.content.endswith(b"</hl_provision>\n")
                if stop.is_set():
                    break
                during_reloads[index] += 1
        except BaseException as exc:  # reported below
            failures.append(exc)

    threads = [threading.Thread(target=worker, args=(index,)) for index in range(6)]
    for thread in threads:
        thread.start()
    reloads, deadline = 0, time.monotonic() + 20
    while (reloads < 5 or not all(during_reloads)) and time.monotonic() < deadline:  # every worker has overlapped
        resolver.reload(config)
        reloads += 1
    stop.set()
    for thread in threads:
        thread.join(30)
    assert not [thread for thread in threads if thread.is_alive()]
    assert failures == []
    assert all(during_reloads), during_reloads
    assert resolver.resolve(f"cfg{MAC}.xml", client()).content == old


def test_listdir(tmp_path, site, resolver):
    files = site.parent / "root" / "files"
    (files / ".hidden").write_bytes(b"x")
    names = {entry.name: entry for entry in resolver.listdir("")}
    assert set(names) == {"fw920M.rom", "ring4.bin", "README.txt", "sub"}
    assert names["sub"].is_dir and names["fw920M.rom"].size == len(FIRMWARE) and not names["fw920M.rom"].is_dir
    assert resolver.listdir("/") == resolver.listdir("")
    assert [e.name for e in resolver.listdir("sub")] == ["dir"]  # factory0002.bin is not listed
    assert [e.name for e in resolver.listdir("/sub/dir/")] == ["notes.txt"]
    assert resolver.listdir("README.txt") is None
    assert resolver.listdir("missing") is None
    assert resolver.listdir("..") is None


def test_listdir_under_the_path_prefix(tmp_path):
    resolver = resolver_for(make_site(tmp_path, server_url="http://127.0.0.1:8080/htek", **SITE))
    assert resolver.listdir("htek") == resolver.listdir("") == resolver.listdir("/htek/")


def test_render_target_is_what_a_phone_gets(resolver):
    for target, name in ((MAC, f"cfg{MAC}.xml"), ("00:1F:C1:00:00:01", f"cfg{MAC}.xml"), ("0012", "cfg0012.xml")):
        assert resolver.render_target(target).content == resolver.resolve(name, client()).content
    assert isinstance(resolver, Resolver)


def test_a_device_code_shared_by_several_models(tmp_path):
    site = dict(common=settings_xml(("P47", "pbx.example.com")),
                models={"UC912G": settings_xml(("P30", "ntp.912g.example")), "UC912E": settings_xml(("P30", "ntp.912e.example"))})
    resolver = resolver_for(make_site(tmp_path, **site))
    by_agent = resolver.resolve("cfg0019.xml", client(user_agent="Htek UC912G 2.0.4.2 00:1f:c1:00:00:09"))
    assert by_agent.model == "UC912G" and params_of(by_agent.content)["P30"] == "ntp.912g.example"
    other = resolver.resolve("cfg0019.xml", client(user_agent="Htek UC912E 2.0.4.2 00:1f:c1:00:00:0a"))
    assert params_of(other.content)["P30"] == "ntp.912e.example"
    unsure = resolver.resolve("cfg0019.xml", client())  # two model files could apply: neither is guessed
    assert unsure.ok and "P30" not in params_of(unsure.content)
