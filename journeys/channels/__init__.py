"""Channel adapters (SMS gateway, signed webhook here; WeChat ones in connectors.wechat_send),
rate limits per channel account, recipients and delivery receipts."""

from journeys.channels import sms, webhook  # noqa: F401  (register the adapters)
from journeys.channels.base import (
    CHANNELS,
    Channel,
    ChannelError,
    Outbound,
    PermanentError,
    RateLimited,
    Sent,
    TransientError,
    get_channel,
    register_channel,
)

__all__ = [
    "CHANNELS",
    "Channel",
    "ChannelError",
    "Outbound",
    "PermanentError",
    "RateLimited",
    "Sent",
    "TransientError",
    "get_channel",
    "register_channel",
]
