"""HTTP and HTTPS listener: every GET or HEAD path goes to the resolver; nothing else is served.

The request path is percent-decoded once and decoded as UTF-8 (bytes that are not UTF-8 become
surrogate escapes, as Python does for file names); the resolver gets that name as is and does
all normalising and policy. Generated files are written in one piece; files are sent with
sendfile() over plain HTTP, and streamed in chunks over HTTPS, never read whole. Single byte ranges are honoured; a request for several ranges gets the
whole file (200), which RFC 9110 allows.

With a user and password in the section, every request must log in first, with Basic (RFC 7617)
or Digest (RFC 7616, MD5, with qop=auth or, for old clients, without qop), in realm "htekd".
"""

from __future__ import annotations

import base64
import email.utils
import hashlib
import hmac
import io
import os
import re
import secrets
import time
import urllib.parse
from dataclasses import replace
from typing import BinaryIO

from twisted.internet import tcp
from twisted.internet.error import CannotListenError
from twisted.internet.interfaces import IPullProducer
from twisted.internet.threads import deferToThread
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.web import http, server
from twisted.web.resource import Resource
from twisted.protocols.policies import ProtocolWrapper
from zope.interface import implementer

from htekd.config import LOGIN_REALM as REALM, login_ha1
from htekd.escape import quoted
from htekd.events import say
from htekd.listeners import ConnectionsPerAddress, ListenError, SurvivesShortage, shortage_of
from htekd.listeners.sendfile import SendfileConnection
from htekd.resolution import Client, Kind, Resolution, Status

# Bytes read from a file per write. Large enough that a 32 MiB firmware takes few reactor turns,
# small enough that hundreds of parallel downloads stay within tens of MB (one chunk each at most).
CHUNK_SIZE = 128 * 1024

CONTENT_TYPES = {
    ".xml": "application/xml",
    ".jpg": "image/jpeg",
    ".jpeg": "image/jpeg",
    ".bmp": "image/bmp",
    ".png": "image/png",
    ".gif": "image/gif",
    ".tar": "application/x-tar",
    ".js": "text/javascript",
    ".txt": "text/plain; charset=utf-8",
}
DEFAULT_CONTENT_TYPE = "application/octet-stream"
ALLOWED_METHODS = (b"GET", b"HEAD")
_RANGE = re.compile(r"bytes\s*=\s*(\d*)\s*-\s*(\d*)", re.ASCII | re.IGNORECASE)
RETRY_AFTER_BUSY = b"5"  # seconds, in the 503 of a file that could not be opened for want of descriptors
NONCE_LIFETIME = 300.0  # seconds a Digest nonce is accepted; then the client is told it is stale
# One auth-param of a Digest Authorization header: name=token or name="quoted string".
_AUTH_PARAM = re.compile(rb'\s*([A-Za-z0-9_-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,"]*))\s*(?:,|\Z)', re.DOTALL)


def listen(reactor, config, resolver, log, tls: bool) -> list:
    """Bind every address of `config` ([http] or [https]); ListenError if one cannot be bound
    (or, for HTTPS, if the certificate or key cannot be loaded) after closing the others."""
    protocol = "https" if tls else "http"
    login = Login(config.user, config.password) if config.user else None
    resource = ProvisioningResource(protocol, resolver, log, reactor, config.timeout, login)
    site = ProvisioningSite(resource, config.timeout, reactor)
    return bind(reactor, protocol, config, site, tls, resolver.client_network)


def bind(reactor, listener: str, config, site, tls: bool, network=str) -> list:
    """A TCP listening port for `site` on each address of `config` (a listener's section), over TLS
    with its certificate, key and ciphers when `tls`, with its connections_per_address per client
    (`network` of its address); ListenError after closing the others if one cannot be bound."""
    factory = site
    if tls:
        factory = TLSMemoryBIOFactory(tls_options(config, config.listen[0]), False, site)
        factory.noisy = False
    factory = ConnectionsPerAddress(factory, listener, config.connections_per_address, network)
    factory.noisy = False
    ports = []
    for address in config.listen:
        port = _Port(address.port, factory, interface=address.host, reactor=reactor)
        port.listener_name = listener
        try:
            port.startListening()
        except CannotListenError as exc:
            for bound in ports:
                bound.stopListening()
            raise ListenError(listener, address, exc.socketError.strerror or str(exc.socketError)) from None
        ports.append(port)
    return ports


def tls_options(config, address):
    """CertificateOptions from the PEM certificate (leaf first, then intermediates) and key of
    [https]; TLS 1.2 at least with [https] ciphers, no client certificate. ListenError naming the
    file otherwise."""
    from cryptography import x509
    from cryptography.exceptions import UnsupportedAlgorithm
    from cryptography.hazmat.primitives import serialization
    from OpenSSL import SSL
    from twisted.internet.ssl import AcceptableCiphers, CertificateOptions, TLSVersion

    def fail(what, path, reason):
        return ListenError("https", address, f"cannot load {what} {path}: {' '.join(str(reason).split())}")

    try:
        chain = x509.load_pem_x509_certificates(config.certificate.read_bytes())
    except OSError as exc:
        raise fail("certificate", config.certificate, exc.strerror) from None
    except ValueError:
        raise fail("certificate", config.certificate, "no PEM certificate in it") from None
    try:
        key = serialization.load_pem_private_key(config.private_key.read_bytes(), password=None)
    except OSError as exc:
        raise fail("private key", config.private_key, exc.strerror) from None
    except TypeError:  # cryptography's word for "this key needs a password"
        raise fail("private key", config.private_key, "it is encrypted; give an unencrypted key") from None
    except (ValueError, UnsupportedAlgorithm):
        raise fail("private key", config.private_key, "no PEM private key of a supported type in it") from None
    try:
        # pyOpenSSL takes cryptography's objects as they are (its own X509/PKey are deprecated).
        options = CertificateOptions(
            privateKey=key, certificate=chain[0], extraCertChain=chain[1:], raiseMinimumTo=TLSVersion.TLSv1_2,
            acceptableCiphers=AcceptableCiphers.fromOpenSSLCipherString(config.ciphers),
        )
        options.getContext()  # checks now that the key belongs to the certificate
    except (SSL.Error, ValueError, TypeError):
        raise fail("private key", config.private_key, f"it does not belong to certificate {config.certificate}") from None
    return options


class _Port(SurvivesShortage, tcp.Port):
    """A TCP listening port; its connections can sendfile() (used where no TLS is in between)."""

    transport = SendfileConnection


class _Channel(http.HTTPChannel):
    """An HTTP/1.x connection that must deliver each whole request within the timeout, and whose
    next pipelined request waits until the client has taken the answer to the last one.

    Twisted's idle timeout restarts on every byte, so a client trickling header bytes would be
    kept forever; this deadline runs from the moment the connection waits for a request.

    Twisted stops reading from a client that does not read its answers, but goes on answering the
    requests it has already read: 64 KiB of pipelined GETs for a generated file would queue
    hundreds of answers in memory. A finished request is therefore handed back to Twisted (which
    then parses the next one) only once the transport has room again.
    """

    _request_deadline = None
    _host = None
    _timed_out = False
    _backed_up = False  # the transport has asked us to stop: the client is not reading
    _answered = None  # a finished request whose successors wait for the transport

    def pauseProducing(self):
        self._backed_up = True
        super().pauseProducing()

    def resumeProducing(self):
        self._backed_up = False
        super().resumeProducing()
        answered, self._answered = self._answered, None
        if answered is not None:
            super().requestDone(answered)

    def timeoutConnection(self):
        # Our deadline and Twisted's idle timeout may both fire: a second call would leave a
        # forced abort scheduled after the connection is gone (a traceback for an idle TLS client).
        if not self._timed_out:
            self._timed_out = True
            super().timeoutConnection()

    def getHost(self):
        # twisted.web asks for it with every request: one getsockname() per connection is enough.
        if self._host is None:
            self._host = super().getHost()
        return self._host

    def connectionMade(self):
        super().connectionMade()
        self._arm_deadline()

    def allContentReceived(self):
        self._cancel_deadline()
        super().allContentReceived()

    def requestDone(self, request):
        self._arm_deadline()  # before: a pipelined request buffered meanwhile is parsed inside
        if self._backed_up:
            self._answered = request
            return
        super().requestDone(request)

    def connectionLost(self, reason):
        self._cancel_deadline()
        if self._answered is not None:  # finished already: nothing left to tell it
            self.requests.remove(self._answered)
            self._answered = None
        super().connectionLost(reason)

    def _arm_deadline(self):
        self._cancel_deadline()
        if self.timeOut:
            self._request_deadline = self.callLater(self.timeOut, self._deadline_passed)

    def _cancel_deadline(self):
        if self._request_deadline is not None and self._request_deadline.active():
            self._request_deadline.cancel()
        self._request_deadline = None

    def _deadline_passed(self):
        self._request_deadline = None
        self.timeoutConnection()


class _Request(server.Request):
    """A request whose body (a PUT or POST that will be refused) is read and thrown away."""

    def gotLength(self, length):
        self.content = io.BytesIO()

    def handleContentChunk(self, data):
        pass


class ProvisioningSite(server.Site):
    """The twisted.web site over the one resource; the request log is ours, not Twisted's."""

    protocol = _Channel
    requestFactory = _Request
    displayTracebacks = False
    noisy = False

    def __init__(self, resource, timeout: float, reactor):
        super().__init__(resource, timeout=timeout, reactor=reactor)

    def log(self, request):
        pass  # every request is recorded once by ProvisioningResource


class ProvisioningResource(Resource):
    """Answers every path: one exchange per request, from resolution to its log record."""

    isLeaf = True

    def __init__(self, protocol: str, resolver, log, reactor, timeout: float, login: Login | None = None):
        super().__init__()
        self.protocol, self.resolver, self.log, self.reactor, self.timeout = protocol, resolver, log, reactor, timeout
        self.login = login
        # A resolver that can answer from what it has at hand (htekd's: cached generated files and
        # refusals) spares most requests the round trip through the thread pool.
        self.resolve_cached = getattr(resolver, "resolve_cached", None)

    def render(self, request):
        _Exchange(self, request).start()
        return server.NOT_DONE_YET

    def resolve_and_open(self, name: str, client: Client) -> tuple[Resolution, BinaryIO | None]:
        """In a worker thread: the resolution and, for a file, the file opened for streaming (size
        and mtime then come from the open file, so the headers describe the bytes sent)."""
        resolution = self.resolver.resolve(name, client)
        if not resolution.ok or resolution.content is not None:
            return resolution, None
        try:
            reader = resolution.open()
        except OSError as exc:
            if shortage_of(exc):  # the file is there; the descriptors or memory to open it are not, for now
                raise _Busy(resolution, exc) from None
            return replace(resolution, status=Status.NOT_FOUND, reason=f"cannot open: {exc.strerror}"), None
        stat = os.fstat(reader.fileno())
        return replace(resolution, size=stat.st_size, mtime=stat.st_mtime), reader


class _Busy(Exception):
    """A file that cannot be opened for now: 503 with Retry-After, not 404 (the phone tries again)."""

    def __init__(self, resolution: Resolution, error: OSError):
        super().__init__(f"cannot open: {error.strerror}")
        self.resolution = resolution


class _Exchange:
    """One request: method check, resolution in a thread, the response, then one log record."""

    def __init__(self, resource: ProvisioningResource, request: server.Request):
        self.resource, self.request = resource, request
        self.started = time.monotonic()
        peer = request.getClientAddress()
        user_agent = request.getHeader(b"user-agent") or b""
        self.client = Client(resource.protocol, peer.host, peer.port, user_agent.decode("utf-8", "replace"))
        self.name = request_name(request.path)
        self.resolution: Resolution | None = None
        self.outcome, self.reason, self.nbytes = "ok", "", 0
        self.gone = False  # the client went away before the resolution arrived
        self.recorded = False
        request.setHeader(b"server", b"htekd")
        request.notifyFinish().addCallbacks(self._finished, self._broken)

    def start(self):
        method = self.request.method
        if method not in ALLOWED_METHODS:
            reason = f"method {method.decode('latin-1')} not allowed"
            self.resolution = Resolution(self.name, self.name.strip("/"), Kind.NONE, Status.DENIED, reason)
            self.request.setHeader(b"allow", b", ".join(ALLOWED_METHODS))
            self._text(http.NOT_ALLOWED, reason, "denied")
            return
        login = self.resource.login
        if login is not None:
            refusal = login.check(method, self.request.uri, self.request.getHeader(b"authorization"))
            if refusal:
                self._unauthorized(login, refusal)
                return
        if self.resource.resolve_cached is not None:
            try:
                resolution = self.resource.resolve_cached(self.name, self.client)
                # A file still has to be opened: that is the worker thread's job.
                if resolution is not None and (not resolution.ok or resolution.content is not None):
                    self._respond((resolution, None))
                    return
            except Exception:  # as from the worker thread: this request fails, the listener lives on
                self._failed(Failure())
                return
        work = deferToThread(self.resource.resolve_and_open, self.name, self.client)
        work.addCallback(self._respond)
        work.addErrback(self._failed)

    def _unauthorized(self, login: Login, refusal: str):
        """401 with a Digest and a Basic challenge; the log gets why (never what was sent)."""
        self.resolution = Resolution(self.name, self.name.strip("/"), Kind.NONE, Status.DENIED, refusal)
        for challenge in login.challenges(stale=refusal == STALE_NONCE):
            self.request.responseHeaders.addRawHeader(b"www-authenticate", challenge)
        self._text(http.UNAUTHORIZED, "authentication required", "denied", refusal)

    # -- responses -------------------------------------------------------------------------------
    def _respond(self, answer: tuple[Resolution, BinaryIO | None]):
        resolution, reader = answer
        self.resolution = resolution
        if self.gone:
            if reader is not None:
                reader.close()
            self._record("failed")
            return
        if not resolution.ok:
            code = http.NOT_FOUND if resolution.status is Status.NOT_FOUND else http.FORBIDDEN
            self._text(code, resolution.reason or resolution.status.value, resolution.status.value)
            return
        request = self.request
        size = resolution.size if reader is not None else len(resolution.content)
        etag = f'"{resolution.etag}"'.encode("ascii", "replace") if resolution.etag else None
        modified = http.datetimeToString(int(resolution.mtime)) if resolution.mtime else None
        request.setHeader(b"content-type", CONTENT_TYPES.get(os.path.splitext(resolution.path)[1].lower(), DEFAULT_CONTENT_TYPE))
        request.setHeader(b"accept-ranges", b"bytes")
        if etag:
            request.setHeader(b"etag", etag)
        if modified:
            request.setHeader(b"last-modified", modified)
        if self._not_modified(etag, resolution.mtime):
            request.setResponseCode(http.NOT_MODIFIED)
            self._finish(reader)
            return
        wanted = byte_range(request.getHeader(b"range"), size) if self._range_applies(etag, modified) else None
        if wanted == "unsatisfiable":
            request.setHeader(b"content-range", f"bytes */{size}")
            if reader is not None:
                reader.close()
            self._text(http.REQUESTED_RANGE_NOT_SATISFIABLE, "range not satisfiable", "ok")
            return
        start, end = wanted or (0, size)
        if wanted:
            request.setResponseCode(http.PARTIAL_CONTENT)
            request.setHeader(b"content-range", f"bytes {start}-{end - 1}/{size}")
        request.setHeader(b"content-length", str(end - start))
        if request.method == b"HEAD":
            self._finish(reader)
        elif reader is None:
            self.nbytes = end - start
            request.write(resolution.content[start:end])
            request.finish()
        elif not request.isSecure() and isinstance(_connection(request), SendfileConnection):
            _SentFile(self, reader, start, end - start).start()
        else:
            _FileBody(self, reader, start, end - start).start()

    def _text(self, code: int, message: str, outcome: str, reason: str = ""):
        """A short text/plain answer (errors); the log gets `outcome` and `reason` (else the message)."""
        body = (message + "\n").encode("utf-8", "replace")
        self.outcome, self.reason = outcome, reason or message
        self.request.setResponseCode(code)
        self.request.setHeader(b"content-type", b"text/plain; charset=utf-8")
        self.request.setHeader(b"content-length", str(len(body)))
        if self.request.method != b"HEAD":
            self.request.write(body)
        self.request.finish()

    def _finish(self, reader: BinaryIO | None):
        """A response without body bytes (HEAD, 304)."""
        if reader is not None:
            reader.close()
        self.request.finish()

    def _failed(self, failure):
        """The resolver (or this code) raised: this request fails, the listener lives on."""
        if failure.check(_Busy):
            self.resolution = failure.value.resolution
            if self.gone:
                self._record("failed")
            else:
                self.request.setHeader(b"retry-after", RETRY_AFTER_BUSY)
                self._text(http.SERVICE_UNAVAILABLE, "server busy, try again", "failed", str(failure.value))
            return
        message = f"{failure.type.__name__}: {failure.getErrorMessage()}"
        say(f"{self.client.protocol}: {quoted(self.name)} failed: {message}")
        if self.resolution is None:
            self.resolution = Resolution(self.name, self.name.strip("/"), Kind.NONE, Status.NOT_FOUND)
        self.reason = f"internal error: {message}"
        if self.gone:
            self._record("failed")
        elif not self.request.startedWriting:
            self._text(http.INTERNAL_SERVER_ERROR, "internal error", "failed", self.reason)
        else:
            self.outcome = "failed"
            self.request.transport.abortConnection()

    # -- conditional and range requests ----------------------------------------------------------
    def _not_modified(self, etag: bytes | None, mtime: float) -> bool:
        """If-None-Match wins over If-Modified-Since (RFC 9110 13.2.2)."""
        tags = self.request.getHeader(b"if-none-match")
        if tags is not None:
            if tags.strip() == b"*":
                return True
            return etag is not None and any(tag.strip().removeprefix(b"W/") == etag for tag in tags.split(b","))
        since = http_date(self.request.getHeader(b"if-modified-since"))
        return since is not None and bool(mtime) and int(mtime) <= since

    def _range_applies(self, etag: bytes | None, modified: bytes | None) -> bool:
        """If-Range: the range is for this version of the file only (else the whole file is sent)."""
        condition = self.request.getHeader(b"if-range")
        return condition is None or condition.strip() in (etag, modified)

    # -- the end of a request --------------------------------------------------------------------
    def _finished(self, _):
        self._record(self.outcome)

    def _broken(self, _failure):
        if self.resolution is None:
            self.gone = True  # logged when the resolution arrives
            return
        self._record("failed" if self.outcome == "ok" else self.outcome)

    def _record(self, outcome: str):
        if self.recorded:
            return
        self.recorded = True
        self.resource.log.record(
            self.resolution, self.client, outcome, self.nbytes, time.monotonic() - self.started, self.reason
        )


NO_CREDENTIALS = "authentication required"
WRONG_CREDENTIALS = "wrong credentials"
STALE_NONCE = "authentication expired (stale nonce)"


class Login:
    """The one user of [http] or [https], checked with Basic or Digest.

    Only HA1 = md5(user:htekd:password) is kept, so the hashed form "md5-ha1:<hex>" in htekd.conf
    serves both schemes (Basic hashes what it is given and compares). Nonces are stateless: a
    timestamp and its HMAC under a secret made at start, so they expire after NONCE_LIFETIME and
    die with the process; within its lifetime a nonce can be used again (no per-client state).
    """

    def __init__(self, user: str, password: str, clock=time.time):
        self.user = user.encode("utf-8")
        self.ha1 = login_ha1(user, password).encode("ascii")
        self.clock = clock
        self._secret = secrets.token_bytes(32)

    def challenges(self, stale: bool = False) -> list[bytes]:
        digest = f'Digest realm="{REALM}", qop="auth", nonce="{self._nonce()}", algorithm=MD5'
        if stale:
            digest += ", stale=true"
        return [digest.encode("ascii"), f'Basic realm="{REALM}"'.encode("ascii")]

    def check(self, method: bytes, uri: bytes, authorization: bytes | None) -> str:
        """"" when `authorization` logs this request in, else the reason it does not."""
        if not authorization:
            return NO_CREDENTIALS
        scheme, _, rest = authorization.strip().partition(b" ")
        scheme = scheme.lower()
        if scheme == b"basic":
            return "" if self._basic(rest.strip()) else WRONG_CREDENTIALS
        if scheme == b"digest":
            return self._digest(method, uri, rest)
        return NO_CREDENTIALS

    def _basic(self, token: bytes) -> bool:
        try:
            user, colon, password = base64.b64decode(token, validate=True).partition(b":")
        except ValueError:
            return False
        same_user = hmac.compare_digest(user, self.user)
        same_password = hmac.compare_digest(_md5(user, REALM.encode(), password).encode("ascii"), self.ha1)
        return bool(colon) and same_user and same_password

    def _digest(self, method: bytes, uri: bytes, params_text: bytes) -> str:
        params = _auth_params(params_text)
        if params is None or not {b"username", b"realm", b"nonce", b"uri", b"response"} <= params.keys():
            return WRONG_CREDENTIALS
        qop = params.get(b"qop")
        if (params[b"realm"] != REALM.encode() or params[b"uri"] != uri
                or params.get(b"algorithm", b"MD5").upper() != b"MD5"
                or qop not in (None, b"auth") or (qop and not (params.get(b"nc") and params.get(b"cnonce")))):
            return WRONG_CREDENTIALS
        ha2 = _md5(method, uri)
        nonce = params[b"nonce"]
        if qop:
            expected = _md5(self.ha1, nonce, params[b"nc"], params[b"cnonce"], qop, ha2.encode("ascii"))
        else:
            expected = _md5(self.ha1, nonce, ha2.encode("ascii"))
        same_user = hmac.compare_digest(params[b"username"], self.user)
        same_response = hmac.compare_digest(params[b"response"].lower(), expected.encode("ascii"))
        age = self._nonce_age(nonce)
        if not (same_user and same_response) or age is None:
            return WRONG_CREDENTIALS
        return "" if age <= NONCE_LIFETIME else STALE_NONCE

    def _nonce(self, moment: float | None = None) -> str:
        stamp = f"{int(self.clock() if moment is None else moment):x}"
        return f"{stamp}.{hmac.new(self._secret, stamp.encode('ascii'), hashlib.sha256).hexdigest()[:32]}"

    def _nonce_age(self, nonce: bytes) -> float | None:
        """Seconds since this process made `nonce`; None if it did not make it."""
        stamp, _, _ = nonce.partition(b".")
        try:
            moment = int(stamp, 16)
        except ValueError:
            return None
        if not hmac.compare_digest(self._nonce(moment).encode("ascii"), nonce):
            return None
        age = self.clock() - moment
        return age if age >= -1 else None


def _md5(*parts: bytes) -> str:
    return hashlib.md5(b":".join(parts), usedforsecurity=False).hexdigest()


def _auth_params(text: bytes) -> dict[bytes, bytes] | None:
    """`a="x", b=y` -> {b"a": b"x", b"b": b"y"} (names lower-case, quotes undone); None if unreadable."""
    params, position = {}, 0
    text = text.strip()
    while position < len(text):
        match = _AUTH_PARAM.match(text, position)
        if not match or match.end() == position:
            return None
        quoted, token = match.group(2), match.group(3)
        value = re.sub(rb"\\(.)", rb"\1", quoted, flags=re.DOTALL) if quoted is not None else token
        params[match.group(1).lower()] = value
        position = match.end()
    return params


@implementer(IPullProducer)
class _FileBody:
    """Streams [start, start+length) of an open file, CHUNK_SIZE at a time. A client that takes no
    data for the timeout is cut off (Twisted's idle timeout is off while a response is sent)."""

    def __init__(self, exchange: _Exchange, reader: BinaryIO, start: int, length: int):
        self.exchange, self.reader, self.remaining = exchange, reader, length
        self.request = exchange.request
        self.timeout = exchange.resource.timeout
        self.watchdog = None
        if start:
            reader.seek(start)

    def start(self):
        self.watchdog = self.exchange.resource.reactor.callLater(self.timeout, self._stalled)
        self.request.registerProducer(self, False)

    def resumeProducing(self):
        try:
            data = self.reader.read(min(CHUNK_SIZE, self.remaining))
        except OSError:
            data = b""
        if not data:  # a read error, or the file shrank under us: the promised length cannot be kept
            self.request.transport.abortConnection()
            return
        self.remaining -= len(data)
        self.exchange.nbytes += len(data)
        self.watchdog.reset(self.timeout)
        self.request.write(data)
        if self.remaining == 0:
            self.stopProducing()
            self.request.unregisterProducer()
            self.request.finish()

    def stopProducing(self):
        if self.watchdog.active():
            self.watchdog.cancel()
        self.reader.close()

    def _stalled(self):
        self.request.transport.abortConnection()


class _SentFile:
    """Sends [start, start+length) of an open file with sendfile() after the headers. A client that
    takes no data for the timeout is cut off, as with _FileBody."""

    def __init__(self, exchange: _Exchange, reader: BinaryIO, start: int, length: int):
        self.exchange, self.reader, self.start_at, self.length = exchange, reader, start, length
        self.request = exchange.request
        self.timeout = exchange.resource.timeout
        self.watchdog = None

    def start(self):
        self.request.write(b"")  # the headers, buffered ahead of the file
        self.watchdog = self.exchange.resource.reactor.callLater(self.timeout, self._stalled)
        _connection(self.request).send_file(self.reader.fileno(), self.start_at, self.length, self._sent, self._done)

    def _sent(self, count: int):
        self.exchange.nbytes += count
        self.watchdog.reset(self.timeout)

    def _done(self, reason):
        """At the end, or with the connection lost (the request's own errback logs it as failed)."""
        if self.watchdog.active():
            self.watchdog.cancel()
        self.reader.close()
        if reason is None:
            self.request.finish()

    def _stalled(self):
        self.request.transport.abortConnection()


def _connection(request):
    """The TCP connection under a plain HTTP request: ConnectionsPerAddress puts a wrapper in between."""
    transport = request.transport
    return getattr(transport, "transport", transport) if isinstance(transport, ProtocolWrapper) else transport


def request_name(path: bytes) -> str:
    """The raw request path, percent-decoded once, as UTF-8 (other bytes as surrogate escapes).
    An absolute-form target ("GET http://host/name", as sent through a proxy) gives its path."""
    if not path.startswith(b"/"):
        try:
            path = urllib.parse.urlsplit(path).path
        except ValueError:  # an unreadable authority ("http://[x/"): the resolver refuses the name as sent
            pass
    return urllib.parse.unquote_to_bytes(path).decode("utf-8", "surrogateescape")


def http_date(value: bytes | None) -> int | None:
    """Seconds since the epoch of an HTTP date, None if absent or unreadable."""
    try:
        parsed = email.utils.parsedate_tz(value.decode("latin-1")) if value else None
        return email.utils.mktime_tz(parsed) if parsed else None
    except (ValueError, OverflowError):  # e.g. a year beyond any clock
        return None


def byte_range(header: bytes | None, size: int):
    """(start, end) for a single "bytes=" range, "unsatisfiable", or None (no, several or an
    unreadable range: the whole file is sent)."""
    match = _RANGE.fullmatch(header.decode("latin-1").strip()) if header else None
    if not match or not any(match.groups()):
        return None
    first, last = match.groups()
    if not first:  # "-N": the last N bytes
        suffix = int(last)
        return (max(size - suffix, 0), size) if suffix and size else "unsatisfiable"
    start, end = int(first), int(last) + 1 if last else size
    if last and end <= start:  # "9-5" is no valid range: ignored
        return None
    return (start, min(end, size)) if start < size else "unsatisfiable"
