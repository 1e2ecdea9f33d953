"""The model table and `htekd models`, as a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from htekd.models import Model, models

REPO = Path(__file__).resolve().parents[1]

# model: (device code, firmware) as the reference lists them; None = not known
UC900 = {
    "UC926": ("0010", "fw920M.rom"),
    "UC926E": ("0110", "fw920M.rom"),
    "UC924": ("0012", "fw920M.rom"),
    "UC924E": ("0112", "fw920M.rom"),
    "UC923": ("0013", "fw920M.rom"),
    "UC903": ("0016", None),
    "UC902": ("0017", "fw900M.rom"),
    "UC912": ("0019", None),
    "UC912G": ("0019", "fw900M.rom"),
    "UC912E": ("0019", None),
    "UC902S": (None, "fw910M.rom"),
    "UC921G": (None, "fw910M.rom"),
    "UC921E": (None, "fw930M.rom"),
    "UC923U": (None, "fw920U.rom"),
    "UC924U": (None, "fw920U.rom"),
    "UC924W": (None, "fw920U.rom"),
    "UC926S": (None, "fw920U.rom"),
    "UC926U": (None, "fw920U.rom"),
    "UC901": (None, None),
}
UC800 = {
    "UC862": "0000", "UC842": "0001", "UC860": "0002", "UC840": "0003", "UC806": "0004", "UC806T": "0041",
    "UC806G": "0042", "UC804": "0005", "UC804T": "0051", "UC804G": "0052", "UC803": "0006", "UC803T": "0006",
    "UC802": "0007", "UC802T": "0007",
}
WALLPAPER = {"UC923": (320, 240), "UC924": (480, 320), "UC924E": (480, 320), "UC926": (480, 272), "UC926E": (480, 272)}
WEB_LOGO = {"UC901", "UC902", "UC903", "UC912", "UC912G", "UC923", "UC924", "UC924E", "UC926", "UC926E"}


def test_table_holds_exactly_the_known_models():
    assert sorted(model.name for model in models().all) == sorted([*UC900, *UC800])


@pytest.mark.parametrize("name", sorted(UC900))
def test_uc900_models(name):
    model = models().get(name)
    devcode, firmware = UC900[name]
    digits = name[2:5]
    assert model == Model(
        name=name,
        series="UC900",
        devcode=devcode,
        firmware=firmware,
        legacy_firmware=(f"boot_{digits}.bin", f"img_{digits}.bin"),
        wallpaper=WALLPAPER.get(name),
        web_logo=name in WEB_LOGO,
    )


@pytest.mark.parametrize("name", sorted(UC800))
def test_uc800_models(name):
    assert models().get(name) == Model(name, "UC800", UC800[name], None, None, None, False)


def test_lookup_by_name_is_case_insensitive():
    assert models().get("uc924") is models().get("UC924")
    assert models().get("UC924").legacy_firmware == ("boot_924.bin", "img_924.bin")
    assert models().get("UC999") is None
    assert models().get("") is None


def test_lookup_by_device_code():
    assert {model.name for model in models().for_devcode("0019")} == {"UC912", "UC912G", "UC912E"}
    assert [model.name for model in models().for_devcode("0012")] == ["UC924"]
    assert {model.name for model in models().for_devcode("0006")} == {"UC803", "UC803T"}
    assert models().for_devcode("0099") == ()
    assert models().for_devcode("12") == ()


def htekd(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")])))
    return subprocess.run([sys.executable, "-m", "htekd", *args], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=60)


def test_models_command_prints_a_table():
    result = htekd("models")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0].split() == ["MODEL", "SERIES", "DEVICE", "CODE", "FIRMWARE"]
    rows = {line.split()[0]: line.split() for line in lines[1:]}
    assert len(rows) == len(lines) - 1 == len(models().all)
    assert rows["UC924"] == ["UC924", "UC900", "0012", "fw920M.rom"]
    assert rows["UC901"] == ["UC901", "UC900", "unknown", "unknown"]
    assert rows["UC902S"] == ["UC902S", "UC900", "unknown", "fw910M.rom"]
    assert rows["UC862"] == ["UC862", "UC800", "0000", "unknown"]


def test_models_command_json():
    result = htekd("models", "--json")
    assert result.returncode == 0, result.stderr
    listed = {entry["model"]: entry for entry in json.loads(result.stdout)}
    assert len(listed) == len(models().all)
    assert listed["UC924"] == {
        "model": "UC924", "series": "UC900", "devcode": "0012", "firmware": "fw920M.rom",
        "legacy_firmware": ["boot_924.bin", "img_924.bin"], "wallpaper": "480x320", "web_logo": True,
    }
    assert listed["UC901"]["devcode"] is None and listed["UC901"]["firmware"] is None
    assert listed["UC806G"] == {
        "model": "UC806G", "series": "UC800", "devcode": "0042", "firmware": None,
        "legacy_firmware": None, "wallpaper": None, "web_logo": False,
    }


def test_models_command_help():
    result = htekd("models", "--help")
    assert result.returncode == 0
    assert "usage: htekd models" in result.stdout and "--json" in result.stdout


def test_models_command_rejects_unknown_options():
    result = htekd("models", "--bogus")
    assert result.returncode == 2
    assert "unrecognized arguments: --bogus" in result.stderr
    assert result.stdout == ""


def test_models_with_a_configuration_adds_the_device_codes_learned_from_phones(daemon):
    running = daemon()
    agent = "Htek UC901 2.0.4.2 00:1f:c1:00:00:09"
    subprocess.run(["curl", "-sS", "-o", "/dev/null", "-A", agent, running.url("http", "cfg0031.xml")], timeout=30)
    running.wait_log(lambda line: "cfg0031.xml" in line)
    assert running.stop() == 0  # what is queued is written at shutdown
    result = htekd("models", "-c", str(running.config_path))
    assert result.returncode == 0, result.stderr
    rows = {line.split()[0]: line.split() for line in result.stdout.splitlines()[1:]}
    assert rows["UC901"] == ["UC901", "UC900", "0031", "(learned)", "unknown"]
    assert rows["UC924"] == ["UC924", "UC900", "0012", "fw920M.rom"]
    listed = {entry["model"]: entry for entry in json.loads(htekd("models", "-c", str(running.config_path), "--json").stdout)}
    assert listed["UC901"]["devcode"] == "0031"


def test_models_with_a_missing_configuration_is_one_line(tmp_path):
    result = htekd("models", "-c", str(tmp_path / "missing.conf"))
    assert result.returncode == 1 and result.stdout == ""
    assert result.stderr == f"htekd models: {tmp_path / 'missing.conf'}: error: cannot read: No such file or directory\n"
