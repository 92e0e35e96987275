"""Admin authentication: the admin token (``CROWDGATE_ADMIN_TOKEN``), the dashboard's session cookie, CSRF.

- No token configured (or one equal to a webhook secret): admin routes answer 403 saying how to enable them.
- The HTTP API takes ``Authorization: Bearer <token>`` (or ``X-Crowdgate-Admin-Token``), compared in constant time;
  anything else, the webhook secret included, gets 401.
- The dashboard's login form checks the token the same way and sets a cookie signed with it (itsdangerous, as
  Flask's own sessions), so changing the token logs everyone out; the cookie holds the admin's name, never the
  token. Its forms carry a CSRF token derived from the cookie.
"""

from __future__ import annotations

import hashlib
import hmac
import re

from itsdangerous import BadSignature, URLSafeTimedSerializer

from core.settings import Settings

__all__ = [
    "COOKIE",
    "SESSION_MAX_AGE_S",
    "csrf_for",
    "csrf_ok",
    "disabled_reason",
    "new_session",
    "open_session",
    "safe_name",
    "token_from_headers",
    "token_matches",
]

COOKIE = "crowdgate_admin"
SESSION_MAX_AGE_S = 12 * 3600
_SALT = "crowdgate-dashboard-session"
_NAME = re.compile(r"[^\w.@+-]")


def disabled_reason(settings: Settings) -> str | None:
    """Why admin routes are off, or None when they are on."""
    if not settings.admin_token:
        return "admin routes are off: set CROWDGATE_ADMIN_TOKEN (distinct from the webhook secret) and restart"
    if settings.admin_token in {settings.webhook_secret, settings.webhook_secret_previous}:
        return ("admin routes are off: CROWDGATE_ADMIN_TOKEN equals a webhook secret; "
                "set a token of its own and restart")
    return None


def _bytes(text: str) -> bytes:
    return text.encode("utf-8", "surrogatepass")


def token_matches(given: str | None, settings: Settings) -> bool:
    """``given`` is the admin token (constant time; exact, no trimming)."""
    if given is None or disabled_reason(settings) is not None:
        return False
    return hmac.compare_digest(_bytes(given), _bytes(settings.admin_token))


def token_from_headers(headers: dict[str, str] | object) -> str | None:
    get = headers.get  # type: ignore[attr-defined]
    auth = get("Authorization") or ""
    if auth[:7].lower() == "bearer ":
        return auth[7:]
    return get("X-Crowdgate-Admin-Token")


def safe_name(name: str | None, default: str = "admin") -> str:
    """An admin's name as the audit log keeps it: word characters only, 64 at most."""
    cleaned = _NAME.sub("", name or "")[:64]
    return cleaned or default


def _serializer(settings: Settings) -> URLSafeTimedSerializer:
    return URLSafeTimedSerializer(settings.admin_token, salt=_SALT, signer_kwargs={"digest_method": hashlib.sha256})


def new_session(settings: Settings, who: str) -> str:
    return _serializer(settings).dumps({"who": safe_name(who)})


def open_session(settings: Settings, cookie: str | None) -> str | None:
    """The admin's name behind a session cookie, or None (missing, forged, expired, or the token changed)."""
    if not cookie or disabled_reason(settings) is not None:
        return None
    try:
        data = _serializer(settings).loads(cookie, max_age=SESSION_MAX_AGE_S)
    except BadSignature:
        return None
    return safe_name(data.get("who")) if isinstance(data, dict) else None


def csrf_for(settings: Settings, cookie: str) -> str:
    return hmac.new(_bytes(settings.admin_token), b"csrf:" + _bytes(cookie), hashlib.sha256).hexdigest()


def csrf_ok(settings: Settings, cookie: str | None, given: str | None) -> bool:
    if not cookie or not given:
        return False
    return hmac.compare_digest(_bytes(csrf_for(settings, cookie)), _bytes(given))
