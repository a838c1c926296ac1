"""Configuration read from the environment when the app is created, never at import time."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import orjson

from cdp.pii import KEY_ID, check_key_id, parse_key_list

DEFAULT_SECRET_KEY = "dev-secret-key-change-me"
DEFAULT_PII_KEY = "dev-pii-key-change-me"

# Packages that plug themselves into the app, in order. `cdp` never imports them
# directly (imports go one way); the list is data so a deployment can trim it.
DEFAULT_COMPONENTS = ("segments", "journeys", "connectors", "web")


def _json_dumps(value) -> str:
    return orjson.dumps(value).decode()


class ConfigError(RuntimeError):
    """The configuration is unsafe or incomplete for the chosen mode."""


@dataclass(frozen=True)
class EnvSpec:
    name: str
    key: str
    default: str | None


ENV_VARS = (
    EnvSpec("CDP_DATABASE_URL", "SQLALCHEMY_DATABASE_URI", None),
    EnvSpec("CDP_REDIS_URL", "REDIS_URL", None),
    EnvSpec("CDP_SECRET_KEY", "SECRET_KEY", DEFAULT_SECRET_KEY),
    EnvSpec("CDP_PII_KEY", "PII_KEY", DEFAULT_PII_KEY),
    # Key rotation (docs/security.md): the current key's id, older keys that still decrypt
    # ("id:secret,..."), and the blind-index key, which stays the same across rotations.
    EnvSpec("CDP_PII_KEY_ID", "PII_KEY_ID", str(KEY_ID)),
    EnvSpec("CDP_PII_DECRYPT_KEYS", "PII_DECRYPT_KEYS", None),
    EnvSpec("CDP_PII_INDEX_KEY", "PII_INDEX_KEY", None),
    EnvSpec("CDP_TIMEZONE", "TIMEZONE", "Asia/Shanghai"),
    EnvSpec("CDP_ENV", "CDP_ENV", "development"),
    EnvSpec("CDP_PUBLIC_URL", "PUBLIC_URL", "http://127.0.0.1:5000"),
    EnvSpec("CDP_LOGIN_RATE_LIMIT", "LOGIN_RATE_LIMIT", "10 per minute"),
    EnvSpec("CDP_PARTNER_RATE_LIMIT", "PARTNER_RATE_LIMIT", "1200 per minute"),
    # The tracking API acks once a batch is committed and resolves identities in the drain
    # job (docs/tracking-api.md); "false" resolves them in the request, before the ack.
    EnvSpec("CDP_INGEST_DEFER_RESOLUTION", "INGEST_DEFER_RESOLUTION", "true"),
    # Journey engine (defaults in journeys/settings.py; unset means the default).
    EnvSpec("CDP_JOURNEY_GLOBAL_CONTROL_PERCENT", "JOURNEY_GLOBAL_CONTROL_PERCENT", None),
    EnvSpec("CDP_JOURNEY_SWEEP_SECONDS", "JOURNEY_SWEEP_SECONDS", None),
    EnvSpec("CDP_JOURNEY_LEASE_SECONDS", "JOURNEY_LEASE_SECONDS", None),
    EnvSpec("CDP_JOURNEY_RETRY_SECONDS", "JOURNEY_RETRY_SECONDS", None),
    EnvSpec("CDP_JOURNEY_WEBHOOK_ALLOWED_HOSTS", "JOURNEY_WEBHOOK_ALLOWED_HOSTS", None),
    # Channel providers (journeys/channels, connectors/sms_reports; defaults in docs/connectors.md).
    EnvSpec("CDP_JOURNEY_WEBHOOK_SECRET", "JOURNEY_WEBHOOK_SECRET", None),
    EnvSpec("CDP_JOURNEY_CHANNEL_TIMEOUT", "JOURNEY_CHANNEL_TIMEOUT", None),
    EnvSpec("CDP_SMS_BASE_URL", "SMS_BASE_URL", None),
    EnvSpec("CDP_SMS_ACCESS_KEY_ID", "SMS_ACCESS_KEY_ID", None),
    EnvSpec("CDP_SMS_ACCESS_KEY_SECRET", "SMS_ACCESS_KEY_SECRET", None),
    EnvSpec("CDP_SMS_SIGN_NAME", "SMS_SIGN_NAME", None),
    EnvSpec("CDP_SMS_TEMPLATE_CODE", "SMS_TEMPLATE_CODE", None),
    EnvSpec("CDP_SMS_REGION_ID", "SMS_REGION_ID", None),
    EnvSpec("CDP_SMS_CALLBACK_TOKEN", "SMS_CALLBACK_TOKEN", None),
    EnvSpec("CDP_MINIPROGRAM_STATE", "MINIPROGRAM_STATE", None),
    EnvSpec("CDP_MINIPROGRAM_LANG", "MINIPROGRAM_LANG", None),
)


def default_sqlite_url(instance_path: str) -> str:
    return "sqlite:///" + str(Path(instance_path) / "cdp.db")


def from_environment(environ: os._Environ | dict, instance_path: str) -> dict:
    """Build the config mapping from CDP_* environment variables."""
    config = {}
    for spec in ENV_VARS:
        value = environ.get(spec.name) or spec.default
        config[spec.key] = value
    if not config["SQLALCHEMY_DATABASE_URI"]:
        config["SQLALCHEMY_DATABASE_URI"] = default_sqlite_url(instance_path)
    return config


def base_config() -> dict:
    """Settings that do not depend on the environment."""
    return {
        "SQLALCHEMY_ENGINE_OPTIONS": {
            "pool_pre_ping": True,
            # orjson keeps Chinese text as UTF-8 (stdlib json escapes it to \\uXXXX) and is faster.
            "json_serializer": _json_dumps,
            "json_deserializer": orjson.loads,
        },
        "SESSION_COOKIE_HTTPONLY": True,
        "SESSION_COOKIE_SAMESITE": "Lax",
        "PERMANENT_SESSION_LIFETIME": 12 * 3600,
        "WTF_CSRF_TIME_LIMIT": None,
        "BABEL_DEFAULT_LOCALE": "zh_CN",
        "BABEL_DEFAULT_TIMEZONE": "Asia/Shanghai",
        "LANGUAGES": ("zh_CN", "en"),
        "MAX_CONTENT_LENGTH": 8 * 1024 * 1024,
        "COMPONENTS": DEFAULT_COMPONENTS,
        "API_TITLE": "CarePath CDP",
        "API_VERSION": "v1",
        "OPENAPI_VERSION": "3.0.3",
        "OPENAPI_URL_PREFIX": "/api",
        "OPENAPI_JSON_PATH": "openapi.json",
        "EMBEDDED_WORKER": None,  # None: on when there is no Redis URL
        "WORKER_TTL": 60,
        "JOB_TIMEOUT": 600,
        "JOB_RETRIES": 3,
    }


def _pii_keys(config: dict) -> list[str]:
    """Parse the PII key settings in place; return what production must refuse about them."""
    try:
        config["PII_KEY_ID"] = check_key_id(int(config.get("PII_KEY_ID") or KEY_ID))
        listed = config.get("PII_DECRYPT_KEYS")
        config["PII_DECRYPT_KEYS"] = (
            dict(listed) if isinstance(listed, dict) else parse_key_list(listed)
        )
    except ValueError as exc:
        raise ConfigError(f"CDP_PII_KEY_ID / CDP_PII_DECRYPT_KEYS: {exc}") from None
    index_key = config.get("PII_INDEX_KEY") or None
    config["PII_INDEX_KEY"] = index_key
    problems = []
    if index_key == DEFAULT_PII_KEY or DEFAULT_PII_KEY in config["PII_DECRYPT_KEYS"].values():
        problems.append("CDP_PII_INDEX_KEY and CDP_PII_DECRYPT_KEYS must not hold the default key")
    elif index_key is None and (config["PII_KEY_ID"] != KEY_ID or config["PII_DECRYPT_KEYS"]):
        # Unset, it falls back to CDP_PII_KEY: after a rotation that is the new key, and every
        # blind-index lookup (phone, e-mail, name) would silently miss.
        problems.append(
            "CDP_PII_INDEX_KEY must be set (to the key the blind indexes were made with) "
            "when CDP_PII_KEY_ID is not 1 or CDP_PII_DECRYPT_KEYS is set"
        )
    return problems


def finalize(config: dict) -> None:
    """Derive mode-dependent settings and refuse unsafe production configs."""
    production = config.get("CDP_ENV") == "production"
    config["PRODUCTION"] = production
    config["BABEL_DEFAULT_TIMEZONE"] = config.get("TIMEZONE", "Asia/Shanghai")
    pii_problems = _pii_keys(config)
    if production:
        problems = []
        if config.get("SECRET_KEY") in (None, "", DEFAULT_SECRET_KEY):
            problems.append("CDP_SECRET_KEY must be set to a non-default value")
        if config.get("PII_KEY") in (None, "", DEFAULT_PII_KEY):
            problems.append("CDP_PII_KEY must be set to a non-default value")
        problems += pii_problems
        if problems:
            raise ConfigError("Refusing to start in production mode: " + "; ".join(problems))
        # __Host- cookies must be Secure, path=/ and host-only (ASVS 3.3.1/3.3.3).
        config.setdefault("SESSION_COOKIE_SECURE", True)
        config.setdefault("SESSION_COOKIE_NAME", "__Host-cdp_session")
        config.setdefault("REMEMBER_COOKIE_SECURE", True)
    else:
        config.setdefault("SESSION_COOKIE_NAME", "cdp_session")
    url = config.get("SQLALCHEMY_DATABASE_URI", "")
    if url.startswith("sqlite"):
        # SQLite serialises writers anyway; a long busy timeout beats "database is locked".
        # (Ingestion waits less for the write lock: cdp.ingest.pipeline.SQLITE_LOCK_WAIT_MS.)
        opts = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        opts.setdefault("connect_args", {"timeout": 30, "check_same_thread": False})
        # A file has no server to go away: the ping before each checkout only costs (~0.2 ms
        # a request, a tenth of a redemption).
        opts["pool_pre_ping"] = False
        config["SQLALCHEMY_ENGINE_OPTIONS"] = opts
    elif url.startswith("postgresql"):
        # An unreachable server must fail a request fast (503 + Retry-After within ~2 s), not
        # after the OS's TCP connect timeout (minutes when packets are dropped).
        opts = dict(config.get("SQLALCHEMY_ENGINE_OPTIONS") or {})
        connect_args = dict(opts.get("connect_args") or {})
        connect_args.setdefault("connect_timeout", 2)
        opts["connect_args"] = connect_args
        config["SQLALCHEMY_ENGINE_OPTIONS"] = opts
    defer = config.get("INGEST_DEFER_RESOLUTION", True)
    if isinstance(defer, str):
        defer = defer.strip().lower() not in ("0", "false", "no", "off")
    config["INGEST_DEFER_RESOLUTION"] = bool(defer)
    if config.get("EMBEDDED_WORKER") is None:
        config["EMBEDDED_WORKER"] = not config.get("REDIS_URL")
