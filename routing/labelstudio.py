"""Label Studio's REST API as routing needs it (the only module of ``routing`` that talks HTTP).

An admin token does everything: PATCH a task's ``overlap``/``is_labeled`` (dynamic overlap), replace its
``data`` or ``meta`` (PATCH replaces the whole object, so callers send it complete), import tasks with
predictions into escalation projects, per-annotator Data Manager views on ``data.assigned_to`` (operator
``equal``: ``contains`` is a case-insensitive substring match), write annotations on behalf of a user
(``completed_by``), and annotator accounts with a login (the invite flow) when an annotator's own queue is
needed. Facts measured on 1.23.2 Community are in ``../shared/DESIGN.md``.

Which edition is behind the URL is probed, never configured: :meth:`LabelStudioAPI.edition` asks
``/api/version`` and then the Enterprise-only assignment route, which answers 404 on Community and something
else (405 for a GET, 200, 400) where it exists. On Enterprise, routing uses the assignment API
(``/api/projects/P/tasks/assignees``) and the pause API (``/api/projects/P/members/U/pauses/``).

The hot path (tasks, views, the queue, annotations) uses ``requests`` on one keep-alive session: one round trip
per call, and fields the SDK's models do not carry (``overlap``, ``is_labeled``) pass through untouched.
Creating projects and webhooks, which happens once per escalation tier, goes through label-studio-sdk.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from typing import Any

import requests

# Imported up front (about 0.8 s) so the first escalation of a worker's life does not pay for it.
from label_studio_sdk import LabelStudio

__all__ = ["COMMUNITY", "ENTERPRISE", "Annotator", "LabelStudioAPI", "LabelStudioError", "assigned_filter",
           "offer_filter", "offer_token", "user_id"]

COMMUNITY = "community"
ENTERPRISE = "enterprise"
ASSIGNED_FIELD = "assigned_to"


class LabelStudioError(RuntimeError):
    """A Label Studio call failed; ``status`` is the HTTP status (0 when no answer came)."""

    def __init__(self, method: str, path: str, status: int, body: str) -> None:
        super().__init__(f"{method} {path} -> {status}: {body[:500]}")
        self.method, self.path, self.status, self.body = method, path, status, body


@dataclass(frozen=True)
class Annotator:
    """A Label Studio user who can log in, with their own API token."""

    id: int
    email: str
    token: str


def user_id(value: Any) -> int | None:
    """A user id from an annotation's ``completed_by`` (an id in lists, a user object in task details)."""
    if isinstance(value, dict):
        value = value.get("id")
    return int(value) if isinstance(value, int) and not isinstance(value, bool) else None


def assigned_filter(email: str, field: str = ASSIGNED_FIELD) -> dict[str, Any]:
    """Data Manager filters selecting the tasks whose ``data[field]`` equals ``email`` exactly."""
    return {"conjunction": "and", "items": [
        {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": "String", "value": email}]}


def offer_token(email: str) -> str:
    """``email`` as it appears in a list field (``|a@x|b@x|``): lower case, since ``contains`` ignores case."""
    return f"|{email.strip().lower()}|"


def offer_filter(email: str, field: str) -> dict[str, Any]:
    """Data Manager filters selecting the tasks whose ``data[field]`` lists ``email``: the delimiters make the
    substring match of ``contains`` exact (``|al@x|`` is not inside ``|pal@x|``)."""
    return {"conjunction": "and", "items": [
        {"filter": f"filter:tasks:data.{field}", "operator": "contains", "type": "String",
         "value": offer_token(email)}]}


class LabelStudioAPI:
    def __init__(self, url: str, token: str, timeout: float = 30.0, session: requests.Session | None = None) -> None:
        if not url or not token:
            raise ValueError("a Label Studio URL and an API token are needed")
        self.url = url.rstrip("/")
        self.token = token
        self.timeout = timeout
        self.http = session or requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"
        self._client: Any = None
        self._editions: dict[int | None, str] = {}

    @classmethod
    def from_env(cls) -> LabelStudioAPI:
        url, token = os.environ.get("LABEL_STUDIO_URL", ""), os.environ.get("LABEL_STUDIO_API_KEY", "")
        if not url or not token:
            raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set for routing actions")
        return cls(url, token)

    def as_user(self, token: str) -> LabelStudioAPI:
        """The same server seen with another user's token (an annotator's own queue)."""
        return LabelStudioAPI(self.url, token, self.timeout)

    @property
    def client(self) -> Any:
        if self._client is None:
            self._client = LabelStudio(base_url=self.url, api_key=self.token)
        return self._client

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), **kwargs: Any) -> Any:
        try:
            reply = self.http.request(method, f"{self.url}{path}", timeout=self.timeout, **kwargs)
        except requests.RequestException as exc:
            raise LabelStudioError(method, path, 0, str(exc)) from exc
        if reply.status_code not in ok:
            raise LabelStudioError(method, path, reply.status_code, reply.text)
        if not reply.content:
            return None
        try:
            return reply.json()
        except ValueError:
            return reply.text

    # -- edition ----------------------------------------------------------------------------------------

    def edition(self, project: int | None = None) -> str:
        """``"enterprise"`` when the assignment API exists behind this URL, else ``"community"`` (cached)."""
        if project in self._editions:
            return self._editions[project]
        found = COMMUNITY
        version = self.request("GET", "/api/version", ok=(200, 404))
        named = str((version or {}).get("edition", "")).lower() if isinstance(version, dict) else ""
        if "enterprise" in named:
            found = ENTERPRISE
        elif project is not None:
            # The route exists on Enterprise (a GET is 405 there: it takes POSTs), and is a 404 on Community.
            try:
                self.request("GET", f"/api/projects/{project}/tasks/assignees", ok=(200, 400, 403, 405))
                found = ENTERPRISE
            except LabelStudioError as exc:
                if exc.status != 404:
                    raise
        self._editions[project] = found
        return found

    # -- projects ---------------------------------------------------------------------------------------

    def project(self, project: int) -> dict[str, Any]:
        return self.request("GET", f"/api/projects/{project}/")

    def create_project(self, title: str, label_config: str, **settings: Any) -> int:
        return int(self.client.projects.create(title=title, label_config=label_config, **settings).id)

    def update_project(self, project: int, **settings: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/api/projects/{project}/", json=settings)

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        return self.request("GET", "/api/webhooks/", params={"project": project}) or []

    def create_webhook(self, project: int, url: str, headers: dict[str, str] | None = None) -> int:
        hook = self.client.webhooks.create(url=url, project=project, send_payload=True, send_for_all_actions=True,
                                           headers=headers or {})
        return int(hook.id)

    # -- tasks ------------------------------------------------------------------------------------------

    def task(self, task: int) -> dict[str, Any]:
        return self.request("GET", f"/api/tasks/{task}/")

    def patch_task(self, task: int, **fields: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/api/tasks/{task}/", json=fields)

    def set_overlap(self, task: int, overlap: int) -> dict[str, Any]:
        """Ask for ``overlap`` annotations: ``/next/`` serves the task again to users who have not annotated it.

        Both fields are needed: ``overlap`` alone leaves a finished task finished.
        """
        return self.patch_task(task, overlap=int(overlap), is_labeled=False)

    def close_task(self, task: int) -> dict[str, Any]:
        """Mark a task labeled so no ``/next/`` serves it (it keeps its overlap)."""
        return self.patch_task(task, is_labeled=True)

    def replace_task_data(self, task: int, data: dict[str, Any]) -> dict[str, Any]:
        """PATCH ``data``; Label Studio replaces the whole object, so ``data`` must be complete."""
        return self.patch_task(task, data=data)

    def replace_task_meta(self, task: int, meta: dict[str, Any]) -> dict[str, Any]:
        return self.patch_task(task, meta=meta)

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        reply = self.request("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"},
                             json=tasks)
        return [int(t) for t in reply.get("task_ids", [])]

    def find_tasks(self, project: int, field: str, value: Any) -> list[dict[str, Any]]:
        """Tasks of ``project`` whose ``data[field]`` equals ``value`` (a Data Manager filter)."""
        kind = "Number" if isinstance(value, int | float) and not isinstance(value, bool) else "String"
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": kind, "value": value}]}}
        reply = self.request("GET", "/api/tasks/", params={"project": project, "query": json.dumps(query),
                                                           "fields": "all", "page_size": 100})
        tasks = reply.get("tasks", []) if isinstance(reply, dict) else reply
        # Type coercion in the filter differs between databases: check the value here as well.
        return [t for t in tasks if str((t.get("data") or {}).get(field)) == str(value)]

    def annotations(self, task: int) -> list[dict[str, Any]]:
        return self.request("GET", f"/api/tasks/{task}/annotations/") or []

    def create_annotation(self, task: int, result: list[dict[str, Any]], completed_by: int | None = None,
                          **extra: Any) -> dict[str, Any]:
        """An annotation on ``task``, on behalf of ``completed_by`` when given (an admin token may)."""
        body: dict[str, Any] = {"result": result, **extra}
        if completed_by is not None:
            body["completed_by"] = int(completed_by)
        return self.request("POST", f"/api/tasks/{task}/annotations/", json=body)

    def update_annotation(self, annotation: int, **fields: Any) -> dict[str, Any]:
        return self.request("PATCH", f"/api/annotations/{annotation}/", json=fields)

    # -- views and queues -------------------------------------------------------------------------------

    def views(self, project: int) -> list[dict[str, Any]]:
        return self.request("GET", "/api/dm/views/", params={"project": project}) or []

    def create_view(self, project: int, title: str, filters: dict[str, Any]) -> int:
        reply = self.request("POST", "/api/dm/views/",
                             json={"project": project, "data": {"title": title, "filters": filters}})
        return int(reply["id"])

    def annotator_view(self, project: int, email: str) -> int:
        """The Data Manager tab holding the tasks assigned to ``email`` (reused when it exists)."""
        title = f"crowdgate: {email}"
        for view in self.views(project):
            if (view.get("data") or {}).get("title") == title:
                return int(view["id"])
        return self.create_view(project, title, assigned_filter(email))

    def offer_view(self, project: int, email: str, field: str) -> int:
        """The Data Manager tab holding the tasks offered to ``email`` in ``data[field]`` (reused when it exists)."""
        title = f"crowdgate {field}: {email}"
        for view in self.views(project):
            if (view.get("data") or {}).get("title") == title:
                return int(view["id"])
        return self.create_view(project, title, offer_filter(email, field))

    def next_task(self, project: int, view: int | None = None) -> dict[str, Any] | None:
        """What ``/next/`` serves this token's user (``view``: "label tasks as displayed"); None when nothing."""
        params = {"view": view} if view is not None else None
        try:
            return self.request("GET", f"/api/projects/{project}/next/", params=params, ok=(200,))
        except LabelStudioError as exc:
            if exc.status == 404:  # "There are no tasks for ..."
                return None
            raise

    # -- users ------------------------------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        return self.request("GET", "/api/users/") or []

    def whoami(self) -> dict[str, Any]:
        return self.request("GET", "/api/current-user/whoami")

    def _submit_user_form(self, path: str, email: str, password: str) -> tuple[requests.Session, requests.Response]:
        """Fill in Label Studio's sign-up or log-in page as a browser would (CSRF cookie, Referer) in a fresh
        session; a 302 means it took, and the session is then logged in."""
        browser = requests.Session()
        page = f"{self.url}{path}"
        browser.get(page, timeout=self.timeout)
        reply = browser.post(page, data={"email": email, "password": password,
                                         "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")},
                             headers={"Referer": page}, allow_redirects=False, timeout=self.timeout)
        return browser, reply

    def invite_annotator(self, email: str, password: str) -> Annotator:
        """An annotator who can log in, with their token: invite signup, or a login when the e-mail exists.

        About 0.4 s per user on 1.23.2 (``POST /api/users/`` is faster but makes users who cannot log in).
        """
        invite = self.request("GET", "/api/invite")["token"]
        browser, reply = self._submit_user_form(f"/user/signup/?token={invite}", email, password)
        if reply.status_code != 302:  # the form came back: most likely the e-mail is taken, so log in
            browser, reply = self._submit_user_form("/user/login/", email, password)
            if reply.status_code != 302:
                raise LabelStudioError("POST", "/user/login/", reply.status_code, f"cannot sign up or log in {email}")
        token = browser.get(f"{self.url}/api/current-user/token", timeout=self.timeout)
        who = browser.get(f"{self.url}/api/current-user/whoami", timeout=self.timeout)
        if not token.ok or not who.ok:
            raise LabelStudioError("GET", "/api/current-user/token", token.status_code, token.text)
        return Annotator(id=int(who.json()["id"]), email=email, token=token.json()["token"])

    # -- Enterprise -------------------------------------------------------------------------------------

    def assign(self, project: int, task: int, users: list[int], kind: str = "AN") -> Any:
        """Enterprise: assign ``users`` to ``task`` (``AN`` annotate, ``RE`` review)."""
        return self.request("POST", f"/api/projects/{project}/tasks/assignees",
                            json={"type": kind, "users": [int(u) for u in users],
                                  "selectedItems": {"all": False, "included": [int(task)]}})

    def unassign(self, project: int, task: int, kind: str = "AN") -> None:
        """Enterprise: remove every ``kind`` assignee of ``task``."""
        self.request("DELETE", f"/api/projects/{project}/tasks/{task}/assignees", params={"type": kind},
                     ok=(200, 204, 404))

    def pauses(self, project: int, user: int) -> list[dict[str, Any]]:
        return self.request("GET", f"/api/projects/{project}/members/{user}/pauses/") or []

    def pause(self, project: int, user: int, verbose_reason: str, reason: str = "ANNOTATOR_EVALUATION") -> Any:
        """Enterprise: pause ``user`` in ``project`` (kept once: an active pause is not duplicated)."""
        for existing in self.pauses(project, user):
            if not existing.get("deleted_at"):
                return existing
        return self.request("POST", f"/api/projects/{project}/members/{user}/pauses/",
                            json={"reason": reason, "verbose_reason": verbose_reason})

