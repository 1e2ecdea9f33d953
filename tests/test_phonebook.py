"""The company phonebook: generated from phones.csv and settings/contacts.csv, fetched as phones fetch it."""

from __future__ import annotations

import random
import subprocess
import sys
import unicodedata
from pathlib import Path

from lxml import etree

from contenttree import htekd, make_site, params_of, write

PHONES = """\
mac,model,group,timezone,phonebook,Account1_SipUserId,Account1_AuthenticatePassword,Account1_DispalyName,mobile,extension
00:1f:c1:00:00:01,UC924,sales,Europe/Berlin,,1001,s3cret-1001,Zoë Müller,+49 170 1111,1001
001FC1000002,UC926,sales,,yes,1002,s3cret-1002,王伟,,1002
00-1F-C1-00-00-03,UC912G,support,America/New_York,no,1003,s3cret-1003,"Smith, John",,1003
00:1f:c1:00:00:04,UC924,support,,,1004,s3cret-1004,Émile <Dupont> & Co,,1004
00:1f:c1:00:00:05,UC924,,,,,,Nobody Without A Number,,
00:1f:c1:00:00:06,UC924,,,,1006,s3cret-1006,No Group,,1006
"""
CONTACTS = """\
name,number,number2,group,#note
Pizza Roma,+49 30 123456,+49 30 654321,,lunch
Sales hotline,800,,sales,
"""
KEYS = """\
applies_to,key,type,value,label,account
group:sales,5,blf,1002,Wang,1
"""
BOOK = {"numbers": "Account1_SipUserId mobile"}  # the mobile column as a second number
FETCHES = {"tftp": (), "ftp": (), "ftp-active": ("-P", "-"), "http": (), "https": ()}


def administrators_tree(root: Path) -> None:
    write(root / "phones.csv", PHONES)
    write(root / "settings" / "contacts.csv", CONTACTS)
    write(root / "settings" / "keys.csv", KEYS)


def curl(d, mode: str, name: str, *options: str) -> subprocess.CompletedProcess:
    protocol = mode.split("-")[0]
    args = ["curl", "-sS", "--max-time", "30", *FETCHES[mode], *options, d.url(protocol, name)]
    if protocol == "https":
        args[1:1] = ["--cacert", str(d.cacert)]
    return subprocess.run(args, capture_output=True, timeout=60)


def fetch(d, mode: str, name: str) -> bytes:
    done = curl(d, mode, name)
    assert done.returncode == 0, (mode, name, done.stderr)
    return done.stdout


def book(data: bytes) -> list[tuple[str, list[str]]]:
    root = etree.fromstring(data)
    assert root.tag == "PhoneDirectory"
    return [(entry.findtext("Name"), [t.text for t in entry.findall("Telephone")]) for entry in root]


def test_phonebook_and_phone_files_over_every_protocol(daemon, site):
    administrators_tree(site / "root")
    d = daemon({"phonebook": BOOK})
    check = htekd("check", "-c", str(d.config_path))
    assert check.returncode == 0, check.stdout + check.stderr.encode()
    books = {mode: fetch(d, mode, "phonebook.xml") for mode in FETCHES}
    assert len(set(books.values())) == 1  # byte-identical over TFTP, FTP (both modes), HTTP, HTTPS
    rendered = htekd("render", "-c", str(d.config_path), "phonebook.xml").stdout
    assert books["http"] == rendered
    assert book(books["tftp"]) == [
        ("Émile <Dupont> & Co", ["1004"]),
        ("No Group", ["1006"]),
        ("Pizza Roma", ["+49 30 123456", "+49 30 654321"]),
        ("Sales hotline", ["800"]),
        ("Zoë Müller", ["1001", "+49 170 1111"]),
        ("王伟", ["1002"]),
    ]
    lines = d.wait_log(len(FETCHES))
    assert all('phonebook.xml" phonebook ok ' in line for line in lines), lines
    assert all(f"bytes={len(rendered)} " in line for line in lines)

    http_url = d.url("http").rstrip("/")
    for mode in FETCHES:
        phone = params_of(fetch(d, mode, "cfg001fc1000001.xml"))
        assert phone["P4401"] == f"{http_url}/phonebook.xml"  # fetched over HTTP whatever the upgrade mode
        assert phone["P3316"] == "Company"
        assert phone["P64"] == "49"
        assert (phone["P20200"], phone["P20201"], phone["P20202"]) == ("3", "1002", "Wang")
    assert params_of(fetch(d, "http", "cfg001fc1000003.xml"))["P64"] == "18"
    model = params_of(fetch(d, "http", "cfg0012.xml"))
    assert "P4401" not in model  # the directory is for the phones of the inventory


def test_per_group_books_on_request(daemon, site):
    administrators_tree(site / "root")
    d = daemon({"phonebook": {**BOOK, "per_group": "yes", "title": "Büro"}})
    sales = fetch(d, "tftp", "phonebook-sales.xml")
    assert sales == fetch(d, "http", "phonebook-sales.xml")
    assert book(sales) == [("Pizza Roma", ["+49 30 123456", "+49 30 654321"]), ("Sales hotline", ["800"]),
                           ("Zoë Müller", ["1001", "+49 170 1111"]), ("王伟", ["1002"])]
    assert [name for name, _ in book(fetch(d, "ftp", "phonebook-support.xml"))] == ["Émile <Dupont> & Co", "Pizza Roma"]
    assert len(book(fetch(d, "http", "phonebook.xml"))) == 6  # with the phone that has no group
    missing = curl(d, "http", "phonebook-nosuchgroup.xml", "-o", "/dev/null", "-w", "%{http_code}")
    assert missing.stdout == b"404"
    phone = params_of(fetch(d, "http", "cfg001fc1000004.xml"))
    assert phone["P4401"].endswith("/phonebook-support.xml") and phone["P3316"] == "Büro"


def test_the_login_goes_into_the_url_when_http_requires_one(daemon, site):
    administrators_tree(site / "root")
    d = daemon({"phonebook": BOOK, "http": {"user": "provision", "password": "pa:ss@w/rd"}})
    denied = curl(d, "http", "phonebook.xml", "-o", "/dev/null", "-w", "%{http_code}")
    assert denied.stdout == b"401"
    phone = params_of(fetch(d, "tftp", "cfg001fc1000001.xml"))
    url = phone["P4401"]
    assert url == f"http://provision:pa%3Ass%40w%2Frd@127.0.0.1:{d.ports['http']}/phonebook.xml"
    done = subprocess.run(["curl", "-sS", "--max-time", "30", url], capture_output=True, timeout=60)
    assert done.returncode == 0 and done.stdout == fetch(d, "tftp", "phonebook.xml")
    d.wait_log(lambda line: " http " in line and 'phonebook.xml" phonebook ok' in line)


def test_a_hashed_password_cannot_be_handed_out_and_check_says_so(tmp_path: Path):
    conf = make_site(tmp_path, csv=PHONES.replace(",mobile,extension", ",#mobile,#extension"))
    conf.write_text(conf.read_text() + "user = provision\npassword = md5-ha1:5f4dcc3b5aa765d61d8327deb882cf99\n")
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 0
    assert any(line.endswith("warning: [phonebook] the HTTP(S) password is hashed (md5-ha1:), so it cannot go into "
                             "the phonebook URL: P4401 is not filled in; set it in a settings layer")
               for line in done.stdout.decode().splitlines())
    assert "P4401" not in params_of(htekd("render", "-c", str(conf), "001fc1000001").stdout)


def test_access_rules_of_phone_files_apply(daemon, site):
    administrators_tree(site / "root")
    d = daemon({"phonebook": BOOK, "access": {"phone_files": "10.0.0.0/8"}})
    refused = curl(d, "http", "phonebook.xml", "-o", "/dev/null", "-w", "%{http_code}")
    assert refused.stdout == b"403"
    d.wait_log(lambda line: 'phonebook.xml" phonebook denied ' in line and "address not allowed phone files" in line)
    assert curl(d, "tftp", "phonebook.xml").returncode != 0


def test_a_layer_that_sets_the_book_keeps_it_and_contacts_are_checked(tmp_path: Path):
    common = ('<hl_provision version="1"><config version="1">'
              '<P4401 para="RemotePhoneBook1_Url">http://pbx.example/book.xml</P4401></config></hl_provision>')
    conf = make_site(tmp_path, csv=PHONES.replace(",mobile,extension", ",#mobile,#extension"), common=common)
    phone = params_of(htekd("render", "-c", str(conf), "001fc1000001").stdout)
    assert phone["P4401"] == "http://pbx.example/book.xml" and phone["P3316"] == "Company"
    write(tmp_path / "root" / "settings" / "contacts.csv", "name,number,group\nNo number,,\n,123,\nBad,1,no group\n")
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1
    assert [line for line in done.stdout.decode().splitlines() if "contacts.csv" in line] == [
        "settings/contacts.csv:2: error: a contact needs a name and at least one number",
        "settings/contacts.csv:3: error: a contact needs a name and at least one number",
        "settings/contacts.csv:4: error: bad group name 'no group' (letters, digits, '.', '_', '-')",
    ]
    write(tmp_path / "root" / "settings" / "contacts.csv", "name,phone\nA,1\n")
    done = htekd("check", "-c", str(conf))
    assert ("settings/contacts.csv:1: error: unknown column 'phone' (start a column's name with # to keep it as a note)"
            in done.stdout.decode().splitlines())


NAMES = ["Zoë", "Émile", "Ærøskøbing", "Ōsaka", "Łukasz", "Ñandú", "Søren", "Đorđe", "Ülkü", "Chloé",
         "王伟", "Дмитрий", "Αλέξανδρος", "محمد", "Åsa", "Björn", "anna", "Anna", "Zacharias", "ßeta"]


def _plain(name: str) -> str:
    return "".join(c for c in unicodedata.normalize("NFKD", name.casefold()) if not unicodedata.combining(c))


def test_a_thousand_phone_phonebook_is_well_formed_sorted_and_keeps_every_character(tmp_path: Path):
    generator = random.Random(13)
    rows, expected = [], []
    for n in range(1000):
        name = f"{generator.choice(NAMES)} {generator.choice(NAMES)} {n}"
        mac = f"001fc1{n:06x}"
        rows.append(f'{mac},UC924,"{name}",{2000 + n}' + (",no" if n % 100 == 0 else ","))
        if n % 100:
            expected.append((name, [str(2000 + n)]))
    conf = make_site(tmp_path, csv="mac,model,Account1_DispalyName,Account1_SipUserId,phonebook\n" + "\n".join(rows) + "\n")
    done = subprocess.run([sys.executable, "-m", "htekd", "render", "-c", str(conf), "phonebook.xml"],
                          capture_output=True, timeout=120)
    assert done.returncode == 0, done.stderr
    entries = book(done.stdout)  # lxml parses it: well-formed
    assert sorted(entries) == sorted(expected)  # every name intact, the kept-out phones left out
    names = [name for name, _ in entries]
    assert [_plain(name) for name in names] == sorted(_plain(name) for name in names)
    assert names.index(next(n for n in names if n.startswith("Émile"))) < names.index(next(n for n in names if n.startswith("Zoë")))


def test_the_book_follows_a_reload_and_a_broken_edit_keeps_the_last_good_one(daemon, site):
    administrators_tree(site / "root")
    d = daemon({"phonebook": BOOK})
    before = fetch(d, "http", "phonebook.xml")
    assert fetch(d, "http", "phonebook.xml") == before  # cached: the same bytes, the same snapshot
    contacts = site / "root" / "settings" / "contacts.csv"
    contacts.write_text(CONTACTS + "Aaron Reception,9\n", encoding="utf-8")
    assert d.reload().startswith("htekd: reloaded")
    after = fetch(d, "ftp", "phonebook.xml")
    assert book(after)[0] == ("Aaron Reception", ["9"])
    contacts.write_text(CONTACTS + "Broken,\n", encoding="utf-8")
    assert d.reload() == ("htekd: reload failed: settings/contacts.csv:4: error: "
                          "a contact needs a name and at least one number")
    assert fetch(d, "tftp", "phonebook.xml") == after


def test_without_mac_a_hand_made_file_and_turning_it_off(tmp_path: Path):
    from contenttree import resolver_for
    from htekd.resolution import Client, Kind, Status

    csv = PHONES.replace(",mobile,extension", ",#mobile,#extension")
    conf = make_site(tmp_path, csv=csv)
    conf.write_text(conf.read_text() + "\n[access]\nwithout_mac = deny\n")
    resolver = resolver_for(conf)
    refused = resolver.resolve("phonebook.xml", Client("http", "127.0.0.1", 1, "curl/8"))
    assert (refused.kind, refused.status, refused.reason) == (Kind.PHONEBOOK, Status.DENIED, "the User-Agent names no MAC")
    phone = Client("http", "127.0.0.1", 1, "Htek UC924 2.0.4.2 00:1f:c1:00:00:01")
    assert resolver.resolve("phonebook.xml", phone).ok
    assert resolver.resolve("phonebook.xml", Client("tftp", "127.0.0.1", 1)).ok  # TFTP carries no User-Agent
    write(tmp_path / "root" / "files" / "phonebook.xml", b"<PhoneDirectory/>\n")
    assert resolver.resolve("phonebook.xml", phone).kind is Kind.STATIC
    conf.write_text(conf.read_text() + "\n[phonebook]\nenabled = no\n")
    (tmp_path / "root" / "files" / "phonebook.xml").unlink()
    resolver = resolver_for(conf)
    assert resolver.resolve("phonebook.xml", phone).status is Status.NOT_FOUND
    assert "P4401" not in params_of(resolver.resolve("cfg001fc1000001.xml", phone).content)
