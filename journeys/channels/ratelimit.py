"""Token buckets per (channel, account) in Redis, shared by every worker process.

A bucket holds up to ``burst`` tokens and refills at ``rate`` tokens a second; a send
takes one or is refused with ``RateLimited(retry_after)``, the seconds until a token is
there. State is one Redis hash (``tokens``, ``ts``) updated in a WATCH/MULTI transaction,
so concurrent workers never both take the last token; WATCH rather than a Lua script
because the embedded mode's in-memory Redis (fakeredis) runs no Lua. A key expires once
its bucket would be full again, and a missing key is a full bucket, so losing Redis only
forgets recent spending. When a provider says slow down, ``slow_down`` empties the bucket
for a while so every worker backs off, not just the one that was told.

Rates are ``JOURNEY_CHANNEL_RATES`` (channel -> (per second, burst)) over ``DEFAULT_RATES``.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping

import redis
from flask import current_app

from cdp.queue import tasks
from journeys.channels.base import RateLimited, TransientError

DEFAULT_RATES: dict[str, tuple[float, float]] = {
    "wechat": (20.0, 40.0),
    "miniprogram": (20.0, 40.0),
    "sms": (10.0, 20.0),
    "webhook": (50.0, 100.0),
}
FALLBACK_RATE = (10.0, 20.0)
KEY_PREFIX = "cdp:ratelimit"
WATCH_ATTEMPTS = 20


class TokenBucket:
    """One bucket: ``take()`` answers 0 (a token was taken) or the seconds to wait."""

    def __init__(
        self,
        connection,
        key: str,
        rate: float,
        burst: float,
        clock: Callable[[], float] = time.time,
    ):
        if rate <= 0 or burst < 1:
            raise ValueError("a bucket needs rate > 0 and burst >= 1")
        self.connection, self.key = connection, key
        self.rate, self.burst, self.clock = float(rate), float(burst), clock

    def _level(self, tokens, stamp, now: float) -> float:
        if tokens is None or stamp is None:
            return self.burst
        elapsed = max(0.0, now - float(stamp))
        return min(self.burst, float(tokens) + elapsed * self.rate)

    def _ttl_ms(self, level: float) -> int:
        return int(math.ceil((self.burst - level) / self.rate * 1000)) + 1000

    def take(self, cost: float = 1.0) -> float:
        with self.connection.pipeline() as pipe:
            for _ in range(WATCH_ATTEMPTS):
                try:
                    pipe.watch(self.key)
                    tokens, stamp = pipe.hmget(self.key, "tokens", "ts")
                    now = self.clock()
                    level = self._level(tokens, stamp, now)
                    if level < cost:
                        pipe.unwatch()
                        return (cost - level) / self.rate
                    level -= cost
                    pipe.multi()
                    pipe.hset(self.key, mapping={"tokens": repr(level), "ts": repr(now)})
                    pipe.pexpire(self.key, self._ttl_ms(level))
                    pipe.execute()
                    return 0.0
                except redis.WatchError:
                    continue  # another worker took a token meanwhile: look again
        # Heavy contention on one bucket: the others are sending, so this one can wait a tick.
        return 1.0 / self.rate

    def drain(self, seconds: float) -> None:
        """No tokens for ``seconds`` (then refilling as usual)."""
        level = -self.rate * max(0.0, seconds)
        pipe = self.connection.pipeline()
        pipe.hset(self.key, mapping={"tokens": repr(level), "ts": repr(self.clock())})
        pipe.pexpire(self.key, self._ttl_ms(level))
        pipe.execute()


def rate_of(channel: str, config: Mapping | None = None) -> tuple[float, float]:
    """(tokens per second, burst) of a channel from ``JOURNEY_CHANNEL_RATES``, else defaults."""
    config = current_app.config if config is None else config
    configured = (config.get("JOURNEY_CHANNEL_RATES") or {}).get(channel)
    rate, burst = configured or DEFAULT_RATES.get(channel, FALLBACK_RATE)
    return float(rate), float(burst)


def bucket(channel: str, account: str, config: Mapping | None = None, clock=time.time):
    rate, burst = rate_of(channel, config)
    key = f"{KEY_PREFIX}:{channel}:{account}"
    return TokenBucket(tasks().connection, key, rate, burst, clock)


def acquire(channel: str, account: str, config: Mapping | None = None, clock=time.time) -> None:
    """Take a token for one send on ``channel`` through ``account``, or raise ``RateLimited``."""
    try:
        wait = bucket(channel, account, config, clock).take()
    except redis.RedisError as exc:
        # No Redis, no queue either; the performer retries once it is back.
        raise TransientError("rate_limiter_unavailable", type(exc).__name__, 5.0) from None
    if wait > 0:
        raise RateLimited("throttled", f"{channel} account {account}: over its rate", wait)


def slow_down(channel: str, account: str, seconds: float, config: Mapping | None = None) -> None:
    """The provider said slow down: refuse sends on this account for ``seconds``."""
    try:
        bucket(channel, account, config).drain(seconds)
    except redis.RedisError:
        pass  # the send already failed with RateLimited; backing off is best effort
