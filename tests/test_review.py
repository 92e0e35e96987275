"""routing.review without Label Studio: the review config, verdict parsing, the feed's picks and the audit's
enqueueing, on a private Redis (jobs are enqueued, not run; tests/test_review_integration.py runs them)."""

from __future__ import annotations

import json

from rq import Queue

from core.keys import Keys
from core.label_config import LabelConfig
from ml_backend.labeling import choice_region
from qa_hooks.events import Event, Submission, TaskInfo
from qa_hooks.ledger import Ledger
from qa_hooks.store import SubmissionStore
from routing import review
from routing.runtime import Context
from routing.state import RoutingState
from scripts.seed import label_config

CONFIG = label_config("text_classification")
PREFIX = "tr"
POLICY = """
qualification: null
tiers: [{name: tier1}, {name: reviewer, final_say: true}]
escalation: {difficulty_above: null}
review: {rate: 0.5, random_share: 0.0, new_annotator_tasks: 0, llm_audit_rate: 1.0}
"""


def result(label: str) -> list[dict]:
    return [choice_region(CONFIG, "sentiment", [label])]


def test_review_config_adds_the_verdict_choice_to_the_source_config() -> None:
    parsed = LabelConfig.parse(review.review_config(CONFIG))
    control = parsed.control(review.REVIEW_CONTROL)
    assert control.labels == ("accept", "fix", "reject")
    assert parsed.control("sentiment").labels == LabelConfig.parse(CONFIG).control("sentiment").labels
    assert review.REVIEW_REASON in {o.name for o in parsed.objects}


def test_verdict_of_splits_the_choice_from_the_label() -> None:
    negative, positive = result("Negative"), result("Positive")
    answer = [*negative, {"from_name": review.REVIEW_CONTROL, "to_name": review.REVIEW_REASON,
                                    "type": "choices", "value": {"choices": ["fix"]}}]
    choice, label = review.verdict_of(answer)
    assert choice == "fix" and label == negative
    assert review.verdict_of(positive) == (None, positive)


def seed(conn) -> tuple[Context, list[int]]:
    store = SubmissionStore(conn, PREFIX)
    state = RoutingState(conn, PREFIX)
    state.set_policy(9, POLICY)
    state.set_tier(9, 100, "reviewer")
    state.cache_users({100: "r@x", 1: "a@x", 2: "b@x"})
    labels = {1: ("Positive", "Positive"), 2: ("Positive", "Negative"), 3: ("Negative", "Negative"),
              4: ("Positive", "Positive")}
    subs = [Submission(9, t, t * 10 + a, f"u-{t}-{a}", a, result(lab), "2026-01-01T00:00:00Z",
                       "2026-01-01T00:00:00Z", 2.0) for t, pair in labels.items() for a, lab in zip((1, 2), pair,
                                                                                                    strict=True)]
    store.apply(Event("ANNOTATION_CREATED", 9, {"label_config": CONFIG}, submissions=subs,
                      tasks=[TaskInfo(t, {"text": f"item {t}"}) for t in labels]))
    ledger = Ledger(conn, PREFIX)
    for t in labels:
        ledger.rescore(9, t)
        state.update_route(9, t, status="final", final_label=labels[t][0])
    return Context(conn, PREFIX), list(labels)


def test_feed_takes_the_llm_disputed_task_and_the_lowest_agreement_within_the_rate(redis_conn) -> None:
    seed(redis_conn)
    redis_conn.hset(Keys(PREFIX).llm_audit(9), "u-4-1", json.dumps({"follows_guideline": False,
                                                                     "reason": "item 4 is a complaint"}))
    assert review.feed_review(9, PREFIX, redis_conn)["considered"] == 0  # none decided final since the last feed
    out = review.feed_review(9, PREFIX, redis_conn, seed=0, scan_all=True)
    # four finished tasks, rate 0.5: two by the budget (task 2 disagrees: lowest first), task 4 always
    assert out["considered"] == 4 and out["budget"] == 2
    picked = dict(out["picked"])
    assert picked["4"] == "llm_disagrees" and picked["2"] == "low_agreement" and len(picked) == 3
    jobs = Queue("crowdgate-routing", connection=redis_conn).jobs
    sent = {j.kwargs["task"]: j.kwargs for j in jobs if j.func_name == "routing.review.send_to_review"}
    assert set(sent) == {2, 4, int(next(t for t, r in picked.items() if t not in ("2", "4")))}
    assert "item 4 is a complaint" in sent[4]["reason"]
    # Looked at once: a second feed finds nothing new.
    assert review.feed_review(9, PREFIX, redis_conn, scan_all=True)["considered"] == 0
    assert review.review_status(redis_conn, 9, PREFIX)["considered"] == 4


def test_no_reviewers_no_feed(redis_conn) -> None:
    ctx, _ = seed(redis_conn)
    ctx.state.set_tier(9, 100, "tier1")
    assert "nobody" in review.feed_review(9, PREFIX, redis_conn, scan_all=True)["skipped"]


def test_after_routing_enqueues_the_feed_and_the_llm_audit(redis_conn) -> None:
    ctx, tasks = seed(redis_conn)
    policy = ctx.state.policy(9)
    summary = {"decisions": [{"task": 1, "action": "final"}], "enqueued": []}
    review.after_routing(ctx, policy, 9, tasks, summary)
    ml_jobs = Queue("crowdgate-ml", connection=redis_conn).jobs
    assert [j.func_name for j in ml_jobs] == ["ml_backend.audit.audit_submissions"]
    assert sorted(ml_jobs[0].kwargs["unique_ids"]) == sorted(f"u-{t}-{a}" for t in tasks for a in (1, 2))
    assert ml_jobs[0].kwargs["reasons"]["u-2-1"] == "low_agreement"
    assert any("reviewfeed" in j for j in summary["enqueued"])  # delayed: in RQ's scheduled registry
    assert redis_conn.smembers(Keys(PREFIX).review_pending(9)) == {b"1"}
    # The feed looks at what was decided final since the last one, and empties the set.
    assert review.feed_review(9, PREFIX, redis_conn)["considered"] == 1
    assert redis_conn.scard(Keys(PREFIX).review_pending(9)) == 0
    # Each submission is sampled once.
    review.after_routing(ctx, policy, 9, tasks, {"decisions": [], "enqueued": []})
    assert len(Queue("crowdgate-ml", connection=redis_conn).jobs) == 1


def test_acceptance_counts_once_per_verdict(redis_conn) -> None:
    ctx = Context(redis_conn, PREFIX)
    record = {"verdict": "accept"}
    assert review.record_verdict(ctx, 50, "v1", 9, {1: True, 2: False}, record)
    assert not review.record_verdict(ctx, 50, "v1", 9, {1: True, 2: False}, record)
    scores = review.acceptance(redis_conn, 9, PREFIX)
    assert (scores[1].reviewed, scores[1].accepted, scores[1].score) == (1, 1, 1.0)
    assert (scores[2].reviewed, scores[2].accepted, scores[2].score) == (1, 0, 0.0)
    assert scores[2].low == 0.0 and 0 < scores[2].high < 1


def test_cli_status_and_acceptance(redis_conn, redis_service, monkeypatch) -> None:
    from click.testing import CliRunner

    from routing.review_cli import review as review_cli

    seed(redis_conn)
    review.feed_review(9, PREFIX, redis_conn, seed=0, scan_all=True)
    ctx = Context(redis_conn, PREFIX)
    review.record_verdict(ctx, 50, "v1", 9, {1: True, 2: False}, {"verdict": "fix"})
    review.record_verdict(ctx, 50, "v2", 9, {1: True, 2: True}, {"verdict": "accept"})
    monkeypatch.setenv("REDIS_URL", redis_service.url)
    monkeypatch.setenv("CROWDGATE_KEY_PREFIX", PREFIX)
    runner = CliRunner()
    status = runner.invoke(review_cli, ["status", "9"])
    assert status.exit_code == 0, status.output
    assert "finished tasks looked at: 4; sent to review: 0 (2 by the rate)" in status.output, status.output
    assert "rate 0.5, random share 0.0, LLM audit rate 1.0" in status.output
    as_json = json.loads(runner.invoke(review_cli, ["status", "9", "--json"]).output)
    assert as_json["considered"] == 4 and as_json["policy"]["rate"] == 0.5
    shown = runner.invoke(review_cli, ["acceptance", "9"])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    assert lines[0].startswith("b@x") and "1/2 accepted  50%" in lines[0]
    assert lines[1].startswith("a@x") and "2/2 accepted  100%" in lines[1]
    rows = [json.loads(x) for x in runner.invoke(review_cli, ["acceptance", "9", "--json"]).output.splitlines()]
    assert [(r["annotator"], r["accepted"], r["reviewed"]) for r in rows] == [(2, 1, 2), (1, 2, 2)]
    assert "no reviewed annotations" in runner.invoke(review_cli, ["acceptance", "8"]).output


def test_dry_run_audits_nothing_and_marks_nothing(redis_conn) -> None:
    ctx, tasks = seed(redis_conn)
    ctx.dry_run = True
    summary = {"decisions": [{"task": 1, "action": "final"}], "enqueued": []}
    review.after_routing(ctx, ctx.state.policy(9), 9, tasks, summary)
    assert summary["enqueued"] == [] and Queue("crowdgate-ml", connection=redis_conn).jobs == []
    assert redis_conn.scard(Keys(PREFIX).llm_audit_considered(9)) == 0


def test_a_late_llm_verdict_sends_a_passed_over_task_once(redis_conn) -> None:
    seed(redis_conn)
    assert "feed will see it" in review.llm_disagreement(9, 1, "wrong", PREFIX, redis_conn)["skipped"]
    review.feed_review(9, PREFIX, redis_conn, seed=0, scan_all=True)  # rate 0.5: tasks 2 and one more sent
    sent_before = {j.kwargs["task"] for j in Queue("crowdgate-routing", connection=redis_conn).jobs}
    late = next(t for t in (1, 3, 4) if t not in sent_before)
    out = review.llm_disagreement(9, late, "a late verdict", PREFIX, redis_conn)
    assert out["enqueued"]
    jobs = {j.kwargs["task"]: j.kwargs for j in Queue("crowdgate-routing", connection=redis_conn).jobs}
    assert jobs[late]["rule"] == "llm_disagrees" and "a late verdict" in jobs[late]["reason"]
    # A task the feed already sent is not sent twice (one job id per task).
    again = next(iter(sent_before))
    assert review.llm_disagreement(9, again, "same", PREFIX, redis_conn)["enqueued"] is None
