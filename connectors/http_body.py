"""Reading request bodies safely, for every connector: size caps, gzip/deflate, orjson.

The caps hold after decompression too: a compressed body is inflated in bounded
steps (``zlib.decompressobj`` with ``max_length``), so a gzip bomb costs at most
``limit`` bytes of memory before it is refused with 413.

Errors are werkzeug HTTP exceptions carrying ``data = {"message", "headers"}``,
which the JSON error handler of ``web.errors`` renders as
``{"code": …, "status": …, "message": …}`` (with those headers).
"""

from __future__ import annotations

import zlib

import orjson
from flask import Request, request
from werkzeug.exceptions import (
    BadRequest,
    HTTPException,
    RequestEntityTooLarge,
    UnsupportedMediaType,
)

KB = 1024
_CHUNK = 64 * KB
_BOM = b"\xef\xbb\xbf"
_IDENTITY = ("", "identity")
_GZIP = ("gzip", "x-gzip")
_DEFLATE = ("deflate",)


def http_error(
    exc_class: type[HTTPException],
    message: str,
    headers: dict | None = None,
    field: str | None = None,
):
    """An HTTP exception whose JSON rendering carries ``message``, ``headers`` and the field."""
    exc = exc_class(description=message)
    exc.data = {"message": message}
    if headers:
        exc.data["headers"] = dict(headers)
    if field:
        exc.data["messages"] = {field: [message]}  # rendered as "errors": {field: [...]}
    return exc


def _size(limit: int) -> str:
    return f"{limit // KB} KB" if limit % KB == 0 else f"{limit} bytes"


def _too_large(limit: int, what: str):
    return http_error(RequestEntityTooLarge, f"{what} is larger than {_size(limit)}")


def _read_capped(stream, cap: int, limit: int, what: str) -> bytes:
    """Read the raw body, refusing it as soon as it exceeds ``cap`` bytes."""
    chunks, total = [], 0
    while True:
        chunk = stream.read(min(_CHUNK, cap + 1 - total))
        if not chunk:
            return b"".join(chunks)
        total += len(chunk)
        if total > cap:
            raise _too_large(limit, what)
        chunks.append(chunk)


def _wbits(encoding: str, data: bytes) -> int:
    if encoding in _GZIP:
        return 16 + zlib.MAX_WBITS
    # HTTP "deflate" is zlib-wrapped (RFC 9110), but some clients send a raw deflate stream.
    zlib_header = len(data) >= 2 and data[0] & 0x0F == 8 and (data[0] << 8 | data[1]) % 31 == 0
    return zlib.MAX_WBITS if zlib_header else -zlib.MAX_WBITS


def decompress(data: bytes, encoding: str, limit: int, what: str = "the request body") -> bytes:
    """Inflate a gzip or deflate body, never producing more than ``limit`` bytes."""
    wbits = _wbits(encoding, data)
    inflater = zlib.decompressobj(wbits)
    out = bytearray()
    pending = data
    try:
        while pending:
            out += inflater.decompress(pending, limit + 1 - len(out))
            if len(out) > limit:
                raise _too_large(limit, f"{what} (decompressed)")
            pending = inflater.unconsumed_tail
            if inflater.eof:
                pending = inflater.unused_data
                if pending and encoding in _GZIP:  # concatenated gzip members
                    inflater = zlib.decompressobj(wbits)
                elif pending:
                    raise http_error(BadRequest, f"{what} has data after the {encoding} stream")
    except zlib.error as exc:
        raise http_error(BadRequest, f"{what} is not valid {encoding} data ({exc})") from None
    if not inflater.eof:
        raise http_error(BadRequest, f"{what} is a truncated {encoding} stream")
    return bytes(out)


def read_body(limit: int, req: Request | None = None, what: str = "the request body") -> bytes:
    """The request body, decoded from its Content-Encoding, at most ``limit`` bytes.

    :raise RequestEntityTooLarge: the body (or what it inflates to) is over ``limit``.
    :raise UnsupportedMediaType: a Content-Encoding other than gzip, deflate or identity.
    :raise BadRequest: a corrupt compressed body.
    """
    req = req or request
    encoding = (req.headers.get("Content-Encoding") or "").strip().lower()
    if encoding not in _IDENTITY + _GZIP + _DEFLATE:
        raise http_error(
            UnsupportedMediaType,
            f"Content-Encoding '{encoding[:40]}' is not supported (use gzip, deflate or none)",
        )
    compressed = encoding not in _IDENTITY
    # A compressed body is smaller than its content, except for a few bytes of framing.
    cap = limit + limit // 100 + KB if compressed else limit
    if req.content_length is not None and req.content_length > cap:
        raise _too_large(limit, what)
    raw = _read_capped(req.stream, cap, limit, what)
    return decompress(raw, encoding, limit, what) if compressed else raw


def parse_json(raw: bytes, what: str = "the request body"):
    """Parse JSON with orjson; 400 naming the problem when it is not JSON."""
    if raw.startswith(_BOM):
        raw = raw[len(_BOM) :]
    if not raw.strip():
        raise http_error(BadRequest, f"{what} is empty: expected a JSON object")
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise http_error(BadRequest, f"{what} is not valid JSON: {exc}") from None


def require_object(value, what: str = "the request body", field: str | None = None) -> dict:
    """``value`` if it is a JSON object, else 400 naming it."""
    if not isinstance(value, dict):
        message = f"{what} must be a JSON object, not {_json_type(value)}"
        raise http_error(BadRequest, message, field=field)
    return value


def _json_type(value) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    return "an object"


def read_json_object(limit: int, req: Request | None = None) -> dict:
    """Read, decode and parse a body that must be one JSON object of at most ``limit`` bytes."""
    return require_object(parse_json(read_body(limit, req)))
