"""Routing jobs (routing/router.py, routing/actions.py, crowdgate/pipeline.py), private Redis, in-process RQ worker.

Label Studio is a small in-memory fake here (unit tests only); tests/test_routing_integration.py runs the
same jobs against the real server.
"""

from __future__ import annotations

import functools
import json
from datetime import UTC, datetime
from typing import Any

import pytest
from rq import Queue, SimpleWorker
from rq.registry import ScheduledJobRegistry

import routing
from core.labelstudio import COMMUNITY, ENTERPRISE, LabelStudioError
from core.settings import current
from crowdgate.pipeline import handle_event
from ml_backend.labeling import choice_region
from qa_hooks.events import Event, Submission, TaskInfo
from routing.audit import AuditLog
from routing.state import RoutingState
from scripts.seed import label_config
from tests.fake_labelstudio import FakeLabelStudio as SharedFake
from tests.state_isolation import use_settings

CONFIG = label_config("text_classification")
PREFIX = "t"
SOURCE = 1
POLICY = """
tiers:
  - {name: qualification}
  - {name: tier1}
  - {name: tier2, final_say: true}
qualification: {exam_tasks: 3, pass_mark: 0.66, max_retries: 1}
overlap: {min: 2, max: 3, stop: {rule: posterior, threshold: 0.95, worker_model: one_coin}}
escalation: {agreement_below: 0.6, difficulty_above: 0.8, difficult_start_tier: tier2}
sla: {deadline_seconds: 60}
"""
LADDER = POLICY.replace("  - {name: tier2, final_say: true}",
                        "  - {name: tier2}\n  - {name: reviewer, final_say: true}")
EMAILS = {i: f"u{i}@x.test" for i in range(1, 20)}


class FakeLabelStudio(SharedFake):
    """The shared fake with the routing tests' source project, its crowdgate webhook and annotators."""

    def __init__(self, edition: str = COMMUNITY) -> None:
        super().__init__(edition, users=EMAILS)
        self.add_project(SOURCE, CONFIG, title="source",
                         hooks=[{"url": "http://cg.test/hooks/labelstudio", "headers": {"X-Crowdgate-Secret": "s"}}])


@pytest.fixture
def ls():
    fake = FakeLabelStudio()
    routing.set_labelstudio(fake)
    yield fake
    routing.set_labelstudio(None)


@pytest.fixture
def env(redis_conn, ls):
    state = RoutingState(redis_conn, PREFIX)
    state.set_policy(SOURCE, POLICY)
    for user, tier in {1: "tier1", 2: "tier1", 3: "tier1", 4: "tier2", 5: "tier2"}.items():
        state.set_tier(SOURCE, user, tier)
    return redis_conn, state, ls


@functools.cache
def _region(label: str) -> str:
    return json.dumps(choice_region(CONFIG, "sentiment", [label]))


def answer(label: str) -> list[dict]:
    """The same result (region id included) every time for one label, as one annotator's answer would be."""
    return [json.loads(_region(label))]


def event_for(ls: FakeLabelStudio, ann: dict, action: str = "ANNOTATION_CREATED") -> dict:
    task = ls.tasks[ann["task"]]
    project = task["project"]
    info = {"title": ls.projects[project]["title"], "label_config": CONFIG,
            "maximum_annotations": ls.projects[project].get("maximum_annotations", 2)}
    sub = Submission(project=project, task=ann["task"], annotation_id=ann["id"], unique_id=ann["unique_id"],
                     annotator=ann["completed_by"], result=ann["result"], updated_at=ann["updated_at"],
                     created_at=ann["created_at"], lead_time=1.0, was_cancelled=ann["was_cancelled"])
    return Event(action, project, info, submissions=[sub],
                 tasks=[TaskInfo(task["id"], task["data"], task["meta"])]).to_dict()


def submit(conn, ls, task: int, user: int, label: str | None, run: bool = True) -> dict:
    """An annotation in Label Studio and the webhook it fires, then the routing jobs it enqueues."""
    ann = ls.add_annotation(task, user, answer(label) if label else [])
    if label is None:
        ann["was_cancelled"] = True
    handle_event(event_for(ls, ann), PREFIX, conn)
    if run:
        run_jobs(conn)
    return ann


class _BurstWorker(SimpleWorker):
    """RQ's in-process worker without its command channel (a pub/sub thread that takes 1 s to stop)."""

    def subscribe(self) -> None:
        pass

    def unsubscribe(self) -> None:
        pass


def run_jobs(conn) -> None:
    _BurstWorker([Queue(current().routing_queue, connection=conn)], connection=conn).work(burst=True)


def audit_actions(conn, **query: Any) -> list[str]:
    return [e.action for e in AuditLog(conn, PREFIX).query(**query)]


def expert_answers(conn, ls, route, label: str) -> dict:
    """The assigned expert answers the escalation copy of a task; its webhook and the jobs it enqueues run."""
    reply = ls.add_annotation(route.tier_task, route.assigned, answer(label))
    handle_event(event_for(ls, reply), PREFIX, conn)
    run_jobs(conn)
    return reply


def escalated_task(conn, ls, labels=("Positive", "Negative")) -> int:
    task = ls.add_task(SOURCE, {"text": "hmm"})
    for user, label in zip((1, 2), labels, strict=True):
        submit(conn, ls, task, user, label)
    return task


# -- decisions --------------------------------------------------------------------------------------------


def test_two_unknown_annotators_agreeing_get_a_third_label(env) -> None:
    conn, state, ls = env
    task = ls.add_task(SOURCE, {"text": "fine"})
    submit(conn, ls, task, 1, "Positive")
    assert not ls.written("patch_task")  # one label of two: Label Studio still serves it, no call needed
    submit(conn, ls, task, 2, "Positive")
    assert ls.written("patch_task") == [("patch_task", task, {"overlap": 3, "is_labeled": False})]
    assert state.route(SOURCE, task).overlap == 3
    decision = AuditLog(conn, PREFIX).query(project=SOURCE, task=task, action="task:need_more")[-1]
    assert decision.evidence["posterior"]["Positive"] == pytest.approx(0.49 / (0.49 + 2 * 0.15**2))
    submit(conn, ls, task, 3, "Positive")  # three agree: final
    assert state.route(SOURCE, task).status == "final"
    assert ls.tasks[task]["meta"]["crowdgate"]["final"]["label"] == "Positive"
    assert ls.tasks[task]["meta"]["crowdgate"]["final"]["decided_by"] == [1, 2, 3]


def test_reliable_annotators_agreeing_stop_at_the_minimum(env) -> None:
    conn, state, ls = env
    golds = [ls.add_task(SOURCE, {"text": f"g{i}"}, {"gold": "Positive"}) for i in range(6)]
    for g in golds:
        for user in (1, 2):
            submit(conn, ls, g, user, "Positive", run=False)
    run_jobs(conn)
    assert not ls.written("patch_task")  # gold items are scored, never routed
    task = ls.add_task(SOURCE, {"text": "clear"})
    submit(conn, ls, task, 1, "Negative")
    submit(conn, ls, task, 2, "Negative")
    assert state.route(SOURCE, task).final_label == "Negative"
    assert ls.written("patch_task")[-1][2]["is_labeled"] is True
    assert [w for w in ls.written("patch_task") if "overlap" in w[2]] == []


def test_the_stop_threshold_is_matched_to_the_crowd_once_it_has_enough_labels(env) -> None:
    conn, state, ls = env
    # A threshold no two annotators reach, unless matched to a crowd whose fixed overlap of 3 is less sure.
    state.set_policy(SOURCE, POLICY.replace("threshold: 0.95,", "threshold: 0.999, match_overlap: 3, "
                                                                "match_lead: 0.0, match_min_labels: 20,"))
    first = ls.add_task(SOURCE, {"text": "early"})
    submit(conn, ls, first, 1, "Negative")
    submit(conn, ls, first, 2, "Negative")
    early = AuditLog(conn, PREFIX).query(project=SOURCE, task=first, action="task:need_more")[-1]
    assert "stop_threshold" not in early.evidence and "< 0.999" in early.reason  # 4 labels: not enough yet
    golds = [ls.add_task(SOURCE, {"text": f"g{i}"}, {"gold": "Positive"}) for i in range(6)]
    for g in golds:
        for user in (1, 2):
            submit(conn, ls, g, user, "Positive", run=False)
    run_jobs(conn)
    cache_keys = f"{PREFIX}:p:{SOURCE}:r:stop_threshold:*"
    conn.delete(*conn.keys(cache_keys))  # the cached "not yet" expires
    task = ls.add_task(SOURCE, {"text": "clear"})
    submit(conn, ls, task, 1, "Negative")
    submit(conn, ls, task, 2, "Negative")
    decision = AuditLog(conn, PREFIX).query(project=SOURCE, task=task, action="task:final")[-1]
    matched = decision.evidence["stop_threshold"]
    assert 0.5 <= matched < 0.99 and f">= {matched}" in decision.reason
    assert state.route(SOURCE, task).final_label == "Negative"
    [cache_key] = conn.keys(cache_keys)
    cached = json.loads(conn.get(cache_key))
    assert cached["threshold"] == matched and cached["labels"] >= 20
    why = AuditLog(conn, PREFIX).query(project=SOURCE, action="stop_threshold")[-1]
    assert why.evidence["threshold"] == matched and why.evidence["annotators"] >= 2
    assert why.evidence["accuracy"] >= why.evidence["fixed_overlap_accuracy"]
    assert conn.ttl(cache_key) <= current().stop_threshold_ttl_s


def test_disagreement_escalates_to_tier2_and_the_answer_comes_back(env) -> None:
    conn, state, ls = env
    task = escalated_task(conn, ls)
    route = state.route(SOURCE, task)
    assert (route.status, route.required_tier, route.escalations, route.version) == ("escalated", "tier2", 1, 1)
    assert route.assigned in (4, 5) and state.loads([route.assigned]) == {route.assigned: 1}
    tier_project = state.tier_project(SOURCE, "tier2")
    assert route.tier_project == tier_project and ls.projects[tier_project]["maximum_annotations"] == 1
    assert ls.hooks[tier_project][0]["headers"] == {"X-Crowdgate-Secret": "s"}  # crowdgate's webhook copied
    copy = ls.tasks[route.tier_task]
    email = EMAILS[route.assigned]
    assert copy["data"] == {"text": "hmm", "assigned_to": email, "crowdgate_source_task": task,
                            "crowdgate_source_project": SOURCE}
    assert [p["model_version"] for p in copy["predictions"]] == ["annotator:u1@x.test", "annotator:u2@x.test"]
    assert (tier_project, email) in ls.views
    assert ls.tasks[task]["is_labeled"] is True  # out of every tier-1 queue
    assert route.deadline == pytest.approx(route.escalated_at + 60)
    scheduled = ScheduledJobRegistry(current().routing_queue, connection=conn).get_job_ids()
    assert scheduled == [f"cgroute_t_sla_{SOURCE}_{task}_v1"]

    # The expert answers in the escalation project: written back on their behalf, then final.
    expert = route.assigned
    expert_answers(conn, ls, route, "Neutral")
    written = ls.tasks[task]["annotations"][-1]
    assert (written["completed_by"], written["result"]) == (expert, answer("Neutral"))
    assert state.route(SOURCE, task).assigned is None and state.loads([expert]) == {expert: 0}
    handle_event(event_for(ls, written), PREFIX, conn)  # the webhook of the written-back annotation
    run_jobs(conn)
    route = state.route(SOURCE, task)
    assert (route.status, route.final_label) == ("final", "Neutral")
    final = ls.tasks[task]["meta"]["crowdgate"]["final"]
    assert final["decided_by"] == [expert] and final["result"] == answer("Neutral")
    assert ls.tasks[route.tier_task]["is_labeled"] is True
    assert state.due(now=route.escalated_at + 3600) == []
    actions = audit_actions(conn, project=SOURCE, task=task)
    for expected in ("task:escalate", "assign", "escalate", "task:write_back", "write_back", "task:final",
                     "finalize"):
        assert expected in actions


def test_the_expert_updating_the_answer_updates_the_written_one(env) -> None:
    conn, state, ls = env
    task = escalated_task(conn, ls)
    route = state.route(SOURCE, task)
    reply = expert_answers(conn, ls, route, "Neutral")
    reply["result"], reply["updated_at"] = answer("Positive"), datetime.now(UTC).isoformat()
    handle_event(event_for(ls, reply, "ANNOTATION_UPDATED"), PREFIX, conn)
    run_jobs(conn)
    (update,) = ls.written("update_annotation")
    assert update[2] == {"result": answer("Positive")}
    assert len(ls.written("create_annotation")) == 1


def test_a_skip_in_the_escalation_queue_goes_to_the_next_expert(env) -> None:
    conn, state, ls = env
    task = escalated_task(conn, ls)
    first = state.route(SOURCE, task).assigned
    skip = ls.add_annotation(state.route(SOURCE, task).tier_task, first, [])
    skip["was_cancelled"] = True
    handle_event(event_for(ls, skip), PREFIX, conn)
    run_jobs(conn)
    route = state.route(SOURCE, task)
    assert route.assigned == ({4, 5} - {first}).pop() and route.version == 2
    assert ls.tasks[route.tier_task]["data"]["assigned_to"] == EMAILS[route.assigned]
    assert state.loads([first]) == {first: 0}


def test_nobody_left_raises_an_alert(env) -> None:
    conn, state, ls = env
    state.set_tier(SOURCE, 5, "tier1")  # one expert only
    task = escalated_task(conn, ls)
    route = state.route(SOURCE, task)
    skip = ls.add_annotation(route.tier_task, route.assigned, [])
    skip["was_cancelled"] = True
    handle_event(event_for(ls, skip), PREFIX, conn)
    run_jobs(conn)
    assert state.route(SOURCE, task).assigned is None
    assert ls.tasks[route.tier_task]["data"]["assigned_to"] == ""  # any tier-2 annotator may take it
    alert = AuditLog(conn, PREFIX).query(project=SOURCE, task=task, kind="alert")[-1]
    assert alert.action == "no_annotator" and "1 touched task" in alert.reason


def test_work_below_the_required_tier_is_flagged_and_left_out(env) -> None:
    conn, state, ls = env
    task = escalated_task(conn, ls)
    late = submit(conn, ls, task, 3, "Positive")  # a tier-1 annotator opened it anyway (Community cannot stop it)
    assert state.flagged_submissions(SOURCE)[late["unique_id"]]["annotator"] == 3
    decision = AuditLog(conn, PREFIX).query(project=SOURCE, task=task, action="task:need_more")[-1]
    assert decision.evidence["counted"] == 0 and {x["annotator_id"] for x in decision.evidence["excluded"]} == \
        {"1", "2", "3"}
    assert state.route(SOURCE, task).status == "escalated"  # still waiting for its expert
    newcomer = ls.add_task(SOURCE, {"text": "real"})
    work = submit(conn, ls, newcomer, 9, "Positive")  # exam tier on a real task
    assert "exam tier" in state.flagged_submissions(SOURCE)[work["unique_id"]]["reason"]
    assert audit_actions(conn, project=SOURCE, kind="flag") == ["off_tier_work", "off_tier_work"]


def test_work_below_the_required_tier_never_counts_even_after_its_author_is_promoted(env) -> None:
    conn, state, ls = env
    task = escalated_task(conn, ls)  # tier-2 is required now
    late = submit(conn, ls, task, 3, "Positive")  # given while 3 is tier 1: left out
    state.set_tier(SOURCE, 3, "tier2")  # promoted afterwards (tier2 has the final say)
    ann = ls.tasks[task]["annotations"][0]  # the task's next event: 1 edits their answer
    ann["result"], ann["updated_at"] = answer("Neutral"), datetime.now(UTC).isoformat()
    handle_event(event_for(ls, ann, "ANNOTATION_UPDATED"), PREFIX, conn)
    run_jobs(conn)
    decision = AuditLog(conn, PREFIX).query(project=SOURCE, task=task, kind="decision")[-1]
    assert decision.action != "task:final" and decision.evidence["counted"] == 0
    assert "3" in {x["annotator_id"] for x in decision.evidence["excluded"]}
    assert state.route(SOURCE, task).status == "escalated"  # 3's old label settled nothing
    assert state.tiers_at_submission(SOURCE, [(late["unique_id"], 3)], state.tiers(SOURCE), "qualification") == \
        {late["unique_id"]: "tier1"}
    # Work given after the promotion counts at the new tier.
    fresh = ls.add_task(SOURCE, {"text": "new"})
    submit(conn, ls, fresh, 3, "Negative")
    assert state.route(SOURCE, fresh).final_label == "Negative"


def test_a_decision_taken_twice_acts_once(env) -> None:
    conn, state, ls = env
    task = ls.add_task(SOURCE, {"text": "x"})
    submit(conn, ls, task, 1, "Positive")
    ann = ls.add_annotation(task, 2, answer("Negative"))
    event = event_for(ls, ann)
    first = handle_event(event, PREFIX, conn)
    second = handle_event(event, PREFIX, conn)  # a redelivered or retried event
    assert first["routing"]["enqueued"] and second["routing"]["enqueued"] == []
    run_jobs(conn)
    assert len(ls.written("import_tasks")) == 1
    route = state.route(SOURCE, task)
    # The job itself, run again (an RQ retry after its work went through), resumes and changes nothing.
    routing.escalate(SOURCE, task, "tier2", 0, 1, prefix=PREFIX, connection=conn)
    assert len(ls.written("import_tasks")) == 1 and state.route(SOURCE, task).tier_task == route.tier_task
    # A stale decision (taken before the route moved on) does nothing.
    routing.finalize(SOURCE, task, 0, "Positive", prefix=PREFIX, connection=conn)
    assert state.route(SOURCE, task).status == "escalated"
    assert "finalize_skipped" in audit_actions(conn, project=SOURCE, task=task)


def test_a_failing_label_studio_call_is_retried_and_audited(env) -> None:
    conn, state, ls = env
    ls.fail_next["import_tasks"] = 1
    task = escalated_task(conn, ls)
    error = AuditLog(conn, PREFIX).query(project=SOURCE, task=task, kind="error")[-1]
    assert error.action == "escalate" and "injected failure" in error.reason and error.evidence["will_retry"]
    job_id = error.evidence["job"]
    assert job_id in ScheduledJobRegistry(current().routing_queue, connection=conn).get_job_ids()  # retry scheduled
    assert state.route(SOURCE, task).status == "open"  # claimed but not done: the retry resumes it
    job = Queue(current().routing_queue, connection=conn).fetch_job(job_id)
    routing.escalate(**job.kwargs, connection=conn)  # what the retry runs
    assert state.route(SOURCE, task).status == "escalated" and len(ls.written("import_tasks")) == 1


def test_a_lost_write_back_is_not_written_twice(env) -> None:
    conn, state, ls = env
    task = escalated_task(conn, ls)
    route = state.route(SOURCE, task)
    reply = expert_answers(conn, ls, route, "Neutral")
    state.redis.delete(f"{PREFIX}:p:{route.tier_project}:r:writeback")  # as if it died before remembering
    routing.write_back(route.tier_project, route.tier_task, reply["unique_id"], prefix=PREFIX, connection=conn)
    assert len(ls.written("create_annotation")) == 1


def test_stale_overlap_jobs_never_reopen_an_escalated_task(env) -> None:
    conn, state, ls = env
    ls.projects[SOURCE]["maximum_annotations"] = 1  # full after one label: the next needs an overlap change
    task = ls.add_task(SOURCE, {"text": "x"}, overlap=1)
    submit(conn, ls, task, 1, "Positive", run=False)  # set_overlap queued ...
    submit(conn, ls, task, 2, "Negative", run=False)  # ... and then an escalation, before either runs
    run_jobs(conn)
    assert state.route(SOURCE, task).status == "escalated"
    assert ls.tasks[task]["is_labeled"] is True
    assert "set_overlap_skipped" in audit_actions(conn, project=SOURCE, task=task)


def test_hard_tasks_start_at_the_higher_tier(env) -> None:
    conn, state, ls = env
    task = ls.add_task(SOURCE, {"text": "tricky"}, {"difficulty": 0.95})
    easy = ls.add_task(SOURCE, {"text": "easy"}, {"difficulty": 0.1})
    info = {"label_config": CONFIG, "maximum_annotations": 2}
    handle_event(Event("TASKS_CREATED", SOURCE, info, tasks=[TaskInfo(t, ls.tasks[t]["data"], ls.tasks[t]["meta"])
                                                               for t in (task, easy)]).to_dict(), PREFIX, conn)
    run_jobs(conn)
    route = state.route(SOURCE, task)
    assert (route.status, route.required_tier, route.escalations) == ("escalated", "tier2", 0)  # not counted
    assert state.route(SOURCE, easy).status == "open" and len(ls.written("import_tasks")) == 1


def test_difficulty_predicted_by_crowdgate_sends_a_task_up_at_its_first_label(env) -> None:
    conn, state, ls = env
    task = ls.add_task(SOURCE, {"text": "tricky"}, {})
    conn.hset(f"{PREFIX}:p:{SOURCE}:difficulty", task, "0.95")  # as ml_backend.training writes it
    submit(conn, ls, task, 1, "Positive")
    route = state.route(SOURCE, task)
    assert (route.status, route.required_tier) == ("escalated", "tier2")


# -- annotators -------------------------------------------------------------------------------------------


def test_qualification_exam_pass_fail_retry_and_lock_out(env) -> None:
    conn, state, ls = env
    policy = state.policy(SOURCE)
    golds = [ls.add_task(SOURCE, {"text": f"g{i}"}, {"gold": "Positive"}) for i in range(9)]
    for g in golds[:3]:
        submit(conn, ls, g, 7, "Positive")  # 7 passes
        submit(conn, ls, g, 8, "Negative")  # 8 fails its first attempt
    assert state.annotator(SOURCE, 7, policy).tier == "tier1"
    eight = state.annotator(SOURCE, 8, policy)
    assert (eight.tier, eight.exam_attempts) == ("qualification", 1)
    assert state.exam_used(SOURCE, 8) == set(golds[:3])
    for g in golds[3:6]:
        submit(conn, ls, g, 8, "Negative")  # the retry fails too: locked out
    eight = state.annotator(SOURCE, 8, policy)
    assert (eight.tier, eight.exam_attempts) == ("qualification", 2)
    for g in golds[6:]:
        submit(conn, ls, g, 8, "Positive")  # too late
    assert state.annotator(SOURCE, 8, policy).tier == "qualification"
    assert audit_actions(conn, project=SOURCE, annotator=7, kind="action") == ["qualify"]
    assert audit_actions(conn, project=SOURCE, annotator=8, kind="action") == ["fail_exam", "fail_exam", "pause"]
    pause = AuditLog(conn, PREFIX).query(project=SOURCE, annotator=8, action="pause")[0]
    assert pause.evidence == {"edition": "community"} and not ls.written("pause")


def test_enterprise_pauses_a_locked_out_annotator(redis_conn) -> None:
    fake = FakeLabelStudio(ENTERPRISE)
    routing.set_labelstudio(fake)
    try:
        state = RoutingState(redis_conn, PREFIX)
        state.set_policy(SOURCE, POLICY.replace("max_retries: 1", "max_retries: 0"))
        for i in range(3):
            g = fake.add_task(SOURCE, {"text": f"g{i}"}, {"gold": "Positive"})
            submit(redis_conn, fake, g, 8, "Neutral")
        assert fake.written("pause") == [("pause", SOURCE, 8)]
    finally:
        routing.set_labelstudio(None)


def test_enterprise_escalation_uses_the_assignment_api(redis_conn) -> None:
    fake = FakeLabelStudio(ENTERPRISE)
    routing.set_labelstudio(fake)
    try:
        state = RoutingState(redis_conn, PREFIX)
        state.set_policy(SOURCE, POLICY)
        for user, tier in {1: "tier1", 2: "tier1", 4: "tier2"}.items():
            state.set_tier(SOURCE, user, tier)
        task = escalated_task(redis_conn, fake)
        assert fake.written("unassign")[0] == ("unassign", task) and fake.written("assign") == [("assign", task, [4])]
        assert fake.tasks[task]["overlap"] == 3 and fake.tasks[task]["is_labeled"] is False
        assert not fake.written("create_project") and state.route(SOURCE, task).tier_project is None
        written = submit(redis_conn, fake, task, 4, "Negative")
        assert written and state.route(SOURCE, task).final_label == "Negative"
        assert fake.written("unassign")[-1] == ("unassign", task)
    finally:
        routing.set_labelstudio(None)


def test_promotion_and_demotion_use_the_reliability_interval(env) -> None:
    conn, state, ls = env
    state.set_policy(SOURCE, POLICY.replace("  - {name: tier2, final_say: true}",
                                            "  - {name: tier2, promote: {min_gold: 4, min_lower: 0.6}}")
                     .replace("  - {name: tier1}", "  - {name: tier1, demote: {max_upper: 0.6}}"))
    policy = state.policy(SOURCE)
    for i in range(6):  # separate gold items, so only gold moves the record: Beta(3.5 + right, 1.5 + wrong)
        submit(conn, ls, ls.add_task(SOURCE, {"text": f"g{i}"}, {"gold": "Positive"}), 1, "Positive")
        submit(conn, ls, ls.add_task(SOURCE, {"text": f"h{i}"}, {"gold": "Positive"}), 2, "Negative")
        if i == 3:  # 4 right: lower bound 0.603 >= 0.6; 4 wrong: upper bound 0.657, not yet < 0.6
            assert state.annotator(SOURCE, 1, policy).tier == "tier2"
            assert state.annotator(SOURCE, 2, policy).tier == "tier1"
    assert state.annotator(SOURCE, 1, policy).tier == "tier2"
    assert state.annotator(SOURCE, 2, policy).tier == "qualification"  # demoted: takes the exam again
    assert audit_actions(conn, project=SOURCE, annotator=1, kind="action") == ["promote"]
    assert audit_actions(conn, project=SOURCE, annotator=2, kind="action") == ["demote", "pause"]


# -- deadlines --------------------------------------------------------------------------------------------


def test_missed_deadline_goes_one_tier_up_then_alerts(redis_conn, ls) -> None:
    state = RoutingState(redis_conn, PREFIX)
    state.set_policy(SOURCE, LADDER)
    for user, tier in {1: "tier1", 2: "tier1", 4: "tier2", 6: "reviewer"}.items():
        state.set_tier(SOURCE, user, tier)
    task = escalated_task(redis_conn, ls)
    route = state.route(SOURCE, task)
    assert routing.check_deadline(SOURCE, task, route.version, PREFIX, redis_conn) == {"action": "none"}
    later = route.escalated_at + 61
    assert routing.sweep_deadlines(PREFIX, redis_conn, now=later) == {"checked": 1}
    run_jobs(redis_conn)
    up = state.route(SOURCE, task)
    assert (up.required_tier, up.assigned, up.escalations) == ("reviewer", 6, 2)
    assert ls.tasks[route.tier_task]["is_labeled"] is True  # the tier-2 copy is closed
    assert state.loads([4, 6]) == {4: 0, 6: 1}
    out = routing.check_deadline(SOURCE, task, up.version, PREFIX, redis_conn, now=up.deadline + 1)
    assert out["action"] == "alert"
    assert audit_actions(redis_conn, project=SOURCE, task=task, kind="alert") == ["sla_breach"]
    assert routing.sweep_deadlines(PREFIX, redis_conn, now=up.deadline + 1) == {"checked": 0}  # alerted once
    assert routing.check_deadline(SOURCE, task, route.version, PREFIX, redis_conn) == {"superseded": True}


# -- failures ---------------------------------------------------------------------------------------------


def test_a_bad_decision_input_is_audited_and_retried_without_losing_the_others(env) -> None:
    conn, state, ls = env
    state.redis.hset(f"{PREFIX}:p:{SOURCE}:r:tiers", 1, "tier-that-was-removed")
    task = ls.add_task(SOURCE, {"text": "x"})
    ann = ls.add_annotation(task, 1, answer("Positive"))
    with pytest.raises(routing.RoutingError, match="unknown tier"):
        handle_event(event_for(ls, ann), PREFIX, conn)
    errors = AuditLog(conn, PREFIX).query(project=SOURCE, kind="error")
    assert len(errors) == 2 and all("unknown tier" in e.reason for e in errors)  # annotator and task decisions


def test_events_without_a_project_or_config_are_left_alone(env) -> None:
    conn, _state, _ls = env
    assert routing.after_scoring({"project": None}, PREFIX, conn)["decisions"] == []
    assert routing.after_scoring({"project": 99, "tasks": [5], "annotators": []}, PREFIX, conn)["decisions"] == []


def test_a_project_without_a_policy_is_routed_in_dry_run(redis_conn, ls, monkeypatch) -> None:
    state = RoutingState(redis_conn, PREFIX)  # no policy bound: the default one, decisions only
    task = ls.add_task(SOURCE, {"text": "x"})
    for user, label in ((1, "Positive"), (2, "Negative")):
        submit(redis_conn, ls, task, user, label)
    assert ls.writes == [] and state.route(SOURCE, task).status == "open"
    decisions = AuditLog(redis_conn, PREFIX).query(project=SOURCE, kind="decision")
    assert decisions and all(d.evidence["dry_run"] for d in decisions)
    assert audit_actions(redis_conn, project=SOURCE, kind="action") == []
    use_settings(monkeypatch, route_unbound=True)  # opting in for unbound projects acts on the default
    submit(redis_conn, ls, ls.add_task(SOURCE, {"text": "y"}), 3, "Positive")
    assert ls.written("create_project")  # prepared for escalations


def test_a_deleted_escalation_project_is_made_again(env) -> None:
    conn, state, ls = env
    first = escalated_task(conn, ls)
    gone = state.route(SOURCE, first).tier_project
    for t in [t for t, v in ls.tasks.items() if v["project"] == gone]:
        del ls.tasks[t]
    del ls.projects[gone]  # an admin deleted it

    def missing_project(project: int, tasks: list) -> list:
        if project not in ls.projects:
            raise LabelStudioError("POST", f"/api/projects/{project}/import", 404, "not found")
        return FakeLabelStudio.import_tasks(ls, project, tasks)

    ls.import_tasks = missing_project  # type: ignore[method-assign]
    second = ls.add_task(SOURCE, {"text": "again"})
    submit(conn, ls, second, 1, "Positive")
    submit(conn, ls, second, 2, "Negative")  # the escalation fails once, unlinks the project ...
    assert state.tier_project(SOURCE, "tier2") is None
    assert "escalation_project_gone" in audit_actions(conn, project=SOURCE, kind="alert")
    job = Queue(current().routing_queue, connection=conn).fetch_job(f"cgroute_t_escalate_{SOURCE}_{second}_v0")
    routing.escalate(**job.kwargs, connection=conn)  # ... and its retry makes a new one
    route = state.route(SOURCE, second)
    assert route.status == "escalated" and route.tier_project not in (None, gone)
    assert ls.tasks[route.tier_task]["project"] == route.tier_project
