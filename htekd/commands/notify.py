"""`htekd notify`: SIP NOTIFY `Event: check-sync` so phones fetch their configuration now.

Targets come from the command line, the inventory (phones.csv) and the phones seen (their last
address). NOTIFYs start at a bounded rate with a bounded number waiting at once, so a thousand
phones do not all reboot and fetch firmware in the same second.
"""

from __future__ import annotations

import argparse
import ipaddress
import sys
from dataclasses import dataclass

from htekd import sip
from htekd.cli import CommandError
from htekd.commands.common import add_optional_config_argument, load_optional_config
from htekd.config import DEFAULT_CONFIG, Config
from htekd.escape import shown


EPILOG = """\
A TARGET is a MAC or an IP address with an optional port (10.0.0.21, 10.0.0.21:5062,
[fd00::21]:5060). A MAC's address is the one its phone last completed a transfer of its own
cfg<mac>.xml from (phones seen); a request anyone could send in its name (a TFTP request never
acknowledged, a PnP SUBSCRIBE, a firmware download) never changes it.
One line per phone on standard output as its answer comes: address, MAC, model, and the phone's
final answer (200 OK, 481 ..., 401 ..., timeout ...), with anything the phone sent that is not
printable, and <, > and &, written as \\uXXXX.
A phone that challenges (check-sync with authentication on, P20983) gets the NOTIFY once more with
Digest credentials: --user/--password, else [sip] user and password of the configuration (a
password on the command line is visible to other users of this machine). The challenge is answered
only when it comes from an address given on the command line or from a phone of phones.csv (never
from a MAC known only from the phones seen), and, with --realm or [sip] realm set, only for that
realm; with no realm set, a challenge for any realm is answered.
A summary goes to standard error, with a progress line while it runs on a terminal. When the
configuration's log is a file, each NOTIFY is also logged there.
Exit status: 0 when every phone answered 2xx, 1 otherwise, 130 when interrupted.
"""


@dataclass(frozen=True)
class NotifyOptions:
    reboot: bool = False
    user: str = ""  # Digest credentials for phones that challenge
    password: str = ""
    realm: str = ""  # the only realm a challenge is answered for; "" = any
    rate: float = 10.0  # NOTIFYs started per second
    parallel: int = 50  # NOTIFYs waiting for an answer at once
    timeout: float = 32.0  # seconds a phone has to answer (RFC 3261 timer F), retransmissions included


@dataclass(frozen=True)
class Target:
    host: str | None  # None: a phone whose address is not known
    port: int
    mac: str | None = None
    model: str | None = None
    # May get Digest credentials: an address from the command line, or a phone of phones.csv.
    trusted: bool = True

    @property
    def where(self) -> str:
        return sip.hostport(self.host, self.port) if self.host else "-"


@dataclass(frozen=True)
class Result:
    target: Target
    ok: bool
    summary: str  # "200 OK", "timeout: no answer in 32s (7 sends)", "not seen: no address known", ...

    def line(self) -> str:
        return shown(f"{self.target.where} {self.target.mac or '-'} {self.target.model or '-'} {self.summary}")


def add_arguments(parser: argparse.ArgumentParser, name: str) -> None:
    parser.epilog = EPILOG
    parser.formatter_class = argparse.RawDescriptionHelpFormatter
    parser.add_argument("targets", nargs="*", metavar="TARGET", help="a MAC or an IP address[:port]")
    add_optional_config_argument(parser, "MACs, --group, --model, --all")
    parser.add_argument("--group", action="append", default=[], metavar="G", help="every phone of group G in phones.csv")
    parser.add_argument("--model", action="append", default=[], metavar="M", help="every phone of model M (inventory or seen)")
    parser.add_argument("--all", action="store_true", help="every phone in phones.csv and every phone seen")
    parser.add_argument("--reboot", action="store_true", help="Event: check-sync;reboot=true (the phone reboots first)")
    parser.add_argument("--port", type=_port, default=5060, help="SIP port of phones given without one (default 5060)")
    parser.add_argument("--user", default=None, help="Digest user for phones that challenge (default [sip] user)")
    parser.add_argument("--password", default=None, help="Digest password (default [sip] password)")
    parser.add_argument("--realm", default=None,
                        help="answer only Digest challenges for this realm (default [sip] realm; none: any realm)")
    parser.add_argument("--rate", type=_positive, default=NotifyOptions.rate,
                        help=f"NOTIFYs started per second (default {NotifyOptions.rate:g})")
    parser.add_argument("--parallel", type=_count, default=NotifyOptions.parallel,
                        help=f"NOTIFYs waiting for an answer at once (default {NotifyOptions.parallel})")
    parser.add_argument("--timeout", type=_positive, default=NotifyOptions.timeout,
                        help=f"seconds a phone has to answer, retransmissions included (default {NotifyOptions.timeout:g})")


def run(args: argparse.Namespace) -> int:
    if not (args.targets or args.group or args.model or args.all):
        raise CommandError("no target: give a MAC or an address, or --group, --model, --all")
    config = load_optional_config(args.config)
    targets = select_targets(args, config)
    options = NotifyOptions(
        reboot=args.reboot,
        user=args.user if args.user is not None else config.sip.user if config else "",
        password=args.password if args.password is not None else config.sip.password if config else "",
        realm=args.realm if args.realm is not None else config.sip.realm if config else "",
        rate=args.rate, parallel=args.parallel, timeout=args.timeout,
    )
    if bool(options.user) != bool(options.password):
        raise CommandError("--user and --password go together")
    if not targets:
        raise CommandError("no phone matches the --group/--model/--all selection")
    log = _request_log(config)
    try:
        results, finished = send_all(targets, options, log)
    finally:
        if log is not None:
            log.close()
    failed = sum(not result.ok for result in results)
    state = "" if finished else f", interrupted ({len(targets) - len(results)} not answered)"
    print(f"htekd notify: {len(targets)} phones: {len(results) - failed} ok, {failed} failed{state}", file=sys.stderr)
    if not finished:
        return 130
    return 0 if failed == 0 else 1


def select_targets(args: argparse.Namespace, config: Config | None) -> list[Target]:
    """Command-line targets, then inventory selections; each address once."""
    from htekd.tree import normalise_mac

    needs_state = args.group or args.model or args.all or any(normalise_mac(t) for t in args.targets)
    if needs_state and config is None:
        raise CommandError(f"MACs, --group, --model and --all need the configuration (phones seen): -c FILE "
                           f"({DEFAULT_CONFIG} does not exist)")
    seen = _phones_seen(config) if needs_state else {}
    inventory = _inventory(config) if needs_state else {}
    chosen: list[Target] = []
    for text in args.targets:
        mac = normalise_mac(text)
        if mac:
            chosen.append(_by_mac(mac, seen, inventory, args.port))
        else:
            host, port = _address(text, args.port)
            chosen.append(Target(host, port))
    groups = set(args.group)
    models = {model.upper() for model in args.model}
    macs = set(inventory) | set(seen) if args.all else set()
    macs |= {mac for mac, phone in inventory.items() if phone.group in groups}
    macs |= {mac for mac in set(inventory) | set(seen) if (_model(mac, seen, inventory) or "").upper() in models}
    chosen += [_by_mac(mac, seen, inventory, args.port) for mac in sorted(macs)]
    unique: dict[tuple, Target] = {}
    for target in chosen:
        unique.setdefault((target.host, target.port) if target.host else (target.mac,), target)
    return list(unique.values())


def _phones_seen(config: Config) -> dict:
    from htekd.state import StateError
    from htekd.store import read

    try:
        phones, _ = read(config.server)
    except StateError as exc:
        raise CommandError(str(exc)) from None
    return {phone.mac: phone for phone in phones}


def _inventory(config: Config) -> dict:
    from htekd import tree

    snapshot, problems = tree.load_for(config)
    errors = [problem for problem in problems if problem.severity == "error" and problem.file.endswith("phones.csv")]
    if errors:
        raise CommandError(f"{errors[0]} (run htekd check)")
    return dict(snapshot.phones)


def _model(mac: str, seen: dict, inventory: dict) -> str | None:
    phone = inventory.get(mac)
    return (phone.model if phone else None) or (seen[mac].model if mac in seen else None)


def _by_mac(mac: str, seen: dict, inventory: dict, port: int) -> Target:
    phone = seen.get(mac)
    return Target(phone.address if phone and phone.address else None, port, mac, _model(mac, seen, inventory),
                  trusted=mac in inventory)


def _address(text: str, default_port: int) -> tuple[str, int]:
    host, port = sip.split_hostport(text)
    if host is None and text.count(":") > 1:  # a bare IPv6 address
        host, port = text, None
    try:
        host = str(ipaddress.ip_address(host or ""))
    except ValueError:
        raise CommandError(f"{text!r} is neither a MAC nor an IP address[:port]") from None
    return host, port or default_port


def _request_log(config: Config | None):
    """The daemon's request log when it is a file (appended to); standard output carries the report."""
    if config is None or config.server.log == "-":
        return None
    from htekd.requestlog import RequestLog

    try:
        return RequestLog.open(config.server.log, config.server.log_format)
    except OSError as exc:
        raise CommandError(f"{config.source}: [htekd] log: cannot open {config.server.log}: {exc.strerror}") from None


def send_all(targets: list[Target], options: NotifyOptions, log) -> tuple[list[Result], bool]:
    """Run the NOTIFYs under the reactor, printing each phone's line as it ends; returns the results
    (in the order they ended) and whether all ran (False after Ctrl-C)."""
    from twisted.internet import reactor

    campaign = Campaign(reactor, targets, options, log, Progress(len(targets)))
    reactor.callWhenRunning(campaign.start)
    reactor.run()
    return campaign.results(), campaign.done


class Progress:
    """One self-overwriting line on a terminal's standard error; nothing elsewhere."""

    def __init__(self, total: int, stream=sys.stderr):
        self.total, self.stream = total, stream
        self.active = total > 1 and stream.isatty()

    def show(self, finished: int, failed: int) -> None:
        """After each phone's line: the counts so far."""
        if self.active:
            self.stream.write(f"\rhtekd notify: {finished}/{self.total} answered, {failed} failed ")
            self.stream.flush()

    def clear(self) -> None:
        if self.active:
            self.stream.write("\r\033[K")
            self.stream.flush()


class Campaign:
    """Starts NOTIFYs at `rate` per second with at most `parallel` waiting; stops the reactor when done."""

    def __init__(self, reactor, targets: list[Target], options: NotifyOptions, log, progress: Progress):
        self.reactor, self.targets, self.options, self.log, self.progress = reactor, targets, options, log, progress
        self.pending = list(reversed(range(len(targets))))
        self.finished: dict[int, Result] = {}
        self.failed = 0
        self.in_flight = 0
        self.last_start = float("-inf")
        self.timer = None
        self.endpoints: dict[int, object] = {}  # address family -> SipEndpoint
        self.done = False

    def results(self) -> list[Result]:
        return list(self.finished.values())

    def start(self) -> None:
        self._pump()

    def _pump(self) -> None:
        """Start the next NOTIFY when the rate and the parallel limit allow; one per call."""
        self.timer = None
        if self.done:
            return
        if self.pending and self.in_flight < self.options.parallel:
            wait = self.last_start + 1 / self.options.rate - self.reactor.seconds()
            if wait <= 0:
                self.last_start = self.reactor.seconds()
                index = self.pending.pop()
                self.in_flight += 1
                self._notify(self.targets[index]).addBoth(self._finished, index)
                wait = 1 / self.options.rate
            if self.timer is None:
                self.timer = self.reactor.callLater(wait, self._pump)
        elif not self.pending and self.in_flight == 0:
            self.done = True
            self.progress.clear()
            for endpoint in self.endpoints.values():
                endpoint.transport.stopListening()
            self.reactor.stop()

    def _finished(self, result, index: int) -> None:
        if not isinstance(result, Result):  # a bug, not a phone's answer: report it against that phone
            result = Result(self.targets[index], False, f"error: {result.getErrorMessage()}")
        self.finished[index] = result
        self.failed += not result.ok
        self.in_flight -= 1
        self.progress.clear()
        print(result.line(), flush=True)
        self.progress.show(len(self.finished), self.failed)
        if self.timer is None:  # through the reactor: _pump is never re-entered
            self.timer = self.reactor.callLater(0, self._pump)

    def _endpoint(self, host: str):
        from htekd.listeners.sip import SipEndpoint

        family = 6 if ":" in host else 4
        if family not in self.endpoints:
            endpoint = SipEndpoint(self.reactor, timeout=self.options.timeout)
            self.reactor.listenUDP(0, endpoint, interface="::" if family == 6 else "0.0.0.0")
            self.endpoints[family] = endpoint
        return self.endpoints[family]

    def _notify(self, target: Target):
        from twisted.internet import defer

        if target.host is None:
            return defer.succeed(Result(target, False, "not seen: no address known"))
        return defer.ensureDeferred(self._exchange(target))

    async def _exchange(self, target: Target) -> Result:
        from htekd.listeners.sip import local_address

        endpoint = self._endpoint(target.host)
        leg = sip.Leg(local_address(target.host), endpoint.transport.getHost().port)
        call_id, tag = sip.new_call_id(leg.host), sip.new_tag()
        address = (target.host, target.port)

        def notify(cseq: int, authorization=None):
            branch = sip.new_branch()
            data = sip.check_sync_notify(target.host, target.port, leg, self.options.reboot, call_id, tag, cseq,
                                         branch, authorization)
            return endpoint.request(data, branch, address)

        answer = await notify(1)
        note = ""
        status = answer.response.status if answer.response else None
        if status in (401, 407):
            header = "www-authenticate" if status == 401 else "proxy-authenticate"
            challenge = answer.response.header(header)
            if not self.options.user:
                note = " (no credentials: --user/--password or [sip] user/password)"
            elif not target.trusted:
                note = " (not in phones.csv: credentials not sent)"
            elif challenge is None:
                note = f" (without a {header} header)"
            else:
                try:
                    credentials = sip.digest_authorization(
                        challenge, "NOTIFY", f"sip:{sip.hostport(target.host, target.port)}",
                        self.options.user, self.options.password, realm=self.options.realm)
                except sip.DigestError as exc:
                    note = f" ({exc})"
                else:
                    name = "Authorization" if status == 401 else "Proxy-Authorization"
                    answer = await notify(2, (name, credentials))
                    refused = answer.response is not None and answer.response.status in (401, 407)
                    note = " (credentials refused)" if refused else " (after Digest authentication)"
        ok = answer.response is not None and 200 <= answer.response.status < 300
        result = Result(target, ok, answer.summary + note)
        self._log(target, answer, result)
        return result

    def _log(self, target: Target, answer, result: Result) -> None:
        if self.log is None:
            return
        from htekd.resolution import Client, Kind, Resolution, Status

        name = "check-sync;reboot=true" if self.options.reboot else "check-sync"
        resolution = Resolution(name=name, path="", kind=Kind.CHECK_SYNC, status=Status.OK, mac=target.mac, model=target.model)
        self.log.record(resolution, Client("sip", target.host, target.port), outcome="ok" if result.ok else "failed",
                        duration=answer.duration, reason=result.summary)


def _port(text: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise argparse.ArgumentTypeError(f"expected a port 1-65535, got {text!r}")
    return int(text)


def _positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not 0 < value <= 100000:
        raise argparse.ArgumentTypeError(f"expected a number above 0, got {text!r}")
    return value


def _count(text: str) -> int:
    if not text.isdigit() or not 1 <= int(text) <= 10000:
        raise argparse.ArgumentTypeError(f"expected a whole number 1-10000, got {text!r}")
    return int(text)
