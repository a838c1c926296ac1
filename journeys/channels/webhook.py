"""A generic signed webhook: the rendered payload POSTed as JSON to the step's URL.

Body: ``{"key": <delivery key>, "profile_id": <id>, "payload": <rendered payload>}``.
Headers: ``Content-Type: application/json``, ``Idempotency-Key: <key>``,
``X-CarePath-Timestamp: <Unix seconds>`` and ``X-CarePath-Signature: <hex HMAC-SHA256>``
keyed with ``JOURNEY_WEBHOOK_SECRET`` over ``timestamp + "." + body`` (the exact bytes
sent). A receiver recomputes it, refuses stale timestamps, and dedupes on the key, which
is what makes resending after a crash safe (``idempotent``).

2xx is success; 429, 408 and 5xx are retried (``Retry-After`` honoured); any other
answer, redirects included, is permanent. Only https URLs, or http to a host listed in
``JOURNEY_WEBHOOK_ALLOWED_HOSTS``, are called.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from urllib.parse import urlsplit

import orjson

from journeys.channels import http
from journeys.channels.base import Channel, Outbound, PermanentError, Sent, register_channel
from journeys.channels.ratelimit import acquire

MAX_RESPONSE = 2000
HEADER_SIGNATURE = "X-CarePath-Signature"
HEADER_TIMESTAMP = "X-CarePath-Timestamp"


def signature(secret: str, timestamp: str, body: bytes) -> str:
    """Hex HMAC-SHA256 of ``timestamp + "." + body``."""
    return hmac.new(secret.encode(), timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def _response_body(response) -> dict:
    try:
        data = response.json()
    except ValueError:
        return {"text": response.text[:MAX_RESPONSE]} if response.text else {}
    if isinstance(data, dict) and len(orjson.dumps(data)) <= MAX_RESPONSE:
        return data
    return {"text": response.text[:MAX_RESPONSE]}


@register_channel
class WebhookChannel(Channel):
    name = "webhook"
    idempotent = True  # receivers dedupe on Idempotency-Key

    def target(self, out: Outbound) -> str:
        url = out.url or (out.message or {}).get("url") or ""
        parts = urlsplit(url)
        allowed = self.setting("JOURNEY_WEBHOOK_ALLOWED_HOSTS", ()) or ()
        if isinstance(allowed, str):  # from the environment: comma separated
            allowed = allowed.split(",")
        allowed = {h.strip().lower() for h in allowed}
        host = (parts.hostname or "").lower()
        if not host or parts.scheme not in ("https", "http"):
            raise PermanentError("invalid_url", f"not an http(s) URL: {url[:200]!r}")
        if parts.scheme == "http" and host not in allowed:
            raise PermanentError("url_not_allowed", f"http is allowed only to listed hosts: {host}")
        return url

    def send(self, out: Outbound) -> Sent:
        url = self.target(out)
        secret = self.setting("JOURNEY_WEBHOOK_SECRET", "")
        if not secret:
            raise PermanentError("not_configured", "JOURNEY_WEBHOOK_SECRET is not set")
        account = urlsplit(url).netloc.lower()
        acquire(self.name, account, self.config)
        body = orjson.dumps(
            {"key": out.key, "profile_id": out.profile_id, "payload": out.message.get("payload")}
        )
        timestamp = str(int(time.time()))
        headers = {
            "Content-Type": "application/json",
            "Idempotency-Key": out.key,
            HEADER_TIMESTAMP: timestamp,
            HEADER_SIGNATURE: signature(secret, timestamp, body),
        }
        response = http.post(
            url, data=body, headers=headers, what="webhook", timeout=self.timeout()
        )
        answer = {"status": response.status_code, "body": _response_body(response)}
        if 200 <= response.status_code < 300:
            provider_id = answer["body"].get("id") if isinstance(answer["body"], dict) else None
            return Sent(str(provider_id)[:128] if provider_id else None, account, answer)
        error = http.status_error(response, "webhook")
        if error is not None:
            raise error
        raise PermanentError("provider_rejected", f"webhook: HTTP {response.status_code}")
