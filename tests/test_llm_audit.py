"""The LLM audit of human work against the repo's OpenAI stub over real HTTP, with a private Redis."""

from __future__ import annotations

import json

import pytest
from rq import Queue

from core.keys import Keys
from ml_backend.audit import VERDICT_SCHEMA, LLMAuditor, audit_submissions
from ml_backend.cache import MemoryCache
from ml_backend.labeling import choice_region
from ml_backend.llm import LLMPredictor, LLMSettings
from qa_hooks.events import Event, Submission, TaskInfo
from qa_hooks.store import SubmissionStore
from scripts.seed import label_config
from tests.openai_stub import OpenAIStub, last_user_text, schema_of

CONFIG = label_config("text_classification")
GUIDELINE = "Choose Negative for complaints."


def judge_by_text(body: dict) -> dict:
    text = last_user_text(body)
    wrong = "awful" in text and '"Positive"' in text
    return {"follows_guideline": not wrong, "reason": "a complaint labelled Positive" if wrong else "fits"}


def auditor(stub: OpenAIStub, **extra) -> LLMAuditor:
    settings = LLMSettings(base_url=stub.base_url, model="judge-1", max_retries=0, price_in=1.0, price_out=2.0,
                           **extra)
    return LLMAuditor(LLMPredictor(settings, cache=MemoryCache()))


def result(label: str) -> list[dict]:
    return [choice_region(CONFIG, "sentiment", [label])]


def test_a_structured_verdict_with_its_reason_and_cost() -> None:
    with OpenAIStub(judge_by_text) as stub:
        judge = auditor(stub)
        bad = judge.judge("u1", {"text": "The service was awful."}, CONFIG, result("Positive"), project="7",
                          instructions=GUIDELINE)
        good = judge.judge("u2", {"text": "The service was awful."}, CONFIG, result("Negative"), project="7",
                           instructions=GUIDELINE)
        body = stub.requests[0]
    assert (bad.status, bad.follows_guideline, bad.reason) == ("ok", False, "a complaint labelled Positive")
    assert (good.status, good.follows_guideline) == ("ok", True)
    assert schema_of(body) == VERDICT_SCHEMA
    prompt = last_user_text(body)
    assert GUIDELINE in prompt and "The service was awful." in prompt and "Positive" in prompt
    assert bad.prompt_tokens > 0 and bad.cost_usd > 0
    assert judge.predictor.cache.spend("7") == pytest.approx(bad.cost_usd + good.cost_usd)


def test_the_budget_caps_audits_like_prelabels() -> None:
    with OpenAIStub(judge_by_text) as stub:
        judge = auditor(stub, budget_usd=1e-9)
        verdict = judge.judge("u1", {"text": "fine"}, CONFIG, result("Positive"), project="7")
        assert stub.calls == 0
    assert verdict.status == "budget" and verdict.follows_guideline is None


def test_an_answer_outside_the_schema_is_no_verdict() -> None:
    with OpenAIStub(lambda body: {"verdict": "maybe"}) as stub:
        verdict = auditor(stub).judge("u1", {"text": "fine"}, CONFIG, result("Positive"), project="7")
    assert verdict.status == "invalid" and verdict.follows_guideline is None


def test_an_outage_is_no_verdict_and_no_exception() -> None:
    with OpenAIStub(judge_by_text) as stub:
        stub.fail_always(503)
        verdict = auditor(stub).judge("u1", {"text": "fine"}, CONFIG, result("Positive"), project="7")
    assert verdict.status == "error" and verdict.follows_guideline is None
    assert "503" in verdict.reason or "Error" in verdict.reason


def submission(task: int, annotator: int, label: str) -> Submission:
    return Submission(project=5, task=task, annotation_id=task * 10 + annotator, unique_id=f"uid-{task}-{annotator}",
                      annotator=annotator, result=result(label), updated_at="2026-01-01T00:00:00Z",
                      created_at="2026-01-01T00:00:00Z", lead_time=3.0)


def test_the_job_stores_verdicts_and_hands_disagreements_to_review(redis_conn) -> None:
    store = SubmissionStore(redis_conn, "ta")
    subs = [submission(1, 1, "Positive"), submission(1, 2, "Negative"), submission(2, 1, "Negative")]
    texts = {1: "The food was awful.", 2: "Lovely view."}
    store.apply(Event("ANNOTATION_CREATED", 5, {"label_config": CONFIG, "expert_instruction": GUIDELINE},
                      submissions=subs, tasks=[TaskInfo(t, {"text": x}) for t, x in texts.items()]))
    with OpenAIStub(judge_by_text) as stub:
        out = audit_submissions(5, [s.unique_id for s in subs], {"uid-1-1": "low_agreement"}, prefix="ta",
                                connection=redis_conn, auditor=auditor(stub))
        again = audit_submissions(5, ["uid-1-1"], prefix="ta", connection=redis_conn, auditor=auditor(stub))
        assert stub.calls == 3  # judged once each
    assert out["counts"] == {"ok": 3} and out["disagreements"] == [(1, 1, "a complaint labelled Positive")]
    assert again["counts"] == {"already": 1}
    stored = {k.decode(): json.loads(v) for k, v in redis_conn.hgetall(Keys("ta").llm_audit(5)).items()}
    assert stored["uid-1-1"]["follows_guideline"] is False and stored["uid-1-1"]["sampled_as"] == "low_agreement"
    assert stored["uid-1-2"]["follows_guideline"] is True and stored["uid-1-1"]["model"] == "judge-1"
    jobs = Queue("crowdgate-routing", connection=redis_conn).jobs
    assert [(j.func_name, j.kwargs["task"]) for j in jobs] == [("routing.review.llm_disagreement", 1)]
    assert jobs[0].kwargs["reason"] == "a complaint labelled Positive"
