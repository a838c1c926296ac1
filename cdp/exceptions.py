"""Domain errors; the web layer maps each to one HTTP status."""

from __future__ import annotations


class CdpError(Exception):
    """Base class of every error the domain raises on purpose."""

    status = 400

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.message = message
        self.field = field


class ValidationFailed(CdpError):
    status = 422


class NotFound(CdpError):
    status = 404


class Conflict(CdpError):
    status = 409


class AuthenticationFailed(CdpError):
    status = 401


class PermissionDenied(CdpError):
    status = 403


class Unavailable(CdpError):
    """A dependency (the database) is down; the client should retry later."""

    status = 503
