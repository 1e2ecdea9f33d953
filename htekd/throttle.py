"""The enumeration throttle: a network that keeps asking for phone files it cannot have is refused for a while.

Counting is per network: an IPv4 address (/32 by default) or an IPv6 /64, since a host may use any
address of its /64 and would otherwise get `limit` answers per address it rotates through. A scan
from one network never slows a phone in another. Memory is bounded: at most `max_networks` are
counted and at most `max_networks` refused, the least recently seen forgotten first.
"""

from __future__ import annotations

import ipaddress
import threading
import time
from collections import OrderedDict, deque

from htekd.config import client_ip

IPV4_PREFIX, IPV6_PREFIX = 32, 64
MAX_KEYS = 4096  # addresses whose network is remembered (parsing one costs more than the rest of a miss)


class Throttle:
    def __init__(self, limit: int, window: float, penalty: float, ipv4_prefix: int = IPV4_PREFIX,
                 ipv6_prefix: int = IPV6_PREFIX, max_networks: int = 100_000, clock=time.monotonic):
        self.max_networks = max_networks
        self.clock = clock
        self._misses: OrderedDict[str, deque] = OrderedDict()
        # network -> (end of its penalty, the addresses whose misses put it over), oldest refused first
        self._blocked: OrderedDict[str, tuple[float, frozenset]] = OrderedDict()
        self._keys: dict[str, str] = {}
        self._lock = threading.Lock()
        self.prefixes: tuple[int, int] | None = None  # set by configure()
        self.configure(limit, window, penalty, ipv4_prefix, ipv6_prefix)

    def configure(self, limit: int, window: float, penalty: float, ipv4_prefix: int = IPV4_PREFIX,
                  ipv6_prefix: int = IPV6_PREFIX) -> None:
        with self._lock:
            self.limit, self.window, self.penalty = limit, window, penalty
            if (ipv4_prefix, ipv6_prefix) != self.prefixes:
                self.prefixes = (ipv4_prefix, ipv6_prefix)
                self._keys = {}
                self._blocked.clear()  # counted under other network boundaries
            self._misses.clear()  # each network's count was sized for the old limit

    def network(self, address: str) -> str:
        """The network `address` is counted in, e.g. `2001:db8:1:2::/64` or `192.168.0.7/32`."""
        key = self._keys.get(address)
        if key is None:
            ip = client_ip(address)
            if ip is None:
                return address
            prefix = self.prefixes[0] if ip.version == 4 else self.prefixes[1]
            key = str(ipaddress.ip_network((ip, prefix), strict=False))
            keys = self._keys
            if len(keys) >= MAX_KEYS:
                keys = self._keys = {}  # a new dict: a reader may still be looking into the old one
            keys[address] = key
        return key

    def blocked(self, address: str) -> bool:
        """True while the network of `address` is serving its penalty."""
        if not self._blocked:
            return False
        network = self.network(address)
        with self._lock:
            blocked = self._blocked.get(network)
            if blocked is None:
                return False
            if self.clock() < blocked[0]:
                return True
            del self._blocked[network]
            return False

    def went_over(self, address: str) -> bool:
        """True if `address` itself missed towards its network's current penalty: the others of a
        refused network (an IPv6 /64 is a whole LAN) are refused too, but are no scanner to ban."""
        blocked = self._blocked.get(self.network(address))
        return blocked is not None and address in blocked[1]

    def miss(self, address: str) -> bool:
        """Count one unknown or denied phone file; True if this one puts the network of `address` over the limit."""
        if self.limit <= 0:
            return False
        network = self.network(address)
        now = self.clock()
        with self._lock:
            misses = self._misses.pop(network, None) or deque(maxlen=self.limit + 1)
            self._misses[network] = misses  # most recently seen last
            misses.append((now, address))
            while misses and misses[0][0] <= now - self.window:
                misses.popleft()
            if len(self._misses) > self.max_networks:
                self._misses.popitem(last=False)
            if len(misses) > self.limit:
                self._blocked.pop(network, None)
                self._blocked[network] = (now + self.penalty, frozenset(missed for _, missed in misses))
                misses.clear()
                if len(self._blocked) > self.max_networks:
                    self._blocked.popitem(last=False)
                return True
        return False
