"""Overload is refused, not queued: a bounded number of requests in progress,
a bounded queue with a bounded wait in front of them, and per-org token
buckets. The guard asks here before it reads a body; the excess is answered
at once with 503 (overloaded) or 429 (over the org's rate) and `Retry-After`.

Limits hold per worker process (`bentoml serve` runs `workers` of them)."""
from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Mapping


class Refused(Exception):
    def __init__(self, message: str, status: int, retry_after: float):
        super().__init__(message)
        self.status, self.retry_after = status, retry_after

    @property
    def header(self) -> tuple[bytes, bytes]:
        return b"retry-after", str(max(1, math.ceil(self.retry_after))).encode()


class Gate:
    """At most `limit` holders; up to `queue` more wait at most `wait_ms` for a slot.

    With `target_ms`, the limit follows Little's law: at most (the requests completed
    per second, measured over the last quarter seconds) x `target_ms` in progress,
    never fewer than `min_limit`: a request is admitted only while the ones ahead of it
    can be finished within about `target_ms`, whatever the machine's speed today, and
    the excess is refused at once instead of queueing."""

    def __init__(self, name: str, limit: int, queue: int = 0, wait_ms: float = 0.0,
                 target_ms: float | None = None, min_limit: int = 8):
        self.name, self.limit, self.queue, self.wait_s = name, max(1, int(limit)), max(0, int(queue)), wait_ms / 1000
        self.target_s = None if target_ms is None else float(target_ms) / 1000
        self.min_limit = max(1, min(int(min_limit), self.limit))
        self.active = 0
        self.refused = 0
        self._waiters: deque[asyncio.Future] = deque()
        self._done, self._since, self._rate = 0, time.monotonic(), None

    def current_limit(self) -> int:
        """The concurrency limit now (`limit`, or Little's law with `target_ms`)."""
        if self.target_s is None:
            return self.limit
        now = time.monotonic()
        if now - self._since >= 0.25:                 # completions per second, smoothed
            rate = self._done / (now - self._since)
            self._rate = rate if self._rate is None else 0.5 * self._rate + 0.5 * rate
            self._done, self._since = 0, now
        if self._rate is None:
            return self.limit
        return max(self.min_limit, min(self.limit, math.ceil(self._rate * self.target_s)))

    async def __aenter__(self) -> "Gate":
        if self.active < self.current_limit() and not self._waiters:
            self.active += 1
            return self
        if len(self._waiters) >= self.queue or self.wait_s <= 0:
            self.refused += 1
            raise Refused(f"overloaded: {self.active} {self.name} requests in progress and {len(self._waiters)} "
                          "waiting; retry shortly", 503, 1.0)
        fut = asyncio.get_running_loop().create_future()
        self._waiters.append(fut)
        try:
            await asyncio.wait_for(asyncio.shield(fut), self.wait_s)
        except asyncio.CancelledError:     # the client went away while waiting
            if fut.done():
                self._release()
            else:
                fut.cancel()
                self._waiters.remove(fut)
            raise
        except asyncio.TimeoutError:
            if fut.done():                 # the slot arrived as the wait ran out: keep it
                return self
            fut.cancel()
            self._waiters.remove(fut)
            self.refused += 1
            raise Refused(f"overloaded: no {self.name} slot within {self.wait_s * 1000:.0f} ms; retry shortly",
                          503, 1.0) from None
        return self

    async def __aexit__(self, *exc) -> None:
        self._release()

    def _release(self) -> None:
        self._done += 1
        if self.active > self.current_limit():          # over the (shrunk) limit: the slot goes away
            self.active -= 1
            return
        while self._waiters:               # hand the slot to the oldest waiter
            fut = self._waiters.popleft()
            if not fut.done():
                fut.set_result(None)
                return
        self.active -= 1

    def stats(self) -> dict[str, int]:
        return {"active": self.active, "waiting": len(self._waiters), "refused": self.refused}

    def describe(self) -> dict[str, float | int | None]:
        return {**self.stats(), "limit": self.current_limit(),
                "completed_per_s": None if self._rate is None else round(self._rate, 1)}


@dataclass
class Bucket:
    rate: float                 # tokens per second
    burst: float
    tokens: float
    stamp: float

    def take(self, now: float) -> float:
        """0 when a token was taken, else the seconds until one is available."""
        self.tokens = min(self.burst, self.tokens + (now - self.stamp) * self.rate)
        self.stamp = now
        if self.tokens >= 1.0:
            self.tokens -= 1.0
            return 0.0
        return (1.0 - self.tokens) / self.rate


class RateLimits:
    """Token buckets per org: `orgs.<org>` or `default` for keyed requests,
    `anonymous` (one bucket) for requests without an API key. rps null = unlimited."""

    def __init__(self, cfg: Mapping[str, Any] | None):
        cfg = dict(cfg or {})
        self.default = dict(cfg.get("default") or {})
        self.anonymous = dict(cfg.get("anonymous") or {})
        self.orgs = {str(k): dict(v or {}) for k, v in (cfg.get("orgs") or {}).items()}
        for where, spec in [("default", self.default), ("anonymous", self.anonymous), *self.orgs.items()]:
            rps = spec.get("rps")
            if rps is not None and float(rps) <= 0:
                raise ValueError(f"serving.rate_limits.{where}.rps must be > 0 or null")
        self._buckets: dict[str, Bucket] = {}

    def check(self, org: str | None) -> None:
        key = org if org is not None else "\0anonymous"
        bucket = self._buckets.get(key)
        if bucket is None:
            spec = self.anonymous if org is None else self.orgs.get(org, self.default)
            if spec.get("rps") is None:
                return
            rps = float(spec["rps"])
            burst = float(spec.get("burst") or max(1.0, rps))
            bucket = self._buckets[key] = Bucket(rps, burst, burst, time.monotonic())
        wait = bucket.take(time.monotonic())
        if wait > 0:
            who = f"org {org!r}" if org is not None else "requests without an API key"
            raise Refused(f"rate limit: {who} may send {bucket.rate:g} requests/s (burst {bucket.burst:g}); "
                          f"retry in {wait:.2f} s", 429, wait)


class Admission:
    """The traffic settings (`serving.traffic`, `serving.rate_limits`) of one worker."""

    def __init__(self, traffic: Mapping[str, Any], rate_limits: Mapping[str, Any] | None):
        t = dict(traffic)
        self.decide = Gate("decision", t["max_concurrency"], t["max_queue"], t["queue_wait_ms"],
                           t.get("latency_target_ms"), t.get("min_concurrency", 8))
        self.proxy = Gate("proxy", t["proxy_max_concurrency"], t.get("proxy_max_queue", 0), t["queue_wait_ms"])
        self.rates = RateLimits(rate_limits)

    def gate(self, path: str) -> Gate:
        return self.proxy if path.startswith("/v1/") else self.decide

    def stats(self) -> dict[str, Any]:
        return {"decision": self.decide.stats(), "proxy": self.proxy.stats()}
