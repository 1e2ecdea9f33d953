"""`htekd check` and `htekd render` run as a user runs them: exit status, the lines printed, the bytes given."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from contenttree import REAL_CONFIG, REPO, client, htekd, make_site, resolver_for, settings_xml
from htekd.aes import decrypt
from htekd.catalog import catalog

MAC = "001fc1000001"
PROBLEM_LINE = re.compile(r"\A[^\s:][^:]*(:[0-9]+)?: (error|warning): \S.*\Z")
KEY = "0123456789abcdef"


def problem_lines(done) -> list[str]:
    return done.stdout.decode("utf-8").splitlines()


def assert_one_line_error(done, *words: str) -> str:
    assert done.returncode != 0
    assert done.stdout == b""
    assert "Traceback" not in done.stderr
    lines = done.stderr.splitlines()
    assert len(lines) == 1, done.stderr
    for word in words:
        assert word in lines[0], lines[0]
    return lines[0]


@pytest.fixture
def example(tmp_path) -> Path:
    shutil.copytree(REPO / "example", tmp_path / "example")
    return tmp_path / "example" / "htekd.conf"


# -- htekd check ----------------------------------------------------------------------------------


def test_check_on_the_example_is_clean(example):
    done = htekd("check", "-c", str(example))
    assert done.returncode == 0, done.stdout + done.stderr.encode()
    assert all(PROBLEM_LINE.match(line) and ": warning: " in line for line in problem_lines(done))
    assert done.stderr.startswith("htekd check: ok, ")


def test_check_reports_every_error_as_file_line_message(tmp_path):
    conf = make_site(
        tmp_path,
        csv="mac,model,room\n001fc1000001,UC924,12\nnot-a-mac,UC924,13\n001fc1000001,UC926,14\n001fc1000004,UC999,15\n",
        common=settings_xml(("P47", "pbx.example.com:5060"), ("P35", "{extenson}")),
        groups={"sales": '<?xml version="1.0"?>\n<hl_provision version="1">\n<config version="1">\n<P3>x</P4>\n</config></hl_provision>\n'},
    )
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1
    lines = problem_lines(done)
    assert lines and all(PROBLEM_LINE.match(line) for line in lines), lines
    errors = [line for line in lines if ": error: " in line]
    expected = [
        "phones.csv:3: error: bad MAC 'not-a-mac'",
        "phones.csv:4: error: duplicate MAC 001fc1000001 (first on line 2)",
        "phones.csv:5: error: unknown model 'UC999'",
        "phones.csv:1: error: column 'room' is neither a parameter nor a placeholder",
        "settings/common.xml:5: error: P35: unknown placeholder {extenson}",
        "settings/groups/sales.xml:4: error: malformed XML",
    ]
    for start in expected:
        assert sum(line.startswith(start) for line in errors) == 1, (start, errors)
    assert len(errors) == len(expected)
    assert re.fullmatch(r"htekd check: 6 errors, [0-9]+ warnings \(.*\)\n", done.stderr)
    quiet = htekd("check", "-q", "-c", str(conf))
    assert quiet.returncode == 1 and problem_lines(quiet) == errors


def test_warnings_do_not_fail_check(tmp_path):
    conf = make_site(tmp_path, csv="mac,group\n001fc1000001,nowhere\n", common=settings_xml(("P99999", "kept"), ("P237", "http://192.0.2.1/cfg")))
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 0
    lines = problem_lines(done)
    assert len(lines) >= 3 and all(PROBLEM_LINE.match(line) and ": warning: " in line for line in lines), lines
    assert "phones.csv:2: warning: group 'nowhere' has no settings/groups/nowhere.xml" in lines
    assert htekd("check", "-q", "-c", str(conf)).stdout == b""


def test_check_validates_values_after_placeholders_are_filled(tmp_path):
    conf = make_site(tmp_path, csv="mac,extension\n001fc1000001,10 01\n", common=settings_xml(("P35", "Account1_SipUserId", "{extension}")))
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1
    assert [line for line in problem_lines(done) if ": error: " in line] == [
        "phones.csv:2: error: P35 for cfg001fc1000001.xml: expected no white space, got '10 01'"]


@pytest.mark.skipif(not REAL_CONFIG.is_file(), reason=f"the phone's real configuration is not at {REAL_CONFIG}")
def test_check_accepts_the_phones_own_configuration(tmp_path):
    conf = make_site(tmp_path, csv="mac,model\n001fc1000001,UC924U\n", common=REAL_CONFIG.read_bytes())
    done = htekd("check", "-c", str(conf))
    errors = [line for line in problem_lines(done) if ": error: " in line]
    assert errors == [], "factory values rejected by the value rules:\n" + "\n".join(errors)
    assert done.returncode == 0


# -- htekd render --------------------------------------------------------------------------------


def test_render_gives_exactly_what_the_resolver_gives(example):
    resolver = resolver_for(example)
    for target, name in ((MAC, f"cfg{MAC}.xml"), ("00-1F-C1-00-00-02", "cfg001fc1000002.xml"), ("0012", "cfg0012.xml"),
                         ("001fc10000ff", "cfg001fc10000ff.xml"), ("README.txt", "README.txt")):
        done = htekd("render", "-c", str(example), target)
        said = ("htekd render: 001fc10000ff: unknown phone (not in phones.csv): unknown_phones = default gives it "
                "the common and model settings, without passwords or keys\n") if target == "001fc10000ff" else ""
        assert done.returncode == 0 and done.stderr == said, done.stderr
        expected = resolver.resolve(name, client())
        assert done.stdout == (expected.content if expected.content is not None else expected.open().read())
    tftp = htekd("render", "-c", str(example), "--protocol", "tftp", MAC)
    assert tftp.stdout == resolver.resolve(f"cfg{MAC}.xml", client("tftp")).content
    assert "Zoë Müller".encode("utf-8") in tftp.stdout


def test_render_shows_encryption_and_plain_shows_the_xml(tmp_path):
    conf = make_site(tmp_path, csv=f"mac,Account1_DispalyName\n{MAC},Zoë\n", extra=f"aes_key = {KEY}\n")
    done = htekd("render", "-c", str(conf), MAC)
    assert done.returncode == 0
    assert done.stdout == resolver_for(conf).resolve(f"cfg{MAC}.xml", client()).content
    assert not done.stdout.startswith(b"<?xml") and len(done.stdout) % 16 == 0
    plain = htekd("render", "--plain", "-c", str(conf), MAC)
    assert plain.returncode == 0 and plain.stdout.startswith(b'<?xml version="1.0" encoding="UTF-8" ?>\n')
    assert decrypt(done.stdout, KEY) == plain.stdout
    model = htekd("render", "-c", str(conf), "0012")  # model files are not encrypted by default
    assert model.stdout.startswith(b"<?xml")


def test_render_errors_are_one_line(tmp_path, example):
    assert_one_line_error(htekd("render", "-c", str(tmp_path / "missing.conf"), MAC), "missing.conf", "cannot read")
    bad = tmp_path / "bad.conf"
    bad.write_text(example.read_text(encoding="utf-8").replace("[tftp]\n", "[tftp]\ncolour = blue\n"), encoding="utf-8")
    assert_one_line_error(htekd("render", "-c", str(bad), MAC), "bad.conf", "[tftp] colour", "unknown key")
    assert_one_line_error(htekd("render", "-c", str(example), "../phones.csv"), "denied")
    assert_one_line_error(htekd("render", "-c", str(example), "settings/common.xml"), "not-found")
    assert_one_line_error(htekd("render", "-c", str(example), "factory0001.bin"), "denied")
    deny = make_site(tmp_path / "deny", csv=f"mac\n{MAC}\n", unknown_phones="deny")
    line = assert_one_line_error(htekd("render", "-c", str(deny), "001fc10000ff"))
    assert line == "htekd render: 001fc10000ff: unknown phone (not in phones.csv): refused (unknown_phones = deny)"
    bad_mac = assert_one_line_error(htekd("render", "-c", str(example), "00:1f:c1:00:00:0G"))
    assert bad_mac == ("htekd render: bad MAC '00:1f:c1:00:00:0G': expected 12 hex digits, "
                       "e.g. 00:1f:c1:00:00:01 or 001fc1000001")
    assert_one_line_error(htekd("render", "-c", str(example), "12"), "htekd render: bad device code '12'")
    assert_one_line_error(htekd("render", "-c", str(example), "cfg001fc1000001"), "not-found", "vendor's private format")
    broken = make_site(tmp_path / "broken", csv="mac\nnonsense\n")
    assert_one_line_error(htekd("render", "-c", str(broken), MAC), "phones.csv:2", "bad MAC")


@pytest.mark.parametrize("old,new,words", [
    ("listen = 127.0.0.1:6969", "listen = nonsense", ("[tftp] listen", "nonsense")),
    ("unknown_phones = default", "unknown_phones = sometimes", ("[htekd] unknown_phones", "default, deny")),
    ("unknown_phones = default", "unknown_phones = default\nflavour = mint", ("[htekd] flavour", "unknown key")),
    ("unknown_phones = default", "unknown_phones = default\nunknown_phones = deny", ("unknown_phones", "given twice")),
])
def test_check_config_errors_name_file_section_and_key(tmp_path, old, new, words):
    conf = make_site(tmp_path)
    conf.write_text(conf.read_text(encoding="utf-8").replace(old, new), encoding="utf-8")
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    [line] = problem_lines(done)
    assert PROBLEM_LINE.match(line) and line.startswith(f"{conf}:") and ": error: " in line, line
    assert all(word in line for word in words), line
    assert done.stderr == "htekd check: 1 errors, 0 warnings (in the configuration; nothing else checked)\n"


def test_check_on_a_missing_root_is_an_error_line(tmp_path):
    conf = make_site(tmp_path)
    shutil.rmtree(tmp_path / "root")
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert problem_lines(done) == [f"{tmp_path / 'root'}: error: content tree root does not exist"]


@pytest.mark.parametrize("command", ["check", "render"])
def test_help(command):
    done = htekd(command, "--help")
    assert done.returncode == 0
    text = done.stdout.decode("utf-8")
    assert text.startswith(f"usage: htekd {command}") and "--config" in text
    if command == "render":
        assert "--plain" in text and "target" in text


@pytest.mark.parametrize("args,start", [
    ((), "htekd: the following arguments are required: COMMAND"),
    (("frobnicate",), "htekd: argument COMMAND: invalid choice: 'frobnicate'"),
    (("render",), "htekd render: the following arguments are required: target"),
    (("check", "--bogus"), "htekd check: unrecognized arguments: --bogus"),
    (("notify", "--rate", "fast", "10.0.0.1"), "htekd notify: argument --rate: expected a number, got 'fast'"),
])
def test_usage_errors_are_one_line_naming_the_command(args, start):
    done = htekd(*args)
    assert done.returncode == 2 and done.stdout == b""
    assert done.stderr.startswith(start) and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.endswith(f" (see {start.split(':')[0]} --help)\n")


def test_check_never_tracebacks_on_characters_xml_cannot_carry(tmp_path):
    conf = make_site(tmp_path, csv="mac,Account1_DispalyName,room\n001fc1000001,a\ufffeb,x\x01y\n",
                     common=settings_xml(("P36", "{room}")))
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1 and "Traceback" not in done.stderr
    assert [line.split(": error: ")[0] for line in problem_lines(done)] == ["phones.csv:2", "phones.csv:2"]


def test_every_problem_stays_on_one_line(tmp_path):
    common = settings_xml(("P237", "\n            http://10.0.0.9/cfg\n        "), ("P47", "\n  pbx.example.com\n"))
    conf = make_site(tmp_path, csv='mac,"ro\nom"\n001fc1000001,x\n', common=common, groups={"a\nb": settings_xml()})
    done = htekd("check", "-c", str(conf))
    assert done.returncode == 1
    lines = problem_lines(done)
    assert all(PROBLEM_LINE.match(line) for line in lines), lines
    assert sum(": error: " in line for line in lines) == 3  # P237, P47 and the unused column
    assert any(line.startswith("settings/common.xml:4: warning: P237 points away from this server ('\\n") for line in lines)


def test_a_full_standard_output_is_one_line(tmp_path):
    with open("/dev/full", "wb") as full:
        result = subprocess.run([sys.executable, "-m", "htekd", "models"], stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 1
    assert result.stderr == "htekd models: cannot write: No space left on device\n"


def test_p_codes_are_at_most_six_digits_and_leading_zeros_name_the_same_code(tmp_path):
    make_site(tmp_path, csv="mac,P1234567,P047\n001fc1000001,x,y\n")
    checked = htekd("check", "-c", str(tmp_path / "htekd.conf"))
    assert checked.returncode == 1
    assert b"phones.csv:1: error: column 'P1234567' is neither a parameter nor a placeholder" in checked.stdout
    assert "Traceback" not in checked.stderr
    assert catalog().get("P047") is catalog().get("P47")


@pytest.mark.parametrize("command", ["init", "serve", "check", "render", "models", "encrypt", "decrypt", "phones",
                                     "notify", "dhcp"])
def test_every_command_takes_c_and_a_missing_file_is_one_line(command, tmp_path):
    assert "-c FILE, --config FILE" in htekd(command, "--help").stdout.decode()
    if command in ("init", "serve", "check"):
        return  # init writes the file; serve and check report it in their own forms, tested with them
    arguments = {"render": ["0012"], "encrypt": ["-", "-"], "decrypt": ["-", "-"], "notify": ["--all"]}.get(command, [])
    done = htekd(command, "-c", str(tmp_path / "missing.conf"), *arguments)
    assert done.returncode == 1 and done.stdout == b""
    assert done.stderr.startswith(f"htekd {command}: {tmp_path / 'missing.conf'}: error: cannot read: "), done.stderr
    assert done.stderr.count("\n") == 1
