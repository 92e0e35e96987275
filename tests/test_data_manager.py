"""The Data Manager columns (routing/data_manager.py): written in batches, only when they changed, never losing
another field; with the shared fake Label Studio and a private Redis. The real server:
tests/test_data_manager_integration.py."""

from __future__ import annotations

import json

import pytest

from core.keys import Keys
from core.labelstudio import LabelStudioError
from core.task_lock import TaskDataLock
from crowdgate.pipeline import handle_event
from crowdgate.report.data import read_project
from qa_hooks.events import Event, TaskInfo
from routing import data_manager
from routing.audit import AuditLog
from routing.data_manager import AGREEMENT_FIELD, LINK_FIELD, STATUS_FIELD, sync_data_manager
from routing.runtime import set_labelstudio
from routing.state import RoutingState
from tests.state_isolation import use_settings
from tests.test_routing_jobs import POLICY, PREFIX, SOURCE, FakeLabelStudio, escalated_task, submit

URL = "http://cg.test:9090/"
OTHERS = {"crowdgate_exam": "|u9@x.test|", "crowdgate_difficulty": 0.31, "assigned_to": "u8@x.test"}


@pytest.fixture
def env(redis_conn, monkeypatch):
    """The routing tests' fake source project and policy (so tasks are finalised and escalated for real), with
    crowdgate's public URL set."""
    fake = FakeLabelStudio()
    set_labelstudio(fake)
    state = RoutingState(redis_conn, PREFIX)
    state.set_policy(SOURCE, POLICY)
    for user, tier in {1: "tier1", 2: "tier1", 3: "tier1", 4: "tier2", 5: "tier2"}.items():
        state.set_tier(SOURCE, user, tier)
    use_settings(monkeypatch, public_url=URL)
    yield redis_conn, state, fake
    set_labelstudio(None)


def sync(conn, ls, **kwargs):
    return sync_data_manager(prefix=PREFIX, connection=conn, client=ls, **kwargs)


def data_writes(ls) -> list[int]:
    return [w[1] for w in ls.written("patch_task") if "data" in w[2]]


def test_pure_parts() -> None:
    assert data_manager.task_status("final", False) == "final"
    assert data_manager.task_status("escalated", True) == "escalated"
    assert data_manager.task_status("open", True) == "consensus"
    assert data_manager.task_status(None, False) == "needs more"
    assert data_manager.columns(3, 7, 1, 1.0, "needs more", "") == {STATUS_FIELD: "needs more"}  # one label: no figure
    assert data_manager.columns(3, 7, 2, 0.666666, "consensus", "https://cg/") == {
        STATUS_FIELD: "consensus", AGREEMENT_FIELD: 0.67, LINK_FIELD: "https://cg/dashboard/3?task=7"}
    old = {"text": "t", AGREEMENT_FIELD: 0.5, LINK_FIELD: "x", **OTHERS}
    assert data_manager.with_columns(old, {STATUS_FIELD: "final"}) == {"text": "t", STATUS_FIELD: "final", **OTHERS}


def test_columns_match_the_dashboard_keep_other_fields_and_a_second_run_writes_nothing(env) -> None:
    conn, state, ls = env
    agreed = ls.add_task(SOURCE, {"text": "fine", **OTHERS})
    for user in (1, 2, 3):
        submit(conn, ls, agreed, user, "Positive")
    one = ls.add_task(SOURCE, {"text": "one label", **OTHERS})
    submit(conn, ls, one, 1, "Negative")
    split = escalated_task(conn, ls)
    untouched = ls.add_task(SOURCE, {"text": "crowdgate never saw it"})
    before = {t: dict(ls.tasks[t]) for t in (agreed, one, split)}

    report = sync(conn, ls)
    assert report[SOURCE]["written"] == 3 and report[SOURCE]["failed"] == 0
    # only the source project: the escalation project's copy is one person's task with its source's figures
    assert set(report) == {SOURCE}
    rows = {r.task: r for r in read_project(conn, PREFIX, SOURCE).tasks}
    for task in (agreed, one, split):
        data = ls.tasks[task]["data"]
        assert data[STATUS_FIELD] == rows[task].status  # the dashboard's word
        assert data[LINK_FIELD] == f"http://cg.test:9090/dashboard/{SOURCE}?task={task}"
        kept = {k: v for k, v in data.items() if k not in data_manager.FIELDS}
        assert kept == before[task]["data"]  # the text, exam offers, assignment and training's difficulty survive
        for field in ("is_labeled", "overlap", "meta"):
            assert ls.tasks[task][field] == before[task][field]  # the write touched nothing but data
    assert ls.tasks[agreed]["data"][STATUS_FIELD] == "final"
    assert ls.tasks[agreed]["data"][AGREEMENT_FIELD] == round(rows[agreed].agreement, 2) == 1.0
    assert ls.tasks[split]["data"][STATUS_FIELD] == "escalated"
    assert ls.tasks[split]["data"][AGREEMENT_FIELD] == round(rows[split].agreement, 2)
    assert ls.tasks[one]["data"][STATUS_FIELD] == "needs more" and AGREEMENT_FIELD not in ls.tasks[one]["data"]
    assert ls.tasks[untouched]["data"] == {"text": "crowdgate never saw it"}
    tier_task = state.route(SOURCE, split).tier_task
    assert STATUS_FIELD not in ls.tasks[tier_task]["data"]
    # one listing per batch, not a read per task
    assert [ids for project, ids in ls.tasks.listings if project == SOURCE][-1] == sorted([agreed, one, split])

    writes = len(ls.writes)
    again = sync(conn, ls)
    assert (again[SOURCE]["changed"], again[SOURCE]["written"]) == (0, 0)
    assert len(ls.writes) == writes  # nothing sent to Label Studio
    # a new label changes one task: only that one is written
    submit(conn, ls, one, 2, "Negative")
    third = sync(conn, ls)
    assert third[SOURCE]["written"] == 1 and data_writes(ls)[-1] == one
    assert ls.tasks[one]["data"][AGREEMENT_FIELD] == 1.0 and ls.tasks[one]["data"]["crowdgate_exam"] == "|u9@x.test|"


def test_figures_written_before_an_escalation_do_not_go_into_the_copy(env) -> None:
    conn, state, ls = env
    task = ls.add_task(SOURCE, {"text": "hmm"})
    submit(conn, ls, task, 1, "Positive")
    sync(conn, ls)
    assert ls.tasks[task]["data"][STATUS_FIELD] == "needs more"
    submit(conn, ls, task, 2, "Negative")  # the webhook carries the task's data, columns included
    route = state.route(SOURCE, task)
    assert route.status == "escalated"
    copy = ls.tasks[route.tier_task]["data"]
    assert not set(copy) & set(data_manager.FIELDS) and copy["text"] == "hmm"


def test_small_agreement_changes_do_not_cause_writes() -> None:
    a = data_manager.columns(1, 2, 9, 0.70001, "needs more", "")
    b = data_manager.columns(1, 2, 10, 0.70399, "needs more", "")
    assert a == b


def test_gold_tasks_look_like_routed_ones(env) -> None:
    conn, _, ls = env
    gold = ls.add_task(SOURCE, {"text": "gold"}, {"gold": "Positive"})
    handle_event(Event("TASKS_CREATED", SOURCE, {"label_config": ls.projects[SOURCE]["label_config"],
                                                  "maximum_annotations": 2},
                       tasks=[TaskInfo(gold, ls.tasks[gold]["data"], ls.tasks[gold]["meta"])]).to_dict(), PREFIX, conn)
    submit(conn, ls, gold, 1, "Positive")
    sync(conn, ls)
    assert ls.tasks[gold]["data"][STATUS_FIELD] == "needs more"
    submit(conn, ls, gold, 2, "Positive")  # two agree: the dashboard says consensus, as gold is never routed
    assert {r.task: r.status for r in read_project(conn, PREFIX, SOURCE).tasks}[gold] == "consensus"
    sync(conn, ls)
    data = ls.tasks[gold]["data"]
    assert data[STATUS_FIELD] == "final" and data[AGREEMENT_FIELD] == 1.0  # served out, like a finished task
    assert "Positive" not in json.dumps(data)  # neither its answer nor a consensus label


def test_a_failed_write_is_audited_and_retried_next_run(env) -> None:
    conn, _, ls = env
    tasks = [ls.add_task(SOURCE, {"text": f"t{i}"}) for i in range(3)]
    for t in tasks:
        submit(conn, ls, t, 1, "Positive")
    ls.fail_next["replace_task_data"] = 1
    first = sync(conn, ls)[SOURCE]
    assert (first["written"], first["failed"]) == (2, 1)
    assert STATUS_FIELD not in ls.tasks[tasks[0]]["data"]
    [alert] = AuditLog(conn, PREFIX).query(project=SOURCE, action="data_manager_failed")
    assert alert.kind == "alert" and alert.evidence["tasks"] == [tasks[0]] and "injected failure" in alert.reason
    assert not conn.hexists(Keys(PREFIX).data_manager_written(SOURCE), tasks[0])
    second = sync(conn, ls)[SOURCE]
    assert (second["written"], second["failed"]) == (1, 0)
    assert ls.tasks[tasks[0]]["data"][STATUS_FIELD] == "needs more"


def test_a_label_studio_that_does_not_answer_stops_the_run(env, monkeypatch) -> None:
    conn, _, ls = env
    monkeypatch.setattr(data_manager, "WRITE_CHUNK", 2)
    tasks = [ls.add_task(SOURCE, {"text": f"t{i}"}) for i in range(5)]
    for t in tasks:
        submit(conn, ls, t, 1, "Positive")
    calls = []

    def down(project, ids=None):
        calls.append(ids)
        raise LabelStudioError("GET", "/api/tasks/", 0, "connection refused")

    monkeypatch.setattr(ls, "tasks", down)
    report = sync(conn, ls)[SOURCE]
    assert len(calls) == 1 and report["failed"] == 5 and report["written"] == 0  # one try, not one per batch
    assert len(AuditLog(conn, PREFIX).query(project=SOURCE, action="data_manager_failed")) == 1
    assert not conn.exists(Keys(PREFIX).data_manager_written(SOURCE))


def test_each_run_is_bounded_and_the_rest_follow(env) -> None:
    conn, _, ls = env
    tasks = [ls.add_task(SOURCE, {"text": f"t{i}"}) for i in range(5)]
    for t in tasks:
        submit(conn, ls, t, 1, "Positive")
    first = sync(conn, ls, limit=2)[SOURCE]
    assert (first["written"], first["left"]) == (2, 3)
    second = sync(conn, ls, limit=2)[SOURCE]
    third = sync(conn, ls, limit=2)[SOURCE]
    assert (second["written"], third["written"], third["left"]) == (2, 1, 0)
    assert all(STATUS_FIELD in ls.tasks[t]["data"] for t in tasks)


def test_a_task_another_writer_holds_waits_for_the_next_run(env, monkeypatch) -> None:
    conn, _, ls = env
    monkeypatch.setattr(data_manager, "LOCK_WAIT_S", 0.05)
    busy, free = ls.add_task(SOURCE, {"text": "busy"}), ls.add_task(SOURCE, {"text": "free"})
    for t in (busy, free):
        submit(conn, ls, t, 1, "Positive")
    with TaskDataLock(conn, PREFIX).hold(busy):  # say, an exam offer being written
        report = sync(conn, ls)[SOURCE]
    assert (report["written"], report["failed"]) == (1, 1) and STATUS_FIELD not in ls.tasks[busy]["data"]
    assert sync(conn, ls)[SOURCE]["written"] == 1 and STATUS_FIELD in ls.tasks[busy]["data"]
    assert not conn.exists(TaskDataLock(conn, PREFIX).key(busy))  # every lock released


def test_without_a_public_url_there_is_no_link_and_an_old_one_goes(env, monkeypatch) -> None:
    conn, _, ls = env
    task = ls.add_task(SOURCE, {"text": "t"})
    submit(conn, ls, task, 1, "Positive")
    sync(conn, ls)
    assert LINK_FIELD in ls.tasks[task]["data"]
    use_settings(monkeypatch, public_url="")
    assert sync(conn, ls)[SOURCE]["written"] == 1
    assert LINK_FIELD not in ls.tasks[task]["data"] and ls.tasks[task]["data"][STATUS_FIELD] == "needs more"


def test_escalation_projects_are_not_synced(env) -> None:
    conn, state, ls = env
    split = escalated_task(conn, ls)
    tier_project = state.route(SOURCE, split).tier_project
    assert sync_data_manager(prefix=PREFIX, project=tier_project, connection=conn, client=ls)[tier_project]["skipped"]
    assert sync_data_manager(prefix=PREFIX, project=SOURCE, connection=conn, client=ls)[SOURCE]["written"] == 1
