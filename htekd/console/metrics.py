"""/metrics in Prometheus' text format (prometheus_client writes it).

Requests are counted by a request-log observer into a plain dict (one addition on the request
path); the collector turns the counts and the daemon's state into metrics when scraped. Labels
hold only protocol, kind and outcome names: never a requested name, a MAC or a secret.
"""

from __future__ import annotations

from collections import Counter

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST

from htekd.listeners import ConnectionsPerAddress
from htekd.requestlog import OUTCOMES, RequestRecord
from htekd.resolution import Client, Kind

CONTENT_TYPE = CONTENT_TYPE_LATEST
_KINDS = frozenset(kind.value for kind in Kind)


class RequestCounts:
    """RequestLog observer: requests by (protocol, kind, outcome) and bytes by protocol."""

    def __init__(self):
        self.requests: Counter = Counter()
        self.bytes: Counter = Counter()

    def observe(self, record: RequestRecord, client: Client) -> None:
        # Only names htekd itself chose become labels, so no stranger can add a series.
        if record.kind in _KINDS and record.outcome in OUTCOMES:
            self.requests[(record.protocol, record.kind, record.outcome)] += 1
            self.bytes[record.protocol] += record.bytes


class _Collector:
    def __init__(self, daemon, counts: RequestCounts):
        self.daemon, self.counts = daemon, counts

    def collect(self):
        requests = CounterMetricFamily("htekd_requests", "Requests answered, by protocol, kind and outcome",
                                       labels=("protocol", "kind", "outcome"))
        for (protocol, kind, outcome), count in sorted(self.counts.requests.copy().items()):
            requests.add_metric((protocol, kind, outcome), count)
        yield requests
        sent = CounterMetricFamily("htekd_sent_bytes", "Bytes sent to phones, by protocol", labels=("protocol",))
        for protocol, count in sorted(self.counts.bytes.copy().items()):
            sent.add_metric((protocol,), count)
        yield sent
        daemon = self.daemon
        in_flight = GaugeMetricFamily("htekd_transfers_in_flight", "Transfers under way (TFTP: the listener keeps them)",
                                      labels=("protocol",))
        # Only the TFTP listener keeps its transfers: the other protocols' connections say nothing here.
        transfers = [getattr(getattr(port, "protocol", None), "transfers", None) for port in daemon.ports]
        in_flight.add_metric(("tftp",), sum(len(found) for found in transfers if isinstance(found, dict)))
        yield in_flight
        # HTTP(S) and FTP keep no list of transfers: the connections open stand for them.
        connections = GaugeMetricFamily("htekd_connections_open", "Connections open, by protocol (HTTP, HTTPS, FTP)",
                                        labels=("protocol",))
        counted: dict[str, int] = {}
        for port in daemon.ports:
            factory = getattr(port, "factory", None)
            if isinstance(factory, ConnectionsPerAddress) and factory.listener in ("http", "https"):
                counted[factory.listener] = counted.get(factory.listener, 0) + sum(factory.open.copy().values())
        if daemon.ftp is not None:
            counted["ftp"] = daemon.ftp.connections_open()
        for protocol, count in sorted(counted.items()):
            connections.add_metric((protocol,), count)
        yield connections
        yield GaugeMetricFamily("htekd_phones_in_inventory", "Phones in phones.csv", value=len(daemon.resolver.snapshot.phones))
        yield GaugeMetricFamily("htekd_phones_seen", "Phones that have asked for a file", value=daemon.store.phones_seen_count())
        reloads = CounterMetricFamily("htekd_reloads", "Reloads (SIGHUP), by result", labels=("result",))
        for result, count in sorted(daemon.reloads.items()):
            reloads.add_metric((result,), count)
        yield reloads
        last = daemon.last_reload[0] if daemon.last_reload else daemon.resolver.snapshot.loaded_at
        yield GaugeMetricFamily("htekd_last_reload_timestamp_seconds", "When the configuration was last loaded",
                                value=last)


def registry(daemon, counts: RequestCounts) -> CollectorRegistry:
    """A registry of its own (not prometheus_client's global one), read by exposition()."""
    owned = CollectorRegistry(auto_describe=False)
    owned.register(_Collector(daemon, counts))
    return owned


def exposition(owned: CollectorRegistry) -> bytes:
    return generate_latest(owned)
