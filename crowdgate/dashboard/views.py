"""The live dashboard (``/dashboard/``) and the admin HTTP API (``/admin/api/``), behind the admin token.

    GET  /dashboard/                     projects: submissions, agreement, annotators, flagged, paused, escalations
    GET  /dashboard/<project>            annotators, tasks, charts; ?annotator=U or ?task=T adds that audit trail
    POST /dashboard/<project>/action     a button: action, target, tier (CSRF token required)
    GET  /dashboard/login, POST /dashboard/login, POST /dashboard/logout
    POST /admin/api/projects/<project>/annotators/<user>/tier        {"tier": ..., "reason": ...}
    POST /admin/api/projects/<project>/annotators/<user>/clear-flag  {"reason": ...}
    POST /admin/api/projects/<project>/annotators/<user>/unpause     {"reason": ...}
    POST /admin/api/projects/<project>/tasks/<task>/rerun            {"reason": ...}
    GET  /admin/api/projects/<project>/report                        the report as JSON

Buttons and API calls go through :class:`crowdgate.admin.AdminActions`, as the CLI does. A Redis that does not
answer gives a 503 page that says so, never a 500.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

import redis
from flask import Blueprint, Flask, Response, current_app, jsonify, redirect, request

from core.settings import Settings
from crowdgate.admin import AdminActions, AdminError
from crowdgate.dashboard import auth
from crowdgate.report.data import ReportCache, list_projects
from crowdgate.report.html import render
from routing.audit import AuditLog

__all__ = ["admin_api", "dashboard", "init_dashboard"]

dashboard = Blueprint("crowdgate_dashboard", __name__, url_prefix="/dashboard")
admin_api = Blueprint("crowdgate_admin_api", __name__, url_prefix="/admin/api")
_EXT = "crowdgate_dashboard"
BASE = "/dashboard"


def _ext() -> dict[str, Any]:
    return current_app.extensions[_EXT]


def _settings() -> Settings:
    return _ext()["settings"]


def _actions() -> AdminActions:
    return AdminActions(_ext()["redis"], _settings().key_prefix)


def _page(name: str, status: int = 200, **context: Any) -> Response:
    response = Response(render(name, base=BASE, **context), status=status, mimetype="text/html")
    response.headers["Cache-Control"] = "no-store"
    response.headers["Content-Security-Policy"] = "default-src 'none'; style-src 'unsafe-inline'; img-src data:; " \
                                                  "form-action 'self'; frame-ancestors 'none'"
    return response


# -- the dashboard ---------------------------------------------------------------------------------------------


@dashboard.before_request
def _require_login():
    reason = auth.disabled_reason(_settings())
    if reason is not None:
        return _page("base.html", 403, title="admin routes are off", error=reason)
    if request.endpoint in (f"{dashboard.name}.login", f"{dashboard.name}.login_form"):
        return None
    header_token = auth.token_from_headers(request.headers)
    if header_token is not None:
        if not auth.token_matches(header_token, _settings()):
            return _page("login.html", 401, title="log in", error="wrong admin token", next=request.path)
        request.environ["crowdgate.admin"] = auth.safe_name(request.headers.get("X-Crowdgate-Admin-User"), "api")
        return None
    cookie = request.cookies.get(auth.COOKIE)
    who = auth.open_session(_settings(), cookie)
    if who is None:
        if request.method == "GET":
            return redirect(f"{BASE}/login?" + urlencode({"next": request.full_path.rstrip("?")}))
        return _page("login.html", 401, title="log in", error="log in first", next=BASE + "/")
    if request.method == "POST" and not auth.csrf_ok(_settings(), cookie, request.form.get("csrf")):
        return _page("base.html", 403, title="refused", error="the form's CSRF token is missing or wrong: reload "
                                                              "the page and try again")
    request.environ["crowdgate.admin"] = who
    request.environ["crowdgate.csrf"] = auth.csrf_for(_settings(), cookie or "")
    return None


def _who() -> str:
    return request.environ.get("crowdgate.admin", "admin")


def _live_context() -> dict[str, Any]:
    return {"live": True, "who": _who(), "csrf": request.environ.get("crowdgate.csrf", "")}


def _safe_next(target: str | None) -> str:
    # only a path of the dashboard itself: never an open redirect
    return target if target and target.startswith(BASE + "/") and "//" not in target and "\\" not in target \
        else BASE + "/"


@dashboard.get("/login")
def login_form():
    return _page("login.html", title="log in", next=_safe_next(request.args.get("next")))


@dashboard.post("/login")
def login():
    settings = _settings()
    if not auth.token_matches(request.form.get("token"), settings):
        return _page("login.html", 401, title="log in", error="wrong admin token",
                     next=_safe_next(request.form.get("next")))
    response = redirect(_safe_next(request.form.get("next")), 303)
    response.set_cookie(auth.COOKIE, auth.new_session(settings, request.form.get("who") or "admin"),
                        max_age=auth.SESSION_MAX_AGE_S, httponly=True, samesite="Strict", secure=request.is_secure,
                        path=BASE)
    return response


@dashboard.post("/logout")
def logout():
    response = redirect(f"{BASE}/login", 303)
    response.delete_cookie(auth.COOKIE, path=BASE)
    return response


@dashboard.get("/")
def index():
    connection, prefix = _ext()["redis"], _settings().key_prefix
    cache: ReportCache = _ext()["cache"]
    summaries = [cache.get(connection, prefix, p).summary for p in list_projects(connection, prefix)]
    return _page("index.html", title="projects", summaries=summaries, **_live_context())


def _int_arg(name: str) -> int | None:
    value = request.args.get(name, "")
    return int(value) if value.isascii() and value.isdigit() and len(value) < 19 else None


@dashboard.get("/<int:project>")
def project_page(project: int):
    connection, prefix = _ext()["redis"], _settings().key_prefix
    if project not in list_projects(connection, prefix):
        return _page("base.html", 404, title="not found", error=f"crowdgate has seen no project {project}",
                     **_live_context())
    report = _ext()["cache"].get(connection, prefix, project)
    audit = audit_of = None
    annotator, task = _int_arg("annotator"), _int_arg("task")
    log = AuditLog(connection, prefix)
    if task is not None:
        audit, audit_of = log.query(project=project, task=task)[-200:][::-1], f"task {task}"
    elif annotator is not None:
        audit, audit_of = log.query(project=project, annotator=annotator)[-200:][::-1], f"annotator {annotator}"
    return _page("project.html", title=f"{report.title} · dashboard", report=report, audit=audit, audit_of=audit_of,
                 message=request.args.get("done"), error=request.args.get("failed"), **_live_context())


@dashboard.post("/<int:project>/action")
def project_action(project: int):
    form = request.form
    target = form.get("target", "")
    if not (target.isascii() and target.isdigit() and len(target) < 19):
        return _page("base.html", 400, title="refused", error="target must be a user or task id", **_live_context())
    try:
        result = _actions().run(form.get("action", ""), project, int(target), by=f"web:{_who()}",
                                reason=form.get("reason", "")[:500], tier=form.get("tier") or None)
    except AdminError as exc:
        return redirect(f"{BASE}/{project}?" + urlencode({"failed": str(exc)}), 303)
    _ext()["cache"].drop(_settings().key_prefix, project)
    done = f"{form.get('action')} {target}: " + ", ".join(f"{k}={v}" for k, v in result.items()
                                                          if k in ("from", "tier", "cleared", "unpaused",
                                                                   "agreement", "decisions"))
    return redirect(f"{BASE}/{project}?" + urlencode({"done": done}), 303)


# -- the admin API -----------------------------------------------------------------------------------------------


@admin_api.before_request
def _require_token():
    reason = auth.disabled_reason(_settings())
    if reason is not None:
        return jsonify(error=reason), 403
    if not auth.token_matches(auth.token_from_headers(request.headers), _settings()):
        return jsonify(error="admin token missing or wrong"), 401, {"WWW-Authenticate": 'Bearer realm="crowdgate"'}
    request.environ["crowdgate.admin"] = auth.safe_name(request.headers.get("X-Crowdgate-Admin-User"), "api")
    return None


def _body() -> dict[str, Any]:
    data = request.get_json(silent=True)
    return data if isinstance(data, dict) else {}


def _api(action: str, project: int, target: int, tier: str | None = None):
    body = _body()
    reason = body.get("reason")
    try:
        result = _actions().run(action, project, target, by=f"api:{_who()}",
                                reason=reason[:500] if isinstance(reason, str) else "", tier=tier)
    except AdminError as exc:
        return jsonify(error=str(exc)), exc.status
    _ext()["cache"].drop(_settings().key_prefix, project)
    return jsonify(result)


@admin_api.post("/projects/<int:project>/annotators/<int:annotator>/tier")
def api_set_tier(project: int, annotator: int):
    tier = _body().get("tier")
    if not isinstance(tier, str) or not tier:
        return jsonify(error='the body must be JSON with a "tier" string'), 400
    return _api("set_tier", project, annotator, tier)


@admin_api.post("/projects/<int:project>/annotators/<int:annotator>/clear-flag")
def api_clear_flag(project: int, annotator: int):
    return _api("clear_flag", project, annotator)


@admin_api.post("/projects/<int:project>/annotators/<int:annotator>/unpause")
def api_unpause(project: int, annotator: int):
    return _api("unpause", project, annotator)


@admin_api.post("/projects/<int:project>/tasks/<int:task>/rerun")
def api_rerun(project: int, task: int):
    return _api("rerun_task", project, task)


@admin_api.get("/projects/<int:project>/report")
def api_report(project: int):
    connection, prefix = _ext()["redis"], _settings().key_prefix
    if project not in list_projects(connection, prefix):
        return jsonify(error=f"crowdgate has seen no project {project}"), 404
    return jsonify(_ext()["cache"].get(connection, prefix, project).to_dict())


@dashboard.errorhandler(redis.RedisError)
@admin_api.errorhandler(redis.RedisError)
def _redis_down(exc: redis.RedisError):
    message = f"Redis is not answering ({type(exc).__name__}); crowdgate's figures are unavailable until it does"
    if request.path.startswith(BASE):
        return _page("base.html", 503, title="unavailable", error=message)
    return jsonify(error=message), 503


def init_dashboard(app: Flask, settings: Settings) -> None:
    """Attach the dashboard and the admin API to ``app`` with their own Redis connection (reads of a large
    project take longer than the receiver's short timeout)."""
    connection = redis.Redis.from_url(settings.redis_url, socket_timeout=15, socket_connect_timeout=2)
    app.extensions[_EXT] = {"settings": settings, "redis": connection,
                            "cache": ReportCache(settings.dashboard_cache_s)}
    app.register_blueprint(dashboard)
    app.register_blueprint(admin_api)
