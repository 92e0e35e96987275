"""Review on Community against the real thing: Label Studio 1.23.2, a private Redis, gunicorn and an RQ worker.

Two tier-1 annotators agree on three tasks, which become final; the review feed (an RQ job) sends all three to
the review project, where reviewer R finds them in their own view with the final label preloaded. R accepts
one, fixes one (their label is written back on their behalf, becomes the final label and the task's gold, so
the annotators are scored against it) and rejects one (the task is open again for one more annotator, whom
Label Studio serves it to, and never to the rejected annotators). Acceptance per annotator comes out 1/3.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
from pathlib import Path

import pytest
import redis

from core.keys import Keys
from core.labelstudio import LabelStudioClient, user_id
from ml_backend.labeling import choice_region
from qa_hooks.ledger import Ledger
from routing import review
from routing.audit import AuditLog
from routing.state import RoutingState
from scripts.seed import Seeder, label_config
from scripts.services import start_web, start_worker
from tests.conftest import crowdgate_stack
from tests.conftest import wait_for as shared_wait_for
from tests.openai_stub import OpenAIStub, last_user_text

pytestmark = pytest.mark.integration
SECRET = "review-secret"
PREFIX = "rv"
PASSWORD = "crowdgate-Review-1"
POLICY = """
version: 1
qualification: null
tiers:
  - {name: tier1, wage: 0.05}
  - {name: reviewer, wage: 0.15, final_say: true}
overlap: {min: 2, max: 2, stop: {rule: fixed}}
escalation: {agreement_below: null, difficulty_above: null}
review: {rate: 1.0, random_share: 0.0, new_annotator_tasks: 0}
sla: {deadline_seconds: null}
"""
CONFIG = label_config("text_classification")
wait_for = functools.partial(shared_wait_for, timeout=40.0, interval=0.1)


def answer(label: str) -> list[dict]:
    return [choice_region(CONFIG, "sentiment", [label])]


def verdict(choice: str, label: str) -> list[dict]:
    return [*answer(label), {"from_name": review.REVIEW_CONTROL, "to_name": review.REVIEW_REASON,
                             "type": "choices", "value": {"choices": [choice]}}]


@pytest.fixture(scope="module")
def stack(redis_service, log_dir, labelstudio):
    with crowdgate_stack(redis_service, log_dir, labelstudio, PREFIX, SECRET) as running:
        yield running


def new_project(labelstudio, web, connection, title: str, policy: str, prefix: str, tmp_path: Path) -> int:
    seeder = Seeder(labelstudio.url, labelstudio.token)
    project = seeder.create_project(title, CONFIG, maximum_annotations=2)
    seeder.connect_webhook(project, f"{web.url}/hooks/labelstudio", SECRET)
    policy_file = tmp_path / "review.policy.yaml"
    policy_file.write_text(policy)
    url = connection.connection_pool.connection_kwargs
    redis_url = f"redis://{url['host']}:{url['port']}/{url.get('db', 0)}"
    done = subprocess.run([str(Path(sys.executable).parent / "crowdgate-policy"), "--redis-url", redis_url,
                           "--prefix", prefix, "set", str(project), str(policy_file)],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return project


def test_accept_fix_reject_on_community(labelstudio, stack, tmp_path: Path) -> None:
    web, _worker, connection = stack
    admin = LabelStudioClient(labelstudio.url, labelstudio.token)
    people = {w: admin.invite_annotator(f"{w.lower()}@review.test", PASSWORD) for w in "ABCR"}
    a, b, c, r = people["A"], people["B"], people["C"], people["R"]
    seeder = Seeder(labelstudio.url, labelstudio.token)
    project = new_project(labelstudio, web, connection, "review on community", POLICY, PREFIX, tmp_path)
    state = RoutingState(connection, PREFIX)
    for person in (a, b, c):
        state.set_tier(project, person.id, "tier1")
    state.set_tier(project, r.id, "reviewer")

    tasks = seeder.import_tasks(project, [{"data": {"text": f"review item {i}: lovely"}} for i in range(3)])
    for task in tasks:
        seeder.annotate(task, a.id, answer("Positive"), lead_time=2.0)
        seeder.annotate(task, b.id, answer("Positive"), lead_time=2.0)
    for task in tasks:
        wait_for(lambda task=task: state.route(project, task).status == "final", what=f"task {task} final")

    # The feed job (enqueued by the router after the finals) sends all three to R's view of the review project.
    as_r = admin.as_user(r.token)

    def review_items():
        items = review.review_status(connection, project, PREFIX)["items"]
        return items if items == 3 else None

    wait_for(review_items, what="three review items")
    review_project = review.review_status(connection, project, PREFIX)["review_project"]
    view = state.view(review_project, r.email)
    assert view is not None
    served = {}
    for _ in range(3):
        task = as_r.next_task(review_project, view)
        assert task is not None and task["data"]["assigned_to"] == r.email
        source = task["data"]["crowdgate_source_task"]
        assert "Final label under review: Positive" in task["data"][review.REVIEW_REASON]
        served[source] = task
        choice, label = {tasks[0]: ("accept", "Positive"), tasks[1]: ("fix", "Negative"),
                         tasks[2]: ("reject", "Positive")}[source]
        as_r.create_annotation(task["id"], verdict(choice, label), lead_time=4.0)
    assert set(served) == set(tasks)
    # The reviewer sees the final label preloaded: the review project shows its own model version's predictions.
    shown = admin.project(review_project)
    assert shown["show_collab_predictions"] is True and shown["model_version"] == review.REVIEW_MODEL_VERSION

    def verdicts():
        status = review.review_status(connection, project, PREFIX)
        return status if status["by_verdict"] == {"accept": 1, "fix": 1, "reject": 1} else None

    wait_for(verdicts, what="three verdicts applied")

    accepted = admin.task(tasks[0])
    assert accepted["meta"]["crowdgate"]["review"]["verdict"] == "accept"
    assert accepted["meta"]["crowdgate"]["final"]["label"] == "Positive"

    fixed = admin.task(tasks[1])
    final = fixed["meta"]["crowdgate"]["final"]
    assert final["label"] == "Negative" and final["decided_by"] == [r.id]
    mine = [x for x in fixed["annotations"] if user_id(x["completed_by"]) == r.id]
    assert len(mine) == 1 and mine[0]["result"][0]["value"]["choices"] == ["Negative"]
    assert state.route(project, tasks[1]).final_label == "Negative"
    ledger = Ledger(connection, PREFIX)
    assert ledger.gold(project, tasks[1], CONFIG)[0]["value"]["choices"] == ["Negative"]
    # The originals were scored against the fix: A's gold record holds one wrong answer.
    wait_for(lambda: ledger.reliability(project, a.id).gold_n >= 1, what="A scored against the fix")
    assert ledger.reliability(project, a.id).gold_accuracy == 0.0

    rejected = admin.task(tasks[2])
    assert rejected["is_labeled"] is False and rejected["overlap"] == 3
    assert "final" not in rejected["meta"]["crowdgate"] and rejected["meta"]["crowdgate"]["rejected"]["by"] == r.id
    assert state.route(project, tasks[2]).status == "open"
    # Back in the queue for another annotator, never for the rejected ones.
    for person in (a, b):
        assert admin.as_user(person.token).next_task(project) is None
    again = admin.as_user(c.token).next_task(project)
    assert again is not None and again["id"] == tasks[2]

    scores = review.acceptance(connection, project, PREFIX)
    assert (scores[a.id].reviewed, scores[a.id].accepted) == (3, 1)
    assert (scores[b.id].reviewed, scores[b.id].accepted) == (3, 1)
    assert scores[a.id].low < 1 / 3 < scores[a.id].high
    assert r.id not in scores

    audit = AuditLog(connection, PREFIX)
    actions = [x.action for x in audit.query(project=project)]
    for expected in ("create_review_project", "review:low_agreement", "send_to_review", "review:accept",
                     "review:fix", "review:reject"):
        assert expected in actions, (expected, actions)


LLM_POLICY = POLICY.replace("review: {rate: 1.0, random_share: 0.0, new_annotator_tasks: 0}",
                            "review: {rate: 0.0, new_annotator_tasks: 0, llm_audit_rate: 1.0, "
                            "low_agreement_below: 0.0}")


def sarcasm_judge(body: dict) -> dict:
    text = last_user_text(body)
    if "sarcastic" in text:
        return {"follows_guideline": False, "reason": "sarcasm: the text is a complaint"}
    return {"follows_guideline": True, "reason": "praise labelled Positive"}


def test_llm_disagreement_reaches_the_reviewer_with_its_reason(labelstudio, redis_service, log_dir,
                                                                tmp_path: Path) -> None:
    """The worker's LLM audit (an OpenAI-compatible stub over HTTP) judges every human label; where it disagrees,
    the task is in the reviewer's queue with the LLM's reason, and nowhere else."""
    prefix = "rl"
    with OpenAIStub(sarcasm_judge) as stub:
        env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": SECRET,
               "CROWDGATE_KEY_PREFIX": prefix, "LABEL_STUDIO_URL": labelstudio.url,
               "LABEL_STUDIO_API_KEY": labelstudio.token, "OPENAI_BASE_URL": stub.base_url,
               "CROWDGATE_LLM_MODEL": "judge-stub", "CROWDGATE_LLM_PRICE_IN": "1.0", "CROWDGATE_LLM_PRICE_OUT": "2.0",
               # queues of its own: the module's stack worker (no LLM configured) must not take these audit jobs
               "CROWDGATE_EVENTS_QUEUE": f"{prefix}-events", "CROWDGATE_ROUTING_QUEUE": f"{prefix}-routing",
               "CROWDGATE_ML_QUEUE": f"{prefix}-ml"}
        web = start_web(env, log_dir)
        try:
            worker = start_worker(env, log_dir)
            try:
                connection = redis.Redis.from_url(redis_service.url)
                admin = LabelStudioClient(labelstudio.url, labelstudio.token)
                people = {w: admin.invite_annotator(f"{w.lower()}@llm-review.test", PASSWORD) for w in "ABR"}
                a, b, r = people["A"], people["B"], people["R"]
                project = new_project(labelstudio, web, connection, "llm audit", LLM_POLICY, prefix, tmp_path)
                state = RoutingState(connection, prefix)
                for person in (a, b):
                    state.set_tier(project, person.id, "tier1")
                state.set_tier(project, r.id, "reviewer")
                seeder = Seeder(labelstudio.url, labelstudio.token)
                tasks = seeder.import_tasks(project, [{"data": {"text": "sarcastic: great, just great, it broke"}},
                                                      {"data": {"text": "a lovely, sunny room"}}])
                for task in tasks:
                    seeder.annotate(task, a.id, answer("Positive"), lead_time=2.0)
                    seeder.annotate(task, b.id, answer("Positive"), lead_time=2.0)

                def items():
                    status = review.review_status(connection, project, prefix)
                    return status if status["by_rule"].get("llm_disagrees") == 1 else None

                status = wait_for(items, timeout=90, what="the LLM-disputed task in review")
                review_project = status["review_project"]
                served = admin.as_user(r.token).next_task(review_project, state.view(review_project, r.email))
                assert served is not None and served["data"]["crowdgate_source_task"] == tasks[0]
                assert "sarcasm: the text is a complaint" in served["data"][review.REVIEW_REASON]
                assert status["items"] == 1  # the task the LLM agreed with is not reviewed (rate 0)
                # the disputed task can reach review before the last of the four labels is judged
                audited = wait_for(lambda: (found := connection.hgetall(Keys(prefix).llm_audit(project)))
                                   and len(found) >= 4 and found, timeout=90, what="every human label judged")
                assert len(audited) == 4
                assert stub.completions_ok() >= 4  # every human label judged once
                assert float(connection.get(Keys(prefix).llm_spend(project)) or 0) > 0  # costs counted
            finally:
                worker.stop()
        finally:
            web.stop()
