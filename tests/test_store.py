import dataclasses

from qa_hooks.events import parse_event
from qa_hooks.jobs import process_event
from qa_hooks.store import CREATED, STALE, UPDATED, SubmissionStore
from tests.conftest import fixture_json


def _created():
    return parse_event(fixture_json("webhook_annotation_created.json"))


def _updated():
    return parse_event(fixture_json("webhook_other_actions.json")["ANNOTATION_UPDATED"]["body"])


def test_records_the_submission_in_both_indexes(redis_conn):
    store = SubmissionStore(redis_conn, "t")
    applied = store.apply(_created())
    assert applied.counts == {"created": 1} and applied.tasks == {6}
    [by_task] = store.task_submissions(2, 6)
    [by_annotator] = store.annotator_log(2, 2)
    assert by_task == by_annotator == _created().submissions[0]
    assert store.annotators(2) == [2] and store.projects() == [2]
    assert "Positive" in store.project_info(2)["label_config"]
    assert store.task_info(2, 6).data == {"text": "good movie"}


def test_newer_version_replaces_older_and_replays_change_nothing(redis_conn):
    store = SubmissionStore(redis_conn, "t")
    sub, newer = _created().submissions[0], _updated().submissions[0]
    assert store.record(sub) == CREATED
    assert store.record(newer) == UPDATED
    assert store.record(sub) == STALE  # a late retry of the old version
    assert store.record(newer) == STALE  # the same job twice
    [kept] = store.task_submissions(2, 6)
    assert kept.result[0]["value"]["choices"] == ["Negative"]
    assert len(store.annotator_log(2, 2)) == 1


def test_delete_by_annotation_id_and_id_reuse(redis_conn):
    store = SubmissionStore(redis_conn, "t")
    sub = _created().submissions[0]
    store.record(sub)
    assert store.delete(2, sub.annotation_id) == 6
    assert store.task_submissions(2, 6) == [] and store.annotator_log(2, 2) == []
    assert store.record(sub) == STALE  # a deleted annotation is not resurrected by a late event
    # SQLite reuses the id for a new annotation: it is a different submission.
    reused = dataclasses.replace(sub, unique_id="another", updated_at="2026-11-22T05:00:00Z")
    assert store.record(reused) == CREATED
    assert [s.unique_id for s in store.task_submissions(2, 6)] == ["another"]
    assert store.delete(2, 999) is None


def test_process_event_job_and_summary(redis_conn):
    for body in (fixture_json("webhook_annotation_created.json"),
                 fixture_json("webhook_other_actions.json")["ANNOTATIONS_CREATED"]["body"]):
        process_event(parse_event(body).to_dict(), "t", connection=redis_conn)
    summary = SubmissionStore(redis_conn, "t").summary(2)
    assert summary["submissions"] == 3
    assert summary["annotators"][2]["submissions"] == 1
    assert summary["annotators"][1]["submissions"] == 2


def test_scripts_are_reloaded_after_redis_forgets_them(redis_conn):
    store = SubmissionStore(redis_conn, "t")
    redis_conn.script_flush()  # what a Redis restart does to the script cache (our private server)
    assert store.apply(_created()).counts == {"created": 1}
    redis_conn.script_flush()
    assert store.record(_updated().submissions[0]) == UPDATED


def test_a_deleted_task_takes_its_submissions_and_their_scores_with_it(redis_conn):
    from qa_hooks.events import Event
    from qa_hooks.ledger import Ledger

    process_event(_created().to_dict(), "t", redis_conn)
    ledger = Ledger(redis_conn, "t")
    assert ledger.contributions(2, 6)  # the annotator's record counts task 6
    gone = process_event(Event("TASKS_DELETED", 2, deleted_tasks=[6]).to_dict(), "t", redis_conn)
    assert gone["deleted"] == 1 and gone["tasks"] == [6]
    store = SubmissionStore(redis_conn, "t")
    assert store.task_submissions(2, 6) == [] and store.annotator_log(2, 2) == []
    assert store.summary(2)["submissions"] == 0
    assert not ledger.contributions(2, 6)  # the record no longer counts it
    assert store.unscored(2) == {}
    again = process_event(Event("TASKS_DELETED", 2, deleted_tasks=[6]).to_dict(), "t", redis_conn)
    assert again.get("deleted", 0) == 0  # a redelivery changes nothing
