"""Gold served through per-annotator exam views (routing/exam.py): the qualification exam, then the gold share.

The fake Label Studio of tests/test_routing_jobs.py, plus offer views and a ``/next/?view=`` that serves what
the view's ``contains |email|`` filter selects; tests/test_routing_integration.py checks the real server.
"""

from __future__ import annotations

from typing import Any

import pytest

from core.labelstudio import offer_token
from crowdgate.pipeline import handle_event
from qa_hooks.events import Event, TaskInfo
from routing import exam
from routing.audit import AuditLog
from routing.runtime import set_labelstudio
from routing.state import RoutingState
from tests.fake_labelstudio import TASK_IDS
from tests.test_routing_jobs import (
    CONFIG,
    EMAILS,
    POLICY,
    PREFIX,
    SOURCE,
    FakeLabelStudio,
    run_jobs,
    submit,
)


class ExamLabelStudio(FakeLabelStudio):
    """The routing fake with offer views: a view serves the open tasks whose field lists its e-mail."""

    def __init__(self) -> None:
        super().__init__()
        self.offer_views: dict[int, tuple[int, str, str]] = {}

    def offer_view(self, project: int, email: str, field: str) -> int:
        for view, spec in self.offer_views.items():
            if spec == (project, email, field):
                return view
        view = next(TASK_IDS)
        self.offer_views[view] = (project, email, field)
        self.writes.append(("create_view", project, email))
        return view

    def next_for(self, user: int, view: int) -> dict[str, Any] | None:
        project, email, field = self.offer_views[view]
        for task in sorted(self.tasks.values(), key=lambda t: t["id"]):
            listed = offer_token(email) in str(task["data"].get(field) or "").lower()
            mine = any(a["completed_by"] == user for a in task["annotations"])
            if task["project"] == project and listed and not mine and not task["is_labeled"]:
                return task
        return None


@pytest.fixture
def env(redis_conn):
    fake = ExamLabelStudio()
    set_labelstudio(fake)
    state = RoutingState(redis_conn, PREFIX)
    state.set_policy(SOURCE, POLICY)  # exam_tasks 3, pass_mark 0.66, max_retries 1; gold.share 0.1
    for user, tier in {1: "tier1", 2: "tier1", 3: "tier1", 4: "tier2", 5: "tier2"}.items():
        state.set_tier(SOURCE, user, tier)
    yield redis_conn, state, fake
    set_labelstudio(None)


def add_gold(conn, ls: ExamLabelStudio, n: int) -> list[int]:
    """Gold tasks, announced the way Label Studio's TASKS_CREATED webhook does."""
    golds = [ls.add_task(SOURCE, {"text": f"gold {i}"}, {"gold": "Positive"}) for i in range(n)]
    info = {"label_config": CONFIG, "maximum_annotations": 2}
    handle_event(Event("TASKS_CREATED", SOURCE, info, tasks=[TaskInfo(t, ls.tasks[t]["data"], ls.tasks[t]["meta"])
                                                               for t in golds]).to_dict(), PREFIX, conn)
    run_jobs(conn)
    return golds


def offered(ls: ExamLabelStudio, user: int) -> set[int]:
    """Tasks whose exam field lists the user, read from Label Studio's side."""
    token = offer_token(EMAILS[user])
    return {t["id"] for t in ls.tasks.values() if token in str(t["data"].get(exam.EXAM_FIELD) or "")}


def served(ls: ExamLabelStudio, state: RoutingState, user: int) -> dict[str, Any] | None:
    view = state.exam_view(SOURCE, EMAILS[user])
    return ls.next_for(user, view) if view is not None else None


def test_a_newcomer_is_offered_exam_tasks_first(env) -> None:
    conn, state, ls = env
    golds = add_gold(conn, ls, 5)
    assert exam.offer_gold(SOURCE, 8, PREFIX, conn)  # set up by hand, before any event of theirs
    run_jobs(conn)
    assert offered(ls, 8) == state.offered(SOURCE, 8) == set(golds[:3])
    assert served(ls, state, 8)["id"] == golds[0]
    assert ls.tasks[golds[0]]["data"] == {"text": "gold 0", exam.EXAM_FIELD: f"|{EMAILS[8]}|"}  # data kept whole
    # Asked again: nothing changes (same job id refused; the job itself rewrites nothing).
    writes = len(ls.writes)
    assert exam.offer_gold(SOURCE, 8, PREFIX, conn) is None
    exam.sync_gold_offer(SOURCE, 8, prefix=PREFIX, connection=conn)
    assert len(ls.writes) == writes
    # Another newcomer appears through their first event (work on a real task): same offer, one shared field.
    real = ls.add_task(SOURCE, {"text": "real"})
    submit(conn, ls, real, 9, "Positive")
    assert offered(ls, 9) == set(golds[:3])
    assert ls.tasks[golds[1]]["data"][exam.EXAM_FIELD] == f"|{EMAILS[8]}|{EMAILS[9]}|"
    # A qualified annotator with no gold answer yet gets one gold task (the gold share), never three.
    submit(conn, ls, real, 1, "Positive")
    assert len(offered(ls, 1)) == 1
    actions = [e.action for e in AuditLog(conn, PREFIX).query(project=SOURCE, annotator=8)]
    assert "offer_gold" in actions


def test_passing_the_exam_removes_the_offers(env) -> None:
    conn, state, ls = env
    golds = add_gold(conn, ls, 5)
    exam.offer_gold(SOURCE, 8, PREFIX, conn)
    run_jobs(conn)
    for _ in range(2):
        submit(conn, ls, served(ls, state, 8)["id"], 8, "Positive")
    assert offered(ls, 8) == {golds[2]}  # answered ones leave the field
    submit(conn, ls, golds[4], 8, "Positive")  # the third gold answer, found outside their view
    assert state.annotator(SOURCE, 8, state.policy(SOURCE)).tier == "tier1"
    assert offered(ls, 8) == state.offered(SOURCE, 8) == set()  # 3 of 3 answers are gold: share met
    assert served(ls, state, 8) is None


def test_a_failed_exam_offers_unused_gold_and_lock_out_removes_everything(env) -> None:
    conn, state, ls = env
    golds = add_gold(conn, ls, 8)
    exam.offer_gold(SOURCE, 8, PREFIX, conn)
    run_jobs(conn)
    for g in golds[:3]:
        submit(conn, ls, g, 8, "Negative")
    eight = state.annotator(SOURCE, 8, state.policy(SOURCE))
    assert (eight.tier, eight.exam_attempts) == ("qualification", 1)
    assert offered(ls, 8) == set(golds[3:6])  # the retry: gold they have not seen
    for g in golds[3:5]:
        submit(conn, ls, g, 8, "Negative")
    assert offered(ls, 8) == {golds[5]}
    submit(conn, ls, golds[6], 8, "Negative")  # the retry fails too: locked out
    assert state.annotator(SOURCE, 8, state.policy(SOURCE)).exam_attempts == 2
    assert offered(ls, 8) == state.offered(SOURCE, 8) == set()
    assert served(ls, state, 8) is None


def test_the_gold_share_keeps_one_gold_task_offered(env) -> None:
    conn, state, ls = env
    golds = add_gold(conn, ls, 3)
    real = [ls.add_task(SOURCE, {"text": f"real {i}"}, overlap=20) for i in range(10)]
    submit(conn, ls, real[0], 1, "Positive")
    assert len(offered(ls, 1)) == 1  # 0 of 1 answers gold < 0.1
    first = served(ls, state, 1)
    assert first["id"] in golds
    submit(conn, ls, first["id"], 1, "Positive")
    assert offered(ls, 1) == set()  # 1 of 2
    for task in real[1:9]:
        submit(conn, ls, task, 1, "Positive")
    assert offered(ls, 1) == set()  # 1 of 10: not below the share
    submit(conn, ls, real[9], 1, "Positive")  # 1 of 11: below
    again = offered(ls, 1)
    assert len(again) == 1 and first["id"] not in again
