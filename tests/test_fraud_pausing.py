"""Pausing and undoing it (routing/pausing.py) on a real Redis: what a pause changes, that unpausing restores the
routing decisions exactly, and the automatic evaluation with its evidence."""

from __future__ import annotations

import json
import random
import uuid
from datetime import UTC, datetime
from typing import Any

from rq import Queue

from core.keys import Keys
from qa_hooks.events import parse_body
from qa_hooks.fraud.records import project_answers
from qa_hooks.jobs import process_event
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from routing import pausing
from routing.audit import AuditLog
from routing.exam import wanted_gold
from routing.policy import DEFAULT_POLICY
from routing.router import after_scoring
from routing.state import DEFAULT_POLICY_FILE, AnnotatorRecord, RoutingState
from tests.conftest import fixture_json

PROJECT = 2
PREFIX = "fp"
OPTIONS = ("Positive", "Negative", "Neutral")
BOT = 9


def _event(template: dict, n: int, task: int, annotator: int, label: str, lead_time: float, at: float,
           gold: str | None) -> dict[str, Any]:
    body = json.loads(json.dumps(template))
    stamp = datetime.fromtimestamp(at, UTC).isoformat().replace("+00:00", "Z")
    body["annotation"].update(id=1000 + n, unique_id=str(uuid.UUID(int=n)), task=task, completed_by=annotator,
                              lead_time=lead_time, created_at=stamp, updated_at=stamp,
                              result=[{**body["annotation"]["result"][0], "value": {"choices": [label]}}])
    body["task"] = {**body["task"], "id": task, "data": {"text": "word " * (20 + task % 30)},
                    "meta": {"gold": gold} if gold else {}}
    return parse_body(json.dumps(body).encode()).to_dict()


def crowd_events(bot: bool = True, seed: int = 0) -> list[dict[str, Any]]:
    """Eight honest annotators (right 85 % of the time, 10-40 s a task) on 40 tasks, four labels a task, every
    fifth task gold; and, with ``bot``, annotator 9 answering 'Positive' in about a second on 25 of them."""
    rng = random.Random(seed)
    template = fixture_json("webhook_annotation_created.json")
    truth = {t: rng.choice(OPTIONS) for t in range(1, 41)}
    events, n, clock = [], 0, 1_800_000_000.0
    for task, answer in truth.items():
        gold = answer if task % 5 == 0 else None
        for annotator in rng.sample(range(1, 9), 4):
            label = answer if rng.random() < 0.85 else rng.choice([o for o in OPTIONS if o != answer])
            clock += rng.uniform(5, 15)
            events.append(_event(template, n, task, annotator, label, rng.uniform(10, 40), clock, gold))
            n += 1
        if bot and task <= 25:
            clock += 1.0
            events.append(_event(template, n, task, BOT, "Positive", 0.9, clock, gold))
            n += 1
    return events


def _decisions(summary: dict[str, Any]) -> list[str]:
    return sorted(json.dumps(d, sort_keys=True) for d in summary["decisions"])


def _scored(connection) -> dict[str, Any]:
    store = SubmissionStore(connection, PREFIX)
    return {"project": PROJECT, "tasks": store.tasks(PROJECT), "annotators": []}


def _task_evidence(connection) -> dict[int, Any]:
    """Per task: who was left out of its consensus in the latest routing decision, and why."""
    entries = AuditLog(connection, PREFIX).query(project=PROJECT, kind="decision")
    out = {}
    for e in entries:
        if e.task is not None:
            out[e.task] = e.evidence.get("excluded")
    return out


def test_pause_then_unpause_returns_routing_to_what_it_was(redis_conn) -> None:
    for event in crowd_events():
        process_event(event, PREFIX, redis_conn)
    state = RoutingState(redis_conn, PREFIX)
    state.flag_annotator(PROJECT, 3, "flagged by hand earlier")
    never_paused = _decisions(after_scoring(_scored(redis_conn), PREFIX, redis_conn))
    flags_before = state.flagged(PROJECT)

    outcome = pausing.pause(redis_conn, PROJECT, BOT, "bot-like answers", evidence={"risk_reasons": ["fast"]},
                            by="admin@x", prefix=PREFIX)
    assert outcome["changed"] and outcome["status"] == "paused"
    assert state.flagged(PROJECT)[BOT].startswith("paused")
    assert state.annotator(PROJECT, BOT, DEFAULT_POLICY).paused
    queued = Queue("crowdgate-routing", connection=redis_conn).job_ids
    assert any("fraudgold" in j for j in queued) and any("requeue" in j for j in queued)  # gold taken back, re-routed
    during = after_scoring(_scored(redis_conn), PREFIX, redis_conn)
    assert _decisions(during) != never_paused
    excluded = [x for x in _task_evidence(redis_conn).values() if x]
    assert any({"annotator_id": str(BOT), "why": "flagged annotator"} in x for x in excluded)
    assert pausing.pause(redis_conn, PROJECT, BOT, "again", prefix=PREFIX)["changed"] is False  # idempotent

    listed = pausing.list_flagged(redis_conn, PROJECT, PREFIX)
    assert listed[0]["annotator"] == BOT and listed[0]["status"] == "paused"
    assert listed[0]["evidence"] == {"risk_reasons": ["fast"]} and listed[0]["by"] == "admin@x"
    assert any(r["annotator"] == 3 and r["status"] == "flagged" for r in listed)

    undone = pausing.unpause(redis_conn, PROJECT, BOT, "checked by hand: a fast typist", by="admin@x", prefix=PREFIX)
    assert undone["changed"] and undone["status"] == "cleared"
    assert state.flagged(PROJECT) == flags_before  # the hand flag of 3 untouched, the bot's pause flag gone
    assert _decisions(after_scoring(_scored(redis_conn), PREFIX, redis_conn)) == never_paused
    assert not state.annotator(PROJECT, BOT, DEFAULT_POLICY).paused
    assert pausing.unpause(redis_conn, PROJECT, BOT, "again", prefix=PREFIX)["changed"] is False
    actions = [e.action for e in AuditLog(redis_conn, PREFIX).query(project=PROJECT, annotator=BOT, kind="action")]
    assert actions == ["fraud_pause", "fraud_unpause"]


def test_a_hand_flag_held_through_a_pause_comes_back(redis_conn) -> None:
    for event in crowd_events()[:40]:
        process_event(event, PREFIX, redis_conn)
    state = RoutingState(redis_conn, PREFIX)
    state.flag_annotator(PROJECT, BOT, "suspicious, by hand")
    pausing.pause(redis_conn, PROJECT, BOT, "confirmed", requeue_tasks=False, prefix=PREFIX)
    pausing.clear_flag(redis_conn, PROJECT, BOT, "not a bot after all", prefix=PREFIX)
    assert state.flagged(PROJECT)[BOT] == "suspicious, by hand"


def test_review_flags_and_clearing(redis_conn) -> None:
    for event in crowd_events()[:40]:
        process_event(event, PREFIX, redis_conn)
    assert pausing.flag_for_review(redis_conn, PROJECT, 4, "odd timing", evidence={"x": 1}, prefix=PREFIX)["changed"]
    assert RoutingState(redis_conn, PREFIX).flagged(PROJECT) == {}  # under review: their labels still count
    assert pausing.status_of(redis_conn, PROJECT, 4, PREFIX).status == "review"
    assert pausing.clear_flag(redis_conn, PROJECT, 4, "fine", prefix=PREFIX)["changed"]
    assert pausing.status_of(redis_conn, PROJECT, 4, PREFIX).status == "cleared"
    assert pausing.list_flagged(redis_conn, PROJECT, PREFIX) == []


def test_a_paused_annotator_is_offered_no_gold() -> None:
    record = AnnotatorRecord(annotator=1, tier="tier1", paused=True)
    assert wanted_gold(DEFAULT_POLICY, record, [1, 2, 3], {10, 11}, [10, 11], set(), 0) == \
        ([], "paused for review of their work")
    active = AnnotatorRecord(annotator=1, tier="tier1")
    assert wanted_gold(DEFAULT_POLICY, active, [1, 2, 3], {10, 11}, [10, 11], set(), 0)[0] == [10]


def test_the_records_adapter_reads_answers_from_redis(redis_conn) -> None:
    for event in crowd_events():
        process_event(event, PREFIX, redis_conn)
    answers, options = project_answers(SubmissionStore(redis_conn, PREFIX), Ledger(redis_conn, PREFIX), PROJECT,
                                       prelabels={1: "Negative"})
    assert options == OPTIONS and len(answers[BOT]) == 25
    first = answers[BOT][0]
    assert first.option == "Positive" and first.lead_time == 0.9 and first.length and first.at is not None
    assert first.consensus in OPTIONS and first.prelabel == "Negative"
    assert sum(a.gold is not None for a in answers[BOT]) == 5


def bind_default_policy(connection) -> None:
    RoutingState(connection, PREFIX).set_policy(PROJECT, DEFAULT_POLICY_FILE.read_text(), origin="default")


def test_without_a_bound_policy_the_evaluation_only_audits(redis_conn) -> None:
    for event in crowd_events():
        process_event(event, PREFIX, redis_conn)
    summary = pausing.evaluate_project(redis_conn, PROJECT, PREFIX, predictions={})
    assert summary["dry_run"] and summary["paused"] == [] and summary["would_pause"] == [BOT]
    assert pausing.status_of(redis_conn, PROJECT, BOT, PREFIX) is None
    decision = AuditLog(redis_conn, PREFIX).query(project=PROJECT, annotator=BOT, kind="decision")[-1]
    assert decision.action == "fraud:pause" and decision.evidence["dry_run"] is True


def test_the_evaluation_pauses_the_bot_with_its_evidence_and_spares_the_crowd(redis_conn) -> None:
    for event in crowd_events():
        process_event(event, PREFIX, redis_conn)
    bind_default_policy(redis_conn)
    summary = pausing.evaluate_project(redis_conn, PROJECT, PREFIX, predictions={})
    assert summary["paused"] == [BOT]
    assert summary["risks"][BOT] >= DEFAULT_POLICY.fraud.pause_at
    assert all(summary["risks"][a] < DEFAULT_POLICY.fraud.review_at for a in range(1, 9))
    status = pausing.status_of(redis_conn, PROJECT, BOT, PREFIX)
    assert status.by == "crowdgate" and status.status == "paused"
    assert {r["signal"] for r in status.evidence["reasons"]} >= {"too_fast"}
    assert "far faster" in status.reason
    decision = AuditLog(redis_conn, PREFIX).query(project=PROJECT, annotator=BOT, kind="decision")
    assert decision[-1].action == "fraud:pause" and decision[-1].evidence["reasons"]
    # evaluated again: nothing new; an admin's clearing holds until recheck_after more submissions
    assert pausing.evaluate_project(redis_conn, PROJECT, PREFIX, predictions={})["paused"] == []
    pausing.clear_flag(redis_conn, PROJECT, BOT, "the client asked for speed", prefix=PREFIX)
    assert pausing.evaluate_project(redis_conn, PROJECT, PREFIX, predictions={})["paused"] == []
    assert pausing.status_of(redis_conn, PROJECT, BOT, PREFIX).status == "cleared"


def test_the_cron_job_survives_a_broken_project(redis_conn) -> None:
    for event in crowd_events()[:30]:
        process_event(event, PREFIX, redis_conn)
    keys = Keys(PREFIX)
    redis_conn.sadd(keys.projects(), 77)  # known, but its policy is broken
    redis_conn.hset(keys.policy(77), mapping={"yaml": "fraud: {pause_at: nope}", "origin": "t"})
    out = pausing.evaluate_all(PREFIX, redis_conn)
    assert "error" in out[77] and "project" in out[PROJECT]
    assert AuditLog(redis_conn, PREFIX).query(project=77, kind="error")[0].action == "fraud_evaluate"


class _Enterprise:
    """Just the calls the pause job makes (a unit test's stand-in for Label Studio Enterprise)."""

    def __init__(self, edition: str) -> None:
        self.kind = edition
        self.calls: list[tuple] = []

    def edition(self, project: int) -> str:
        return self.kind

    def pause(self, project: int, user: int, verbose_reason: str, reason: str = "") -> dict:
        self.calls.append(("pause", project, user, verbose_reason, reason))
        return {"id": 5}

    def pauses(self, project: int, user: int) -> list[dict]:
        return [{"id": 5, "deleted_at": None}, {"id": 4, "deleted_at": "2026-01-01"}]

    def request(self, method: str, path: str, **kwargs) -> None:
        self.calls.append((method, path))


def test_enterprise_is_paused_through_its_api_and_community_is_not(redis_conn) -> None:
    from routing.runtime import set_labelstudio

    for kind in ("enterprise", "community"):
        api = _Enterprise(kind)
        set_labelstudio(api)
        try:
            redis_conn.delete(Keys(PREFIX).edition(PROJECT))
            done = pausing.sync_labelstudio_pause(PROJECT, BOT, True, "bot", PREFIX, redis_conn)
            undone = pausing.sync_labelstudio_pause(PROJECT, BOT, False, "ok", PREFIX, redis_conn)
        finally:
            set_labelstudio(None)
        if kind == "enterprise":
            assert done["changed"] and undone["changed"]
            assert api.calls == [("pause", PROJECT, BOT, "crowdgate: bot", "CUSTOM_SCRIPT"),
                                 ("DELETE", f"/api/projects/{PROJECT}/members/{BOT}/pauses/5/")]
        else:
            assert api.calls == [] and not done["changed"]


def test_escalation_tasks_assigned_to_a_paused_annotator_are_reassigned(redis_conn) -> None:
    for event in crowd_events()[:40]:
        process_event(event, PREFIX, redis_conn)
    state = RoutingState(redis_conn, PREFIX)
    state.update_route(PROJECT, 3, status="escalated", assigned=BOT)
    state.assign(BOT, PROJECT, 3)
    outcome = pausing.pause(redis_conn, PROJECT, BOT, "bot", prefix=PREFIX)
    assert any("fraudreassign" in j and "_3_" in j for j in outcome["enqueued"])


def test_the_stop_threshold_is_matched_to_the_crowd_without_the_paused(redis_conn, monkeypatch) -> None:
    import routing.router
    from routing.policy import parse_policy
    from routing.runtime import Context

    for event in crowd_events():
        process_event(event, PREFIX, redis_conn)
    seen: list[int] = []
    real = routing.router.matched_threshold
    monkeypatch.setattr(routing.router, "matched_threshold",
                        lambda models, *a, **k: (seen.append(len(models)), real(models, *a, **k))[1])
    policy = parse_policy("overlap: {stop: {match_min_labels: 50}}")
    ctx = Context(redis_conn, PREFIX)
    routing.router.crowd_stop_threshold(ctx, policy, PROJECT, OPTIONS)
    pausing.pause(redis_conn, PROJECT, BOT, "bot", requeue_tasks=False, prefix=PREFIX)
    routing.router.crowd_stop_threshold(ctx, policy, PROJECT, OPTIONS)  # not the cached one: the crowd changed
    assert seen == [9, 8]
