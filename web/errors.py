"""Error responses: JSON under /api/ and /v1/, HTML pages in the UI; domain errors mapped once."""

from __future__ import annotations

import logging

from flask import Flask, jsonify, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException, InternalServerError

from cdp.exceptions import CdpError

log = logging.getLogger(__name__)
JSON_PREFIXES = ("/api/", "/v1/", "/connectors/")


def wants_json() -> bool:
    return request.path.startswith(JSON_PREFIXES)


def _json_error(code: int, name: str, message: str, errors=None, headers=None):
    body = {"code": code, "status": name, "message": message}
    if errors:
        body["errors"] = errors
    response = jsonify(body)
    response.status_code = code
    for key, value in (headers or {}).items():
        response.headers[key] = value
    return response


def handle_http_exception(exc: HTTPException):
    code = exc.code or 500
    if wants_json():
        data = getattr(exc, "data", None) or {}
        message = data.get("message") or exc.description or exc.name
        headers = dict(data.get("headers") or {})
        if code == 429 and "Retry-After" not in headers:
            # Only the rate-limit headers: the exception's own Content-Type is text/html.
            raw = dict(exc.get_headers()) if hasattr(exc, "get_headers") else {}
            headers.update(
                {k: v for k, v in raw.items() if k == "Retry-After" or k.startswith("X-RateLimit")}
            )
        return _json_error(code, exc.name, message, data.get("messages"), headers)
    template = "errors/error.html"
    return render_template(template, code=code, name=exc.name, description=exc.description), code


def handle_domain_error(exc: CdpError):
    if wants_json():
        errors = {exc.field: [exc.message]} if exc.field else None
        return _json_error(exc.status, type(exc).__name__, exc.message, errors)
    return (
        render_template("errors/error.html", code=exc.status, name="", description=exc.message),
        exc.status,
    )


def handle_csrf_error(exc: CSRFError):
    if wants_json():
        return _json_error(400, "Bad Request", exc.description)
    return render_template(
        "errors/error.html", code=400, name=exc.name, description=exc.description
    ), 400


def handle_unexpected(exc: Exception):
    log.exception("unhandled error on %s %s", request.method, request.path)
    return handle_http_exception(InternalServerError())


def init_app(app: Flask) -> None:
    # Registered after the REST API so these replace flask-smorest's app-wide JSON handler.
    app.register_error_handler(CSRFError, handle_csrf_error)
    app.register_error_handler(HTTPException, handle_http_exception)
    app.register_error_handler(CdpError, handle_domain_error)
    app.register_error_handler(Exception, handle_unexpected)
