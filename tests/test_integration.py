"""Proof against the real thing: Label Studio 1.23.2, a private Redis, gunicorn and an RQ worker process."""

from __future__ import annotations

import time

import pytest
import requests
from label_studio_sdk.label_interface import LabelInterface

from ml_backend.labeling import choice_region
from ml_backend.zero_shot import MODEL_VERSION
from qa_hooks.store import SubmissionStore
from scripts.seed import Seeder, label_config
from tests.conftest import crowdgate_stack, fixture_json, wait_for
from tests.state_isolation import isolated_settings

pytestmark = pytest.mark.integration
SECRET = "integration-secret"
TEXTS = ["what a wonderful film", "the plot was dull and slow", "an average afternoon", "I loved the actors",
         "terrible sound, awful pacing"]


@pytest.fixture(scope="module")
def stack(redis_service, log_dir, labelstudio):
    with crowdgate_stack(redis_service, log_dir, labelstudio, "it", SECRET) as running:
        yield running


def test_label_studio_round_trip(labelstudio, stack):
    web, _worker, connection = stack
    seeder = Seeder(labelstudio.url, labelstudio.token)
    config = label_config("text_classification")

    # 1. project and tasks through the adapter
    project = seeder.create_project("crowdgate integration", config, maximum_annotations=3)
    task_ids = seeder.import_tasks(project, [{"data": {"text": t}} for t in TEXTS])
    assert len(task_ids) == len(TEXTS)

    # 2. the ML backend connects, and the Data Manager action stores a crowdgate prediction on every task
    seeder.connect_ml_backend(project, web.url)
    seeder.retrieve_predictions(project)
    predictions = wait_for(lambda: (p := seeder.predictions(project)) and len(p) >= len(TEXTS) and p,
                           what="predictions")
    interface = LabelInterface(config)
    assert sorted(p["task"] for p in predictions) == sorted(task_ids)
    for prediction in predictions:
        assert prediction["model_version"] == MODEL_VERSION
        assert interface.validate_prediction({"result": prediction["result"]}) is True

    # 3. webhook with the secret; annotations as two users and a skip are recorded by the worker
    seeder.connect_webhook(project, f"{web.url}/hooks/labelstudio", SECRET)
    seeder.connect_webhook(project, f"{web.url}/hooks/labelstudio", "not-the-secret")  # refused, adds nothing
    users = seeder.create_users(["ann@crowdgate.test", "bob@crowdgate.test"])
    ann, bob = users["ann@crowdgate.test"], users["bob@crowdgate.test"]
    made = {
        seeder.annotate(task_ids[0], ann, [choice_region(config, "sentiment", ["Positive"])], lead_time=4.2),
        seeder.annotate(task_ids[0], bob, [choice_region(config, "sentiment", ["Positive"])], lead_time=2.0),
        seeder.annotate(task_ids[1], bob, [choice_region(config, "sentiment", ["Negative"])], lead_time=6.5),
        seeder.annotate(task_ids[2], ann, [], was_cancelled=True),
    }
    store = SubmissionStore(connection, "it")
    wait_for(lambda: store.summary(project)["submissions"] == 4, what="4 recorded submissions")
    time.sleep(1.0)  # let any stray duplicate land before counting exactly
    recorded = [s for t in task_ids for s in store.task_submissions(project, t)]
    assert sorted(s.annotation_id for s in recorded) == sorted(made)
    by_annotator = {a: store.annotator_log(project, a) for a in (ann, bob)}
    assert [s.task for s in by_annotator[ann]] == [task_ids[0], task_ids[2]]
    assert [s.task for s in by_annotator[bob]] == [task_ids[0], task_ids[1]]
    skip = by_annotator[ann][1]
    assert skip.was_cancelled and skip.result == []
    assert by_annotator[ann][0].lead_time == pytest.approx(4.2)
    assert by_annotator[bob][1].result[0]["value"] == {"choices": ["Negative"]}

    # a delivery with a wrong secret is refused and records nothing
    body = fixture_json("webhook_annotation_created.json")
    reply = requests.post(f"{web.url}/hooks/labelstudio", json=body, headers={"X-Crowdgate-Secret": "nope"},
                          timeout=5)
    assert reply.status_code == 401
    assert store.summary(project)["submissions"] == 4


def test_reconciliation_recovers_what_no_webhook_delivered(labelstudio, stack):
    """Label Studio never retries a webhook: the reconcile job reads the export and records what was missed."""
    from crowdgate.cron import scheduler
    from qa_hooks.ledger import Ledger

    _web, _worker, connection = stack
    seeder = Seeder(labelstudio.url, labelstudio.token)
    config = label_config("text_classification")
    project = seeder.create_project("missed webhooks", config)  # no webhook: every event is "lost"
    task_ids = seeder.import_tasks(project, [{"data": {"text": "fine"}, "meta": {"gold": "Positive"}},
                                             {"data": {"text": "awful"}}])
    users = seeder.create_users(["cy@crowdgate.test", "di@crowdgate.test"])
    for email, label in (("cy@crowdgate.test", "Positive"), ("di@crowdgate.test", "Negative")):
        seeder.annotate(task_ids[0], users[email], [choice_region(config, "sentiment", [label])])
    seeder.annotate(task_ids[1], users["di@crowdgate.test"], [], was_cancelled=True)
    store = SubmissionStore(connection, "it")
    assert store.summary(project)["submissions"] == 0
    connection.sadd("it:projects", project)  # crowdgate knows the project (as from any earlier event)

    # RQ's own CronScheduler enqueues the job; the worker process runs it.
    cron = scheduler(connection, isolated_settings(key_prefix="it"))
    assert {job.name for job in cron.enqueue_jobs()} == {"reconcile_all", "refresh_flags", "apply_retention",
                                                         "refit_all", "evaluate_fraud", "sync_data_manager"}
    wait_for(lambda: store.summary(project)["submissions"] == 3, timeout=60, what="reconciled submissions")
    ledger = Ledger(connection, "it")
    assert ledger.reliability(project, users["cy@crowdgate.test"]).gold_accuracy == 1.0  # gold from meta
    assert ledger.reliability(project, users["di@crowdgate.test"]).gold_accuracy == 0.0
    # a second pass changes nothing
    from qa_hooks.reconcile import reconcile_project

    again = reconcile_project(project, "it", connection, labelstudio.client())
    assert again["created"] == 0 and again["stale"] == 3
