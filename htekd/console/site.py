"""The console's listener: twisted.web in, pages, JSON and metrics out.

Every page and API answer is built in a worker thread (store queries, rendering, templates), so
the reactor thread that serves phones only writes the finished bytes. Templates are Jinja2 with
autoescaping: every text a stranger can influence (names asked for, User-Agents, CSV cells) is
shown as text. A login is a form and a session cookie for browsers, Basic or Digest (as [http])
for /api/ and /metrics; a state-changing request (check-sync) needs the session's CSRF token.
"""

from __future__ import annotations

import dataclasses
import hmac
import ipaddress
import json
import re
import secrets
import subprocess
import sys
import threading
import time
import urllib.parse
from dataclasses import dataclass, field
from pathlib import Path

from jinja2 import Environment, FileSystemLoader, select_autoescape
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool
from twisted.web import server
from twisted.web.resource import Resource

from htekd import tree
from htekd.config import ha1, login_ha1
from htekd.console import metrics, views
from htekd.events import say
from htekd.listeners.http import Login, bind

HERE = Path(__file__).resolve().parent
COOKIE = b"htekd_console"
SESSION_IDLE = 8 * 3600.0  # seconds a session lives without use
MAX_SESSIONS = 1000
FAILED_LOGIN_DELAY = 1.0  # seconds before a wrong password is answered
NOTIFY_TIMEOUT = 45.0
MAX_OFFERS = 100_000
MAX_PAGES = 64
CHECK_FRESH = 60.0  # seconds before htekd check runs again for the problems page
ROWS_FRESH = 2.0  # seconds the phones table may lag behind the phones seen
HEADERS = {
    b"Content-Security-Policy": b"default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; form-action 'self'; "
                                b"base-uri 'none'",
    b"X-Content-Type-Options": b"nosniff",
    b"X-Frame-Options": b"DENY",
    b"Referrer-Policy": b"same-origin",
    b"Cache-Control": b"no-store",
}
LOCAL_TARGET = re.compile(r"/(?![/\\])[A-Za-z0-9/?&=%._~+-]*")  # where a login may lead: a page here
STATIC = {"console.js": "text/javascript; charset=utf-8", "console.css": "text/css; charset=utf-8"}


def listen(reactor, daemon) -> list:
    """Bind every address of [admin]; ListenError after closing the others if one cannot be bound."""
    admin = daemon.config.admin
    console = Console(daemon)
    site = server.Site(ConsoleResource(console, reactor))
    site.noisy = False
    site.log = lambda request: None  # console requests are not phone requests: not in the request log
    ports = bind(reactor, "admin", admin, site, admin.tls)
    daemon.log.observers.append(console.counts.observe)
    # One thread of its own: pages never take the threads that resolve phones' requests, and
    # never more than one core's worth of the process.
    console.pool.start()
    reactor.addSystemEventTrigger("during", "shutdown", console.pool.stop)
    return ports


@dataclass
class Session:
    user: str
    csrf: str = field(default_factory=lambda: secrets.token_urlsafe(32))
    used: float = field(default_factory=time.monotonic)
    notes: list = field(default_factory=list)  # messages shown once, on the next page


@dataclass
class Answer:
    """What a worker thread hands back to the reactor thread to write."""

    body: bytes
    content_type: str = "text/html; charset=utf-8"
    status: int = 200
    headers: dict = field(default_factory=dict)


class Console:
    """What the pages read: the daemon's resolver, store and reload state; sessions; counters."""

    def __init__(self, daemon):
        self.daemon = daemon
        admin = daemon.config.admin
        self.login = Login(admin.user, admin.password) if admin.user else None
        self.tls = admin.tls
        self.sessions: dict[str, Session] = {}
        self.pool = ThreadPool(1, 1, "htekd-console")
        self.counts = metrics.RequestCounts()
        self.registry = metrics.registry(daemon, self.counts)
        self.env = Environment(loader=FileSystemLoader(HERE / "templates"), autoescape=select_autoescape(default=True),
                               trim_blocks=True, lstrip_blocks=True)
        self.env.filters["when"] = _when
        self.env.filters["age"] = _age
        self._check_lock = threading.Lock()
        self._check: tuple[tuple, float, list[tree.Problem]] | None = None  # (key, when, problems)
        self._rows: tuple[tuple, list[views.PhoneRow]] | None = None  # ((snapshot, commits, when), rows)
        self._offers: dict[tuple, tuple[str | None, bool]] = {}
        self._pages: dict[tuple, tuple[list, views.PhonesPage]] = {}

    # -- sessions ------------------------------------------------------------------------------
    def session(self, token: str) -> Session | None:
        session = self.sessions.get(token)
        if session is None or time.monotonic() - session.used > SESSION_IDLE:
            self.sessions.pop(token, None)
            return None
        session.used = time.monotonic()
        return session

    def new_session(self, user: str) -> tuple[str, Session]:
        if len(self.sessions) >= MAX_SESSIONS:
            oldest = min(self.sessions, key=lambda token: self.sessions[token].used)
            del self.sessions[oldest]
        token = secrets.token_urlsafe(32)
        self.sessions[token] = Session(user)
        return token, self.sessions[token]

    def password_ok(self, user: str, password: str) -> bool:
        admin = self.daemon.config.admin
        same_user = hmac.compare_digest(user.encode(), admin.user.encode())
        same_password = hmac.compare_digest(ha1(user, password), login_ha1(admin.user, admin.password))
        return same_user and same_password

    # -- what pages read ------------------------------------------------------------------------
    def rows(self) -> list[views.PhoneRow]:
        """The inventory joined with the phones seen, made again after a reload, or after a write
        once ROWS_FRESH seconds have passed: during a boot storm the store writes five times a second."""
        snapshot, store = self.daemon.resolver.snapshot, self.daemon.store
        cached = self._rows
        if (cached is None or cached[0][0] is not snapshot
                or (cached[0][1] != store.commits and time.monotonic() - cached[0][2] >= ROWS_FRESH)):
            commits, began = store.commits, time.monotonic()
            self._rows = cached = ((snapshot, commits, began), views.phone_rows(snapshot, store.phones_seen()))
        return cached[1]  # shared by the pages that read it: never changed in place

    def select(self, query: views.PhoneQuery, size: int | None = views.PAGE_SIZE) -> views.PhonesPage:
        """A page of the phones table, kept while the table stays the same: browsers refresh the
        same page every few seconds."""
        rows = self.rows()
        key = (id(rows), dataclasses.astuple(query), size)
        page = self._pages.get(key)
        if page is None or page[0] is not rows:
            if len(self._pages) >= MAX_PAGES:
                self._pages.clear()
            page = self._pages[key] = (rows, views.select_phones(rows, query, size))
        return dataclasses.replace(page[1])

    def with_offers(self, rows: list[views.PhoneRow]) -> list[views.PhoneRow]:
        """Copies of `rows` with the firmware each phone seen is offered (as htekd phones shows),
        worked out once per snapshot."""
        from htekd.commands.phones import offer

        loaded = self.daemon.resolver.snapshot.loaded_at
        offered = []
        for row in rows:
            row = dataclasses.replace(row)
            if row.last_seen:
                key = (loaded, row.mac, row.model, row.protocol, row.firmware)
                if key not in self._offers:
                    if len(self._offers) >= MAX_OFFERS:
                        self._offers.clear()
                    self._offers[key] = offer(self.daemon.resolver, row.as_dict())
                row.offered, row.upgrade = self._offers[key]
            offered.append(row)
        return offered

    def check_problems(self) -> list[tree.Problem]:
        """What htekd check says of the tree on disk now: worked out again after a reload (even a
        failed one) or once CHECK_FRESH seconds have passed, not for every page."""
        from htekd.commands.check import all_problems

        key = (self.daemon.resolver.snapshot.loaded_at, self.daemon.last_reload)
        with self._check_lock:
            if self._check is None or self._check[0] != key or time.monotonic() - self._check[1] >= CHECK_FRESH:
                self._check = (key, time.monotonic(), all_problems(self.daemon.config)[1])
            return self._check[2]

    def render(self, template: str, **values) -> Answer:
        chunks = self.env.get_template(template).generate(**values)
        return Answer("".join(views.polite(chunks, 50)).encode("utf-8"))


class ConsoleResource(Resource):
    isLeaf = True

    def __init__(self, console: Console, reactor):
        super().__init__()
        self.console, self.reactor = console, reactor

    def render(self, request):
        for name, value in HEADERS.items():
            request.setHeader(name, value)
        try:
            path = urllib.parse.unquote(request.path.decode("ascii"), errors="strict")
        except (UnicodeDecodeError, ValueError):
            return self._plain(request, 400, "bad path")
        method = request.method
        if method not in (b"GET", b"HEAD", b"POST"):
            request.setHeader(b"Allow", b"GET, HEAD, POST")
            return self._plain(request, 405, "method not allowed")
        if not self._host_ok(request):
            return self._plain(request, 421, "use the console's address (its IP address or localhost)")
        if path.startswith("/static/") and path[8:] in STATIC:
            request.setHeader(b"Content-Type", STATIC[path[8:]].encode())
            return (HERE / "static" / path[8:]).read_bytes()
        if path == "/login":
            return self._login(request)
        session = self._session(request)
        machine = path.startswith("/api/") or path == "/metrics"
        if session is None and machine and self.console.login is not None:
            refused = self.console.login.check(method, request.uri, request.getHeader(b"authorization"))
            if not refused:
                session = Session(self.console.daemon.config.admin.user)
        if session is None:
            if machine:
                for challenge in self.console.login.challenges():
                    request.responseHeaders.addRawHeader(b"WWW-Authenticate", challenge)
                return self._plain(request, 401, "log in")
            request.setResponseCode(303)
            request.setHeader(b"Location", b"/login?next=" + urllib.parse.quote(request.uri.decode("latin-1"), safe="").encode())
            return b""
        args = _args(request)
        if method == b"POST":
            if not hmac.compare_digest(args.get("csrf", ""), session.csrf):
                say(f"console: refused a {path} without its form's token from {request.getClientAddress().host}")
                return self._plain(request, 403, "the form is out of date: open the page again")
            return self._post(request, path, args, session)
        return self._in_thread(request, self._page, path, args, session)

    # -- plumbing -----------------------------------------------------------------------------
    def _host_ok(self, request) -> bool:
        """Without a login, a page may only be asked for by address or as localhost, so a web page
        elsewhere cannot reach the console through a DNS name it points at 127.0.0.1."""
        if self.console.login is not None:
            return True
        host = (request.getHeader(b"host") or b"").decode("latin-1")
        name = host[1:].partition("]")[0] if host.startswith("[") else host.rpartition(":")[0] if host.count(":") == 1 else host
        if name == "localhost":
            return True
        try:
            ipaddress.ip_address(name)
        except ValueError:
            return False
        return True

    def _session(self, request) -> Session | None:
        token = (request.getCookie(COOKIE) or b"").decode("ascii", "replace")
        session = self.console.session(token) if token else None
        if session is None and self.console.login is None:  # no login: a session all the same, for the CSRF token
            token, session = self.console.new_session("")
            self._set_cookie(request, token)
        return session

    def _set_cookie(self, request, token: str) -> None:
        secure = "; Secure" if self.console.tls else ""
        request.responseHeaders.addRawHeader(
            b"Set-Cookie", f"{COOKIE.decode()}={token}; Path=/; HttpOnly; SameSite=Strict{secure}".encode())

    @staticmethod
    def _plain(request, status: int, text: str) -> bytes:
        request.setResponseCode(status)
        request.setHeader(b"Content-Type", b"text/plain; charset=utf-8")
        return (text + "\n").encode()

    def _in_thread(self, request, build, *args):
        deferred = deferToThreadPool(self.reactor, self.console.pool, build, *args)
        gone = _watch(request)

        def write(answer: Answer):
            if gone:
                return
            request.setResponseCode(answer.status)
            request.setHeader(b"Content-Type", answer.content_type.encode())
            for name, value in answer.headers.items():
                request.setHeader(name.encode(), value.encode("latin-1"))
            if request.method != b"HEAD":
                request.write(answer.body)
            request.finish()

        def failed(failure):
            say(f"console: {failure.getErrorMessage()}")
            return Answer(f"error: {failure.getErrorMessage()}\n".encode(), "text/plain; charset=utf-8", 500)

        deferred.addErrback(failed).addCallback(write)
        return server.NOT_DONE_YET

    # -- login ---------------------------------------------------------------------------------
    def _login(self, request):
        console = self.console
        args = _args(request)
        target = args.get("next", "/")
        if not LOCAL_TARGET.fullmatch(target):
            target = "/"  # never a redirect elsewhere
        if console.login is None:
            request.setResponseCode(303)
            request.setHeader(b"Location", target.encode("utf-8"))
            return b""
        if request.method == b"POST":
            if console.password_ok(args.get("user", ""), args.get("password", "")):
                token, session = console.new_session(args["user"])
                self._set_cookie(request, token)
                say(f"console: {session.user} logged in from {request.getClientAddress().host}")
                request.setResponseCode(303)
                request.setHeader(b"Location", target.encode("utf-8"))
                return b""
            say(f"console: wrong login from {request.getClientAddress().host}")
            answer = console.render("login.html", target=target, failed=True, session=None)
            request.setResponseCode(401)
            gone = _watch(request)

            def later():
                if not gone:
                    request.write(answer.body)
                    request.finish()

            self.reactor.callLater(FAILED_LOGIN_DELAY, later)
            return server.NOT_DONE_YET
        return console.render("login.html", target=target, failed=False, session=None).body

    # -- check-sync ----------------------------------------------------------------------------
    def _post(self, request, path: str, args: dict, session: Session):
        parts = path.strip("/").split("/")
        if path == "/logout":
            self.console.sessions = {t: s for t, s in self.console.sessions.items() if s is not session}
            request.setResponseCode(303)
            request.setHeader(b"Location", b"/login")
            return b""
        mac = tree.normalise_mac(parts[1]) if len(parts) == 3 and parts[0] == "phones" and parts[2] == "check-sync" else None
        if mac is None:
            return self._plain(request, 404, "no such page")
        reboot = args.get("reboot") == "yes"
        who = f"{session.user or 'console'} from {request.getClientAddress().host}"
        return self._in_thread(request, self._check_sync, mac, reboot, who, session)

    def _check_sync(self, mac: str, reboot: bool, who: str, session: Session) -> Answer:
        """`htekd notify` for one phone, at the address it last fetched from; its answer is shown on the phone's page."""
        config = self.console.daemon.config
        command = [sys.executable, "-m", "htekd", "notify", "-c", str(config.source), mac, *(["--reboot"] if reboot else [])]
        try:
            done = subprocess.run(command, capture_output=True, text=True, timeout=NOTIFY_TIMEOUT)
            answer = (done.stdout.strip() or done.stderr.strip() or f"exit status {done.returncode}").splitlines()[-1]
        except subprocess.TimeoutExpired:
            answer = f"no answer from htekd notify in {NOTIFY_TIMEOUT:g}s"
        what = "check-sync with reboot" if reboot else "check-sync"
        say(f"console: {what} to {mac} by {who}: {answer}")
        session.notes.append(f"{what}: {answer}")
        return Answer(b"", status=303, headers={"Location": f"/phones/{mac}"})

    # -- pages ---------------------------------------------------------------------------------
    def _page(self, path: str, args: dict, session: Session) -> Answer:
        console = self.console
        parts = [part for part in path.split("/") if part]
        common = {"session": session, "notes": _take(session.notes), "active": parts[0] if parts else "overview"}
        if path == "/metrics":
            return Answer(metrics.exposition(console.registry), metrics.CONTENT_TYPE)
        if parts and parts[0] == "api":
            return self._api(parts[1:], args)
        if not parts:
            return console.render("overview.html", **common, **self._overview())
        if parts == ["phones"]:
            page = console.select(views.PhoneQuery.parse(args))
            page.rows = console.with_offers(page.rows)
            return console.render("phones.html", **common, page=page, args=args, columns=views.PHONE_COLUMNS)
        if parts == ["phones.csv"]:
            rows = console.select(views.PhoneQuery.parse(args), None).rows
            return Answer(views.phones_csv(rows).encode("utf-8"), "text/csv; charset=utf-8",
                          headers={"Content-Disposition": 'attachment; filename="phones.csv"'})
        if len(parts) == 2 and parts[0] == "phones":
            found = self._phone(parts[1])
            if found is None:
                return Answer(console.env.get_template("missing.html").render(**common, what=parts[1]).encode(), status=404)
            return console.render("phone.html", **common, **found)
        if parts == ["requests"]:
            filters = {key: args.get(key, "").strip()[:100] for key in views.FILTERS}
            return console.render("requests.html", **common, filters=filters,
                                  requests=console.daemon.store.requests(200, **filters))
        if parts == ["problems"]:
            return console.render("problems.html", **common, **self._problems())
        return Answer(console.env.get_template("missing.html").render(**common, what=path).encode(), status=404)

    def _overview(self) -> dict:
        store, now = self.console.daemon.store, time.time()
        summary = views.overview(self.console.rows(), store.requests_per_minute(now - 3600), now)
        recent = views.problem_groups(store.problems(now - 3600, 10))
        return {"summary": summary, "recent": [group for groups in recent.values() for group in groups][:10]}

    def _phone(self, text: str) -> dict | None:
        mac = tree.normalise_mac(text)
        if mac is None:
            return None
        found = [row for row in self.console.rows() if row.mac == mac]
        if not found:
            return None
        [row] = self.console.with_offers(found)
        detail = views.phone_detail(self.console.daemon.resolver, mac, row.protocol)
        return {"row": row, "requests": self.console.daemon.store.requests(100, mac=mac), **detail}

    def _problems(self) -> dict:
        daemon = self.console.daemon
        return {"check": self.console.check_problems(), "groups": views.problem_groups(daemon.store.problems(time.time() - 86400)),
                "last_reload": daemon.last_reload, "loaded_at": daemon.resolver.snapshot.loaded_at}

    # -- API ----------------------------------------------------------------------------------
    def _api(self, parts: list[str], args: dict) -> Answer:
        console = self.console
        if parts == ["phones"]:
            query = views.PhoneQuery.parse(args)
            page = console.select(query, None if args.get("all") == "yes" else views.PAGE_SIZE)
            data = {"total": page.total, "page": page.page, "pages": page.pages, "phones": [row.as_dict() for row in page.rows]}
        elif len(parts) == 2 and parts[0] == "phones":
            found = self._phone(parts[1])
            if found is None:
                return _json({"error": "no such phone"}, 404)
            data = {"phone": found["row"].as_dict(), "configuration": found["explained"].as_dict(),
                    "requests": [record.as_dict() for record in found["requests"]]}
        elif parts == ["requests"]:
            filters = {key: args.get(key, "").strip()[:100] for key in views.FILTERS}
            try:
                limit = min(1000, max(1, int(args.get("limit", "100"))))
            except ValueError:
                limit = 100
            data = {"requests": [record.as_dict() for record in console.daemon.store.requests(limit, **filters)]}
        elif parts == ["problems"]:
            problems = self._problems()
            data = {"check": [str(problem) for problem in problems["check"]],
                    "requests": {heading: [group.__dict__ for group in groups] for heading, groups in problems["groups"].items()},
                    "last_reload": {"time": problems["last_reload"][0], "result": problems["last_reload"][1]}
                    if problems["last_reload"] else None,
                    "loaded_at": problems["loaded_at"]}
        else:
            return _json({"error": "no such API"}, 404)
        return _json(data)


def _json(data, status: int = 200) -> Answer:
    # <, > and & escaped too: JSON read as HTML by mistake still runs nothing.
    text = json.dumps(data, ensure_ascii=False, indent=1).replace("<", "\\u003c").replace(">", "\\u003e").replace("&", "\\u0026")
    return Answer(text.encode("utf-8"), "application/json", status)


def _args(request) -> dict[str, str]:
    """Query and form fields, the last of each name."""
    return {key.decode("utf-8", "replace"): values[-1].decode("utf-8", "replace") for key, values in request.args.items()}


def _watch(request) -> list:
    """A list that gets an item once the client has gone (or the request was finished)."""
    gone: list = []
    request.notifyFinish().addBoth(gone.append)
    return gone


def _take(notes: list) -> list:
    taken = list(notes)
    notes.clear()
    return taken


def _when(moment: float | None) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(moment)) if moment else ""


def _age(moment: float | None) -> str:
    if not moment:
        return "never"
    seconds = max(0, time.time() - moment)
    for unit, size in (("d", 86400), ("h", 3600), ("min", 60)):
        if seconds >= size:
            return f"{int(seconds // size)} {unit} ago"
    return f"{int(seconds)} s ago"
