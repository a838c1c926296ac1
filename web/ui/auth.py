"""Log in, log out and switch language."""

from __future__ import annotations

from urllib.parse import urlsplit

from flask import Blueprint, current_app, redirect, render_template, request, session, url_for
from flask_babel import gettext as _
from flask_login import current_user, login_required, login_user, logout_user

from cdp.auth import accounts
from web.extensions import limiter
from web.session_auth import SessionUser, client_ip, current_actor
from web.ui.forms import LocaleForm, LoginForm, LogoutForm

bp = Blueprint("auth", __name__)


def _safe_next(target: str | None) -> str:
    """Only follow same-site relative redirects (no open redirect)."""
    if target:
        parts = urlsplit(target)
        if not parts.scheme and not parts.netloc and target.startswith("/") and "\\" not in target:
            return target
    return url_for("dashboard.index")


def _login_limit() -> str:
    return current_app.config["LOGIN_RATE_LIMIT"]


@bp.route("/login", methods=["GET", "POST"])
@limiter.limit(_login_limit, methods=["POST"], deduct_when=lambda r: r.status_code != 302)
def login():
    """Show the login form and sign the user in; failed attempts count towards the rate limit."""
    if current_user.is_authenticated:
        return redirect(url_for("dashboard.index"))
    form = LoginForm(next=request.args.get("next", ""))
    error = None
    if form.validate_on_submit():
        user = accounts.authenticate(current_actor(), form.email.data, form.password.data)
        if user is not None:
            # A fresh session on login defeats session fixation (ASVS 7.2.4).
            locale = session.get("locale")
            session.clear()
            if locale:
                session["locale"] = locale
            session_id = accounts.start_session(user, client_ip(), request.user_agent.string)
            login_user(SessionUser(user, session_id))
            return redirect(_safe_next(form.next.data))
        error = _("Invalid e-mail or password.")
    status = 401 if error else 200
    return render_template("auth/login.html", form=form, error=error), status


@bp.route("/logout", methods=["POST"])
@login_required
def logout():
    """End the server-side session so the cookie is useless even if it was copied."""
    form = LogoutForm()
    if form.validate_on_submit():
        accounts.end_session(current_actor(), current_user.session_id)
        logout_user()
        locale = session.get("locale")
        session.clear()
        if locale:  # the language is a preference of the browser, not of the login
            session["locale"] = locale
    return redirect(url_for("auth.login"))


@bp.route("/locale", methods=["POST"])
def set_locale():
    """Remember the chosen UI language in the session."""
    form = LocaleForm()
    if form.validate_on_submit():
        session["locale"] = form.locale.data
    return redirect(_safe_next(form.next.data or None))
