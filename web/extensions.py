"""Web-only extension singletons: login, CSRF, i18n, rate limiting (the REST API's Api is made per app)."""

import time

from flask_babel import Babel
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_login import LoginManager
from flask_wtf.csrf import CSRFProtect
from limits.storage import MemoryStorage

login_manager = LoginManager()
csrf = CSRFProtect()
babel = Babel()
limiter = Limiter(key_func=get_remote_address, default_limits=[])


class ThreadlessMemoryStorage(MemoryStorage):
    """limits' in-memory storage, expiring old entries inline rather than from a timer thread.

    The stock one starts a ``threading.Timer`` whenever the previous one has fired (10 ms),
    which under steady traffic is a new thread for nearly every rate-limited request: a
    third of a single tracking call's CPU, and latency while the thread starts. Fixed
    windows are expired on read anyway; the rest is swept here at most once a second.
    Used when there is no Redis (``memory://`` otherwise behaves the same).
    """

    STORAGE_SCHEME = ["cdp-memory"]
    SWEEP_SECONDS = 1.0
    _next_sweep = 0.0

    def _MemoryStorage__schedule_expiry(self) -> None:  # replaces the timer-starting one
        now = time.monotonic()
        if now >= self._next_sweep:
            self._next_sweep = now + self.SWEEP_SECONDS
            self._MemoryStorage__expire_events()
