"""The Data Manager columns against the real Label Studio 1.23.2: the job writes them into task data, Label Studio
lists them as columns and filters and sorts on them, every other field stays, a second run sends nothing, and
the writes send no webhook, re-open no task and leave ``/next/`` and the exam views as they were."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, ClassVar

import pytest

from core.labelstudio import LabelStudioClient
from ml_backend.labeling import choice_region
from qa_hooks.reconcile import reconcile_project
from routing.data_manager import AGREEMENT_FIELD, FIELDS, LINK_FIELD, STATUS_FIELD, sync_data_manager
from routing.exam import EXAM_FIELD
from routing.state import RoutingState
from scripts.seed import Seeder, label_config
from tests.conftest import wait_for
from tests.state_isolation import isolated_settings, use_settings

pytestmark = pytest.mark.integration
PREFIX = "dm"
CONFIG = label_config("text_classification")
PUBLIC = "http://crowdgate.test:9090"
NEWCOMER = "newcomer@datamanager.test"


class HookCounter(BaseHTTPRequestHandler):
    """A webhook receiver that only counts what Label Studio sends it."""

    received: ClassVar[list[str]] = []

    def do_POST(self) -> None:  # http.server's name for it
        body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
        self.received.append(json.loads(body or b"{}").get("action", "?"))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


@pytest.fixture
def hooks():
    HookCounter.received = []
    server = ThreadingHTTPServer(("127.0.0.1", 0), HookCounter)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/hook", HookCounter.received
    server.shutdown()
    server.server_close()


def answer(label: str) -> list[dict]:
    return [choice_region(CONFIG, "sentiment", [label])]


def test_columns_are_written_once_and_change_nothing_else(labelstudio, redis_conn, hooks, monkeypatch):
    hook_url, received = hooks
    seeder = Seeder(labelstudio.url, labelstudio.token)
    project = seeder.create_project("data manager columns", CONFIG, maximum_annotations=2)
    agreed, split, offered = seeder.import_tasks(project, [
        {"data": {"text": "fine", "crowdgate_difficulty": 0.2, "assigned_to": "someone@datamanager.test"}},
        {"data": {"text": "hmm", "crowdgate_difficulty": 0.8}},
        {"data": {"text": "offered", EXAM_FIELD: f"|{NEWCOMER}|"}}])
    users = list(seeder.create_users([f"a{i}@datamanager.test" for i in range(2)]).values())
    for user, label in zip(users, ("Positive", "Positive"), strict=True):
        seeder.annotate(agreed, user, answer(label))
    for user, label in zip(users, ("Positive", "Negative"), strict=True):
        seeder.annotate(split, user, answer(label))
    seeder.annotate(offered, users[0], answer("Positive"))
    newcomer = seeder.invite_annotator(NEWCOMER, "crowdgate-Columns-1")
    as_newcomer = seeder.as_user(newcomer.token)
    view = seeder.offer_view(project, NEWCOMER, EXAM_FIELD)
    assert as_newcomer.next_task(project, view)["id"] == offered  # the exam view serves the offered task

    # crowdgate scores the project (reconciliation from the export) and routing finalised one task
    settings = isolated_settings(label_studio_url=labelstudio.url, label_studio_api_key=labelstudio.token,
                                 public_url="")  # the webhook check only reports: the counting hook is not ours
    reconcile_project(project, PREFIX, redis_conn, seeder, settings=settings)
    RoutingState(redis_conn, PREFIX).update_route(project, agreed, status="final")
    seeder.create_webhook(project, hook_url)  # from here on, every event Label Studio sends is counted
    before = {t["id"]: t for t in seeder.tasks(project)}

    use_settings(monkeypatch, public_url=PUBLIC)
    client = LabelStudioClient(labelstudio.url, labelstudio.token)
    sent: list[str] = []
    raw = client.request

    def counted(method: str, path: str, **kwargs: Any) -> Any:
        sent.append(f"{method} {path}")
        return raw(method, path, **kwargs)

    monkeypatch.setattr(client, "request", counted)
    report = sync_data_manager(prefix=PREFIX, connection=redis_conn, client=client)[project]
    assert (report["written"], report["failed"]) == (3, 0)
    assert sent == [f"PATCH /api/tasks/{t}/" for t in sorted((agreed, split, offered))]

    after = {t["id"]: t for t in seeder.tasks(project)}
    assert after[agreed]["data"] == {**before[agreed]["data"], STATUS_FIELD: "final", AGREEMENT_FIELD: 1.0,
                                     LINK_FIELD: f"{PUBLIC}/dashboard/{project}?task={agreed}"}
    assert after[split]["data"] == {**before[split]["data"], STATUS_FIELD: "needs more", AGREEMENT_FIELD: 0.0,
                                    LINK_FIELD: f"{PUBLIC}/dashboard/{project}?task={split}"}
    assert after[offered]["data"] == {**before[offered]["data"], STATUS_FIELD: "needs more",
                                      LINK_FIELD: f"{PUBLIC}/dashboard/{project}?task={offered}"}
    for task in (agreed, split, offered):
        for field in ("is_labeled", "overlap", "total_annotations", "meta"):
            assert after[task][field] == before[task][field], (task, field)  # nothing re-opened or closed
    assert [after[t]["is_labeled"] for t in (agreed, split, offered)] == [True, True, False]
    assert received == []  # a PATCH of data sends no webhook

    # Label Studio lists the new fields as Data Manager columns, and filters and sorts on them
    columns = {c["id"] for c in client.request("GET", "/api/dm/columns/", params={"project": project})["columns"]}
    assert set(FIELDS) | {"crowdgate_difficulty", EXAM_FIELD} <= columns
    assert sorted(t["id"] for t in client.find_tasks(project, STATUS_FIELD, "needs more")) == [split, offered]
    query = {"ordering": [f"-tasks:data.{AGREEMENT_FIELD}"], "filters": {"conjunction": "and", "items": [
        {"filter": f"filter:tasks:data.{AGREEMENT_FIELD}", "operator": "greater_or_equal", "type": "Number",
         "value": 0}]}}
    listed = client.request("GET", "/api/tasks/", params={"project": project, "query": json.dumps(query)})
    assert [t["id"] for t in listed["tasks"]] == [agreed, split]

    # /next/ and the exam view serve as before
    assert as_newcomer.next_task(project, view)["id"] == offered
    assert as_newcomer.next_task(project)["id"] == offered

    # a second run sends nothing
    sent.clear()
    again = sync_data_manager(prefix=PREFIX, connection=redis_conn, client=client)[project]
    assert (again["changed"], again["written"], sent) == (0, 0, [])
    assert received == []
    seeder.annotate(offered, users[1], answer("Positive"))  # the receiver does count what Label Studio sends
    wait_for(lambda: "ANNOTATION_CREATED" in received, what="the control webhook")
