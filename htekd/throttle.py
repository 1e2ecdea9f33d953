"""The enumeration throttle: an address that keeps asking for phone files it cannot have is refused for a while.

Counting is per address, so a scan from one address never slows a phone at another. Memory is
bounded: at most `max_addresses` are tracked, the least recently seen forgotten first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict, deque


class Throttle:
    def __init__(self, limit: int, window: float, penalty: float, max_addresses: int = 100_000, clock=time.monotonic):
        self.limit, self.window, self.penalty = limit, window, penalty
        self.max_addresses = max_addresses
        self.clock = clock
        self._misses: OrderedDict[str, deque] = OrderedDict()
        self._blocked: dict[str, float] = {}
        self._lock = threading.Lock()

    def configure(self, limit: int, window: float, penalty: float) -> None:
        with self._lock:
            self.limit, self.window, self.penalty = limit, window, penalty
            self._misses.clear()  # each address's count was sized for the old limit

    def blocked(self, address: str) -> bool:
        """True while `address` is serving its penalty."""
        if not self._blocked:
            return False
        with self._lock:
            until = self._blocked.get(address)
            if until is None:
                return False
            if self.clock() < until:
                return True
            del self._blocked[address]
            return False

    def miss(self, address: str) -> bool:
        """Count one unknown or denied phone file; True if this one puts `address` over the limit."""
        if self.limit <= 0:
            return False
        now = self.clock()
        with self._lock:
            misses = self._misses.pop(address, None) or deque(maxlen=self.limit + 1)
            self._misses[address] = misses  # most recently seen last
            misses.append(now)
            while misses and misses[0] <= now - self.window:
                misses.popleft()
            if len(self._misses) > self.max_addresses:
                self._misses.popitem(last=False)
            if len(misses) > self.limit:
                self._blocked[address] = now + self.penalty
                misses.clear()
                if len(self._blocked) > self.max_addresses:
                    self._blocked = {a: t for a, t in self._blocked.items() if t > now}
                return True
        return False
