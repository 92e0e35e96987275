import json
import threading

import pytest
import redis
from rq import Queue, SimpleWorker

from qa_hooks.app import create_app
from qa_hooks.store import SubmissionStore
from scripts.processes import free_port
from scripts.services import start_redis
from tests.conftest import fixture_json
from tests.state_isolation import isolated_settings, use_settings

SECRET = "s3cr3t-for-tests"


@pytest.fixture(autouse=True)
def _rq_inbox(monkeypatch):
    # These tests read the RQ queue: the receiver's one-job-per-event mode (tests/test_drain.py: the stream).
    use_settings(monkeypatch, inbox="rq")


@pytest.fixture
def settings(redis_service, redis_conn):
    return isolated_settings(redis_url=redis_service.url, webhook_secret=SECRET, key_prefix="t",
                             max_webhook_bytes=64_000)


@pytest.fixture
def client(settings):
    return create_app(settings).test_client()


def post(client, body, secret=SECRET, **kw):
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    headers = {"Content-Type": "application/json"}
    if secret is not None:
        headers["X-Crowdgate-Secret"] = secret
    return client.post("/hooks/labelstudio", data=data, headers=headers, **kw)


def drain(connection, settings):
    SimpleWorker([Queue(settings.events_queue, connection=connection)], connection=connection).work(burst=True)


def test_accepts_persists_and_records(client, redis_conn, settings):
    reply = post(client, fixture_json("webhook_annotation_created.json"))
    assert reply.status_code == 200, reply.json
    assert reply.json["status"] == "queued"
    assert Queue(settings.events_queue, connection=redis_conn).count == 1
    drain(redis_conn, settings)
    [sub] = SubmissionStore(redis_conn, "t").task_submissions(2, 6)
    assert sub.annotator == 2 and sub.lead_time == 3.5


def test_redelivery_is_a_duplicate(client, redis_conn, settings):
    body = fixture_json("webhook_annotation_created.json")
    assert post(client, body).json["status"] == "queued"
    assert post(client, body).json["status"] == "duplicate"
    assert Queue(settings.events_queue, connection=redis_conn).count == 1


def test_list_shaped_event_queues_only_unseen_annotations(client, redis_conn, settings):
    body = fixture_json("webhook_other_actions.json")["ANNOTATIONS_CREATED"]["body"]
    first = {**body, "annotation": body["annotation"][:1]}
    assert post(client, first).json["status"] == "queued"
    assert post(client, body).json["status"] == "queued"
    drain(redis_conn, settings)
    assert SubmissionStore(redis_conn, "t").summary(2)["submissions"] == len(body["annotation"])


@pytest.mark.parametrize("secret", [None, "", "wrong", SECRET + "x"])
def test_wrong_or_missing_secret_is_401(client, redis_conn, settings, secret):
    reply = post(client, fixture_json("webhook_annotation_created.json"), secret=secret)
    assert reply.status_code == 401 and "X-Crowdgate-Secret" in reply.json["error"]
    assert Queue(settings.events_queue, connection=redis_conn).count == 0


def test_empty_configured_secret_refuses_everything(redis_service, redis_conn):
    app = create_app(isolated_settings(redis_url=redis_service.url, webhook_secret="", key_prefix="t"))
    assert post(app.test_client(), fixture_json("webhook_annotation_created.json"), secret="").status_code == 401


@pytest.mark.parametrize(
    ("raw", "status"),
    [(b"{oops", 400), (b'"text"', 400), (b'{"action": "NOPE"}', 422), (b'{"action": "ANNOTATION_CREATED"}', 422)],
)
def test_malformed_is_4xx_with_reason(client, raw, status):
    reply = post(client, raw)
    assert reply.status_code == status and reply.json["error"]


def test_oversized_body_is_413(client):
    body = fixture_json("webhook_annotation_created.json")
    body["task"]["data"]["text"] = "x" * 70_000
    reply = post(client, body)
    assert reply.status_code == 413 and "larger than" in reply.json["error"]


def test_redis_down_is_503_and_nothing_claimed(redis_conn):
    closed = f"redis://127.0.0.1:{free_port()}/0"
    app = create_app(isolated_settings(redis_url=closed, webhook_secret=SECRET, key_prefix="t"))
    reply = post(app.test_client(), fixture_json("webhook_annotation_created.json"))
    assert reply.status_code == 503 and "whole or not at all" in reply.json["error"]
    assert app.test_client().get("/hooks/health").status_code == 503


def test_failed_enqueue_leaves_no_dedup_mark(client, redis_conn, settings, monkeypatch):
    import redis as redis_lib

    body = fixture_json("webhook_annotation_created.json")

    def broken(*args, **kwargs):
        raise redis_lib.ConnectionError("lost")

    monkeypatch.setattr(Queue, "enqueue", broken)
    assert post(client, body).status_code == 503
    monkeypatch.undo()
    assert post(client, body).json["status"] == "queued"  # the redelivery is not mistaken for a duplicate


def test_every_captured_action_is_accepted(client, redis_conn, settings):
    for action, capture in fixture_json("webhook_other_actions.json").items():
        if action.startswith("_"):
            continue
        reply = post(client, capture["body"])
        assert reply.status_code == 200, (action, reply.json)
    drain(redis_conn, settings)
    store = SubmissionStore(redis_conn, "t")
    assert store.tasks(2)  # TASKS_CREATED recorded the tasks
    assert store.summary(2)["submissions"] >= 2


def test_health(client):
    assert client.get("/hooks/health").json == {"status": "UP"}


def _annotation_event(n: int) -> dict:
    body = fixture_json("webhook_annotation_created.json")
    body["annotation"] = {**body["annotation"], "id": 1000 + n, "unique_id": f"stall-{n:04d}", "task": 100 + n}
    body["task"] = {**body["task"], "id": 100 + n}
    return body


def test_redis_stall_never_leaves_a_mark_without_its_job(log_dir):
    """Redis stalls past the receiver's socket timeout (DEBUG SLEEP, as a fork or a slow command would): the
    503'd delivery may still land once Redis wakes, but then with its job, so a redelivery's 'duplicate' is
    true and every event is recorded exactly once."""
    service = start_redis(log_dir, extra_args=("--enable-debug-command", "yes"))
    try:
        admin = redis.Redis.from_url(service.url)
        settings = isolated_settings(redis_url=service.url, webhook_secret=SECRET, key_prefix="t", redis_timeout_s=0.2)
        client = create_app(settings).test_client()
        statuses = []
        for n in range(12):
            # the stall starts a little after the request, at a different point of its round trips each time
            stall = threading.Timer(0.0005 * n, lambda: admin.execute_command("DEBUG", "SLEEP", "0.8"))
            stall.start()
            first = post(client, _annotation_event(n))
            stall.join()
            second = post(client, _annotation_event(n))
            statuses.append((first.status_code, second.status_code))
            assert second.status_code == 200, second.json
        assert any(first == 503 for first, _ in statuses), statuses  # the stall really hit the receiver
        queue = Queue(settings.events_queue, connection=admin)
        assert queue.count == 12
        drain(admin, settings)
        assert SubmissionStore(admin, "t").summary(2)["submissions"] == 12
    finally:
        service.stop()


# -- accepted-then-broken: what the job could not process gets 422 at the door --------------------------------

def _broken_by(mutate) -> dict:
    body = fixture_json("webhook_annotation_created.json")
    mutate(body)
    return body


BREAKS_THE_JOB = {
    "region from_name not a string": (
        lambda b: b["annotation"]["result"][0].update(from_name={"name": "sentiment"}),
        "annotation.result[0].from_name"),
    "label_config not XML": (lambda b: b["project"].update(label_config="not xml"), "project.label_config"),
    "control_weights not an object": (lambda b: b["project"].update(control_weights="abc"),
                                      "project.control_weights"),
    "a control weight not a number": (lambda b: b["project"]["control_weights"]["sentiment"].update(overall="x"),
                                      "project.control_weights['sentiment'].overall"),
}


@pytest.mark.parametrize("case", sorted(BREAKS_THE_JOB))
def test_what_the_job_could_not_process_is_refused_with_422(client, redis_conn, settings, case):
    from qa_hooks.events import Event, parse_event
    from qa_hooks.jobs import process_event

    mutate, field = BREAKS_THE_JOB[case]
    body = _broken_by(mutate)
    # The job on this very content (past the door, as the receiver used to let it) fails rescoring the task ...
    good = parse_event(fixture_json("webhook_annotation_created.json")).to_dict()
    parts = {"project_info": {k: body["project"].get(k) for k in ("label_config", "control_weights")}}
    first = {**good["submissions"][0], "result": body["annotation"]["result"]}
    gold = {**good["submissions"][0], "annotation_id": 99, "unique_id": "gold", "annotator": 99, "ground_truth": True}
    parts["submissions"] = [first, gold]  # a ground truth beside it, so the submission is scored against it
    with pytest.raises(Exception):  # noqa: B017 - each case raises its own error deep in scoring
        process_event(Event.from_dict({**good, **parts}).to_dict(), "t", connection=redis_conn)
    redis_conn.flushdb()
    # ... so the receiver refuses it, naming the field, and queues nothing.
    reply = post(client, body)
    assert reply.status_code == 422 and reply.json["error"].startswith(field), reply.json
    assert Queue(settings.events_queue, connection=redis_conn).count == 0


@pytest.mark.parametrize(
    ("raw", "reason"),
    [(b'{"action": "ANNOTATION_CREATED", "x": ' + b"[" * 5000 + b"]" * 5000 + b"}", "nested deeper"),
     (b'{"action": "ANNOTATION_CREATED", "x": [' + b"[" * 70 + b"]" * 70 + b"]}", "nested deeper"),
     (b'{"action": "ANNOTATION_CREATED", "x": ' + b"9" * 4301 + b"}", "longer than 4300 digits"),
     (b'{"action": "ANNOTATION_CREATED", "x": 1e999}', "too large"),
     (b'{"action": "ANNOTATION_CREATED", "x": NaN}', "not JSON"),
     (b'{"action": "ANNOTATION_CREATED", "x": "\\ud800"}', "surrogate"),
     (b'{"action": "ANNOTATION_CREATED", "x": "caf\xe9"}', "not UTF-8")],
)
def test_bodies_later_steps_could_not_handle_are_400(client, raw, reason):
    reply = post(client, raw)
    assert reply.status_code == 400 and reason in reply.json["error"], reply.json


@pytest.mark.parametrize(
    ("mutate", "field"),
    [(lambda b: b["annotation"].update(lead_time=10**400), "annotation.lead_time"),
     (lambda b: b["annotation"].update(lead_time=1e300), "annotation.lead_time"),
     (lambda b: b["annotation"].update(unique_id="\ud800"), None),
     (lambda b: b["annotation"].update(task=2**64), "annotation.task"),
     (lambda b: b["project"].update(id=10**300), "project.id"),
     (lambda b: b["annotation"].update(was_cancelled="false"), "annotation.was_cancelled"),
     (lambda b: b["project"].update(maximum_annotations="3"), "project.maximum_annotations")],
)
def test_values_out_of_range_are_4xx(client, mutate, field):
    reply = post(client, _broken_by(mutate))
    if field is None:  # a lone surrogate is refused while reading the body
        assert reply.status_code == 400 and "surrogate" in reply.json["error"]
    else:
        assert reply.status_code == 422 and reply.json["error"].startswith(field), reply.json


@pytest.mark.parametrize("content_type", ["application/json", "application/json; charset=utf-8",
                                          "application/json;charset=UTF-8"])
def test_json_with_or_without_a_utf8_charset_is_accepted(client, content_type):
    raw = json.dumps(fixture_json("webhook_annotation_created.json")).encode()
    reply = client.post("/hooks/labelstudio", data=raw,
                        headers={"Content-Type": content_type, "X-Crowdgate-Secret": SECRET})
    assert reply.status_code == 200, reply.json


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/json; charset=latin-1", "multipart/form-data"])
def test_any_other_content_type_is_415(client, redis_conn, settings, content_type):
    raw = json.dumps(fixture_json("webhook_annotation_created.json")).encode()
    headers = {"X-Crowdgate-Secret": SECRET, **({"Content-Type": content_type} if content_type else {})}
    reply = client.post("/hooks/labelstudio", data=raw, headers=headers)
    assert reply.status_code == 415 and "application/json" in reply.json["error"]
    assert Queue(settings.events_queue, connection=redis_conn).count == 0


def test_errors_outside_the_route_are_json_too(client):
    reply = client.get("/hooks/labelstudio")
    assert reply.status_code == 405 and reply.is_json and reply.json["error"]
    assert client.get("/nowhere").json["error"]
