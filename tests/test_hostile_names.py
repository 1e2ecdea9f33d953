"""Hostile names: no spelling of a path reaches anything outside files/ (the inventory, the settings,
a secret next to the tree, /etc/passwd), whatever encoding, traversal or symlink it tries."""

from __future__ import annotations

import os
import urllib.parse
from pathlib import Path

import pytest

from contenttree import client, make_site, resolver_for, settings_xml
from htekd.resolution import Kind

OUTSIDE_SECRET = b"OUTSIDE-SECRET-4d1f9c\n"
INVENTORY_MARKER = "INVENTORY-MARKER-81aa"
SETTINGS_MARKER = "SETTINGS-MARKER-77b0"
GENERATED = {Kind.MODEL_CONFIG, Kind.PHONE_CONFIG, Kind.UNKNOWN_PHONE}

TARGETS = ["phones.csv", "settings/common.xml", "settings/groups/sales.xml", "outside/secret.txt", "etc/passwd", "htekd.conf"]
TRAVERSALS = [
    "../", "../../", "../../../../../../../../", "/../", "./../", "files/../", "sub/../../", "htek/../", "htek/../../",
    "..\\", "..\\..\\", "...\\", "..%2f", "..%2F", "%2e%2e/", "%2e%2e%2f", "%2E%2E%2F", ".%2e/", "%2e./", "..%5c",
    "%252e%252e%252f", "%25252e%25252e%25252f", "..%252f", "....//", "..../", "..;/", "..%00/", "..%c0%af", "%c0%ae%c0%ae/",
    "%e0%80%ae%e0%80%ae/", "\u2024\u2024/", "\uff0e\uff0e/", "..\u2215", "sub/./../../", "sub//..//..//",
]
SPECIAL = [
    "/etc/passwd", "//etc/passwd", "/proc/self/environ", "file:///etc/passwd", "C:\\Windows\\win.ini", "\\\\server\\share",
    "..", "../", "/..", "./", ".", "//", "///", "/./", "files", "files/", "root", "settings", "settings/", "settings/phones/",
    "phones.csv", "/phones.csv", "PHONES.CSV", "settings/common.xml", "../phones.csv", "files/../phones.csv",
    "htek/../phones.csv", "htek/../htek/../phones.csv", "sub/..", "sub/../..",
    "cfg0012.xml\x00.txt", "fw920M.rom\x00", "\x00", "phones.csv\x00", "cfg001fc1000001.xml\x00../phones.csv",
    "\x01", "fw\x07920M.rom", "README.txt\r\n", "README.txt\n", "\x1b[2J", "\x7f", "a\x85b", "\ud800", "\udcc0\udcae/phones.csv",
    "a" * 10240, "../" * 3000 + "phones.csv", "./" * 5000 + "README.txt", "/" * 10240, "sub/" * 2600 + "x",
    # symlinks planted inside files/
    "passwd", "/passwd", "secret", "inventory.csv", "common.xml", "outdir", "outdir/secret.txt", "htek/outdir/secret.txt",
    "rootlink/phones.csv", "rootlink/settings/common.xml", "settingslink/common.xml", "sub/up/phones.csv", "loop",
    "brokenlink",
    # hidden files
    ".hidden", "/.hidden", "sub/.git/config", ".htpasswd", "htek/.hidden", ".", "..hidden",
]


def overlong(text: str) -> str:
    """Percent-decoded to bytes, then UTF-8 with surrogateescape: what a lenient server would build."""
    return urllib.parse.unquote_to_bytes(text).decode("utf-8", "surrogateescape")


def hostile_names() -> list[str]:
    names = list(SPECIAL)
    for traversal in TRAVERSALS:
        for target in TARGETS:
            names.append(traversal + target)
            names.append(traversal.replace("/", "\\") + target.replace("/", "\\"))
            for decoded in (urllib.parse.unquote(traversal + target), overlong(traversal + target)):
                names.append(decoded)
                names.append(urllib.parse.unquote(decoded))
    return list(dict.fromkeys(names))


NAMES = hostile_names()


def test_the_list_is_long_and_varied():
    assert len(NAMES) >= 150
    assert any("\x00" in n for n in NAMES) and any(len(n) >= 10240 for n in NAMES)
    assert any("\udcc0" in n for n in NAMES) and any("\\" in n for n in NAMES)


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    """A site with secrets around files/ and symlinks inside it pointing at them."""
    base = tmp_path_factory.mktemp("hostile")
    conf = make_site(
        base,
        server_url="http://127.0.0.1:8080/htek",
        csv=f"mac,model,group,#note\n001fc1000001,UC924,sales,{INVENTORY_MARKER}\n",
        common=settings_xml(("P47", "pbx.example.com:5060"), ("P1360", SETTINGS_MARKER)),
        groups={"sales": settings_xml(("P20000", SETTINGS_MARKER))},
        files={"README.txt": b"readme\n", "sub/file.txt": b"inside\n", ".hidden": b"hidden\n", "sub/.git/config": b"git\n",
               ".htpasswd": b"user:pw\n", "fw920M.rom": b"firmware"},
    )
    root = base / "root"
    outside = root / "outside"  # a folder next to files/, not served
    outside.mkdir()
    (outside / "secret.txt").write_bytes(OUTSIDE_SECRET)
    (base / "secret.txt").write_bytes(OUTSIDE_SECRET)
    files = root / "files"
    links = {
        "passwd": "/etc/passwd",
        "secret": str(base / "secret.txt"),
        "inventory.csv": "../phones.csv",
        "common.xml": "../settings/common.xml",
        "outdir": "../outside",
        "rootlink": "..",
        "settingslink": "../settings",
        "sub/up": "../..",
        "loop": "loop",
        "brokenlink": "does-not-exist",
    }
    for name, target in links.items():
        os.symlink(target, files / name)
    protected = [root / "phones.csv", *sorted((root / "settings").rglob("*.xml")), base / "secret.txt", Path("/etc/passwd")]
    return resolver_for(conf), files.resolve(), {path: path.read_bytes() for path in protected if path.is_file()}


def check(resolver, files: Path, protected: dict[Path, bytes], name: str) -> None:
    try:
        resolution = resolver.resolve(name, client())
    except Exception as exc:  # the contract: never raises, whatever the name
        pytest.fail(f"resolve({name[:80]!r}) raised {exc!r}")
    if not resolution.ok:
        assert resolution.content is None and resolution.file is None, name[:80]
        return
    if resolution.file is not None:
        real = Path(os.path.realpath(resolution.file))
        assert real.is_relative_to(files) and real != files, f"{name[:80]!r} -> {real}"
        with resolution.open() as reader:
            data = reader.read()
    else:
        assert resolution.kind in GENERATED, name[:80]
        data = resolution.content
    assert data not in protected.values(), name[:80]
    assert OUTSIDE_SECRET not in data and INVENTORY_MARKER.encode() not in data, name[:80]
    if resolution.kind not in GENERATED:
        assert SETTINGS_MARKER.encode() not in data, name[:80]


def test_no_hostile_name_reaches_outside_files(planted):
    resolver, files, protected = planted
    served = []
    for name in NAMES:
        check(resolver, files, protected, name)
        if resolver.resolve(name, client()).ok:
            served.append(name)
    assert served == []  # none of them is a plain name of a served file


@pytest.mark.parametrize("name", ["passwd", "secret", "inventory.csv", "common.xml", "outdir/secret.txt",
                                  "rootlink/phones.csv", "settingslink/common.xml", "sub/up/phones.csv"])
def test_symlinks_leading_out_are_refused(planted, name):
    resolver, _, _ = planted
    for spelling in (name, "/" + name, "htek/" + name):
        assert not resolver.resolve(spelling, client()).ok


def test_legitimate_names_still_work(planted):
    resolver, files, protected = planted
    for name in ("README.txt", "/htek/sub/file.txt", "fw920M.rom", "cfg0012.xml", "cfg001fc1000001.xml"):
        assert resolver.resolve(name, client()).ok, name
        check(resolver, files, protected, name)


def test_listdir_never_lists_outside_files(planted):
    resolver, files, _ = planted
    top = {entry.name for entry in resolver.listdir("")}
    assert top == {"README.txt", "sub", "fw920M.rom"}
    assert {entry.name for entry in resolver.listdir("sub")} == {"file.txt"}
    for name in NAMES + ["outdir", "rootlink", "settingslink", "sub/up", "rootlink/files"]:
        try:
            entries = resolver.listdir(name)
        except Exception as exc:
            pytest.fail(f"listdir({name[:80]!r}) raised {exc!r}")
        if entries is None:
            continue
        # only real folders inside files/ are listed, and only what lies inside files/
        for entry in entries:
            assert not entry.name.startswith(".")
            assert entry.name not in {"passwd", "secret", "inventory.csv", "common.xml", "outdir", "rootlink", "settingslink", "up"}
        assert {e.name for e in entries} <= top | {"file.txt"}, name[:80]
