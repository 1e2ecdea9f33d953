"""htekd check: validate configuration, content tree, inventory and every value a phone would get."""

from __future__ import annotations

import re
import sys

from htekd import config as config_module
from htekd import phonebook, timezones, tree
from htekd.catalog import catalog
from htekd.commands.common import add_config_argument
from htekd.models import models
from htekd.render import CONFIG_SERVER_PATH, FIRMWARE_SERVER_PATH, RESOURCE_URLS, RING_FILES, RING_URL
from htekd.resources import check_files, firmware_offer


def add_arguments(parser, name: str) -> None:
    add_config_argument(parser)
    parser.add_argument("-q", "--quiet", action="store_true", help="print errors only, no warnings")


def rendered_problems(config, snapshot: tree.Snapshot) -> list[tree.Problem]:
    """Check what every phone and model would really get, placeholders filled, and the
    firmware each phone of the inventory would be offered."""
    from htekd.resolver import Resolver

    resolver = Resolver(config, snapshot)
    problems: list[tree.Problem] = []
    cat = catalog()
    targets = [(mac, "phones.csv", phone.line) for mac, phone in snapshot.phones.items()]
    devcodes = {m.devcode for m in models().all if m.devcode and (m.name in snapshot.models
                or any(p.model == m.name for p in snapshot.phones.values()))}
    targets += [(code, "settings", 0) for code in sorted(devcodes)]
    missing: dict[tuple, int] = {}  # (model, folder, version, file) -> phones that would not find it
    for target, file, line in targets:
        settings = resolver.settings_for(target)
        if settings is None:
            continue  # a hand-made file in files/ overrides it
        # A value may carry a secret in through a placeholder: such a value is never quoted either.
        secret_values = [value for code, value in settings.items() if code in snapshot.secrets and value]
        for code, value in settings.items():
            secret = code in snapshot.secrets or any(hidden in value for hidden in secret_values)
            message = cat.check(code, value, secret) if cat.get(code) else None
            if message:
                problems.append(tree.Problem(file, line, f"{code} for cfg{target}.xml: {message}"))
        phone = snapshot.phones.get(target)
        if phone is not None:
            offer = firmware_offer(settings, config.public_url("http"), snapshot.files,
                                   models().get(phone.model) if phone.model else None)
            for name in offer.missing if offer else ():
                key = (phone.model, offer.folder, offer.version, name)
                missing[key] = missing.get(key, 0) + 1
    for (model, folder, version, name), count in sorted(missing.items()):
        where = f"files/{folder}".rstrip("/")
        if version:
            problems.append(tree.Problem(where, 0, f"no {name} for the {count} {model} phones pinned to firmware {version}"))
        else:
            problems.append(tree.Problem(where, 0, f"no {name} for the {model} phones in phones.csv: they keep the "
                                         f"firmware they have (put the vendor's {name} in files/ to upgrade them)",
                                         "warning"))
    return problems


SERVER_FACTS = {"server_url", "server_host", "config_url", "firmware_url"}
URL_LOGIN = re.compile(r"(\A(?:[A-Za-z][A-Za-z0-9+.-]*://)?)[^/@]*@")


def server_warnings(config, snapshot: tree.Snapshot) -> list[tree.Problem]:
    """Layers that keep phones away from htekd: server paths, and resource URLs of files htekd has.
    A value equal to the phone's factory default is not counted: htekd fills it in anyway."""
    problems = []
    host = config.server.server_host
    resource_codes = {code: name for code, name in RESOURCE_URLS.items() if name in snapshot.resource_names}
    if RING_FILES & snapshot.resource_names:
        resource_codes[RING_URL] = "ring4.bin .. ring8.bin"
    layers = [snapshot.common, *snapshot.models.values(), *snapshot.groups.values(), *snapshot.phone_layers.values()]
    for layer in layers:
        for code in (CONFIG_SERVER_PATH, FIRMWARE_SERVER_PATH, *resource_codes):
            value = layer.values.get(code)
            if value is None or value.factory or host in value.value or value.variables & SERVER_FACTS:
                continue
            file, _, line = value.source.rpartition(":")
            # repr: a value never breaks the line; a login in a URL (user:password@) is not shown
            shown = repr(URL_LOGIN.sub(r"\1***@", value.value)) if value.value else "blank"
            if code in resource_codes:
                message = (f"{code} points away from this server ({shown}) although files/ has {resource_codes[code]}: "
                           "remove it to let htekd fill in its own URL")
            else:
                message = (f"{code} points away from this server ({shown}): "
                           "phones will stop asking htekd; remove it to let htekd fill it in")
            problems.append(tree.Problem(file, int(line), message, "warning"))
    problem = phonebook.login_problem(config)
    if problem:
        problems.append(tree.Problem(str(config.source), 0, problem, "warning"))
    if config.server.timezone and not timezones.default_values(config.server.timezone):
        problems.append(tree.Problem(str(config.source), 0, "[htekd] timezone: " + timezones.index_of(config.server.timezone)[1],
                                     "warning"))
    if config.server.aes_key_in_model_file:
        problems.append(tree.Problem(str(config.source), 0, "[htekd] aes_key_in_model_file: the AES key travels in clear "
                                     "in every cfg<devcode>.xml; turn it off once the phones have it", "warning"))
    return problems


def all_problems(config) -> tuple[tree.Snapshot, list[tree.Problem]]:
    """Everything htekd check reports on the tree of `config`."""
    snapshot, problems = tree.load_for(config)
    if not any(p.severity == "error" for p in problems):
        problems += rendered_problems(config, snapshot)
    problems += server_warnings(config, snapshot)
    problems += check_files(snapshot)
    return snapshot, problems


def run(args) -> int:
    try:
        config = config_module.load(args.config)
    except config_module.ConfigError as exc:
        print(exc)  # a problem line like every other one
        print("htekd check: 1 errors, 0 warnings (in the configuration; nothing else checked)", file=sys.stderr)
        return 1
    snapshot, problems = all_problems(config)
    errors = sum(p.severity == "error" for p in problems)
    warnings = len(problems) - errors
    for problem in problems:
        if problem.severity == "error" or not args.quiet:
            print(problem)
    summary = (f"{config.source}: {len(snapshot.phones)} phones, {len(snapshot.models)} model, "
               f"{len(snapshot.groups)} group and {len(snapshot.phone_layers)} phone settings files")
    if errors:
        print(f"htekd check: {errors} errors, {warnings} warnings ({summary})", file=sys.stderr)
        return 1
    print(f"htekd check: ok, {warnings} warnings ({summary})", file=sys.stderr)
    return 0
