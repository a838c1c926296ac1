"""The channel interface the delivery performer calls: messages, results, errors, registry.

An adapter turns one rendered message (``cdp.content.guards.prepare_send``) into one
provider call and answers ``Sent`` or raises a ``ChannelError`` whose ``reason`` is a
stable code (counted in step statistics):

- ``TransientError``: worth retrying with backoff (network, 5xx, provider busy).
  ``uncertain`` is True when the request may have reached the provider (a read timeout,
  a connection dropped mid-answer): for a channel that is not ``idempotent`` the performer
  should not resend blindly.
- ``RateLimited``: our token bucket is empty or the provider said slow down; retry after
  ``retry_after`` seconds.
- ``PermanentError``: retrying will not help; ``unreachable`` means the person can no
  longer be reached on this channel (WeChat 43004, no phone number …).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from flask import current_app


@dataclass
class Outbound:
    key: str  # the delivery's idempotency key; passed to the provider where the API has one
    profile_id: int
    channel: str  # "wechat" | "miniprogram" | "sms" | "webhook"
    kind: str  # content kind: "wechat_template" | "miniprogram_subscribe" | "sms" | "webhook"
    message: dict  # what prepare_send returned (the rendered body)
    url: str | None = None  # webhook target


@dataclass
class Sent:
    provider_id: str | None  # provider's message id (msgid / BizId), used to match receipts
    account: str | None  # channel account used (WeChat app id, SMS access key id, webhook host)
    response: dict = field(default_factory=dict)  # provider response body (no secrets)


class ChannelError(Exception):
    """A send that did not happen (or may not have); ``reason`` is a stable code."""

    def __init__(self, reason: str, detail: str = ""):
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason[:64]  # Delivery.reason is 64 characters
        self.detail = (detail or "")[:1000]


class TransientError(ChannelError):
    def __init__(
        self,
        reason: str,
        detail: str = "",
        retry_after: float | None = None,
        uncertain: bool = False,
    ):
        super().__init__(reason, detail)
        self.retry_after = retry_after
        self.uncertain = uncertain


class RateLimited(TransientError):
    def __init__(self, reason: str, detail: str = "", retry_after: float | None = None):
        super().__init__(reason, detail, retry_after)


class PermanentError(ChannelError):
    def __init__(self, reason: str, detail: str = "", unreachable: bool = False):
        super().__init__(reason, detail)
        self.unreachable = unreachable


def setting(config: Mapping, key: str, default=None):
    """``key`` from the app config (``CDP_<key>`` in the environment, read once by
    cdp.config), else ``default``."""
    value = config.get(key)
    return default if value in (None, "") else value


class Channel:
    """One provider. Subclasses set ``name`` and ``idempotent`` and implement ``send``."""

    name: str = ""
    # True when the provider dedupes on our key, so resending after a crash is safe.
    idempotent: bool = False
    # How long the provider remembers the key (seconds; None: for good). A resend later
    # than that may be a second message.
    idempotency_window: float | None = None

    def __init__(self, config: Mapping | None = None):
        self.config = current_app.config if config is None else config

    def setting(self, key: str, default=None):
        return setting(self.config, key, default)

    def timeout(self) -> tuple[float, float]:
        """(connect, read) seconds for provider calls."""
        read = float(self.setting("JOURNEY_CHANNEL_TIMEOUT", 10))
        return (min(read, 5.0), read)

    def send(self, out: Outbound) -> Sent:
        raise NotImplementedError


CHANNELS: dict[str, type[Channel]] = {}


def register_channel(channel_cls: type[Channel]) -> type[Channel]:
    """Class decorator: make the adapter available to ``get_channel(channel_cls.name)``."""
    if not channel_cls.name:
        raise ValueError(f"{channel_cls.__name__} has no name")
    CHANNELS[channel_cls.name] = channel_cls
    return channel_cls


def get_channel(name: str) -> Channel:
    """The adapter for ``name``, configured from the current app (and, per send, its sources)."""
    channel_cls = CHANNELS.get(name)
    if channel_cls is None:
        known = ", ".join(sorted(CHANNELS)) or "none"
        raise PermanentError("unknown_channel", f"no channel '{name}' (known: {known})")
    return channel_cls(current_app.config)
