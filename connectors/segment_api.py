"""The Segment-compatible tracking API source kind (`/v1/…`, write key as Basic auth user)."""

from __future__ import annotations

from cdp.models.sources import Source
from cdp.sources import SourceKind

TRACKING_CALLS = ("identify", "track", "page", "screen", "group", "alias", "batch")


class HttpSourceKind(SourceKind):
    name = "http"
    label = "HTTP tracking API (Segment-compatible)"
    has_write_key = True
    options_schema = {
        "type": "object",
        "properties": {"channel": {"type": "string", "maxLength": 32}},
        "additionalProperties": False,
    }

    def endpoint_urls(self, base_url: str, source: Source) -> dict[str, str]:
        return {call: f"{base_url}/v1/{call}" for call in TRACKING_CALLS}
