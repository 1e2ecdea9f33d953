"""Every command example in the docs runs, as a reader would run it.

A command example is a fenced block opened with ```sh in README.md or docs/*.md; an example of
another kind (configuration, output) is a plain block. The word after `sh` says where it runs:

- ```sh: in a copy of this repository with the example daemon running on its documented
  ports (`htekd serve -c example/htekd.conf`) and /etc/htekd.conf being that configuration,
  with phones 00:1f:c1:00:00:01 and :02 seen at 192.168.0.51 and 192.168.0.52, which answer
  SIP on ports 5060 and 5062. Each block on its own.
- ```sh try: the README's try-it command, stopped once the daemon is ready; what it prints is checked.
- ```sh ci: the test suite itself; CI runs it (.ci/run), and this test checks that it does.
- ```sh service: every such block of one file, in order, as one script on a private copy of this
  machine (root only): see docs/service.md for what is stood in for.

Each runs in a network namespace of its own (loopback, with 192.168.0.10 for the server and the
phones' addresses), so documented ports never meet another test's, and pip installs from a
wheelhouse built beforehand (the namespace has no way out). To add a kind, add a word to
SETTINGS and a prologue.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
DOCS = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\S*)(?: (\w+))?\n(.*?)^```$", re.S | re.M)
SETTINGS = ("example", "try", "ci", "service")
# The first word of a command line; a plain block starting with one of these is a command not run.
COMMANDS = ("htekd", "curl", "openssl", "systemctl", "journalctl", "install", "python3", "printf", "apt-get",
            "ln", ".venv/bin/", "tools/", "bench/", "sudo", "git", "man", "tail")

NETWORK = """
ip link set lo up
ip link set lo multicast on
ip addr add 192.168.0.10/24 dev lo                                        # the server in the docs
ip addr add 192.168.0.51/32 dev lo && ip addr add 192.168.0.52/32 dev lo  # two phones
"""

# Phones that answer every SIP request with 200 OK, on ports 5060 and 5062 of every address; 5 minutes at most.
PHONES = """
import selectors, socket, time
from htekd import sip
selector = selectors.DefaultSelector()
for port in (5060, 5062):
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("0.0.0.0", port))
    selector.register(sock, selectors.EVENT_READ)
deadline = time.monotonic() + 300
while time.monotonic() < deadline:
    for key, _ in selector.select(1):
        data, address = key.fileobj.recvfrom(65535)
        message = sip.parse(data)
        if message is not None and message.is_request:
            key.fileobj.sendto(sip.build_response(message, 200), address)
"""

EXAMPLE_PROLOGUE = """
trap 'kill $(jobs -p) 2>/dev/null || true; wait' EXIT
mkdir -p "$WORK/etc-upper" "$WORK/etc-work"
mount -t overlay overlay -o "lowerdir=/etc,upperdir=$WORK/etc-upper,workdir=$WORK/etc-work" /etc
sed -e "s|^root = root|root = $PWD/example/root|" -e "s|^state_dir = state|state_dir = $PWD/example/state|" \\
    example/htekd.conf > /etc/htekd.conf
htekd serve -c /etc/htekd.conf > "$WORK/serve.out" 2> "$WORK/serve.err" &
for _ in $(seq 150); do grep -q '^htekd: ready$' "$WORK/serve.err" && break; sleep 0.1; done
grep -q '^htekd: ready$' "$WORK/serve.err" || { cat "$WORK/serve.err" >&2; exit 99; }
python3 "$WORK/phones.py" &
curl -sf -o /dev/null --interface 192.168.0.51 -A 'Htek UC924 2.0.4.2 00:1f:c1:00:00:01' http://127.0.0.1:8080/cfg001fc1000001.xml
curl -sf -o /dev/null --interface 192.168.0.52 -A 'Htek UC926 2.0.4.2 00:1f:c1:00:00:02' http://127.0.0.1:8080/cfg001fc1000002.xml
for _ in $(seq 100); do [ "$(htekd phones -c /etc/htekd.conf --json | grep -c '"mac"')" = 2 ] && break; sleep 0.1; done
"""

# The machine's folders a service installation writes to, each under an overlay that vanishes with the test.
SERVICE_FOLDERS = ("/etc", "/opt", "/srv", "/usr/local", "/usr/lib", "/var/lib", "/var/log")
SERVICE_PROLOGUE = """
stop() {  # the daemon systemctl started, then this shell's own jobs; each awaited, 10 s at most
    local pid
    pid=$(cat /run/htekd.test.pid 2>/dev/null) || pid=""
    [ -z "$pid" ] || kill "$pid" 2>/dev/null || true
    for _ in $(seq 100); do [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill $(jobs -p) 2>/dev/null || true
    wait
}
trap stop EXIT
for folder in FOLDERS; do
    layer="$WORK/layers${folder//\\//_}"
    mkdir -p "$layer/upper" "$layer/work"
    mount -t overlay overlay -o "lowerdir=$folder,upperdir=$layer/upper,workdir=$layer/work" "$folder"
done
mount -t tmpfs tmpfs /run
""".replace("FOLDERS", " ".join(SERVICE_FOLDERS))

# Stand-ins for what needs systemd as PID 1 or a package download.
STUBS = {
    "systemctl": r"""#!/bin/bash
# systemctl without systemd: check the unit offline, and run its ExecStart as its user.
set -euo pipefail
unit=/etc/systemd/system/htekd.service
case "$*" in
daemon-reload)
    systemd-analyze verify "$unit"
    systemd-analyze security --offline=yes --threshold=20 "$unit" | tail -1 ;;  # fails above 2.0 (of 10)
"enable --now htekd")
    user=$(sed -n 's/^User=//p' "$unit")
    read -r -a command <<< "$(sed -n 's/^ExecStart=//p' "$unit")"
    install -d -o "$user" -g "$user" -m 0750 /var/lib/htekd /var/log/htekd
    setpriv --reuid="$user" --regid="$user" --init-groups --inh-caps=+net_bind_service \
        --ambient-caps=+net_bind_service "${command[@]}" > /run/htekd.journal 2>&1 &
    echo $! > /run/htekd.test.pid
    for _ in $(seq 150); do grep -q '^htekd: ready$' /run/htekd.journal && exit 0; sleep 0.1; done
    cat /run/htekd.journal >&2; exit 1 ;;
"reload htekd") kill -HUP "$(cat /run/htekd.test.pid)" ;;
*) echo "systemctl (test stand-in): $* is not stood in for" >&2; exit 1 ;;
esac
""",
    "journalctl": """#!/bin/sh
cat /run/htekd.journal
""",
    "apt-get": """#!/bin/sh
# apt-get install without downloading: each package must exist.
[ "$1" = install ] || exit 1
shift
for package in "$@"; do
    case "$package" in -*) continue ;; esac
    apt-cache show "$package" >/dev/null 2>&1 || dpkg-query -W "$package" >/dev/null 2>&1 || { echo "no package $package" >&2; exit 1; }
done
""",
}


@dataclass(frozen=True)
class Block:
    file: Path
    line: int
    setting: str
    text: str

    def __str__(self) -> str:
        return f"{self.file.relative_to(REPO)}:{self.line}"


def blocks(kind: str = "sh") -> list[Block]:
    found = []
    for file in DOCS:
        text = file.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) == kind:
                line = text.count("\n", 0, match.start()) + 1
                found.append(Block(file, line, match.group(2) or "example", match.group(3)))
    return found


def plain_blocks() -> list[tuple[str, str]]:
    """(where, text) of every code block that is not ```sh: fenced, or indented by four spaces."""
    found = []
    for file in DOCS:
        text = file.read_text(encoding="utf-8")
        for match in FENCE.finditer(text):
            if match.group(1) != "sh":
                found.append((f"{file.relative_to(REPO)}:{text.count(chr(10), 0, match.start()) + 1}", match.group(3)))
        outside = FENCE.sub(lambda m: "\n" * m.group(0).count("\n"), text)
        for match in re.finditer(r"(?:(?<=\n\n)|\A)((?: {4}.*\n|\n)+)", outside):
            found.append((f"{file.relative_to(REPO)}:{outside.count(chr(10), 0, match.start()) + 1}", match.group(1)))
    return found


def test_every_command_example_is_a_sh_block_that_runs():
    assert {block.setting for block in blocks()} <= set(SETTINGS)
    for where, text in plain_blocks():
        for line in text.splitlines():
            assert not line.strip().startswith(COMMANDS), f"{where}: a command outside a ```sh block: {line.strip()}"


def test_the_test_command_is_what_ci_runs():
    ci = (REPO / ".ci" / "run").read_text(encoding="utf-8")
    for block in blocks():
        if block.setting == "ci":
            assert f"exec bash {block.text.strip()}\n" in ci, f"{block}: .ci/run does not run {block.text.strip()!r}"


@pytest.fixture(scope="session")
def wheelhouse(tmp_path_factory) -> Path:
    """htekd's dependencies and build tools as wheels, for pip inside a namespace without a network."""
    folder = tmp_path_factory.mktemp("wheels")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "-q", "-w", str(folder), str(REPO), "setuptools", "wheel"],
                   check=True, capture_output=True, timeout=600)
    return folder


@pytest.fixture(scope="session")
def namespaces() -> list[str]:
    """unshare's options for a network and mount namespace, or skip where this machine allows none."""
    options = ["--net", "--mount"] if os.geteuid() == 0 else ["--map-root-user", "--net", "--mount"]
    try:
        probe = subprocess.run(["unshare", *options, "true"], capture_output=True, timeout=30)
    except FileNotFoundError:
        pytest.skip("no unshare (util-linux)")
    if probe.returncode != 0:
        pytest.skip(f"cannot make a network namespace here: {probe.stderr.decode().strip()}")
    return options


@pytest.fixture
def checkout(tmp_path) -> Path:
    """A copy of this repository as a reader has it (no .git, no .venv, no state of earlier runs)."""
    target = tmp_path / "htekd"
    shutil.copytree(REPO, target, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv", "__pycache__", "*.egg-info", ".pytest_cache", ".hypothesis", "state", "build", "dist"))
    return target


def run(namespaces: list[str], script: str, cwd: Path, work: Path, path: list[Path], wheels: Path | None = None,
        timeout: float = 300) -> subprocess.CompletedProcess:
    """`script` in new namespaces; PATH is `path`, then the machine's (without this repository's .venv)."""
    env = {key: value for key, value in os.environ.items() if not key.startswith(("PIP_", "VIRTUAL_ENV"))}
    machine = [entry for entry in env["PATH"].split(os.pathsep) if not entry.startswith(str(REPO))]
    env.update(WORK=str(work), PATH=os.pathsep.join([*map(str, path), *machine]), PYTHONDONTWRITEBYTECODE="1")
    if wheels is not None:
        env.update(PIP_NO_INDEX="1", PIP_FIND_LINKS=str(wheels), PIP_CACHE_DIR=str(work / "pip-cache"))
    return subprocess.run(["unshare", *namespaces, "bash", "-c", "set -euo pipefail\n" + NETWORK + script],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def failure(block, done: subprocess.CompletedProcess) -> str:
    return f"{block} exited {done.returncode}\nstdout:\n{done.stdout}\nstderr:\n{done.stderr}"


EXAMPLES = [block for block in blocks() if block.setting == "example"]


@pytest.mark.parametrize("block", EXAMPLES, ids=[str(block) for block in EXAMPLES])
def test_command_example(block, namespaces, checkout, tmp_path):
    (tmp_path / "phones.py").write_text(PHONES)
    (checkout / ".venv").symlink_to(REPO / ".venv")  # as after the README's try-it command
    done = run(namespaces, EXAMPLE_PROLOGUE + block.text, checkout, tmp_path, [REPO / ".venv" / "bin"], timeout=120)
    assert done.returncode == 0, failure(block, done)


def test_try_it_stays_on_loopback_and_explains_what_it_prints(namespaces, checkout, tmp_path, wheelhouse):
    [block] = [block for block in blocks() if block.setting == "try"]
    # The command ends in the daemon: run it until it is ready, then stop it as Ctrl-C would.
    script = ("(" + block.text.strip() + ") > \"$WORK/out\" 2>&1 &\nserver=$!\n"
              "for _ in $(seq 600); do grep -q '^htekd: ready$' \"$WORK/out\" && break; sleep 0.1; done\n"
              "kill -INT $server; wait $server || true\ncat \"$WORK/out\"\n")
    done = run(namespaces, script, checkout, tmp_path, [], wheels=wheelhouse, timeout=300)
    lines = [line for line in done.stdout.splitlines() if not line.startswith(("WARNING: Location", "  "))]
    assert "htekd: ready" in lines, failure(block, done)
    htekd_lines = lines[lines.index(next(line for line in lines if line.startswith("files: "))):]
    expected = [
        "files: warning: no fw900M.rom for the UC912G phones in phones.csv: they keep the firmware they have "
        "(put the vendor's fw900M.rom in files/ to upgrade them)",
        "files: warning: no fw920M.rom for the UC924 phones in phones.csv: they keep the firmware they have "
        "(put the vendor's fw920M.rom in files/ to upgrade them)",
        "files: warning: no fw920M.rom for the UC926 phones in phones.csv: they keep the firmware they have "
        "(put the vendor's fw920M.rom in files/ to upgrade them)",
        "htekd check: ok, 3 warnings (example/htekd.conf: 3 phones, 1 model, 2 group and 1 phone settings files)",
        "htekd: listening tftp 127.0.0.1:6969",
        "htekd: listening ftp 127.0.0.1:2121",
        "htekd: listening http 127.0.0.1:8080",
        "htekd: listening admin 127.0.0.1:8081",
        "htekd: listening pnp 224.0.1.75:5070 on 127.0.0.1",
        "htekd: ready",
        "htekd: stopping",
        "htekd: stopped",
    ]
    assert [line.replace(str(checkout) + "/", "") for line in htekd_lines] == expected, failure(block, done)


SERVICE_FILES = sorted({block.file for block in blocks() if block.setting == "service"})


@pytest.mark.parametrize("file", SERVICE_FILES, ids=[str(file.relative_to(REPO)) for file in SERVICE_FILES])
def test_service_steps_top_to_bottom(file, namespaces, checkout, tmp_path, wheelhouse):
    if os.geteuid() != 0:
        pytest.skip("the service steps run as root, as the docs say")
    stubs = tmp_path / "stubs"
    stubs.mkdir()
    for name, text in STUBS.items():
        (stubs / name).write_text(text)
        (stubs / name).chmod(0o755)
    steps = [block for block in blocks() if block.setting == "service" and block.file == file]
    script = SERVICE_PROLOGUE + "".join(f"echo '## {block}'\n{block.text}" for block in steps)
    done = run(namespaces, script, checkout, tmp_path, [stubs, Path("/usr/local/bin")], wheels=wheelhouse, timeout=600)
    assert done.returncode == 0, failure(file, done)
    assert '<P35 para="Account1_SipUserId">1001</P35>' in done.stdout, failure(file, done)
    assert "htekd: listening http 192.168.0.10:80" in done.stdout, failure(file, done)
    assert "Overall exposure level for htekd.service: 1.4 OK" in done.stdout  # as docs/service.md says


def test_man_pages_are_built_from_the_docs_and_render_cleanly():
    built = subprocess.run([sys.executable, str(REPO / "tools" / "build_man.py"), "--check"], capture_output=True,
                           text=True, timeout=60)
    assert built.returncode == 0, built.stderr
    for page in ("htekd.1", "htekd.conf.5"):
        rendered = subprocess.run(["groff", "-man", "-ww", "-z", "-Tutf8", str(REPO / "man" / page)],
                                  capture_output=True, text=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"})
        assert rendered.returncode == 0 and rendered.stderr == "", f"{page}: {rendered.stderr}"


def test_the_configuration_reference_has_every_key():
    from htekd.config import SECTIONS

    reference = (REPO / "docs" / "htekd.conf.md").read_text(encoding="utf-8")
    example = (REPO / "etc" / "htekd.conf").read_text(encoding="utf-8")
    for section, keys in SECTIONS.items():
        assert f"[{section}]" in reference and f"[{section}]" in example, section
        for key in keys:
            assert re.search(rf"^`{key}[ `=]|, `{key}[ `=]", reference, re.M), f"docs/htekd.conf.md lacks [{section}] {key}"
            assert re.search(rf"^;?{key} =", example, re.M), f"etc/htekd.conf lacks [{section}] {key}"


def test_every_command_is_in_the_man_page():
    from htekd.cli import COMMANDS

    page = (REPO / "docs" / "htekd.md").read_text(encoding="utf-8")
    for command in COMMANDS:
        assert re.search(rf"^### htekd (\S+ \| )?{command}\b", page, re.M), f"docs/htekd.md lacks htekd {command}"
