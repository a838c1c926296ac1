"""HTTP for channel adapters: one pooled session per thread, errors mapped to channel errors."""

from __future__ import annotations

import threading
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

import requests
from urllib3.exceptions import NewConnectionError

from journeys.channels.base import RateLimited, TransientError

MAX_RETRY_AFTER = 3600.0
_local = threading.local()


def session() -> requests.Session:
    """This thread's session (requests sessions are not meant to be shared across threads)."""
    if getattr(_local, "session", None) is None:
        _local.session = requests.Session()
    return _local.session


def never_sent(exc: requests.RequestException) -> bool:
    """True when the request cannot have reached the server (no connection was made)."""
    if isinstance(exc, requests.ConnectTimeout):
        return True
    reason = getattr(exc.args[0], "reason", None) if exc.args else None
    return isinstance(reason, NewConnectionError)


def network_error(exc: requests.RequestException, what: str) -> TransientError:
    """A timeout or connection failure as a retryable error (uncertain if it may have arrived)."""
    name = type(exc).__name__
    reason = "timeout" if isinstance(exc, requests.Timeout) else "network"
    return TransientError(reason, f"{what}: {name}", uncertain=not never_sent(exc))


def post(url: str, *, what: str, timeout, **kwargs) -> requests.Response:
    """POST without following redirects; network failures raise ``TransientError``."""
    try:
        return session().post(url, timeout=timeout, allow_redirects=False, **kwargs)
    except requests.RequestException as exc:
        if isinstance(exc, requests.Timeout | requests.ConnectionError):
            raise network_error(exc, what) from None
        raise TransientError("network", f"{what}: {type(exc).__name__}") from None


def retry_after(response: requests.Response, default: float | None = None) -> float | None:
    """Seconds from a ``Retry-After`` header (seconds or an HTTP date), capped at an hour."""
    value = (response.headers.get("Retry-After") or "").strip()
    if not value:
        return default
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return default
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - datetime.now(UTC)).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER)


def status_error(response: requests.Response, what: str):
    """429 and 5xx as a retryable error; None for any other status."""
    detail = f"{what}: HTTP {response.status_code}"
    if response.status_code == 429:
        return RateLimited("provider_rate_limited", detail, retry_after(response, 30.0))
    if response.status_code >= 500 or response.status_code == 408:
        return TransientError("provider_unavailable", detail, retry_after(response))
    return None
