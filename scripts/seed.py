"""Seed a Label Studio project and connect crowdgate to it (used by the demo and the integration tests).

Everything goes through Label Studio's public API with an admin token, via label-studio-sdk where it
covers the call. Facts about Label Studio 1.23.2 Community this relies on: ``POST /api/users/`` makes a
user without a login who is not in the organisation until ``active_organization`` is PATCHed; an admin
token may create annotations on behalf of any user with ``completed_by``; registering an ML backend
makes Label Studio add a project webhook to ``<backend>/webhook`` by itself.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import requests
from label_studio_sdk import LabelStudio as Client

LABEL_CONFIGS = Path(__file__).resolve().parents[1] / "label_configs"
SECRET_HEADER = "X-Crowdgate-Secret"


def label_config(name: str) -> str:
    """The XML of ``label_configs/<name>.xml``."""
    return (LABEL_CONFIGS / f"{name}.xml").read_text()


class Seeder:
    """A thin admin session on one Label Studio server."""

    def __init__(self, url: str, token: str) -> None:
        self.url = url.rstrip("/")
        self.client = Client(base_url=self.url, api_key=token)
        self.http = requests.Session()
        self.http.headers["Authorization"] = f"Token {token}"

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        reply = self.http.request(method, f"{self.url}{path}", timeout=60, **kwargs)
        if not reply.ok:
            raise RuntimeError(f"{method} {path} -> {reply.status_code}: {reply.text[:500]}")
        return reply.json() if reply.content else None

    def create_project(self, title: str, config: str, **settings: Any) -> int:
        return self.client.projects.create(title=title, label_config=config, **settings).id

    def import_tasks(self, project: int, tasks: list[dict[str, Any]]) -> list[int]:
        """Import ``{"data": ..., "meta": ...}`` tasks; returns their ids in import order."""
        reply = self._call("POST", f"/api/projects/{project}/import?return_task_ids=true", json=tasks)
        ids = reply.get("task_ids") if isinstance(reply, dict) else None
        return ids or [t.id for t in self.client.tasks.list(project=project)]

    def task_ids(self, project: int) -> list[int]:
        return sorted(t.id for t in self.client.tasks.list(project=project))

    def connect_ml_backend(self, project: int, url: str, title: str = "crowdgate", timeout: float = 60.0) -> int:
        """Register crowdgate's ML backend; returns its id once Label Studio reports it connected."""
        backend = self.client.ml.create(project=project, url=url, title=title)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            state = self.client.ml.get(id=backend.id).state
            if state == "CO":
                return backend.id
            time.sleep(0.5)
        raise RuntimeError(f"ML backend {url} did not reach the connected state (last: {state})")

    def retrieve_predictions(self, project: int) -> None:
        """Run the Data Manager action that asks the ML backend for every task's prediction."""
        self._call(
            "POST",
            f"/api/dm/actions/?id=retrieve_tasks_predictions&project={project}",
            json={"selectedItems": {"all": True, "excluded": []}},
        )

    def predictions(self, project: int) -> list[Any]:
        return self.client.predictions.list(project=project)

    def connect_webhook(self, project: int, url: str, secret: str) -> int:
        """Send every project event, with its payload, to crowdgate's receiver, authenticated by the secret."""
        hook = self.client.webhooks.create(
            url=url, project=project, send_payload=True, send_for_all_actions=True, headers={SECRET_HEADER: secret}
        )
        return hook.id

    def organization(self) -> int:
        return self._call("GET", "/api/current-user/whoami")["active_organization"]

    def create_users(self, emails: Iterable[str]) -> dict[str, int]:
        """Annotator accounts by e-mail (existing ones are reused); returns e-mail -> user id."""
        existing = {u["email"]: u["id"] for u in self._call("GET", "/api/users/")}
        org = self.organization()
        ids = {}
        for email in emails:
            if email not in existing:
                user = self._call("POST", "/api/users/", json={"username": email, "email": email})
                self._call("PATCH", f"/api/users/{user['id']}/", json={"active_organization": org})
                existing[email] = user["id"]
            ids[email] = existing[email]
        return ids

    def annotate(
        self,
        task: int,
        user: int,
        result: list[dict[str, Any]],
        *,
        lead_time: float | None = None,
        was_cancelled: bool = False,
        ground_truth: bool = False,
    ) -> int:
        """Create an annotation on behalf of ``user`` (fires ANNOTATION_CREATED); returns its id."""
        body: dict[str, Any] = {
            "result": result,
            "completed_by": user,
            "was_cancelled": was_cancelled,
            "ground_truth": ground_truth,
        }
        if lead_time is not None:
            body["lead_time"] = lead_time
        return self._call("POST", f"/api/tasks/{task}/annotations/", json=body)["id"]

