"""The one Label Studio adapter: every call crowdgate makes to Label Studio's REST API goes through
:class:`LabelStudioClient`.

- **One session.** A ``requests.Session`` with a timeout on every call and one :class:`RetryPolicy`: idempotent
  calls (GET, PUT, DELETE, HEAD) are retried on connection errors and 502/503/504 with exponential backoff;
  POST and PATCH never are (a retried import or annotation would be written twice). label-studio-sdk's client,
  created lazily for the calls it covers, runs on an ``httpx`` transport with the same policy and the same auth.
- **One auth.** A legacy token is sent as ``Authorization: Token X``. A personal access token (a JWT refresh
  token) is exchanged at ``/api/token/refresh/`` for an access token, sent as ``Bearer``, and exchanged again
  shortly before that expires: what label-studio-sdk 2.x does (``tokens/client_ext.py``).
- **One error.** :class:`LabelStudioError` carries the method, the URL, the HTTP status (0 when no answer
  came) and Label Studio's own message.

The hot path (tasks, views, the queue, annotations) is raw HTTP: one round trip per call, and fields the SDK's
models do not carry (``overlap``, ``is_labeled``) pass through untouched. The SDK serves creating projects,
webhooks, ML backends and predictions and the paginated task and prediction listings. Each method says which.

Which edition is behind the URL is probed, never configured: :meth:`LabelStudioClient.edition` asks
``/api/version`` and then the Enterprise-only assignment route, which answers 404 on Community and something
else (405 for a GET, 200, 400) where it exists. On Enterprise, routing uses the assignment API
(``/api/projects/P/tasks/assignees``) and the pause API (``/api/projects/P/members/U/pauses/``).
Facts measured on 1.23.2 Community are in ``../shared/DESIGN.md``.

This module imports nothing else of crowdgate.
"""

from __future__ import annotations

import base64
import binascii
import json
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any, TypeVar

import httpx
import requests

# Imported up front (about 0.8 s) so the first escalation of a worker's life does not pay for it.
from label_studio_sdk import LabelStudio as SdkClient
from label_studio_sdk.core.api_error import ApiError
from requests.adapters import HTTPAdapter
from urllib3.util.retry import Retry

__all__ = ["COMMUNITY", "ENTERPRISE", "Annotator", "LabelStudioClient", "LabelStudioError", "RetryPolicy",
           "TokenAuth", "annotator_view_title", "assigned_filter", "offer_filter", "offer_token", "user_id"]

COMMUNITY = "community"
ENTERPRISE = "enterprise"
ASSIGNED_FIELD = "assigned_to"
CONNECT_TIMEOUT_S = 10.0
# Refresh an access token this long before it expires, so a request never leaves with one about to lapse.
REFRESH_EARLY_S = 30.0
# The SDK authenticates through TokenAuth (on its httpx client); this non-JWT key only keeps the SDK from
# starting a token exchange of its own.
_SDK_KEY = "crowdgate-shared-auth"

T = TypeVar("T")


class LabelStudioError(RuntimeError):
    """A Label Studio call failed: ``method``, ``url``, ``status`` (0 when no answer came), Label Studio's
    ``message`` (its ``detail`` or validation errors when it sent JSON) and the raw ``body``."""

    def __init__(self, method: str, url: str, status: int, body: str = "") -> None:
        self.method, self.url, self.status, self.body = method, url, int(status), body
        self.message = _message(body)
        super().__init__(f"{method} {url} -> {status}: {self.message[:500]}")


def _message(body: str) -> str:
    try:
        parsed = json.loads(body)
    except (TypeError, ValueError):
        return body
    if isinstance(parsed, dict):
        for key in ("detail", "validation_errors", "error", "message"):
            if parsed.get(key):
                value = parsed[key]
                return value if isinstance(value, str) else json.dumps(value)
    return body


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


def annotator_view_title(email: str) -> str:
    """The title of the Data Manager tab holding the tasks assigned to ``email``."""
    return f"crowdgate: {email}"


def offer_token(email: str) -> str:
    """``email`` as it appears in a list field (``|a@x|b@x|``): lower case, since ``contains`` ignores case."""
    return f"|{email.strip().lower()}|"


def offer_filter(email: str, field: str) -> dict[str, Any]:
    """Data Manager filters selecting the tasks whose ``data[field]`` lists ``email``: the delimiters make the
    substring match of ``contains`` exact (``|al@x|`` is not inside ``|pal@x|``)."""
    return {"conjunction": "and", "items": [
        {"filter": f"filter:tasks:data.{field}", "operator": "contains", "type": "String",
         "value": offer_token(email)}]}


# -- retries ------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RetryPolicy:
    """Which calls are retried, on what, how often: the same for the ``requests`` session and the SDK."""

    retries: int = 3
    backoff_s: float = 0.5
    methods: frozenset[str] = frozenset({"GET", "PUT", "DELETE", "HEAD"})
    statuses: frozenset[int] = frozenset({502, 503, 504})

    def delay(self, retry: int) -> float:
        """Seconds before the ``retry``-th retry (1-based): none before the first, then doubling (urllib3's rule)."""
        return 0.0 if retry <= 1 else self.backoff_s * 2 ** (retry - 1)

    def urllib3(self) -> Retry:
        return _IdempotentRetry(total=self.retries, connect=self.retries, read=0, status=self.retries, other=0,
                                allowed_methods=self.methods, status_forcelist=self.statuses,
                                backoff_factor=self.backoff_s, raise_on_status=False)


class _IdempotentRetry(Retry):
    """urllib3 retries connection errors whatever the method; this one leaves other methods alone too."""

    def increment(self, method: str | None = None, url: str | None = None, *args: Any, **kwargs: Any) -> Retry:
        if method is not None and not self._is_method_retryable(method):
            return Retry(0, connect=0, read=0, status=0, other=0).increment(method, url, *args, **kwargs)
        return super().increment(method, url, *args, **kwargs)


class _RetryingTransport(httpx.BaseTransport):
    """The SDK's transport: :class:`RetryPolicy` applied to ``httpx`` requests (the SDK's own retries are off)."""

    def __init__(self, policy: RetryPolicy, inner: httpx.BaseTransport | None = None) -> None:
        self.policy = policy
        self.inner = inner or httpx.HTTPTransport()

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        retryable = request.method.upper() in self.policy.methods
        attempt = 0
        while True:
            try:
                response = self.inner.handle_request(request)
            except httpx.ConnectError:
                if not retryable or attempt >= self.policy.retries:
                    raise
            else:
                if not retryable or attempt >= self.policy.retries or response.status_code not in self.policy.statuses:
                    return response
                response.close()
            attempt += 1
            time.sleep(self.policy.delay(attempt))

    def close(self) -> None:
        self.inner.close()


# -- auth ---------------------------------------------------------------------------------------------------


def _jwt_claims(token: str) -> dict[str, Any] | None:
    """The claims of a JWT (unverified: Label Studio checks the signature), or None when ``token`` is not one."""
    parts = token.split(".")
    if len(parts) != 3:
        return None
    try:
        claims = json.loads(base64.urlsafe_b64decode(parts[1] + "=" * (-len(parts[1]) % 4)))
    except (binascii.Error, ValueError):
        return None
    return claims if isinstance(claims, dict) else None


class TokenAuth(requests.auth.AuthBase):
    """``Authorization`` for one API key: a legacy token as is, a personal access token through the refresh
    exchange (access tokens cached until shortly before they expire, one exchange at a time)."""

    def __init__(self, url: str, api_key: str, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.api_key = api_key
        self.timeout = timeout
        claims = _jwt_claims(api_key)
        self.personal = claims is not None
        if claims is not None and claims.get("exp") is not None and float(claims["exp"]) < time.time():
            raise LabelStudioError("POST", f"{self.url}/api/token/refresh/", 401,
                                   "the personal access token has expired: create a new one in Label Studio")
        self._access: str | None = None
        self._expires = 0.0
        self._lock = threading.Lock()

    def header(self) -> str:
        if not self.personal:
            return f"Token {self.api_key}"
        with self._lock:
            if self._access is None or time.time() >= self._expires - REFRESH_EARLY_S:
                self._access, self._expires = self._refresh()
            return f"Bearer {self._access}"

    def _refresh(self) -> tuple[str, float]:
        url = f"{self.url}/api/token/refresh/"
        try:
            # A plain request: the session's own auth would ask for a token to fetch the token.
            reply = requests.post(url, json={"refresh": self.api_key}, timeout=(CONNECT_TIMEOUT_S, self.timeout))
        except requests.RequestException as exc:
            raise LabelStudioError("POST", url, 0, str(exc)) from exc
        if reply.status_code != 200:
            raise LabelStudioError("POST", url, reply.status_code, reply.text)
        access = str(reply.json().get("access") or "")
        if not access:
            raise LabelStudioError("POST", url, reply.status_code, "the refresh answer carried no access token")
        exp = (_jwt_claims(access) or {}).get("exp")
        return access, float(exp) if exp is not None else time.time() + 300.0

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        request.headers["Authorization"] = self.header()
        return request


class _HttpxAuth(httpx.Auth):
    """The same :class:`TokenAuth` for the SDK's ``httpx`` client."""

    def __init__(self, auth: TokenAuth) -> None:
        self.auth = auth

    def auth_flow(self, request: httpx.Request) -> Iterator[httpx.Request]:
        request.headers["Authorization"] = self.auth.header()
        yield request


def _as_dict(obj: Any) -> dict[str, Any]:
    """SDK objects (pydantic) and plain dicts alike as dicts."""
    if isinstance(obj, dict):
        return obj
    if hasattr(obj, "model_dump"):
        return obj.model_dump()
    return dict(obj.dict())


# -- the adapter --------------------------------------------------------------------------------------------


@dataclass
class LabelStudioClient:
    """Label Studio's REST API, as crowdgate uses it, with one admin (or user) API key.

    ``timeout`` bounds every call (``export_timeout`` the project export, which can be large)."""

    url: str
    api_key: str
    timeout: float = 30.0
    export_timeout: float = 300.0
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    http: requests.Session = field(init=False, repr=False)
    auth: TokenAuth = field(init=False, repr=False)
    _sdk: Any = field(init=False, default=None, repr=False)
    _editions: dict[int | None, str] = field(init=False, default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self.url or not self.api_key:
            raise ValueError("a Label Studio URL and an API key are needed")
        self.url = self.url.rstrip("/")
        self.auth = TokenAuth(self.url, self.api_key, self.timeout)
        self.http = requests.Session()
        self.http.auth = self.auth
        adapter = HTTPAdapter(max_retries=self.retry.urllib3())
        self.http.mount("http://", adapter)
        self.http.mount("https://", adapter)

    @classmethod
    def from_settings(cls, settings: Any) -> LabelStudioClient:
        """From crowdgate's settings (``core.settings.Settings``: ``LABEL_STUDIO_URL``, ``LABEL_STUDIO_API_KEY``),
        taken by their two attribute names so that this module stays at the bottom of the imports."""
        url, key = settings.label_studio_url, settings.label_studio_api_key
        if not url or not key:
            raise RuntimeError("LABEL_STUDIO_URL and LABEL_STUDIO_API_KEY must be set to talk to Label Studio")
        return cls(url, key)

    def as_user(self, api_key: str) -> LabelStudioClient:
        """The same server seen with another user's key (an annotator's own queue)."""
        return LabelStudioClient(self.url, api_key, self.timeout, self.export_timeout, self.retry)

    @property
    def sdk(self) -> SdkClient:
        """label-studio-sdk's client on this server, with this adapter's auth, timeout and retry policy."""
        if self._sdk is None:
            http = httpx.Client(auth=_HttpxAuth(self.auth), transport=_RetryingTransport(self.retry),
                                timeout=httpx.Timeout(self.timeout, connect=CONNECT_TIMEOUT_S), follow_redirects=True)
            self._sdk = SdkClient(base_url=self.url, api_key=_SDK_KEY, httpx_client=http, timeout=self.timeout,
                                  max_retries=0)
        return self._sdk

    def request(self, method: str, path: str, *, ok: tuple[int, ...] = (200, 201, 204), timeout: float | None = None,
                **kwargs: Any) -> Any:
        """One raw call: the parsed JSON answer (text when it is not JSON, None when empty)."""
        url = f"{self.url}{path}"
        try:
            reply = self.http.request(method, url, timeout=(CONNECT_TIMEOUT_S, timeout or self.timeout), **kwargs)
        except requests.RequestException as exc:
            raise LabelStudioError(method, url, 0, str(exc)) from exc
        if reply.status_code not in ok:
            raise LabelStudioError(method, url, reply.status_code, reply.text)
        if not reply.content:
            return None
        try:
            return reply.json()
        except ValueError:
            return reply.text

    def _sdk_call(self, method: str, path: str, call: Callable[[], T]) -> T:
        """Run an SDK call, its failures as :class:`LabelStudioError` (``path`` names the endpoint)."""
        url = f"{self.url}{path}"
        try:
            return call()
        except ApiError as exc:
            body = exc.body if isinstance(exc.body, str) else json.dumps(exc.body, default=str)
            raise LabelStudioError(method, url, exc.status_code or 0, body) from exc
        except httpx.HTTPError as exc:
            raise LabelStudioError(method, url, 0, str(exc)) from exc

    # -- edition ----------------------------------------------------------------------------------------

    def edition(self, project: int | None = None) -> str:
        """``"enterprise"`` when the assignment API exists behind this URL, else ``"community"`` (cached).
        Raw: the SDK has no call for a route that may not exist."""
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
        """Raw: the server's JSON as is (routing copies settings the SDK's model may not name)."""
        return self.request("GET", f"/api/projects/{project}/")

    def projects(self) -> list[dict[str, Any]]:
        """Every project of the organisation as plain dicts (id, title, label_config, ...). SDK (``projects.list``,
        paginated)."""
        return self._sdk_call("GET", "/api/projects/", lambda: [_as_dict(p) for p in self.sdk.projects.list(
            page_size=100)])

    def update_project(self, project: int, **fields: Any) -> dict[str, Any]:
        """PATCH project settings (title, label_config, expert_instruction, ...). Raw: the server's JSON."""
        return self.request("PATCH", f"/api/projects/{project}/", json=fields)

    def create_project(self, title: str, label_config: str, **settings: Any) -> int:
        """SDK (``projects.create``)."""
        created = self._sdk_call("POST", "/api/projects/", lambda: self.sdk.projects.create(
            title=title, label_config=label_config, **settings))
        return int(created.id)

    def export(self, project: int) -> list[dict[str, Any]]:
        """Every task with its annotations, data and meta. Raw: the SDK's export helpers go through export
        snapshots (three calls and a poll); this endpoint answers the same JSON at once."""
        return self.request("GET", f"/api/projects/{project}/export", timeout=self.export_timeout,
                            params={"exportType": "JSON", "download_all_tasks": "true"}) or []

    # -- webhooks ---------------------------------------------------------------------------------------

    def webhooks(self, project: int) -> list[dict[str, Any]]:
        """Raw: the webhooks as plain dicts (``headers`` included)."""
        return self.request("GET", "/api/webhooks/", params={"project": project}) or []

    def create_webhook(self, project: int, url: str, headers: dict[str, str] | None = None) -> int:
        """SDK (``webhooks.create``): every project event, with its payload, to ``url``."""
        hook = self._sdk_call("POST", "/api/webhooks/", lambda: self.sdk.webhooks.create(
            url=url, project=project, send_payload=True, send_for_all_actions=True, headers=headers or {}))
        return int(hook.id)

    def enable_webhook(self, hook: int, headers: dict[str, str]) -> None:
        """SDK (``webhooks.update``): switch a webhook back on, with its payload, for every action, with ``headers``."""
        self._sdk_call("PATCH", f"/api/webhooks/{hook}/", lambda: self.sdk.webhooks.update(
            id=hook, is_active=True, send_payload=True, send_for_all_actions=True, headers=headers))

    def delete_webhook(self, hook: int) -> None:
        """SDK (``webhooks.delete``)."""
        self._sdk_call("DELETE", f"/api/webhooks/{hook}/", lambda: self.sdk.webhooks.delete(id=hook))

    # -- tasks ------------------------------------------------------------------------------------------

    def task(self, task: int) -> dict[str, Any]:
        """Raw. Mind that fetching one task can make Label Studio ask the ML backend for its prediction;
        :meth:`tasks` with ``ids`` reads through the list API, which does not."""
        return self.request("GET", f"/api/tasks/{task}/")

    def tasks(self, project: int, ids: Iterable[int] | None = None) -> list[dict[str, Any]]:
        """Every task of ``project`` (or those in ``ids``), all fields. SDK (``tasks.list``, paginated)."""
        query = None
        if ids is not None:
            query = json.dumps({"selectedItems": {"all": False, "included": [int(i) for i in ids]}})
        return self._sdk_call("GET", "/api/tasks/", lambda: [_as_dict(t) for t in self.sdk.tasks.list(
            project=project, fields="all", page_size=100, query=query)])

    def task_ids(self, project: int) -> list[int]:
        """SDK (``tasks.list``)."""
        return sorted(int(t["id"]) for t in self.tasks(project))

    def patch_task(self, task: int, **fields: Any) -> dict[str, Any]:
        """Raw: ``overlap`` and ``is_labeled`` are not in the SDK's update call."""
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
        """PATCH ``data``; Label Studio replaces the whole object, so ``data`` must be complete (callers that
        read-modify-write hold the task's data lock)."""
        return self.patch_task(task, data=data)

    def replace_task_meta(self, task: int, meta: dict[str, Any]) -> dict[str, Any]:
        return self.patch_task(task, meta=meta)

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import ``{"data": ..., "meta": ..., "predictions": ...}`` tasks; their ids in import order.
        Raw: the SDK's import does not ask for ``return_task_ids``."""
        reply = self.request("POST", f"/api/projects/{project}/import", params={"return_task_ids": "true"},
                             json=tasks)
        ids = reply.get("task_ids") if isinstance(reply, dict) else None
        if ids is None:  # a server that does not return ids: list the project (the import order is the id order)
            return self.task_ids(project)
        return [int(t) for t in ids]

    def find_tasks(self, project: int, field: str, value: Any) -> list[dict[str, Any]]:
        """Tasks of ``project`` whose ``data[field]`` equals ``value`` (a Data Manager filter). Raw: one page."""
        kind = "Number" if isinstance(value, int | float) and not isinstance(value, bool) else "String"
        query = {"filters": {"conjunction": "and", "items": [
            {"filter": f"filter:tasks:data.{field}", "operator": "equal", "type": kind, "value": value}]}}
        reply = self.request("GET", "/api/tasks/", params={"project": project, "query": json.dumps(query),
                                                           "fields": "all", "page_size": 100})
        tasks = reply.get("tasks", []) if isinstance(reply, dict) else reply
        # Type coercion in the filter differs between databases: check the value here as well.
        return [t for t in tasks if str((t.get("data") or {}).get(field)) == str(value)]

    # -- annotations and predictions --------------------------------------------------------------------

    def annotations(self, task: int) -> list[dict[str, Any]]:
        """Raw."""
        return self.request("GET", f"/api/tasks/{task}/annotations/") or []

    def create_annotation(self, task: int, result: list[dict[str, Any]], completed_by: int | None = None,
                          **extra: Any) -> dict[str, Any]:
        """An annotation on ``task``, on behalf of ``completed_by`` when given (an admin key may); fires
        ANNOTATION_CREATED. Raw: the SDK's call drops ``completed_by``."""
        body: dict[str, Any] = {"result": result, **extra}
        if completed_by is not None:
            body["completed_by"] = int(completed_by)
        return self.request("POST", f"/api/tasks/{task}/annotations/", json=body)

    def update_annotation(self, annotation: int, **fields: Any) -> dict[str, Any]:
        """Raw."""
        return self.request("PATCH", f"/api/annotations/{annotation}/", json=fields)

    def delete_annotation(self, annotation: int) -> None:
        """Raw."""
        self.request("DELETE", f"/api/annotations/{annotation}/")

    def predictions(self, project: int) -> list[dict[str, Any]]:
        """SDK (``predictions.list``)."""
        return self._sdk_call("GET", "/api/predictions/", lambda: [
            _as_dict(p) for p in self.sdk.predictions.list(project=project)])

    def create_prediction(self, task: int, result: list[dict[str, Any]], score: float | None = None,
                          model_version: str | None = None) -> int:
        """SDK (``predictions.create``)."""
        extra = {k: v for k, v in {"score": score, "model_version": model_version}.items() if v is not None}
        created = self._sdk_call("POST", "/api/predictions/", lambda: self.sdk.predictions.create(
            task=task, result=result, **extra))
        return int(created.id)

    # -- ML backends ------------------------------------------------------------------------------------

    def ml_backends(self, project: int) -> list[dict[str, Any]]:
        """The project's ML backends as plain dicts (url, auth_method, basic_auth_user, state). Raw."""
        return self.request("GET", "/api/ml/", params={"project": project}) or []

    def connect_ml_backend(self, project: int, url: str, title: str = "crowdgate", timeout: float = 60.0,
                           basic_auth: tuple[str, str] | None = None) -> int:
        """Register an ML backend (with HTTP basic auth when ``basic_auth`` is a (user, password) pair); its id once
        Label Studio reports it connected. SDK (``ml.create``, ``ml.get``).
        Label Studio then adds a project webhook to ``<url>/webhook`` by itself."""
        auth: dict[str, Any] = {}
        if basic_auth:
            auth = {"auth_method": "BASIC_AUTH", "basic_auth_user": basic_auth[0], "basic_auth_pass": basic_auth[1]}
        backend = self._sdk_call("POST", "/api/ml/", lambda: self.sdk.ml.create(project=project, url=url,
                                                                                title=title, **auth))
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self._sdk_call("GET", f"/api/ml/{backend.id}", lambda: self.sdk.ml.get(id=backend.id)).state
            if state == "CO":
                return int(backend.id)
            time.sleep(0.5)
        raise TimeoutError(f"ML backend {url} did not reach the connected state (last: {state})")

    def train_ml_backend(self, backend: int) -> None:
        """Label Studio's "Start training": it sends START_TRAINING to the backend. SDK (``ml.train``)."""
        self._sdk_call("POST", f"/api/ml/{backend}/train", lambda: self.sdk.ml.train(id=backend))

    def retrieve_predictions(self, project: int) -> None:
        """The Data Manager action that asks the ML backend for every task's prediction. Raw: no SDK call."""
        self.request("POST", "/api/dm/actions/", params={"id": "retrieve_tasks_predictions", "project": project},
                     json={"selectedItems": {"all": True, "excluded": []}})

    # -- views and queues -------------------------------------------------------------------------------

    def views(self, project: int) -> list[dict[str, Any]]:
        """Raw."""
        return self.request("GET", "/api/dm/views/", params={"project": project}) or []

    def create_view(self, project: int, title: str, filters: dict[str, Any]) -> int:
        """Raw: the SDK's view model reshapes ``filters``."""
        reply = self.request("POST", "/api/dm/views/",
                             json={"project": project, "data": {"title": title, "filters": filters}})
        return int(reply["id"])

    def find_view(self, project: int, title: str) -> int | None:
        """The id of ``project``'s Data Manager tab titled ``title``, or None. Raw."""
        for view in self.views(project):
            if (view.get("data") or {}).get("title") == title:
                return int(view["id"])
        return None

    def _view(self, project: int, title: str, filters: dict[str, Any]) -> int:
        found = self.find_view(project, title)
        return found if found is not None else self.create_view(project, title, filters)

    def annotator_view(self, project: int, email: str) -> int:
        """The Data Manager tab holding the tasks assigned to ``email`` (reused when it exists)."""
        return self._view(project, annotator_view_title(email), assigned_filter(email))

    def assigned_view(self, project: int, email: str) -> int | None:
        """The tab :meth:`annotator_view` made for ``email`` in ``project`` (routing's queue for them), or None:
        what an annotator opens to work through the tasks crowdgate assigned them."""
        return self.find_view(project, annotator_view_title(email))

    def offer_view(self, project: int, email: str, field: str) -> int:
        """The Data Manager tab holding the tasks offered to ``email`` in ``data[field]`` (reused when it exists)."""
        return self._view(project, f"crowdgate {field}: {email}", offer_filter(email, field))

    def next_task(self, project: int, view: int | None = None) -> dict[str, Any] | None:
        """What ``/next/`` serves this key's user (``view``: "label tasks as displayed"); None when nothing. Raw."""
        params = {"view": view} if view is not None else None
        try:
            return self.request("GET", f"/api/projects/{project}/next/", params=params, ok=(200,))
        except LabelStudioError as exc:
            if exc.status == 404:  # "There are no tasks for ..."
                return None
            raise

    # -- users ------------------------------------------------------------------------------------------

    def users(self) -> list[dict[str, Any]]:
        """Raw."""
        return self.request("GET", "/api/users/") or []

    def whoami(self) -> dict[str, Any]:
        """Raw."""
        return self.request("GET", "/api/current-user/whoami")

    def create_user(self, email: str, organization: int | None = None) -> int:
        """A user without a login (fast; fires no webhook), moved into ``organization`` when given: on 1.23.2
        ``POST /api/users/`` leaves them outside it until ``active_organization`` is set. Raw."""
        user = self.request("POST", "/api/users/", json={"username": email, "email": email})
        if organization is not None:
            self.request("PATCH", f"/api/users/{user['id']}/", json={"active_organization": organization})
        return int(user["id"])

    def update_user(self, user: int, **fields: Any) -> dict[str, Any]:
        """PATCH a user's profile (``first_name``, ``last_name``, ...). Raw."""
        return self.request("PATCH", f"/api/users/{int(user)}/", json=fields)

    def _submit_user_form(self, path: str, email: str, password: str) -> tuple[requests.Session, requests.Response]:
        """Fill in Label Studio's sign-up or log-in page as a browser would (CSRF cookie, Referer) in a fresh
        session; a 302 means it took, and the session is then logged in."""
        browser = requests.Session()
        page = f"{self.url}{path}"
        timeout = (CONNECT_TIMEOUT_S, self.timeout)
        browser.get(page, timeout=timeout)
        reply = browser.post(page, data={"email": email, "password": password,
                                         "csrfmiddlewaretoken": browser.cookies.get("csrftoken", "")},
                             headers={"Referer": page}, allow_redirects=False, timeout=timeout)
        return browser, reply

    def invite_annotator(self, email: str, password: str) -> Annotator:
        """An annotator who can log in, with their own API token: invite signup (admin ``GET /api/invite``, then
        the sign-up form with the invite token), or a log-in when the e-mail already has an account with this
        password. Raw (browser forms: no API covers them). Use :meth:`as_user` with ``.token`` to act as them.

        About 0.4 s per user on 1.23.2 (``POST /api/users/`` is faster but makes users who cannot log in).
        Raises :class:`LabelStudioError` when neither signing up nor logging in works (say, the e-mail belongs
        to an account made by ``POST /api/users/``, which has no usable password).
        """
        invite = self.request("GET", "/api/invite")["token"]
        try:
            browser, reply = self._submit_user_form(f"/user/signup/?token={invite}", email, password)
            if reply.status_code != 302:  # the form came back: most likely the e-mail is taken, so log in
                browser, reply = self._submit_user_form("/user/login/", email, password)
                if reply.status_code != 302:
                    raise LabelStudioError("POST", f"{self.url}/user/login/", reply.status_code,
                                           f"cannot sign up or log in {email}")
        except requests.RequestException as exc:
            raise LabelStudioError("POST", f"{self.url}/user/signup/", 0, str(exc)) from exc
        return self._logged_in(browser, email)

    def log_in(self, email: str, password: str) -> Annotator:
        """Log in as an existing user through Label Studio's log-in form (CSRF cookie, Referer) and fetch their
        own API token (``GET /api/current-user/token``). Needs no admin rights: any key opens the client.
        Raw. Raises :class:`LabelStudioError` (status 401) when the e-mail and password do not log in."""
        try:
            browser, reply = self._submit_user_form("/user/login/", email, password)
        except requests.RequestException as exc:
            raise LabelStudioError("POST", f"{self.url}/user/login/", 0, str(exc)) from exc
        if reply.status_code != 302:
            raise LabelStudioError("POST", f"{self.url}/user/login/", 401,
                                   f"Label Studio did not log in {email} with that password")
        return self._logged_in(browser, email)

    def _logged_in(self, browser: requests.Session, email: str) -> Annotator:
        """The :class:`Annotator` behind a logged-in browser session: their id and their own token."""
        timeout = (CONNECT_TIMEOUT_S, self.timeout)
        try:
            token = browser.get(f"{self.url}/api/current-user/token", timeout=timeout)
            who = browser.get(f"{self.url}/api/current-user/whoami", timeout=timeout)
        except requests.RequestException as exc:
            raise LabelStudioError("GET", f"{self.url}/api/current-user/token", 0, str(exc)) from exc
        if not token.ok or not who.ok:
            raise LabelStudioError("GET", f"{self.url}/api/current-user/token", token.status_code, token.text)
        return Annotator(id=int(who.json()["id"]), email=email, token=token.json()["token"])

    # -- Enterprise -------------------------------------------------------------------------------------

    def assign(self, project: int, task: int, users: list[int], kind: str = "AN") -> Any:
        """Enterprise: assign ``users`` to ``task`` (``AN`` annotate, ``RE`` review). Raw (not in the SDK)."""
        return self.request("POST", f"/api/projects/{project}/tasks/assignees",
                            json={"type": kind, "users": [int(u) for u in users],
                                  "selectedItems": {"all": False, "included": [int(task)]}})

    def unassign(self, project: int, task: int, kind: str = "AN") -> None:
        """Enterprise: remove every ``kind`` assignee of ``task``. Raw."""
        self.request("DELETE", f"/api/projects/{project}/tasks/{task}/assignees", params={"type": kind},
                     ok=(200, 204, 404))

    def pauses(self, project: int, user: int) -> list[dict[str, Any]]:
        """Enterprise. Raw."""
        return self.request("GET", f"/api/projects/{project}/members/{user}/pauses/") or []

    def pause(self, project: int, user: int, verbose_reason: str, reason: str = "ANNOTATOR_EVALUATION") -> Any:
        """Enterprise: pause ``user`` in ``project`` (kept once: an active pause is not duplicated). Raw."""
        for existing in self.pauses(project, user):
            if not existing.get("deleted_at"):
                return existing
        return self.request("POST", f"/api/projects/{project}/members/{user}/pauses/",
                            json={"reason": reason, "verbose_reason": verbose_reason})
