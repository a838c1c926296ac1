"""A small WeChat API client for the pull jobs and the mini-program: one shared access token
per app id, refreshed before it expires, retries for what is worth retrying.

Why not wechatpy's ``WeChatClient``: it fetches tokens from a fixed URL (no stub servers,
no ``stable_token``), keeps them per process, and retries a rejected token without limit.
Here:

- **Token**: ``POST {api_base}/cgi-bin/stable_token`` (normal mode: every process and
  every caller gets the same token, none invalidates another). Kept encrypted in
  ``connector_tokens`` and in memory; refreshed ``REFRESH_MARGIN`` seconds before it
  expires, never one per call. On 40001/40014/42001 the token is dropped and fetched again;
  if WeChat hands back the very token it just rejected, a ``force_refresh`` is made
  (WeChat allows 20 a day, 30 s apart; both limits are kept).
- **Retries**: timeouts, connection errors, HTTP 5xx and ``errcode -1`` (busy) are retried
  with exponential back-off (``max_attempts``); ``45009``/``45011`` (rate limit) are
  retried a couple of times, then raised as ``RateLimited`` so a job can pause and resume.
- **Rate**: at most ``rate_per_second`` calls (a token bucket per client).
"""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import orjson
import requests
import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite

from cdp.db import db, utcnow
from cdp.pii import vault
from connectors.models import ConnectorToken

DEFAULT_API_BASE = "https://api.weixin.qq.com"
TOKEN_ERRORS = frozenset({40001, 40014, 42001})
RATE_ERRORS = frozenset({45009, 45011})
BUSY = -1
REFRESH_MARGIN = 300  # seconds before expiry when a token is refreshed
FORCE_PER_DAY, FORCE_GAP = 20, 30
TOKEN_KIND = "access_token"


JSON_HEADERS = {"Content-Type": "application/json; charset=utf-8"}


def _json_bytes(body) -> bytes | None:
    """UTF-8 JSON, Chinese as is (as wechatpy sends it; some WeChat APIs mishandle \\u)."""
    return None if body is None else orjson.dumps(body)


class WechatApiError(Exception):
    def __init__(self, message: str, errcode: int | None = None):
        super().__init__(message)
        self.errcode = errcode


class RateLimited(WechatApiError):
    """WeChat refused for frequency/quota (45009, 45011): pause and resume later."""


class Transient(WechatApiError):
    """Timeouts, 5xx, busy: still failing after the retries."""


_memory: dict[str, tuple[str, float]] = {}  # app id -> (token, expires at, epoch seconds)
_memory_lock = threading.Lock()


class WechatClient:
    def __init__(
        self,
        app_id: str,
        app_secret: str,
        api_base: str | None = None,
        *,
        timeout: float = 10.0,
        rate_per_second: float = 20.0,
        max_attempts: int = 5,
        rate_limit_attempts: int = 3,
        backoff: float = 1.0,
        sleep=time.sleep,
        http: requests.Session | None = None,
    ):
        self.app_id, self.app_secret = app_id, app_secret
        self.api_base = (api_base or DEFAULT_API_BASE).rstrip("/")
        self.timeout = timeout
        self.min_gap = 1.0 / rate_per_second if rate_per_second else 0.0
        self.max_attempts, self.rate_limit_attempts = max_attempts, rate_limit_attempts
        self.backoff, self.sleep = backoff, sleep
        self.http = http or requests.Session()
        self._next_call = 0.0
        self.calls = 0
        self.token_fetches = 0

    # --- tokens --------------------------------------------------------------------------

    def access_token(self) -> str:
        now = time.time()
        with _memory_lock:
            cached = _memory.get(self.app_id)
        if cached and cached[1] - now > REFRESH_MARGIN:
            return cached[0]
        row = db.session.get(ConnectorToken, (self.app_id, TOKEN_KIND))
        if row is not None and (row.expires_at - utcnow()).total_seconds() > REFRESH_MARGIN:
            token = vault().decrypt(row.token_encrypted, self._aad()).decode()
            self._remember(token, row.expires_at.timestamp())
            db.session.rollback()
            return token
        db.session.rollback()
        return self._fetch_token(force=False)

    def _aad(self) -> bytes:
        return f"wechat-token:{self.app_id}".encode()

    def _remember(self, token: str, expires_at: float) -> None:
        with _memory_lock:
            _memory[self.app_id] = (token, expires_at)

    def _fetch_token(self, force: bool, rejected: str | None = None) -> str:
        body = {
            "grant_type": "client_credential",
            "appid": self.app_id,
            "secret": self.app_secret,
            "force_refresh": force,
        }
        data = self._request("POST", "/cgi-bin/stable_token", json_body=body, token=False)
        token, expires_in = data.get("access_token"), int(data.get("expires_in") or 7200)
        if not token:
            raise WechatApiError("stable_token returned no access_token")
        self.token_fetches += 1
        if token == rejected and not force and self._may_force():
            return self._fetch_token(force=True)
        expires_at = utcnow() + timedelta(seconds=expires_in)
        self._store(token, expires_at, force)
        self._remember(token, expires_at.timestamp())
        return token

    def _may_force(self) -> bool:
        row = db.session.get(ConnectorToken, (self.app_id, TOKEN_KIND))
        db.session.rollback()
        if row is None or row.forced_at is None:
            return True
        now = utcnow()
        same_day = row.forced_at.date() == now.date()
        recent = (now - row.forced_at).total_seconds() < FORCE_GAP
        return not recent and not (same_day and row.forced_today >= FORCE_PER_DAY)

    def _store(self, token: str, expires_at, forced: bool) -> None:
        table = ConnectorToken.__table__
        now = utcnow()
        values = {
            "app_id": self.app_id,
            "kind": TOKEN_KIND,
            "token_encrypted": vault().encrypt(token.encode(), self._aad()),
            "expires_at": expires_at,
            "fetched_at": now,
            "forced_at": now if forced else None,
            "forced_today": 1 if forced else 0,
        }
        update = {k: values[k] for k in ("token_encrypted", "expires_at", "fetched_at")}
        if forced:
            same_day = sa.func.coalesce(table.c.forced_at >= now.replace(hour=0, minute=0), False)
            update["forced_today"] = sa.case((same_day, table.c.forced_today + 1), else_=1)
            update["forced_at"] = now
        with db.engine.begin() as conn:
            dialect = conn.dialect.name
            insert = (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)
            statement = insert.values(**values).on_conflict_do_update(
                index_elements=["app_id", "kind"], set_=update
            )
            conn.execute(statement)

    def _drop_token(self, token: str) -> None:
        with _memory_lock:
            if _memory.get(self.app_id, ("",))[0] == token:
                _memory.pop(self.app_id, None)
        table = ConnectorToken.__table__
        with db.engine.begin() as conn:
            rows = conn.execute(
                sa.select(table.c.token_encrypted).where(
                    table.c.app_id == self.app_id, table.c.kind == TOKEN_KIND
                )
            ).all()
            for (blob,) in rows:
                if vault().decrypt(blob, self._aad()).decode() == token:
                    conn.execute(
                        sa.update(table)
                        .where(table.c.app_id == self.app_id, table.c.kind == TOKEN_KIND)
                        .values(expires_at=utcnow())
                    )

    # --- calls ---------------------------------------------------------------------------

    def _throttle(self) -> None:
        now = time.monotonic()
        wait = self._next_call - now
        if wait > 0:
            self.sleep(wait)
        self._next_call = max(now, self._next_call) + self.min_gap

    def _request(self, method, path, params=None, json_body=None, token=True) -> dict:
        """One API call with retries; ``token`` adds (and renews) the access token."""
        attempt, rate_limited, token_retries = 0, 0, 0
        while True:
            attempt += 1
            query = dict(params or {})
            used = self.access_token() if token else None
            if used:
                query["access_token"] = used
            self._throttle()
            self.calls += 1
            try:
                response = self.http.request(
                    method,
                    self.api_base + path,
                    params=query,
                    data=_json_bytes(json_body),
                    headers=JSON_HEADERS if json_body is not None else None,
                    timeout=self.timeout,
                )
            except (requests.Timeout, requests.ConnectionError) as exc:
                self._retry_or_raise(attempt, f"{path}: {type(exc).__name__}")
                continue
            if response.status_code >= 500:
                self._retry_or_raise(attempt, f"{path}: HTTP {response.status_code}")
                continue
            try:
                data = response.json()
            except ValueError:
                self._retry_or_raise(attempt, f"{path}: HTTP {response.status_code}, not JSON")
                continue
            code = int(data.get("errcode") or 0) if isinstance(data, dict) else 0
            if code == 0 and response.status_code < 400:
                return data
            message = f"{path}: errcode {code} {str(data.get('errmsg', ''))[:100]}"
            if code in TOKEN_ERRORS and used and token_retries < 2:
                token_retries += 1
                self._drop_token(used)
                self._fetch_token(force=False, rejected=used)
                continue
            if code in RATE_ERRORS:
                rate_limited += 1
                if rate_limited >= self.rate_limit_attempts:
                    raise RateLimited(message, code)
                self.sleep(self.backoff * 5 * rate_limited)
                continue
            if code == BUSY:
                self._retry_or_raise(attempt, message)
                continue
            raise WechatApiError(message, code or response.status_code)

    def _retry_or_raise(self, attempt: int, message: str) -> None:
        if attempt >= self.max_attempts:
            raise Transient(f"{message} (after {attempt} attempts)")
        self.sleep(self.backoff * 2 ** (attempt - 1))

    # --- the APIs used ---------------------------------------------------------------------

    def post(self, path: str, body: dict) -> dict:
        """A JSON POST with the access token (the send adapters, ``connectors.wechat_send``)."""
        return self._request("POST", path, json_body=body)

    def followers(self, next_openid: str = "") -> dict:
        """One page (≤ 10,000 openids) of the follower list."""
        return self._request("GET", "/cgi-bin/user/get", params={"next_openid": next_openid})

    def users_info(self, openids: list[str]) -> list[dict]:
        """User info of at most 100 followers (unionid when the account is bound)."""
        body = {"user_list": [{"openid": o, "lang": "zh_CN"} for o in openids[:100]]}
        data = self._request("POST", "/cgi-bin/user/info/batchget", json_body=body)
        return list(data.get("user_info_list") or [])

    def code_to_session(self, code: str) -> dict:
        """Mini-program ``wx.login`` code → ``{openid, session_key, unionid?}``."""
        params = {
            "appid": self.app_id,
            "secret": self.app_secret,
            "js_code": code,
            "grant_type": "authorization_code",
        }
        return self._request("GET", "/sns/jscode2session", params=params, token=False)

    def phone_number(self, code: str) -> dict:
        """Mini-program phone button code → ``phone_info`` (single-use, 5 minutes)."""
        data = self._request("POST", "/wxa/business/getuserphonenumber", json_body={"code": code})
        return data.get("phone_info") or {}


def forget_tokens() -> None:
    """Drop the in-memory tokens (tests)."""
    with _memory_lock:
        _memory.clear()
