"""The LLM audit of human work: an LLM judges whether a submitted label follows the guideline for its item.

Workforce teams sample human annotations and compare them with an LLM's judgement ("LLM as a judge", Zheng et
al. 2023, *Judging LLM-as-a-Judge with MT-Bench and Chatbot Arena*). :class:`LLMAuditor` asks the project's LLM,
through the pre-labelling client (:meth:`ml_backend.llm.LLMPredictor.complete_json`: the same structured-output
modes, rate limits, retries, redaction and per-project budget cap, so the audit's cost is counted and capped with
the pre-labels'), for a structured verdict ``{"follows_guideline": bool, "reason": str}``.

:func:`audit_submissions` is the RQ job (on the ML queue) that routing enqueues by name for the sampled
submissions (``routing.review_sampling.select_for_audit``, rate ``review.llm_audit_rate`` in the policy). Each
verdict is stored under ``Keys.llm_audit``; a disagreement goes to the review queue with the LLM's reason
attached (``routing.review`` reads the verdicts when it feeds the queue, and the job asks it to look again at a
task it has already passed over).
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import dataclass
from typing import Any

import redis

from core.keys import Keys
from core.settings import current
from ml_backend.llm import BudgetExceeded, LLMPredictor, TaskOutcome
from ml_backend.redaction import Redaction
from ml_backend.structured import build_plan
from qa_hooks.jobs import current_connection
from qa_hooks.store import SubmissionStore

__all__ = ["REASON_MAX_CHARS", "VERDICT_SCHEMA", "AuditVerdict", "LLMAuditor", "audit_submissions"]

log = logging.getLogger(__name__)

REASON_MAX_CHARS = 300
VERDICT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "follows_guideline": {"type": "boolean"},
        "reason": {"type": "string", "maxLength": REASON_MAX_CHARS},
    },
    "required": ["follows_guideline", "reason"],
    "additionalProperties": False,
}
# routing's job that sends an LLM-disputed task to review once it was passed over; named, not imported.
REVIEW_JOB = "routing.review.llm_disagreement"

SYSTEM = (
    "You audit the work of human annotators. You get the labelling guideline, one item and the label a human "
    "gave it. Decide whether the label follows the guideline for this item. Answer only with a JSON object "
    '{"follows_guideline": true or false, "reason": "one short sentence"}.'
)


@dataclass(frozen=True)
class AuditVerdict:
    """``follows_guideline`` None when no verdict came (``status``: budget, invalid or error)."""

    unique_id: str
    follows_guideline: bool | None
    reason: str
    status: str  # ok | budget | invalid | error
    model: str
    cost_usd: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def to_dict(self) -> dict[str, Any]:
        return self.__dict__.copy()


class LLMAuditor:
    """Judges human labels with the LLM (see the module docstring)."""

    def __init__(self, predictor: LLMPredictor | None = None) -> None:
        self.predictor = predictor or LLMPredictor()

    def messages(self, data: dict[str, Any], label_config: str, result: list[dict[str, Any]],
                 instructions: str = "") -> list[dict[str, Any]]:
        """The audit prompt: guideline, item and the human answer (personal data masked as for pre-labels)."""
        plan = build_plan(label_config, vision=self.predictor.settings.vision)
        redaction = Redaction(self.predictor.settings.redact)
        item = redaction.mask_data(plan.object_values(data))
        answer = plan.answer_from_result(result)
        guideline = redaction.mask(instructions) or "Label each item with the option that fits it best."
        user = (f"Guideline:\n{guideline}\n\nItem:\n{json.dumps(item, ensure_ascii=False)}\n\n"
                f"The human's label:\n{json.dumps(answer, ensure_ascii=False)}\n\n"
                "Does this label follow the guideline for this item?")
        return [{"role": "system", "content": SYSTEM}, {"role": "user", "content": user}]

    def judge(self, unique_id: str, data: dict[str, Any], label_config: str, result: list[dict[str, Any]], *,
              project: str, instructions: str = "") -> AuditVerdict:
        """The LLM's verdict on one human label; never raises for the model's or the budget's sake."""
        outcome = TaskOutcome(unique_id, "ok")
        model = self.predictor.settings.model
        try:
            answer = self.predictor.complete_json(project, self.messages(data, label_config, result, instructions),
                                                  VERDICT_SCHEMA, outcome)
        except BudgetExceeded:
            return AuditVerdict(unique_id, None, "LLM budget used up", "budget", model)
        except ValueError as exc:
            return self._verdict(unique_id, None, f"no JSON in the answer: {exc}", "invalid", outcome)
        except Exception as exc:  # an outage after the client's retries: no verdict, the job goes on
            log.warning("LLM audit of %s failed: %s", unique_id, exc)
            return self._verdict(unique_id, None, f"{type(exc).__name__}: {exc}"[:REASON_MAX_CHARS], "error",
                                 outcome)
        follows = answer.get("follows_guideline") if isinstance(answer, dict) else None
        reason = answer.get("reason") if isinstance(answer, dict) else None
        if not isinstance(follows, bool) or not isinstance(reason, str):
            return self._verdict(unique_id, None, f"answer outside the schema: {str(answer)[:200]}", "invalid",
                                 outcome)
        return self._verdict(unique_id, follows, reason.strip()[:REASON_MAX_CHARS], "ok", outcome)

    def _verdict(self, unique_id: str, follows: bool | None, reason: str, status: str,
                 outcome: TaskOutcome) -> AuditVerdict:
        return AuditVerdict(unique_id, follows, reason, status, self.predictor.settings.model,
                            round(outcome.cost_usd, 8), outcome.prompt_tokens, outcome.completion_tokens)


_auditor: LLMAuditor | None = None


def _default_auditor() -> LLMAuditor:
    global _auditor
    if _auditor is None:
        _auditor = LLMAuditor()
    return _auditor


def audit_submissions(project: int, unique_ids: list[str], reasons: dict[str, str] | None = None,
                      prefix: str = "cg", connection: redis.Redis | None = None,
                      auditor: LLMAuditor | None = None) -> dict[str, Any]:
    """RQ job: judge each sampled submission, store the verdicts, and hand disagreements to review."""
    conn = connection or current_connection()
    keys = Keys(prefix)
    store = SubmissionStore(conn, prefix)
    auditor = auditor or _default_auditor()
    info = store.project_info(project)
    config = info.get("label_config")
    if not config:
        return {"skipped": "no label config known for the project"}
    instructions = info.get("expert_instruction") or ""
    counts: dict[str, int] = {}
    disagreements: list[dict[str, Any]] = []
    for uid in unique_ids:
        if conn.hexists(keys.llm_audit(project), uid):
            counts["already"] = counts.get("already", 0) + 1
            continue
        sub = store.submission(project, uid)
        if sub is None or sub.was_cancelled:
            counts["gone"] = counts.get("gone", 0) + 1
            continue
        task = store.task_info(project, sub.task)
        verdict = auditor.judge(uid, task.data if task else {}, config, sub.result, project=str(project),
                                instructions=instructions)
        counts[verdict.status] = counts.get(verdict.status, 0) + 1
        if verdict.status == "budget":
            break  # the cap holds for the rest of the batch too
        if verdict.status != "ok":
            continue
        record = {**verdict.to_dict(), "task": sub.task, "annotator": sub.annotator, "at": time.time(),
                  "sampled_as": (reasons or {}).get(uid)}
        conn.hset(keys.llm_audit(project), uid, json.dumps(record))
        if verdict.follows_guideline is False:
            disagreements.append(record)
    if disagreements:
        from rq import Queue  # routing's review job, by name (ml_backend never imports routing)

        queue = Queue(current().routing_queue, connection=conn)
        for record in disagreements:
            queue.enqueue(REVIEW_JOB, kwargs={"project": project, "task": record["task"],
                                              "reason": record["reason"], "prefix": prefix},
                          job_id=f"cgroute_{prefix}_llmreview_{project}_{record['task']}".replace(":", "-"),
                          result_ttl=24 * 3600, failure_ttl=30 * 24 * 3600)
    return {"counts": counts, "disagreements": [(d["task"], d["annotator"], d["reason"]) for d in disagreements]}
