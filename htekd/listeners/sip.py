"""SIP over UDP on Twisted: client transactions (send, retransmit, match the answer) and the PnP responder.

SipEndpoint is one UDP socket: requests it sends are retransmitted per RFC 3261 17.1.2 (timer E
from T1 doubling up to T2, given up at timer F, 64*T1 by default) until a final response with the same Via
branch arrives; requests it receives go to a callback. Datagrams that do not parse are dropped.

The PnP responder answers a `SUBSCRIBE` with `Event: ua-profile` from an allowed phone with 200 OK,
then sends it a NOTIFY whose application/url body is the provisioning URL. Everything it sends goes
to the address the SUBSCRIBE came from, at a bounded rate, one exchange per address at a time, so a
forged SUBSCRIBE cannot turn it against a third party.
"""

from __future__ import annotations

import errno
import socket
import time
from dataclasses import dataclass
from typing import Callable

from twisted.internet import defer, udp
from twisted.internet.protocol import DatagramProtocol

from htekd import sip
from htekd.listeners import ListenError, SurvivesShortage
from htekd.resolution import Client, Kind, Resolution, Status

T1 = 0.5  # RFC 3261 round-trip estimate
T2 = 4.0  # longest interval between retransmissions of a non-INVITE request
PNP_GROUP = "224.0.1.75"  # the SIP multicast address phones send PnP SUBSCRIBEs to
MAX_ANSWERS_AGAIN = 10  # a SUBSCRIBE is retransmitted at most 10 times (T1 doubling to T2 within 64*T1)


@dataclass(frozen=True)
class Answer:
    """How a client transaction ended: a final response, or none (timeout or send error)."""

    response: sip.Message | None
    sends: int  # datagrams sent, retransmissions included
    duration: float
    error: str = ""  # why nothing came back, when response is None

    @property
    def summary(self) -> str:
        """`200 OK`, `timeout: no answer in 32s (7 sends)`, or the send error."""
        if self.response is not None:
            return f"{self.response.status} {self.response.reason}".strip()
        return self.error


class _Transaction:
    def __init__(self, endpoint: SipEndpoint, data: bytes, address: tuple[str, int], method: str, t1: float):
        self.endpoint, self.data, self.address, self.method = endpoint, data, address, method
        self.deferred: defer.Deferred = defer.Deferred()
        self.started = endpoint.clock.seconds()
        self.interval = t1
        self.sends = 0
        self.retransmit_call = None
        self.timeout_call = None


class SipEndpoint(DatagramProtocol):
    """One SIP UDP socket: client transactions out, requests in."""

    def __init__(self, clock, on_request: Callable[[sip.Message, tuple[str, int]], None] | None = None,
                 t1: float = T1, timeout: float = 64 * T1):
        self.clock = clock
        self.on_request = on_request
        self.t1, self.timeout = t1, timeout  # timer E's start; timer F
        self.transactions: dict[str, _Transaction] = {}

    # -- sending ---------------------------------------------------------------------------------
    def send(self, data: bytes, address: tuple[str, int]) -> str:
        """One datagram; returns "" or the error (unreachable network, ...)."""
        try:
            self.transport.write(data, address)
        except OSError as exc:
            return f"cannot send to {sip.hostport(address[0], address[1])}: {exc.strerror or exc}"
        return ""

    def request(self, data: bytes, branch: str, address: tuple[str, int]) -> defer.Deferred:
        """Send a non-INVITE request and retransmit it until a final answer; fires with an Answer."""
        method = data.split(b" ", 1)[0].decode("ascii")
        transaction = _Transaction(self, data, address, method, self.t1)
        self.transactions[branch] = transaction
        transaction.timeout_call = self.clock.callLater(self.timeout, self._give_up, branch)
        self._transmit(branch)
        return transaction.deferred

    def _transmit(self, branch: str) -> None:
        transaction = self.transactions.get(branch)
        if transaction is None:
            return
        error = self.send(transaction.data, transaction.address)
        if error:
            self._finish(branch, None, error)
            return
        transaction.sends += 1
        transaction.retransmit_call = self.clock.callLater(transaction.interval, self._transmit, branch)
        transaction.interval = min(transaction.interval * 2, T2)

    def _give_up(self, branch: str) -> None:
        transaction = self.transactions.get(branch)
        if transaction is not None:
            transaction.timeout_call = None
            self._finish(branch, None, f"timeout: no answer in {self.timeout:g}s ({transaction.sends} sends)")

    def _finish(self, branch: str, response: sip.Message | None, error: str = "") -> None:
        transaction = self.transactions.pop(branch)
        for call in (transaction.retransmit_call, transaction.timeout_call):
            if call is not None and call.active():
                call.cancel()
        duration = self.clock.seconds() - transaction.started
        transaction.deferred.callback(Answer(response, transaction.sends, duration, error))

    # -- receiving -------------------------------------------------------------------------------
    def datagramReceived(self, data: bytes, address) -> None:
        message = sip.parse(data)
        if message is None:
            return
        if message.is_request:
            if self.on_request is not None:
                self.on_request(message, address[:2])
            return
        vias = message.all("via")
        via = sip.parse_via(vias[0]) if vias else None
        transaction = self.transactions.get(via.branch) if via else None
        if transaction is None or not message.cseq or message.cseq[1] != transaction.method:
            return
        if message.status < 200:
            # Proceeding (RFC 3261 17.1.2.2): the peer has it; keep resending at T2 until the final answer.
            transaction.interval = T2
            return
        self._finish(via.branch, message)

    def stopProtocol(self) -> None:
        for branch in list(self.transactions):
            self._finish(branch, None, "stopped")


def local_address(peer: str) -> str:
    """The address of this host that `peer` sees: the source the kernel picks on the route to it."""
    family = socket.AF_INET6 if ":" in peer else socket.AF_INET
    with socket.socket(family, socket.SOCK_DGRAM) as probe:
        try:
            probe.connect((peer, 9))
            return probe.getsockname()[0]
        except OSError:
            return "::1" if family == socket.AF_INET6 else "127.0.0.1"


# -- PnP -------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PnpOptions:
    """The [pnp] section: where to listen and which phones to answer."""

    enabled: bool = True
    interface: str = "0.0.0.0"  # address of the interface joining the group; 0.0.0.0 = the kernel's choice
    port: int = 5060
    vendors: tuple[str, ...] = (sip.HTEK_VENDOR,)  # Event vendor= values answered (lower case)
    ouis: tuple[str, ...] = (sip.HTEK_OUI,)  # MAC prefixes answered (6 lower-case hex digits)
    rate: float = 10.0  # exchanges started per second, all phones together
    burst: int = 20  # exchanges that may start at once after a quiet spell
    max_exchanges: int = 256  # exchanges waiting for a NOTIFY answer at once
    group: str = PNP_GROUP
    timeout: float = 64 * T1  # seconds a phone has to answer the NOTIFY


class TokenBucket:
    """`rate` events per second on average, `burst` at most at once."""

    def __init__(self, rate: float, burst: int, clock: Callable[[], float] = time.monotonic):
        self.rate, self.burst, self.clock = rate, burst, clock
        self.tokens = float(burst)
        self.updated = clock()

    def take(self) -> bool:
        now = self.clock()
        self.tokens = min(self.burst, self.tokens + (now - self.updated) * self.rate)
        self.updated = now
        if self.tokens < 1:
            return False
        self.tokens -= 1
        return True


class PnpResponder:
    """Answers ua-profile SUBSCRIBEs; one request-log line per exchange."""

    def __init__(self, clock, options: PnpOptions, url: Callable[[], str], log):
        self.options, self.url, self.log = options, url, log
        self.endpoint = SipEndpoint(clock, self.received, timeout=options.timeout)
        self.bucket = TokenBucket(options.rate, options.burst)
        self.exchanges: dict[str, list] = {}  # phone address -> [Call-ID, our 200 OK, times sent again]

    def allowed(self, phone: sip.PnpPhone) -> bool:
        return (phone.vendor.lower() in self.options.vendors
                or (phone.mac is not None and phone.mac[:6] in self.options.ouis))

    def received(self, request: sip.Message, source: tuple[str, int]) -> None:
        phone = sip.pnp_phone(request)
        if phone is None or not self.allowed(phone):
            return
        host = source[0]
        reply = self._reply_address(request, source)
        ongoing = self.exchanges.get(host)
        if ongoing is not None:
            # The same SUBSCRIBE again (our 200 OK was lost): answer it again, as often as a phone
            # retransmits within timer F; another SUBSCRIBE waits until this exchange ends.
            if ongoing[0] == request.header("call-id") and ongoing[2] < MAX_ANSWERS_AGAIN:
                ongoing[2] += 1
                self.endpoint.send(ongoing[1], reply)
            return
        if len(self.exchanges) >= self.options.max_exchanges or not self.bucket.take():
            return
        url = self.url()
        bound = self.endpoint.transport.getHost()
        leg = sip.Leg(bound.host if bound.host != "0.0.0.0" else local_address(host), bound.port)
        tag = sip.new_tag()
        ok = sip.build_response(request, 200, tag, [("Contact", f"<sip:{leg.user}@{sip.hostport(leg.host, leg.port)}>"),
                                                    ("Expires", "0")])
        self.exchanges[host] = [request.header("call-id"), ok, 0]
        client = Client("sip", host, source[1], phone.user_agent, confirmed=False)
        error = self.endpoint.send(ok, reply)
        if error:
            self._logged(phone, client, url, None, error)
            return
        branch = sip.new_branch()
        notify = sip.ua_profile_notify(request, leg, tag, branch, url)
        self.endpoint.request(notify, branch, self._notify_address(request, host, reply)).addCallback(
            lambda answer: self._logged(phone, client, url, answer))

    def _logged(self, phone: sip.PnpPhone, client: Client, url: str, answer: Answer | None, error: str = "") -> None:
        self.exchanges.pop(client.address, None)
        if answer is None:
            ok, reason = False, error
        elif answer.response is None:
            ok, reason = False, f"NOTIFY {answer.summary}"
        else:
            ok, reason = 200 <= answer.response.status < 300, f"NOTIFY answered {answer.summary}"
        resolution = Resolution(name=url, path="", kind=Kind.PNP, status=Status.OK, mac=phone.mac,
                                model=phone.model or None, firmware=phone.version or None)
        # An answer to our NOTIFY (its branch unguessable) shows the SUBSCRIBE came from `client.address`.
        self.log.record(resolution, client, outcome="ok" if ok else "failed",
                        duration=answer.duration if answer else 0.0, reason=reason,
                        confirmed=answer is not None and answer.response is not None)

    @staticmethod
    def _reply_address(request: sip.Message, source: tuple[str, int]) -> tuple[str, int]:
        """RFC 3261 18.2.2 / RFC 3581: the source address; its port when rport is asked, else Via's."""
        via = sip.parse_via(request.all("via")[0])
        if "rport" in via.params or via.port is None:
            return source
        return source[0], via.port

    @staticmethod
    def _notify_address(request: sip.Message, host: str, reply: tuple[str, int]) -> tuple[str, int]:
        """The Contact's port when the Contact names the sender's own address; never another host."""
        contact = request.header("contact")
        uri = sip.parse_uri(sip.name_addr(contact)[0]) if contact else None
        if uri is not None and uri.host == host and uri.port:
            return host, uri.port
        return reply


def listen_pnp(reactor, options: PnpOptions, url: Callable[[], str], log) -> list:
    """Listen for PnP SUBSCRIBEs on UDP `options.port` and join the PnP group; returns the listening ports.

    With interface 0.0.0.0 one socket on every address does it all. With an interface address, the
    responder's socket is bound to that address only and a second socket, bound to the group address,
    receives the multicast SUBSCRIBEs: nothing listens on other addresses (loopback stays loopback).
    `url()` gives the provisioning URL handed out at the moment of each exchange (reloads apply).
    Raises ListenError when the port cannot be bound or the group cannot be joined."""
    responder = PnpResponder(reactor, options, url, log)
    ports = []
    every_address = options.interface == "0.0.0.0"
    try:
        ports.append(_listen_udp(reactor, options.interface, options.port, responder.endpoint, multicast=every_address))
        if not every_address:
            ports.append(_listen_udp(reactor, options.group, options.port, _Forward(responder.endpoint), multicast=True))
    except ListenError:
        for port in ports:
            port.stopListening()
        raise
    joined = ports[-1].joinGroup(options.group, options.interface)
    failures: list = []
    joined.addErrback(failures.append)
    if failures:
        for port in ports:
            port.stopListening()
        reason = failures[0].value.args[-1] if failures[0].value.args else failures[0].getErrorMessage()
        raise ListenError("pnp", f"{options.group} on interface {options.interface}",
                          f"{reason} (set [pnp] interface to this host's LAN address, or enabled = no)")
    return ports


def _listen_udp(reactor, host: str, port: int, protocol, multicast: bool):
    listening = _PnpPort(port, protocol, host, 8192, reactor, False) if multicast else \
        _PnpUnicastPort(port, protocol, host, 8192, reactor)
    try:
        listening.startListening()
        return listening
    except Exception as exc:  # CannotListenError and the OSError under it
        reason = _reason(exc)
        if getattr(getattr(exc, "socketError", exc), "errno", None) == errno.EADDRNOTAVAIL:
            reason += " (set [pnp] interface to this host's LAN address, or enabled = no)"
        raise ListenError("pnp", f"{host}:{port}", reason) from None


class _Forward(DatagramProtocol):
    """The group socket: hands each multicast datagram to the responder, which answers from its own socket."""

    def __init__(self, endpoint: SipEndpoint):
        self.endpoint = endpoint

    def datagramReceived(self, data: bytes, address) -> None:
        self.endpoint.datagramReceived(data, address)


class _PnpPort(SurvivesShortage, udp.MulticastPort):
    """A PnP socket that joins the group (what reactor.listenMulticast makes), kept listening through
    resource errors."""

    listener_name = "pnp"


class _PnpUnicastPort(SurvivesShortage, udp.Port):
    """The PnP socket on the interface's own address (what reactor.listenUDP makes), kept listening
    through resource errors."""

    listener_name = "pnp"


def _reason(exc: BaseException) -> str:
    inner = getattr(exc, "socketError", None) or exc
    return getattr(inner, "strerror", None) or " ".join(str(inner).split()) or type(inner).__name__
