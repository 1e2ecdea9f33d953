"""Building content trees and configuration files in a temporary folder, as an administrator would."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from htekd import config as config_module
from htekd.resolution import Client
from htekd.resolver import Resolver

REPO = Path(__file__).resolve().parent.parent
REFERENCE = Path(__file__).resolve().parents[2] / "shared" / "reference"
REAL_CONFIG = REFERENCE / "htek-uc920u-default-config.xml"
HTTP_URL = "http://127.0.0.1:8080"

BASE_CONF = """\
[htekd]
root = root
state_dir = state
server_url = {server_url}
unknown_phones = {unknown_phones}
{extra}
[tftp]
listen = 127.0.0.1:6969

[ftp]
listen = 127.0.0.1:2121

[http]
listen = 127.0.0.1:8080
"""


def settings_xml(*params: tuple[str, str] | tuple[str, str, str]) -> str:
    """A settings file in the phone's own format; each param is (code, value) or (code, para, value)."""
    lines = ['<?xml version="1.0" encoding="UTF-8" ?>', '<hl_provision version="1">', '    <config version="1">']
    for param in params:
        code, para, value = param if len(param) == 3 else (param[0], "", param[1])
        lines.append(f'        <{code} para="{para}">{value}</{code}>' if value else f'        <{code} para="{para}" />')
    lines += ["    </config>", "</hl_provision>", ""]
    return "\n".join(lines)


def write(path: Path, content: str | bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    if isinstance(content, bytes):
        path.write_bytes(content)
    else:
        path.write_text(content, encoding="utf-8")
    return path


def make_site(
    folder: Path,
    *,
    csv: str | bytes | None = None,
    common: str | bytes | None = None,
    models: dict[str, str] | None = None,
    groups: dict[str, str] | None = None,
    phones: dict[str, str] | None = None,
    files: dict[str, bytes] | None = None,
    server_url: str = HTTP_URL,
    unknown_phones: str = "default",
    extra: str = "",
) -> Path:
    """Write htekd.conf and root/ under `folder`; returns the path of htekd.conf."""
    root = folder / "root"
    (root / "files").mkdir(parents=True, exist_ok=True)
    if csv is not None:
        write(root / "phones.csv", csv)
    if common is not None:
        write(root / "settings" / "common.xml", common)
    for sub, layers in (("models", models), ("groups", groups), ("phones", phones)):
        for name, text in (layers or {}).items():
            write(root / "settings" / sub / f"{name}.xml", text)
    for name, data in (files or {}).items():
        write(root / "files" / name, data)
    conf = folder / "htekd.conf"
    conf.write_text(BASE_CONF.format(server_url=server_url, unknown_phones=unknown_phones, extra=extra), encoding="utf-8")
    return conf


def load_config(conf: Path) -> config_module.Config:
    return config_module.load(conf)


def resolver_for(conf: Path) -> Resolver:
    return Resolver.from_config(config_module.load(conf))


def client(protocol: str = "http", user_agent: str = "") -> Client:
    return Client(protocol, "127.0.0.1", 40000, user_agent)


def htekd(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    """`python -m htekd ...` as a user runs it; stdout as bytes, stderr as text."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    done = subprocess.run([sys.executable, "-m", "htekd", *args], capture_output=True, env=env, cwd=cwd, timeout=60)
    done.stderr = done.stderr.decode("utf-8", "replace")
    return done


def params_of(data: bytes) -> dict[str, str]:
    """code -> value of a rendered file (the last one wins, as the phone applies them)."""
    from htekd import phonexml

    return {setting.key: setting.value for setting in phonexml.parse(data)}
