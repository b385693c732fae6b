"""Per-revision request records of the proxy: status and latency of every response.

Recording is on the proxy's hot path, so it is four appends to typed arrays (inserts, when a slow
stream is recorded after faster answers); summaries (counts, 5xx, error rate, percentiles) are
computed when someone asks. Records are never reset: ``since`` (epoch seconds) selects a window,
the way the rollout reads one analysis step.
"""

from __future__ import annotations

import bisect
import math
import time
from array import array
from dataclasses import dataclass, field
from typing import Any

VIA_SERVICE = 0  # the request came through the service URL (the traffic split)
VIA_TAG = 1  # through a tag URL


@dataclass
class Series:
    ts: array[float] = field(default_factory=lambda: array("d"))
    latency_ms: array[float] = field(default_factory=lambda: array("d"))
    status: array[int] = field(default_factory=lambda: array("H"))
    via: array[int] = field(default_factory=lambda: array("B"))

    def add(self, status: int, latency_ms: float, via: int, at: float | None = None) -> None:
        """One response, timed ``at`` the moment its status was known (before the client could
        have it all: a window read right after the client's last answer holds none of them).
        Recorded once relayed, so a slow stream lands after faster ones: kept in ``ts`` order."""
        ts = time.time() if at is None else at
        i = len(self.ts)
        if i and self.ts[-1] > ts:
            i = bisect.bisect_right(self.ts, ts)
        self.ts.insert(i, ts)
        self.latency_ms.insert(i, latency_ms)
        self.status.insert(i, status)
        self.via.insert(i, via)

    def _start(self, since: float) -> int:
        """Index of the first record at or after ``since`` (``add`` keeps ``ts`` sorted)."""
        lo, hi = 0, len(self.ts)
        while lo < hi:
            mid = (lo + hi) // 2
            if self.ts[mid] < since:
                lo = mid + 1
            else:
                hi = mid
        return lo

    def summary(self, since: float = 0.0, via: int | None = None) -> dict[str, Any]:
        start = self._start(since)
        idx = [i for i in range(start, len(self.ts)) if via is None or self.via[i] == via]
        statuses = [self.status[i] for i in idx]
        latencies = sorted(self.latency_ms[i] for i in idx)
        codes: dict[str, int] = {}
        for code in statuses:
            codes[str(code)] = codes.get(str(code), 0) + 1
        n = len(statuses)
        errors = sum(1 for code in statuses if code >= 500)
        return {
            "requests": n,
            "errors_5xx": errors,
            "error_rate": round(errors / n, 6) if n else 0.0,
            "status_codes": codes,
            "p50_ms": _pct(latencies, 50),
            "p95_ms": _pct(latencies, 95),
            "p99_ms": _pct(latencies, 99),
            "mean_ms": round(sum(latencies) / n, 3) if n else None,
            "first_ts": self.ts[idx[0]] if idx else None,
            "last_ts": self.ts[idx[-1]] if idx else None,
        }


def _pct(sorted_values: list[float], pct: float) -> float | None:
    """Nearest-rank percentile."""
    if not sorted_values:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return round(sorted_values[rank - 1], 3)


class Metrics:
    """Records of one service, by revision name."""

    def __init__(self) -> None:
        self.by_revision: dict[str, Series] = {}

    def series(self, revision: str) -> Series:
        found = self.by_revision.get(revision)
        if found is None:
            found = self.by_revision[revision] = Series()
        return found

    def summary(self, since: float = 0.0, via: int | None = None) -> dict[str, dict[str, Any]]:
        return {name: s.summary(since, via) for name, s in sorted(self.by_revision.items())}
