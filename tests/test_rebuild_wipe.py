"""What ``rebuild-state`` wipes (a real Redis) and the order it replays an export in (pure)."""

from __future__ import annotations

from qa_hooks.events import Event, Submission, TaskInfo
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.rebuild import replay_events, wipe_scoring_state
from qa_hooks.store import SubmissionStore
from routing.state import RoutingState
from scripts.seed import label_config

PREFIX = "w"
CONFIG = label_config("text_classification")


def choice(label: str) -> list[dict]:
    return [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": [label]}}]


def record_project(connection, project: int) -> None:
    """A project with every kind of scoring key: gold in meta and by annotation, peers, lead times, flags."""
    tasks = [TaskInfo(1, {"text": "x"}, {"gold": "Positive"}), TaskInfo(2, {"text": "y"}, {})]
    process_event(Event("TASKS_CREATED", project, {"label_config": CONFIG}, tasks=tasks).to_dict(), PREFIX,
                  connection)
    subs = [Submission(project, task, 10 * project + n, f"{project}-{n}", annotator, choice(label),
                       f"2026-01-01T00:00:0{n}Z", f"2026-01-01T00:00:0{n}Z", lead_time=3.0 + n,
                       ground_truth=(n == 3))
            for n, (task, annotator, label) in enumerate([(1, 1, "Positive"), (1, 2, "Negative"),
                                                          (2, 1, "Negative"), (2, 2, "Negative")])]
    process_event(Event("ANNOTATIONS_CREATED", project, submissions=subs).to_dict(), PREFIX, connection)
    Ledger(connection, PREFIX).refresh_flags(project, SubmissionStore(connection, PREFIX))


def test_wipe_removes_the_projects_scoring_keys_only(redis_conn):
    record_project(redis_conn, 1)
    record_project(redis_conn, 2)
    routing = RoutingState(redis_conn, PREFIX)
    routing.flag_annotator(1, 2, "by hand")
    routing.update_route(1, 1, status="final", final_label="Positive")
    store = SubmissionStore(redis_conn, PREFIX)
    redis_conn.hset(store.keys.difficulty(1), 1, "0.4")  # the ML backend's
    redis_conn.set(store.keys.dedup(1, "x:y"), "job")
    before = {k.decode() for k in redis_conn.keys("*")}
    project_one = {k for k in before if k.startswith(store.keys.project_info(1).rsplit(":", 1)[0] + ":")}
    assert len(project_one) > 20

    wiped = wipe_scoring_state(redis_conn, PREFIX, 1)

    after = {k.decode() for k in redis_conn.keys("*")}
    kept_of_one = project_one & after
    assert kept_of_one == {store.keys.flagged(1), store.keys.task_route(1, 1), store.keys.difficulty(1)}
    assert wiped == len(project_one) - len(kept_of_one)
    assert before - after == project_one - kept_of_one  # nothing of project 2, the dedup marks or global keys
    assert store.task_submissions(1, 1) == [] and Ledger(redis_conn, PREFIX).task_score(1, 1) == {}
    assert len(store.task_submissions(2, 1)) == 2
    assert routing.flagged(1) == {2: "by hand"}


def test_replay_is_tasks_first_then_annotations_in_creation_order():
    def annotation(ident: int, created: str, user: int = 1) -> dict:
        return {"id": ident, "unique_id": f"u{ident}", "completed_by": user, "result": choice("Positive"),
                "created_at": created, "updated_at": created}

    export = [
        {"id": 1, "data": {"text": "a"}, "meta": {"gold": "Positive"},
         "annotations": [annotation(3, "2026-01-01T00:00:03Z"), annotation(1, "2026-01-01T00:00:01Z")]},
        {"id": 2, "data": {"text": "b"}, "meta": {},
         "annotations": [annotation(2, "2026-01-01T00:00:02+00:00"), {"id": 9, "completed_by": "x"}]},
    ]
    skipped: list[str] = []
    events = list(replay_events(7, {"label_config": CONFIG}, export, skipped))
    assert [e.action for e in events] == ["TASKS_CREATED"] + ["ANNOTATION_CREATED"] * 3
    assert [t.id for t in events[0].tasks] == [1, 2] and events[0].project_info == {"label_config": CONFIG}
    assert [e.submissions[0].annotation_id for e in events[1:]] == [1, 2, 3]
    assert [e.tasks[0].id for e in events[1:]] == [1, 2, 1]
    assert len(skipped) == 1 and skipped[0].startswith("annotation 9 of task 2")
