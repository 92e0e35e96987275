import json
from dataclasses import replace

import pytest

from qa_hooks.events import KNOWN_ACTIONS, Event, PayloadError, epoch_seconds, parse_body, parse_event
from qa_hooks.store import SubmissionStore
from tests.conftest import fixture_json


def test_captured_annotation_created_is_normalised():
    event = parse_event(fixture_json("webhook_annotation_created.json"))
    assert event.action == "ANNOTATION_CREATED"
    assert event.project == 2
    [sub] = event.submissions
    assert (sub.task, sub.annotator, sub.annotation_id) == (6, 2, 5)
    assert sub.unique_id == "03e42a21-4e55-4e55-8ffd-b114c07297bb"
    assert sub.result[0]["value"] == {"choices": ["Positive"]}
    assert sub.lead_time == 3.5 and not sub.was_cancelled and not sub.ground_truth
    assert event.tasks[0].data == {"text": "good movie"}
    assert "label_config" in event.project_info and "control_weights" in event.project_info


@pytest.mark.parametrize("action", ["TASKS_CREATED", "ANNOTATION_UPDATED", "ANNOTATION_CREATED",
                                    "ANNOTATIONS_DELETED", "ANNOTATIONS_CREATED"])
def test_every_captured_action_parses(action):
    body = fixture_json("webhook_other_actions.json")[action]["body"]
    event = parse_event(body)
    assert event.action == action and event.project == 2
    if action == "ANNOTATIONS_CREATED":
        assert len(event.submissions) == len(body["annotation"]) >= 2
    if action == "ANNOTATIONS_DELETED":
        assert event.deleted_annotations == [a["id"] for a in body["annotations"]]
    if action == "TASKS_CREATED":
        assert [t.id for t in event.tasks] == [t["id"] for t in body["tasks"]]


def test_skip_is_a_cancelled_submission():
    requests = fixture_json("ml_backend_requests.json")["requests"]
    skip = next(r["json_body"] for r in requests
                if r["json_body"] and isinstance(r["json_body"].get("annotation"), dict)
                and r["json_body"]["annotation"].get("was_cancelled") is True)
    [sub] = parse_event(skip).submissions
    assert sub.was_cancelled and sub.result == [] and sub.annotator == 4


def test_round_trip_through_plain_data():
    body = fixture_json("webhook_other_actions.json")["ANNOTATIONS_CREATED"]["body"]
    event = parse_event(body, digest="abc")
    again = Event.from_dict(json.loads(json.dumps(event.to_dict())))
    assert again == event


def test_dedup_keys_name_each_annotation_version():
    created = parse_event(fixture_json("webhook_annotation_created.json"))
    updated = parse_event(fixture_json("webhook_other_actions.json")["ANNOTATION_UPDATED"]["body"])
    assert created.submissions[0].unique_id == updated.submissions[0].unique_id
    assert created.dedup_keys() != updated.dedup_keys()


@pytest.mark.parametrize(
    ("raw", "status", "reason"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (b'{"project": {"id": 1}}', 422, "'action'"),
        (b'{"action": "SOMETHING_ELSE"}', 422, "unknown action"),
        (b'{"action": "ANNOTATION_CREATED", "project": {"id": 1}}', 422, "'annotation'"),
        (b'{"action": "ANNOTATIONS_CREATED", "annotation": {"id": 1}}', 422, "list"),
        (b'{"action": "ANNOTATIONS_DELETED", "project": {"id": 1}}', 422, "annotations"),
        (b'{"action": "TASKS_CREATED", "tasks": [{"data": {}}]}', 422, "tasks[0].id"),
        (b'{"action": "PROJECT_UPDATED", "project": "x"}', 422, "project"),
    ],
)
def test_malformed_bodies_are_refused_with_a_reason(raw, status, reason):
    with pytest.raises(PayloadError) as caught:
        parse_body(raw)
    assert caught.value.status == status
    assert reason in caught.value.reason


def test_annotation_fields_are_type_checked():
    body = fixture_json("webhook_annotation_created.json")
    body["annotation"]["completed_by"] = "someone"
    with pytest.raises(PayloadError, match="completed_by"):
        parse_event(body)
    body = fixture_json("webhook_annotation_created.json")
    body["annotation"]["result"] = "Positive"
    with pytest.raises(PayloadError, match="result"):
        parse_event(body)


@pytest.mark.parametrize("action", sorted(KNOWN_ACTIONS - {"ANNOTATION_CREATED", "ANNOTATION_UPDATED",
                                                           "ANNOTATIONS_CREATED", "ANNOTATIONS_DELETED",
                                                           "TASKS_CREATED", "TASKS_DELETED"}))
def test_project_and_label_link_actions_are_accepted(action):
    event = parse_event({"action": action, "project": {"id": 7, "title": "x"}})
    assert event.project == 7 and event.dedup_keys()


@pytest.mark.parametrize(
    ("field", "value"),
    [("created_at", "yesterday"), ("created_at", ""), ("created_at", 1700000000),
     ("updated_at", "2026-13-01T00:00:00Z")],
)
def test_an_unparsable_timestamp_is_refused_naming_the_field(field, value):
    body = fixture_json("webhook_annotation_created.json")
    body["annotation"][field] = value
    with pytest.raises(PayloadError) as caught:
        parse_event(body)
    assert caught.value.status == 422 and f"annotation.{field}" in caught.value.reason


def test_timestamps_parse_to_unix_seconds_or_fail_clearly():
    assert epoch_seconds("1970-01-01T00:01:00Z") == 60.0
    assert epoch_seconds("1970-01-01T00:01:00.000000+00:00") == 60.0
    with pytest.raises(ValueError, match="created_at must be an ISO 8601 timestamp, got 'soon'"):
        epoch_seconds("soon", "created_at")


def test_the_store_refuses_a_submission_with_an_unparsable_time(redis_conn):
    sub = parse_event(fixture_json("webhook_annotation_created.json")).submissions[0]
    store = SubmissionStore(redis_conn, "t")
    with pytest.raises(ValueError, match="created_at"):  # was recorded as epoch 0: older than any escalation
        store.record(replace(sub, created_at="not a time"))
    assert store.task_submissions(sub.project, sub.task) == []
    store.record(sub)
    assert [s.unique_id for s in store.task_submissions(sub.project, sub.task)] == [sub.unique_id]


def test_tasks_created_takes_its_project_only_from_a_real_id():
    tasks = [{"id": 1, "data": {}, "project": True}, {"id": 2, "data": {}, "project": 2**64}, {"id": 3, "project": 7}]
    assert parse_event({"action": "TASKS_CREATED", "tasks": tasks}).project == 7
    assert parse_event({"action": "TASKS_CREATED", "tasks": tasks[:2]}).project is None


@pytest.mark.parametrize(("region", "field"), [
    ({"from_name": ["sentiment"], "type": "choices", "value": {"choices": ["Positive"]}}, "result[0].from_name"),
    ({"from_name": "sentiment", "to_name": 3, "value": {}}, "result[0].to_name"),
    ({"from_name": "sentiment", "type": {"t": 1}, "value": {}}, "result[0].type"),
    ({"from_name": "sentiment", "type": "choices", "value": "Positive"}, "result[0].value"),
])
def test_region_keys_scoring_reads_must_have_their_types(region, field):
    body = fixture_json("webhook_annotation_created.json")
    body["annotation"]["result"] = [region]
    with pytest.raises(PayloadError) as caught:
        parse_event(body)
    assert caught.value.status == 422 and caught.value.reason.startswith(f"annotation.{field}")


def test_a_relation_without_from_name_is_still_accepted():
    body = fixture_json("webhook_annotation_created.json")
    body["annotation"]["result"].append({"from_id": "a", "to_id": "b", "type": "relation", "direction": "right"})
    assert len(parse_event(body).submissions[0].result) == 2
