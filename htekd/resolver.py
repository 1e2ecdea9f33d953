"""The resolver: (requested name, client facts) -> Resolution. All serving policy lives here.

It knows nothing of protocols beyond the name of the one in use (which decides the URLs written
into a configuration). It holds the current snapshot; a reload swaps in a new one in a single
assignment, so a request resolved on the old snapshot finishes on it.
"""

from __future__ import annotations

import dataclasses
import functools
import hashlib
import os
import re
import stat
import threading
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

from htekd import keys, phonebook, render, timezones, tree
from htekd.aes import encrypt
from htekd.config import ANYWHERE, Config
from htekd.models import DEVCODE, models
from htekd.resolution import Client, Entry, Kind, Resolution, Status
from htekd.throttle import Throttle

USER_AGENT = re.compile(
    r"\AHtek\s+(?P<model>[A-Za-z0-9][A-Za-z0-9_-]*)\s+(?P<firmware>[0-9][0-9A-Za-z._-]*)"
    r"(?:\s+(?P<mac>[0-9A-Fa-f]{2}(?::[0-9A-Fa-f]{2}){5}|[0-9A-Fa-f]{12}))?"
)
PHONE_CONFIG = re.compile(r"\Acfg([0-9a-f]{12})\.xml\Z", re.IGNORECASE)
PRIVATE_CONFIG = re.compile(r"\Acfg([0-9a-f]{12})\Z", re.IGNORECASE)
MODEL_CONFIG = re.compile(r"\Acfg([0-9]{4})\.xml\Z", re.IGNORECASE)
FACTORY = re.compile(r"\Afactory[0-9a-z]*\.bin\Z", re.IGNORECASE)
FIRMWARE = re.compile(r"\A(?:fw[0-9a-z]+\.rom|boot_[0-9a-z]+\.bin|img_[0-9a-z]+\.bin)\Z", re.IGNORECASE)
RESOURCE = re.compile(
    r"\A(?:ring[4-8]\.bin|language\.tar|hlpres\.tar|exp_pres\.tar|.*\.(?:jpe?g|bmp|js)|[0-9]+_.*\.xml|lcd_.*\.xml)\Z",
    re.IGNORECASE,
)
MAX_NAME = 1024
MAX_CACHED = 100_000


@dataclass(frozen=True)
class UserAgent:
    model: str | None = None
    firmware: str | None = None
    mac: str | None = None


@functools.lru_cache(maxsize=1024)  # a building's phones send a handful of distinct User-Agents
def parse_user_agent(text: str) -> UserAgent:
    """`Htek UC924 2.0.4.2 00:1f:c1:1c:22:a9` -> model, firmware, MAC (each None when absent)."""
    match = USER_AGENT.match(text or "")
    if not match:
        return UserAgent()
    model = models().get(match["model"])
    mac = tree.normalise_mac(match["mac"]) if match["mac"] else None
    return UserAgent(model.name if model else match["model"].upper(), match["firmware"], mac)


@dataclass(frozen=True)
class Target:
    """A generated file and what it is made of (Resolver.inputs_for)."""

    name: str  # cfg<mac>.xml or cfg<devcode>.xml
    kind: Kind
    model: str | None
    inputs: render.Inputs
    snapshot: tree.Snapshot  # the one the inputs come from
    phone: tree.Phone | None = None  # its row of phones.csv, for a phone of the inventory


class _Refused(Exception):
    def __init__(self, status: Status, reason: str, kind: Kind = Kind.NONE):
        self.status, self.reason, self.kind = status, reason, kind


class _NeedsWork(Exception):
    """A cached-only resolution reached rendering or a file to open: resolve() must do it, in a thread."""


@dataclass
class _State:
    """One snapshot and what was rendered from it; replaced whole on reload."""

    config: Config
    snapshot: tree.Snapshot
    cache: dict = field(default_factory=dict)
    allowed: dict = field(default_factory=dict)  # (rule, address) -> access.allows(), bounded by MAX_CACHED
    prefix: list = field(init=False)  # server_url's path as segments
    files_folder: str = field(init=False)  # snapshot.files as a str, to which checked segments are joined

    def __post_init__(self):
        self.prefix = [s for s in self.config.server.path_prefix.split("/") if s]
        self.files_folder = os.fspath(self.snapshot.files)

    @functools.cached_property
    def phonebook(self) -> phonebook.Book:
        """Built once per snapshot, at its first use (two threads may both build it: same result)."""
        return phonebook.build(self.snapshot.phones, self.snapshot.contacts, self.config.phonebook)

    @property
    def keys(self) -> keys.KeyTable:
        return self.snapshot.keys or keys.EMPTY

    def allows(self, rule: str, address: str) -> bool:
        """[access] `rule` ("allow" or "phone_files") for `address`, parsed once per address."""
        key = (rule, address)
        allowed = self.allowed.get(key)
        if allowed is None:
            access = self.config.access
            allowed = access.allows(getattr(access, rule), address)
            if len(self.allowed) >= MAX_CACHED:
                self.allowed.clear()
            self.allowed[key] = allowed
        return allowed


class Resolver:
    def __init__(self, config: Config, snapshot: tree.Snapshot):
        self._state = _State(config, snapshot)
        self._reload_lock = threading.Lock()
        # Misses of confirmed requests (TCP) refuse a network everything; those of UDP requests,
        # which anyone can send in another host's name, refuse it only phone files over UDP.
        self._throttle = Throttle(*_throttle_settings(config.access))
        self._udp_throttle = Throttle(*_throttle_settings(config.access))
        self._homes: dict[str, str] = {}  # inventory MAC -> address of its last completed own-file transfer

    @classmethod
    def from_config(cls, config: Config) -> "Resolver":
        return cls(config, tree.load_strict(*tree.sources(config)))

    @property
    def snapshot(self) -> tree.Snapshot:
        return self._state.snapshot

    @property
    def config(self) -> Config:
        return self._state.config

    def reload(self, config: Config) -> None:
        """Load the tree of `config`; swap it in only if it has no errors (TreeError otherwise)."""
        with self._reload_lock:
            snapshot = tree.load_strict(*tree.sources(config))
            for throttle in (self._throttle, self._udp_throttle):
                throttle.configure(*_throttle_settings(config.access))
            self._state = _State(config, snapshot)

    # -- names -----------------------------------------------------------------------------

    def _segments(self, state: _State, name: str) -> list[str]:
        """The requested name as path segments under the served root, or _Refused."""
        if len(name) > MAX_NAME:
            raise _Refused(Status.DENIED, "name too long")
        if not (name.isascii() and name.isprintable()) and any(
                unicodedata.category(c) in ("Cc", "Cs", "Cn") for c in name):
            raise _Refused(Status.DENIED, "control or invalid characters in name")
        if "\\" in name:
            raise _Refused(Status.DENIED, "backslash in name")
        segments = [s for s in name.split("/") if s not in ("", ".")]
        if any(s == ".." for s in segments):
            raise _Refused(Status.DENIED, "path traversal")
        if any(s.startswith(".") for s in segments):
            raise _Refused(Status.DENIED, "hidden file")
        prefix = state.prefix
        if prefix and segments[: len(prefix)] == prefix:
            segments = segments[len(prefix):]
        return segments

    def _static(self, state: _State, segments: list[str], cached_only: bool) -> os.stat_result | None:
        """stat() of files/<segments> if it is a regular file really inside files/."""
        files = state.snapshot.files
        # Segments have no "/" nor "..": joined as strings, which costs less than the stat() itself.
        candidate = "/".join((state.files_folder, *segments))
        try:
            # Most names are generated files with nothing under files/: one stat() says so, where
            # realpath() would lstat() every component of the path first.
            os.stat(candidate)
            if cached_only:
                raise _NeedsWork
            real = Path(os.path.realpath(candidate, strict=True))
            info = real.stat()
        except (OSError, ValueError):
            return None
        if not real.is_relative_to(files) or real == files:
            raise _Refused(Status.DENIED, "outside the served folder")
        return info if stat.S_ISREG(info.st_mode) else None

    # -- resolution ------------------------------------------------------------------------

    def resolve(self, name: str, client: Client) -> Resolution:
        """The answer to one request; may render or look a file up, so listeners on an event loop
        call it in a worker thread."""
        return self._answer(name, client, cached_only=False)

    def resolve_cached(self, name: str, client: Client) -> Resolution | None:
        """resolve()'s answer when it needs neither rendering nor a file looked into: a generated
        file already cached on this snapshot, or a refusal; None otherwise (then call resolve()).

        Cheap enough for an event loop thread: at most one stat(), the one that tells whether a
        file under files/ overrides the name (a file dropped there is served at once, without a
        reload). The kernel answers it from its dentry cache, negative entries included, for any
        name asked before; the event loop already reads every block of a file it streams, so this
        is no new kind of wait. Opening a file (path walk, open, fstat) and rendering are left
        to resolve().
        """
        try:
            return self._answer(name, client, cached_only=True)
        except _NeedsWork:
            return None

    def _answer(self, name: str, client: Client, cached_only: bool) -> Resolution:
        """The policy every request goes through, whichever way it is resolved (_NeedsWork when
        `cached_only` and the answer is not at hand; no miss is counted then)."""
        state = self._state  # one snapshot for the whole request
        access = state.config.access
        if not state.allows("allow", client.address):
            return Resolution(name=name, path=name, kind=Kind.NONE, status=Status.DENIED, reason="address not allowed")
        if self._throttle.blocked(client.address):
            return Resolution(name=name, path=name, kind=Kind.NONE, status=Status.DENIED,
                              reason=_refused_network(self._throttle, client.address))
        resolution = self._resolve(state, name, client, cached_only)
        throttle = self._throttle if client.confirmed else self._udp_throttle
        phone_file = resolution.kind in (Kind.UNKNOWN_PHONE, Kind.PHONE_CONFIG)
        if (phone_file and not client.confirmed and throttle.blocked(client.address)
                and self._homes.get(resolution.mac) != client.address):
            # Answers go to the request's source: a phone's own file to the address it last completed
            # a transfer from reaches that phone, whoever sent the request.
            return _throttled(resolution, _refused_network(throttle, client.address, " over UDP")
                              + "; phone files over UDP refused")
        phone_miss = resolution.kind is Kind.UNKNOWN_PHONE or (
            resolution.kind is Kind.PHONE_CONFIG and resolution.status is Status.DENIED)
        if phone_miss and throttle.miss(client.address):
            scope = "" if client.confirmed else " over UDP"
            refused = "refused" if client.confirmed else "phone files over UDP refused"
            return _throttled(resolution, f"throttled: more than {access.throttle} unknown or denied phone files in "
                                          f"{access.throttle_window:g} s{scope} from {throttle.network(client.address)}; "
                                          f"{refused} for {access.throttle_penalty:g} s")
        return resolution

    def client_network(self, address: str) -> str:
        """The network a client is counted in (its address, or its IPv6 /64): for per-client limits."""
        return self._throttle.network(address)

    def remember_homes(self, addresses: dict[str, str]) -> None:
        """Addresses phones completed transfers of their own file from before a restart (MAC -> address),
        so forged UDP requests cannot keep them from their file after one."""
        inventory = self._state.snapshot.phones
        self._homes.update((mac, address) for mac, address in addresses.items() if mac in inventory and address)

    def observe(self, record, client: Client) -> None:
        """RequestLog observer: learns where each phone of the inventory completes transfers of its own
        file, and counts against every protocol the misses of UDP requests their client acknowledged."""
        if not record.confirmed:
            return
        if record.kind == Kind.PHONE_CONFIG.value and record.outcome == "ok" and record.mac:
            homes = self._homes
            if len(homes) >= MAX_CACHED and record.mac not in homes:
                homes = self._homes = {}
            homes[record.mac] = record.address
        elif record.kind == Kind.UNKNOWN_PHONE.value and not client.confirmed:
            self._throttle.miss(record.address)  # no forgery: the client answered from that address

    def _resolve(self, state: _State, name: str, client: Client, cached_only: bool) -> Resolution:
        agent = parse_user_agent(client.user_agent)
        base = dict(name=name, path=name.lstrip("/"), model=agent.model, firmware=agent.firmware, mac=agent.mac)
        try:
            segments = self._segments(state, name)
            path = "/".join(segments)
            base["path"] = path
            leaf = segments[-1] if segments else ""
            if FACTORY.match(leaf):
                raise _Refused(Status.DENIED, "factory files are never provisioned")
            info = self._static(state, segments, cached_only) if segments else None
            phone = PHONE_CONFIG.match(leaf) if len(segments) == 1 else None
            if phone:
                base["mac"] = phone[1].lower()
                self._check_phone_access(state, client, agent, base["mac"])
                if info is None and leaf != leaf.lower():
                    info = self._static(state, [f"cfg{base['mac']}.xml"], cached_only)
                    path = f"cfg{base['mac']}.xml"
            if info is not None:
                return self._file(state, base, path, info, phone is not None)
            if phone:
                return self._phone(state, base, client, agent, cached_only)
            model_code = MODEL_CONFIG.match(leaf) if len(segments) == 1 else None
            if model_code:
                return self._model(state, base, client, model_code[1], agent, cached_only)
            book = phonebook.requested_group(leaf, state.config.phonebook) if len(segments) == 1 else False
            if book is not False:
                return self._phonebook(state, base, client, agent, book, cached_only)
            if PRIVATE_CONFIG.match(leaf) and len(segments) == 1:
                base["mac"] = leaf[3:].lower()
                return Resolution(**base, kind=Kind.PRIVATE, status=Status.NOT_FOUND,
                                  reason="cfg<mac> is the vendor's private format, not provisioned")
            return Resolution(**base, kind=_kind_of(leaf) if leaf else Kind.NONE, status=Status.NOT_FOUND, reason="no such file")
        except _Refused as refused:
            return Resolution(**base, kind=refused.kind, status=refused.status, reason=refused.reason)

    @staticmethod
    def _check_phone_access(state: _State, client: Client, agent: UserAgent, mac: str | None,
                            kind: Kind = Kind.PHONE_CONFIG) -> None:
        """A phone's file holds its SIP password, the phonebook everyone's number: only for the networks
        (and, for a phone's file, the phone: `mac`) allowed to have them."""
        access = state.config.access
        if not state.allows("phone_files", client.address):
            raise _Refused(Status.DENIED, "address not allowed phone files", kind)
        if mac and access.user_agent_mac == "check" and agent.mac and agent.mac != mac:
            raise _Refused(Status.DENIED, f"the User-Agent names another phone ({agent.mac})", kind)
        if access.without_mac == "deny" and not agent.mac and client.protocol in ("http", "https"):
            raise _Refused(Status.DENIED, "the User-Agent names no MAC", kind)

    def _phonebook(self, state: _State, base: dict, client: Client, agent: UserAgent, group: str | None,
                   cached_only: bool) -> Resolution:
        """The company phonebook: for the networks allowed phone files, the same bytes over every protocol."""
        self._check_phone_access(state, client, agent, None, Kind.PHONEBOOK)
        key = ("phonebook", group)
        cached = state.cache.get(key)
        if cached is None:
            if cached_only:
                raise _NeedsWork
            if not state.phonebook.has(group):
                raise _Refused(Status.NOT_FOUND, f"no phones or contacts in group {group}", Kind.PHONEBOOK)
            cached = state.cache[key] = _with_etag(phonebook.document(state.phonebook.entries_for(group)))
        return self._generated(state, base, Kind.PHONEBOOK, *cached)

    def _file(self, state: _State, base: dict, path: str, info: os.stat_result, overrides_config: bool) -> Resolution:
        leaf = path.rsplit("/", 1)[-1]
        kind = Kind.STATIC if overrides_config else _kind_of(leaf)
        if base["mac"] and base["mac"] in state.snapshot.phones:
            base["model"] = state.snapshot.phones[base["mac"]].model or base["model"]
        return Resolution(
            **{**base, "path": path},
            kind=kind,
            status=Status.OK,
            file=state.snapshot.files.joinpath(*path.split("/")),
            size=info.st_size,
            mtime=info.st_mtime,
            etag=f"{info.st_ino:x}-{info.st_size:x}-{int(info.st_mtime * 1e6):x}",
        )

    def _phone(self, state: _State, base: dict, client: Client, agent: UserAgent, cached_only: bool) -> Resolution:
        mac = base["mac"]
        snapshot, server = state.snapshot, state.config.server
        phone = snapshot.phones.get(mac)
        if phone is None:
            if server.unknown_phones == "deny":
                return Resolution(**base, kind=Kind.UNKNOWN_PHONE, status=Status.DENIED, reason="unknown phone (not in phones.csv)")
            if cached_only:
                raise _NeedsWork
            if agent.mac and agent.mac != mac:
                base["model"] = None  # the User-Agent speaks of another phone
            content = self._render_unknown(state, mac, base["model"], client.protocol)
            return self._generated(state, base, Kind.UNKNOWN_PHONE, *_with_etag(content),
                                   "unknown phone: common and model settings only")
        base["model"] = phone.model or base["model"]
        key = (mac, base["model"], client.protocol)
        cached = state.cache.get(key)
        if cached is None:
            if cached_only:
                raise _NeedsWork
            cached = _with_etag(self._render_phone(state, phone, base["model"], client.protocol))
            if len(state.cache) < MAX_CACHED:
                state.cache[key] = cached
        return self._generated(state, base, Kind.PHONE_CONFIG, *cached)

    def _model(self, state: _State, base: dict, client: Client, devcode: str, agent: UserAgent,
               cached_only: bool) -> Resolution:
        base["devcode"] = devcode
        sharing = models().for_devcode(devcode)
        model = _model_of_devcode(state, sharing, agent)
        base["model"] = model or agent.model
        key = (devcode, model, client.protocol)
        cached = state.cache.get(key)
        if cached is None:
            if cached_only:
                raise _NeedsWork
            cached = _with_etag(self._render_model(state, devcode, model, client.protocol))
            if len(state.cache) < MAX_CACHED:
                state.cache[key] = cached
        reason = "" if sharing else "unknown device code: common settings only"
        return self._generated(state, base, Kind.MODEL_CONFIG, *cached, reason)

    def _generated(self, state: _State, base: dict, kind: Kind, content: bytes, etag: str, reason: str = "") -> Resolution:
        return Resolution(
            **base,
            kind=kind,
            status=Status.OK,
            reason=reason,
            content=content,
            size=len(content),
            mtime=state.snapshot.loaded_at,
            etag=etag,
        )

    # -- rendering -------------------------------------------------------------------------

    def _facts(self, state: _State, protocol: str, model: str | None, devcode: str | None) -> dict[str, str]:
        config = state.config
        base_url = config.public_url(protocol)
        model_info = models().get(model) if model else None
        facts = {
            "protocol": protocol,
            "server_url": config.server.server_url,
            "server_host": config.server.server_host,
            "config_url": base_url,
            "firmware_url": base_url,
        }
        if model_info:
            facts["model"] = model_info.name
            if model_info.devcode:
                facts["devcode"] = model_info.devcode
            if model_info.firmware:
                facts["firmware_file"] = model_info.firmware
        if devcode:
            facts["devcode"] = devcode
        return facts

    def _defaults(self, state: _State, protocol: str, model: str | None) -> dict[str, str]:
        model_info = models().get(model) if model else None
        defaults = render.server_values(state.config.public_url(protocol), protocol, state.snapshot.resource_names, model_info)
        defaults.update(timezones.default_values(state.config.server.timezone))
        return defaults

    def _model_inputs(self, state: _State, devcode: str, model: str | None, protocol: str) -> render.Inputs:
        snapshot = state.snapshot
        layers = [state.keys.for_model(model), snapshot.common.values]
        if model in snapshot.models:
            layers.append(snapshot.models[model].values)
        server = state.config.server
        # Every phone, known or not, may fetch a model file: passwords and keys go in phone files only,
        # except the AES key when the administrator asks for that bootstrap explicitly.
        values = _without_secrets(render.merge(layers), snapshot.secrets)
        defaults = self._defaults(state, protocol, model)
        if server.aes_key_in_model_file:
            defaults.update({render.AUTHENTICATE_CFG_FILE: "1", render.COMMON_AES_KEY: server.aes_key})
        return render.Inputs(values, defaults, self._facts(state, protocol, model, devcode))

    def _render_model(self, state: _State, devcode: str, model: str | None, protocol: str) -> bytes:
        content = render.render(*self._model_inputs(state, devcode, model, protocol))
        server = state.config.server
        return self._encrypt(state, content, server.aes_key if "model" in server.encrypt else "")

    def _unknown_inputs(self, state: _State, mac: str, model: str | None, protocol: str) -> render.Inputs:
        snapshot = state.snapshot
        layers = [state.keys.for_model(model), snapshot.common.values]
        if model in snapshot.models:
            layers.append(snapshot.models[model].values)
        facts = self._facts(state, protocol, model, None)
        facts.update(mac=mac, mac_colons=_colons(mac))
        # Anyone can claim an unknown MAC: passwords and keys are for phones in the inventory only.
        values = _without_secrets(render.merge(layers), snapshot.secrets)
        return render.Inputs(values, self._defaults(state, protocol, model), facts)

    def _render_unknown(self, state: _State, mac: str, model: str | None, protocol: str) -> bytes:
        content = render.render(*self._unknown_inputs(state, mac, model, protocol))
        return self._encrypt(state, content, self._phone_key(state, None))

    def _phone_inputs(self, state: _State, phone: tree.Phone, model: str | None, protocol: str) -> render.Inputs:
        snapshot = state.snapshot
        layers = [state.keys.for_phone(phone.mac, model, phone.group), snapshot.common.values]
        if model in snapshot.models:
            layers.append(snapshot.models[model].values)
        if phone.group in snapshot.groups:
            layers.append(snapshot.groups[phone.group].values)
        layers.append(phone.values)
        if phone.mac in snapshot.phone_layers:
            layers.append(snapshot.phone_layers[phone.mac].values)
        facts = self._facts(state, protocol, model, None)
        facts.update(phone.variables, mac=phone.mac, mac_colons=_colons(phone.mac))
        if phone.group:
            facts["group"] = phone.group
        defaults = self._defaults(state, protocol, model)
        defaults.update(phonebook.phone_values(state.config, state.phonebook, phone))
        return render.Inputs(render.merge(layers), defaults, facts)

    def _render_phone(self, state: _State, phone: tree.Phone, model: str | None, protocol: str) -> bytes:
        content = render.render(*self._phone_inputs(state, phone, model, protocol))
        return self._encrypt(state, content, self._phone_key(state, phone))

    @staticmethod
    def _phone_key(state: _State, phone: tree.Phone | None) -> str:
        if "phone" not in state.config.server.encrypt:
            return ""
        return (phone.aes_key if phone else "") or state.config.server.aes_key

    @staticmethod
    def _encrypt(state: _State, content: bytes, key: str) -> bytes:
        return encrypt(content, key) if key else content

    # -- rendering for the command line ----------------------------------------------------

    def render_target(self, target: str, protocol: str = "http", plain: bool = False, user_agent: str = "") -> Resolution:
        """What `htekd render <mac|devcode>` shows: the resolution a phone would get (`plain`: unencrypted)."""
        mac = tree.normalise_mac(target)
        if mac:
            name = f"cfg{mac}.xml"
        elif DEVCODE.fullmatch(target):
            name = f"cfg{target}.xml"
        else:
            name = target
        # The administrator's view: network access rules and the throttle are for phones, not for them.
        state = self._state
        server = dataclasses.replace(state.config.server, encrypt=()) if plain else state.config.server
        access = dataclasses.replace(state.config.access, allow=ANYWHERE, phone_files=ANYWHERE, throttle=0)
        resolver = Resolver(dataclasses.replace(state.config, server=server, access=access), state.snapshot)
        # The same snapshot and phonebook settings: the phonebook is built once, not for every file shown.
        resolver._state.phonebook = state.phonebook
        return resolver.resolve(name, Client(protocol, "127.0.0.1", user_agent=user_agent))

    def inputs_for(self, target: str, protocol: str = "http", user_agent: str = "") -> Target:
        """What the generated file for `target` (a MAC or a device code) is made of, as render_target()
        would make it; ValueError for anything else."""
        state = self._state
        agent = parse_user_agent(user_agent)
        mac = tree.normalise_mac(target)
        if mac:
            phone = state.snapshot.phones.get(mac)
            if phone is None:
                model = agent.model if not agent.mac or agent.mac == mac else None
                return Target(f"cfg{mac}.xml", Kind.UNKNOWN_PHONE, model,
                              self._unknown_inputs(state, mac, model, protocol), state.snapshot)
            model = phone.model or agent.model
            return Target(f"cfg{mac}.xml", Kind.PHONE_CONFIG, model, self._phone_inputs(state, phone, model, protocol),
                          state.snapshot, phone)
        if DEVCODE.fullmatch(target):
            model = _model_of_devcode(state, models().for_devcode(target), agent)
            return Target(f"cfg{target}.xml", Kind.MODEL_CONFIG, model,
                          self._model_inputs(state, target, model, protocol), state.snapshot)
        raise ValueError(f"{target!r} is neither a MAC nor a device code")

    def settings_for(self, target: str, protocol: str = "http") -> dict[str, str] | None:
        """The parameters (P-code -> value) of the file a phone gets for `target`, as
        `render_target(target, plain=True)` holds them, without writing the XML; None when it gets
        no generated file: a file under files/ is served instead, or an unknown phone is refused."""
        state = self._state
        chosen = self.inputs_for(target, protocol)
        if chosen.kind is Kind.UNKNOWN_PHONE and state.config.server.unknown_phones == "deny":
            return None
        try:
            if self._static(state, [chosen.name], cached_only=False) is not None:
                return None
        except _Refused:
            return None
        return render.settle(*chosen.inputs)[0]

    # -- listings (FTP) --------------------------------------------------------------------

    def listdir(self, path: str) -> list[Entry] | None:
        state = self._state
        prefix = state.prefix
        asked = [s for s in path.split("/") if s not in ("", ".")]
        if asked and len(asked) < len(prefix) and prefix[: len(asked)] == asked:
            # On the way to the prefix: FTP clients change folder one step at a time.
            return [Entry(prefix[len(asked)], True, 0, state.snapshot.loaded_at)]
        try:
            segments = self._segments(state, path)
        except _Refused:
            return None
        files = state.snapshot.files
        directory = files.joinpath(*segments)
        try:
            real = Path(os.path.realpath(directory, strict=True))
        except (OSError, ValueError):
            return None
        if not real.is_relative_to(files) or not real.is_dir():
            return None
        entries = []
        try:
            children = sorted(os.scandir(real), key=lambda e: e.name)
        except OSError:
            return None
        for child in children:
            if child.name.startswith(".") or FACTORY.match(child.name):
                continue
            try:
                target = Path(os.path.realpath(child.path, strict=True))
                info = target.stat()
            except (OSError, ValueError):
                continue
            if not target.is_relative_to(files):
                continue
            if stat.S_ISDIR(info.st_mode) or stat.S_ISREG(info.st_mode):
                entries.append(Entry(child.name, stat.S_ISDIR(info.st_mode), info.st_size, info.st_mtime))
        return entries


def _model_of_devcode(state: _State, sharing: tuple, agent: UserAgent) -> str | None:
    """The model whose settings a cfg<devcode>.xml is made of: the User-Agent's, else the one of the
    models sharing the code that has a settings file, else the code's only model."""
    names = [m.name for m in sharing]
    if agent.model in names:
        return agent.model
    with_layer = [n for n in names if n in state.snapshot.models]
    return with_layer[0] if len(with_layer) == 1 else (names[0] if len(names) == 1 else None)


def _throttle_settings(access) -> tuple:
    return (access.throttle, access.throttle_window, access.throttle_penalty, access.throttle_ipv4_prefix,
            access.throttle_ipv6_prefix)


def _throttled(resolution: Resolution, reason: str) -> Resolution:
    return dataclasses.replace(resolution, status=Status.DENIED, content=None, file=None, size=0, reason=reason)


def _refused_network(throttle: Throttle, address: str, scope: str = "") -> str:
    """Why a request from a refused network is refused. Only an address that itself missed is named
    "throttled" (what fail2ban bans): the rest of its network, a LAN's /64, is only caught in it."""
    network = throttle.network(address)
    if throttle.went_over(address):
        return f"throttled: too many unknown or denied phone files{scope} from {network}"
    return f"refused: {network} is throttled (another of its addresses asked for too many phone files{scope})"


def _without_secrets(values: dict, secrets: frozenset) -> dict:
    return {code: value for code, value in values.items() if code not in secrets}


def _with_etag(content: bytes) -> tuple[bytes, str]:
    """Generated content and its ETag, computed once and cached with it."""
    return content, hashlib.blake2b(content, digest_size=12).hexdigest()


def _colons(mac: str) -> str:
    return ":".join(mac[i:i + 2] for i in range(0, 12, 2))


def _kind_of(leaf: str) -> Kind:
    if FIRMWARE.match(leaf):
        return Kind.FIRMWARE
    if RESOURCE.match(leaf):
        return Kind.RESOURCE
    return Kind.STATIC
