"""Reconciliation against the real Label Studio 1.23.2: deletions no webhook delivered, and the webhook check."""

from __future__ import annotations

import logging

import pytest

from core.keys import Keys
from crowdgate.pipeline import reconcile_and_route
from ml_backend.labeling import choice_region
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.receiver import SECRET_HEADER
from qa_hooks.reconcile import missed_deletions, reconcile_project
from qa_hooks.store import SubmissionStore
from routing.audit import AuditLog
from scripts.seed import Seeder, label_config
from tests.state_isolation import isolated_settings, use_settings

pytestmark = pytest.mark.integration
PREFIX = "rc"
SECRET = "reconcile-secret"


def live_uids(store: SubmissionStore, project: int, tasks: list[int]) -> set[str]:
    return {s.unique_id for t in tasks for s in store.task_submissions(project, t)}


def test_deletions_missed_by_webhooks_are_found_and_scored(labelstudio, redis_conn):
    """No webhook at all: record through reconciliation, delete in Label Studio, reconcile again."""
    seeder = Seeder(labelstudio.url, labelstudio.token)
    client = labelstudio.client()
    settings = isolated_settings(key_prefix=PREFIX, label_studio_url=labelstudio.url,
                                 label_studio_api_key=labelstudio.token)
    config = label_config("text_classification")
    project = seeder.create_project("reconcile deletions", config)
    tasks = seeder.import_tasks(project, [{"data": {"text": "fine"}, "meta": {"gold": "Positive"}},
                                          {"data": {"text": "awful"}}, {"data": {"text": "meh"}}])
    users = seeder.create_users(["rc-a@crowdgate.test", "rc-b@crowdgate.test", "rc-c@crowdgate.test"])
    a, b, c = (users[f"rc-{x}@crowdgate.test"] for x in "abc")
    positive = [choice_region(config, "sentiment", ["Positive"])]
    negative = [choice_region(config, "sentiment", ["Negative"])]
    kept_a = seeder.annotate(tasks[0], a, positive)
    wrong_b = seeder.annotate(tasks[0], b, negative)  # b misses the gold answer: this is what goes
    seeder.annotate(tasks[1], a, negative)
    seeder.annotate(tasks[1], b, [], was_cancelled=True)  # a skip is in the export, never taken for deleted
    seeder.annotate(tasks[1], c, negative, ground_truth=True)  # so is a ground-truth annotation
    seeder.annotate(tasks[2], c, positive)

    store, ledger = SubmissionStore(redis_conn, PREFIX), Ledger(redis_conn, PREFIX)

    def reconcile():
        return reconcile_project(project, PREFIX, redis_conn, client, process_event, settings)

    first = reconcile()
    assert first["created"] == 6 and first["deleted"] == 0
    assert ledger.reliability(project, b).gold_n == 1 and ledger.reliability(project, b).gold_accuracy == 0.0
    assert ledger.task_score(project, tasks[0])["n"] == 2
    before = live_uids(store, project, tasks)

    # deleted in Label Studio while no webhook got through; a whole task too
    client.delete_annotation(wrong_b)
    client.request("DELETE", f"/api/tasks/{tasks[2]}/")
    second = reconcile()
    assert second["deleted"] == 2 and second["tasks_deleted"] == 1 and second["created"] == 0
    assert second["deletions_unresolved"] == 0
    assert [s.annotation_id for s in store.task_submissions(project, tasks[0])] == [kept_a]
    assert store.task_submissions(project, tasks[2]) == [] and store.task_info(project, tasks[2]) is None
    assert ledger.reliability(project, b).gold_n == 0  # b's gold miss is out of their record
    assert ledger.task_score(project, tasks[0])["n"] == 1
    assert c not in ledger.contributions(project, tasks[2])
    assert len(store.task_submissions(project, tasks[1])) == 3  # skip and ground truth stay
    assert len(live_uids(store, project, tasks)) == len(before) - 2

    # a second pass changes nothing
    snapshot = {t: ledger.task_score(project, t) for t in tasks}
    third = reconcile()
    assert third["deleted"] == 0 and third["tasks_deleted"] == 0 and third["created"] == 0
    assert third["stale"] == 4
    assert {t: ledger.task_score(project, t) for t in tasks} == snapshot

    # an annotation made after the export was read is confirmed present, not deleted
    old_export = client.export(project)
    seeder.annotate(tasks[0], c, positive)
    assert reconcile()["created"] == 1
    assert missed_deletions(project, store, old_export, client).annotations == []

    # SQLite reuses the id of the newest annotation once it is deleted: the old submission still goes
    newest = seeder.annotate(tasks[1], a, positive)
    reconcile()
    replaced_uid = {s.annotation_id: s.unique_id for s in store.task_submissions(project, tasks[1])}[newest]
    client.delete_annotation(newest)
    seeder.annotate(tasks[1], a, negative)
    outcome = reconcile()
    assert outcome["deleted"] == 1 and outcome["created"] == 1 and outcome["deletions_unresolved"] == 0
    assert replaced_uid not in live_uids(store, project, tasks)
    assert len(store.task_submissions(project, tasks[1])) == 4


def test_webhook_check_alerts_and_recreates(labelstudio, redis_conn, monkeypatch, caplog):
    seeder = Seeder(labelstudio.url, labelstudio.token)
    client = labelstudio.client()
    public = "http://127.0.0.1:9/crowdgate"  # Label Studio only stores it; nothing is delivered in this test
    config = label_config("text_classification")
    project = seeder.create_project("reconcile webhook", config)
    seeder.import_tasks(project, [{"data": {"text": "fine"}}])
    hook = seeder.connect_webhook(project, f"{public}/hooks/labelstudio", SECRET)
    redis_conn.sadd(Keys(PREFIX).projects(), project)  # as from any earlier event
    base = {"key_prefix": PREFIX, "label_studio_url": labelstudio.url, "label_studio_api_key": labelstudio.token,
            "webhook_secret": SECRET}
    audit = AuditLog(redis_conn, PREFIX)

    use_settings(monkeypatch, **base)
    assert reconcile_and_route(PREFIX, redis_conn)[project]["webhook"]["status"] == "ok"
    assert audit.query(project=project, kind="alert") == []

    # gone, and nobody told crowdgate where it lives: loud, but left alone
    client.delete_webhook(hook)
    with caplog.at_level(logging.ERROR, logger="qa_hooks.reconcile"):
        result = reconcile_and_route(PREFIX, redis_conn)[project]
    assert result["webhook_alerts"] == 1 and result["webhook"]["status"] == "missing"
    assert not result["webhook"]["repaired"]
    assert any(r.levelno == logging.ERROR and f"project {project}" in r.getMessage() for r in caplog.records)
    assert [e.action for e in audit.query(project=project, kind="alert")] == ["webhook_missing"]
    assert client.webhooks(project) == [] or all(h["project"] != project for h in client.webhooks(project))

    # with CROWDGATE_PUBLIC_URL it is re-created, secret header and all
    use_settings(monkeypatch, **base, public_url=public)
    result = reconcile_and_route(PREFIX, redis_conn)[project]
    assert result["webhook"]["status"] == "missing" and result["webhook"]["repaired"]
    assert audit.query(project=project, kind="alert")[-1].action == "webhook_missing_repaired"
    hooks = [h for h in client.webhooks(project) if h["project"] == project]
    assert len(hooks) == 1 and hooks[0]["url"] == f"{public}/hooks/labelstudio"
    assert hooks[0]["headers"] == {SECRET_HEADER: SECRET} and hooks[0]["is_active"] and hooks[0]["send_payload"]

    # switched off (as Label Studio does after repeated failures): re-activated, not duplicated
    client.request("PATCH", f"/api/webhooks/{hooks[0]['id']}/", json={"is_active": False})
    result = reconcile_and_route(PREFIX, redis_conn)[project]
    assert result["webhook"]["status"] == "inactive" and result["webhook"]["repaired"]
    hooks = [h for h in client.webhooks(project) if h["project"] == project]
    assert len(hooks) == 1 and hooks[0]["is_active"]
    assert reconcile_and_route(PREFIX, redis_conn)[project]["webhook_alerts"] == 0
