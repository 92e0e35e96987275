"""LLM pre-labelling engine for the ML backend, over any OpenAI-compatible chat-completions endpoint.

:class:`LLMPredictor` turns Label Studio tasks plus a label config into predictions
(``{"result", "score", "model_version"}``, one per task, None when not ready or not valid):

* structured output in three modes, found per endpoint and remembered: ``json_schema`` (OpenAI, vLLM),
  ``json_object`` with an inline ``schema`` (llama.cpp's server, which answers 500 to ``json_schema``), and
  plain prompting with JSON extraction when the server refuses both;
* every answer validated against the config (see :mod:`ml_backend.structured`), invalid parts dropped and
  counted;
* ``score`` from token log-probabilities when the server returns them (:mod:`ml_backend.confidence`), else
  agreement of extra samples at temperature > 0;
* a bounded thread pool, requests/tokens-per-minute buckets, our own retry policy (the client's is off), an
  overall deadline after which unfinished tasks keep running in the background and land in the cache, and a
  breaker that pauses calls to an endpoint whose tasks keep failing on an outage (the other models answer);
* a cache keyed by model, prompt version, config, task data, instructions and examples;
* token usage and cost per task, a per-project budget cap, and redaction of personal data before text
  leaves for a non-local endpoint.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from concurrent.futures import wait as wait_futures
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlparse

import openai

from core.settings import Settings, current
from ml_backend.cache import PredictionCache, cache_from_env, cache_key
from ml_backend.confidence import TOP_LOGPROBS, logprob_confidence
from ml_backend.prompt import PROMPT_VERSION, build_messages
from ml_backend.ratelimit import RateLimiter
from ml_backend.redaction import ALL_KINDS, Redaction, parse_kinds
from ml_backend.structured import ConfigPlan, ParsedAnswer, build_plan

log = logging.getLogger(__name__)

MODES = ("json_schema", "json_object", "prompt")
# A mode refused by an endpoint is retried after this long (a refusal could have been an outage).
REFUSAL_TTL_S = 600.0
PROBE_WAIT_S = 5.0


def shown_url(url: str) -> str:
    """``url`` as logs may show it: without user, password, query and fragment (where credentials can hide)."""
    parts = urlparse(url)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{parts.port}" if parts.port else host
    return parts._replace(netloc=netloc, query="", fragment="").geturl()


def _is_local(url: str) -> bool:
    host = (urlparse(url).hostname or "").lower()
    return host in ("localhost", "::1") or host.startswith("127.") or host.endswith(".local")


@dataclass
class LLMSettings:
    """Engine configuration; :meth:`from_settings` builds it from crowdgate's settings."""

    # Defaults that are settings come from core.settings, so each has one value.
    base_url: str = Settings.openai_base_url
    api_key: str = ""
    model: str = "gpt-4o-mini"  # only a default for tests: the LLM is on only when CROWDGATE_LLM_MODEL names one
    mode: str = Settings.llm_mode  # auto | json_schema | json_object | prompt
    concurrency: int = Settings.llm_concurrency
    rpm: float = Settings.llm_rpm  # requests per minute, 0 = unlimited
    tpm: float = Settings.llm_tpm  # tokens per minute, 0 = unlimited
    deadline_s: float = Settings.llm_deadline_s  # inside Label Studio's 100 s predict timeout
    samples: int = Settings.llm_samples  # answers compared for agreement when the server gives no logprobs
    sample_temperature: float = 0.7
    price_in: float = Settings.llm_price_in  # USD per 1M prompt tokens
    price_out: float = Settings.llm_price_out  # USD per 1M completion tokens
    budget_usd: float = Settings.llm_budget_usd  # per project, 0 = no cap
    redact: tuple[str, ...] = ()  # kinds masked before text leaves (see ml_backend.redaction)
    vision: bool = Settings.llm_vision  # the model takes images
    max_retries: int = Settings.llm_max_retries
    backoff_base_s: float = 0.5
    backoff_max_s: float = 20.0
    request_timeout_s: float = 60.0
    max_tokens: int = Settings.llm_max_tokens
    logprobs: bool = Settings.llm_logprobs
    ner_occurrences: str = Settings.llm_ner_occurrences  # all | first
    cache_url: str | None = None  # redis://... ; None = in-process cache
    cache_prefix: str = Settings.key_prefix  # the cache's keys go under crowdgate's common prefix (core.keys)
    cache_ttl_s: float = 30 * 24 * 3600.0
    invalid_ttl_s: float = 3600.0  # how long an invalid answer is remembered (no re-asking meanwhile)
    # After this many tasks in a row fail on an outage (connection, timeout, 5xx, 429 after all retries) the
    # endpoint is left alone for breaker_cooldown_s: requests fall back at once instead of each waiting out the
    # retries, and a struggling server is not hammered. 0 turns the breaker off.
    breaker_failures: int = 3
    breaker_cooldown_s: float = 30.0

    @classmethod
    def from_settings(cls, settings: Settings) -> LLMSettings:
        """The engine's configuration from crowdgate's settings (the ``OPENAI_*`` and ``CROWDGATE_LLM_*``
        variables)."""
        s = settings
        redact_setting = s.redact.strip().lower()
        if redact_setting in ("", "auto"):
            # Personal data stays in-house when the model does; it is masked when it would leave.
            redact = () if _is_local(s.openai_base_url) else ALL_KINDS
        else:
            redact = parse_kinds(redact_setting)
        mode = s.llm_mode.strip().lower() or "auto"
        if mode not in ("auto", *MODES):
            raise ValueError(f"CROWDGATE_LLM_MODE must be auto or one of {MODES}, not {mode!r}")
        return cls(
            base_url=s.openai_base_url,
            api_key=s.openai_api_key,
            model=s.llm_model or cls.model,
            mode=mode,
            concurrency=max(1, s.llm_concurrency),
            rpm=s.llm_rpm,
            tpm=s.llm_tpm,
            deadline_s=s.llm_deadline_s,
            samples=max(1, s.llm_samples),
            price_in=s.llm_price_in,
            price_out=s.llm_price_out,
            budget_usd=s.llm_budget_usd,
            redact=redact,
            vision=s.llm_vision,
            max_retries=s.llm_max_retries,
            max_tokens=s.llm_max_tokens,
            logprobs=s.llm_logprobs,
            ner_occurrences=s.llm_ner_occurrences.strip().lower() or "all",
            cache_url=s.llm_redis_url or s.redis_url or None,
            cache_prefix=s.key_prefix,
        )

    @property
    def model_version(self) -> str:
        return f"llm:{self.model}:p{PROMPT_VERSION}"


@dataclass
class EndpointState:
    """What one endpoint (base URL + model) was found to support; shared by every predictor in the process."""

    mode: str | None = None  # confirmed structured-output mode
    refused: dict[str, float] = field(default_factory=dict)  # mode -> when it was refused
    logprobs: bool | None = None  # None until the first answer shows
    n_choices: bool | None = None  # honours n > 1
    lock: threading.Lock = field(default_factory=threading.Lock)  # held by the thread probing the mode
    failures: int = 0  # tasks in a row that failed on an outage
    openings: int = 0  # times the breaker opened since the endpoint last answered
    paused_until: float = 0.0  # monotonic time until which no calls are made (the breaker is open)
    breaker_lock: threading.Lock = field(default_factory=threading.Lock)

    def candidates(self, now: float) -> list[str]:
        if self.mode is not None:
            return [self.mode]
        return [m for m in MODES if now - self.refused.get(m, -math.inf) > REFUSAL_TTL_S] or ["prompt"]

    def paused(self, now: float) -> bool:
        return now < self.paused_until

    def answered(self) -> None:
        with self.breaker_lock:
            self.failures = 0
            self.openings = 0

    def failed(self, now: float, threshold: int, cooldown_s: float) -> int:
        """Count an outage. When this one opens the breaker (pauses calls for ``cooldown_s``): which opening
        since the endpoint last answered it is (1: the outage has just begun); else 0."""
        with self.breaker_lock:
            self.failures += 1
            if threshold <= 0 or self.failures < threshold or now < self.paused_until:
                return 0
            # After a pause one more failure re-opens it: the count is only reset by an answer.
            self.paused_until = now + cooldown_s
            self.openings += 1
            return self.openings


@dataclass(frozen=True)
class Outage:
    """An endpoint that has started failing: its breaker opened for the first time since it last answered."""

    endpoint: str  # as log lines show it (no credentials)
    model: str
    failures: int  # tasks in a row that failed on an outage
    cooldown_s: float  # no calls for this long, then it is tried again


# ml_backend cannot write the audit log (routing owns it): crowdgate's services set a listener that does.
_outage_listener: Callable[[Outage], None] | None = None


def on_outage(listener: Callable[[Outage], None] | None) -> None:
    """Have ``listener`` told, in the failing request's thread, each time an endpoint of this process starts
    failing (once per outage, not at every cool-down it lasts); None: nobody. One listener per process."""
    global _outage_listener
    _outage_listener = listener


def _tell_outage(outage: Outage) -> None:
    listener = _outage_listener
    if listener is None:
        return
    try:
        listener(outage)
    except Exception as exc:  # reporting an outage never fails a pre-label
        log.warning("could not report the LLM outage of %s: %s: %s", outage.endpoint, type(exc).__name__, exc)


_ENDPOINTS: dict[tuple[str, str], EndpointState] = {}
_ENDPOINTS_LOCK = threading.Lock()


def endpoint_state(base_url: str, model: str) -> EndpointState:
    with _ENDPOINTS_LOCK:
        return _ENDPOINTS.setdefault((base_url.rstrip("/"), model), EndpointState())


@dataclass
class TaskOutcome:
    """Everything recorded about one task of a predict call."""

    task_id: Any
    status: str  # ok | cached | invalid | pending | budget | unsupported | paused | error
    prediction: dict[str, Any] | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cost_usd: float = 0.0
    calls: int = 0
    score_source: str = ""  # logprobs | samples | none
    problems: dict[str, int] = field(default_factory=dict)


class BudgetExceeded(Exception):
    pass


def extract_json(text: str) -> Any:
    """The first JSON object in a model's free-text reply (code fences and chatter around it ignored)."""
    text = text.strip()
    fenced = re.search(r"```(?:json)?\s*(.*?)```", text, re.DOTALL)
    if fenced:
        text = fenced.group(1).strip()
    with contextlib.suppress(json.JSONDecodeError):
        return json.loads(text)
    decoder = json.JSONDecoder()
    for m in re.finditer(r"\{", text):
        try:
            value, _ = decoder.raw_decode(text, m.start())
        except json.JSONDecodeError:
            continue
        if isinstance(value, dict):
            return value
    raise ValueError("no JSON object in the answer")


@dataclass
class _Job:
    key: str
    task: dict[str, Any]
    plan: ConfigPlan
    project: str
    instructions: str
    examples: list[tuple[dict[str, Any], list[dict[str, Any]]]]


class LLMPredictor:
    """Pre-labels Label Studio tasks with an LLM; thread-safe, one per process is enough."""

    def __init__(
        self,
        settings: LLMSettings | None = None,
        *,
        cache: PredictionCache | None = None,
        client: Any | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or LLMSettings.from_settings(current())
        s = self.settings
        self.cache: PredictionCache = cache if cache is not None else cache_from_env(s.cache_url, s.cache_prefix)
        # The client's own retries are off: it would retry 5xx twice by default, hiding the errors that tell a
        # refused mode from an outage, and ignoring our deadline. _create() owns the policy.
        self.client = client or openai.OpenAI(
            base_url=s.base_url, api_key=s.api_key or "not-needed", max_retries=0, timeout=s.request_timeout_s
        )
        self.limiter = RateLimiter(s.rpm, s.tpm)
        self.endpoint = endpoint_state(s.base_url, s.model)
        self._where = shown_url(s.base_url)  # the endpoint as log lines name it
        self._pool = ThreadPoolExecutor(max_workers=s.concurrency, thread_name_prefix="crowdgate-llm")
        self._inflight: dict[str, Future[TaskOutcome]] = {}
        self._lock = threading.Lock()
        self._counters: Counter[str] = Counter()
        self._spent: dict[str, float] = {}
        self._logged: set[str] = set()
        self._sleep = sleep
        if s.budget_usd > 0 and not (s.price_in or s.price_out):
            log.warning("CROWDGATE_LLM_BUDGET_USD is set but both prices are 0: the budget cannot be enforced")

    # ----- bookkeeping ---------------------------------------------------------------------------------

    @property
    def model_version(self) -> str:
        return self.settings.model_version

    def _count(self, name: str, n: int = 1) -> None:
        with self._lock:
            self._counters[name] += n

    def counters(self) -> dict[str, float]:
        """Totals since start: calls, cache hits, retries, fallbacks, dropped answers, tokens, cost …"""
        with self._lock:
            out: dict[str, float] = dict(self._counters)
            out["cost_usd"] = round(sum(self._spent.values()), 8)
            return out

    def project_cost(self, project: str) -> float:
        """What this process spent on ``project``; :meth:`PredictionCache.spend` has the shared total."""
        with self._lock:
            return self._spent.get(project, 0.0)

    def _log_once(self, key: str, msg: str, *args: Any, level: int = logging.WARNING) -> None:
        with self._lock:
            if key in self._logged:
                return
            self._logged.add(key)
        log.log(level, msg, *args)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

    # ----- public API ----------------------------------------------------------------------------------

    def predict(
        self,
        tasks: list[dict[str, Any]],
        label_config: str,
        *,
        project: str = "",
        instructions: str = "",
        examples: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]] = (),
        deadline_s: float | None = None,
    ) -> list[dict[str, Any] | None]:
        """One prediction per task, in order; None for a task not ready by the deadline or not valid."""
        outcomes = self.predict_detailed(
            tasks,
            label_config,
            project=project,
            instructions=instructions,
            examples=examples,
            deadline_s=deadline_s,
        )
        return [o.prediction for o in outcomes]

    def predict_detailed(
        self,
        tasks: list[dict[str, Any]],
        label_config: str,
        *,
        project: str = "",
        instructions: str = "",
        examples: Sequence[tuple[dict[str, Any], list[dict[str, Any]]]] = (),
        deadline_s: float | None = None,
    ) -> list[TaskOutcome]:
        """Like :meth:`predict`, with status, tokens, cost and score source per task.

        ``deadline_s`` (default: the setting) bounds the wait; ``0`` or a negative value waits for all.
        """
        started = time.monotonic()
        deadline = self.settings.deadline_s if deadline_s is None else deadline_s
        plan = build_plan(label_config, self.settings.vision)
        if not plan.controls:
            reasons = "; ".join(f"{k}: {v}" for k, v in plan.skipped.items()) or "no control tags"
            self._log_once(f"unsupported:{label_config}", "LLM pre-labelling skipped for this config (%s)", reasons)
            self._count("unsupported_tasks", len(tasks))
            return [TaskOutcome(t.get("id"), "unsupported") for t in tasks]
        if plan.skipped:
            self._log_once(
                f"skipped:{label_config}",
                "LLM pre-labelling leaves out %s",
                "; ".join(f"{k} ({v})" for k, v in plan.skipped.items()),
                level=logging.INFO,
            )
        ex = [(dict(t), list(r)) for t, r in examples]
        outcomes: list[TaskOutcome | None] = [None] * len(tasks)
        futures: dict[int, Future[TaskOutcome]] = {}
        paused = self.endpoint.paused(time.monotonic())
        for i, task in enumerate(tasks):
            key = self._key(plan, task, instructions, ex)
            hit = self.cache.get(key)
            if hit is not None:
                self._count("cache_hits")
                outcomes[i] = self._from_cache(task, hit)
                continue
            if paused:
                self._count("paused_tasks")
                outcomes[i] = TaskOutcome(task.get("id"), "paused")
                continue
            futures[i] = self._submit(_Job(key, task, plan, project or "default", instructions, ex))
        if futures:
            timeout = None if deadline <= 0 else max(0.0, deadline - (time.monotonic() - started))
            wait_futures(list(futures.values()), timeout=timeout)
        for i, fut in futures.items():
            if fut.done():
                outcomes[i] = fut.result()
            else:
                self._count("pending_at_deadline")
                outcomes[i] = TaskOutcome(tasks[i].get("id"), "pending")
        done = [o if o is not None else TaskOutcome(None, "error") for o in outcomes]
        self._log_unanswered(done, project, deadline)
        return done

    def complete_json(self, project: str, messages: list[dict[str, Any]], schema: dict[str, Any],
                      outcome: TaskOutcome) -> Any:
        """One structured answer outside pre-labelling (the LLM audit, :mod:`ml_backend.audit`), through the same
        structured-output modes, rate limits, retries, budget cap and cost counting; the parsed JSON object.
        Raises :class:`BudgetExceeded` when the project's budget is spent, ``ValueError`` on a reply with no JSON."""
        response, _mode = self._complete(project, lambda _m: messages, schema, n=1, temperature=0.0, logprobs=False,
                                         outcome=outcome)
        content = response.choices[0].message.content if response.choices else None
        return extract_json(content or "")

    def _log_unanswered(self, outcomes: list[TaskOutcome], project: str, deadline: float) -> None:
        """One warning per request that leaves tasks to the other models, saying why (an outage, a slow
        endpoint, invalid answers): otherwise a dead endpoint only shows as a drop in pre-label quality."""
        why = Counter(o.status for o in outcomes if o.prediction is None and o.status != "unsupported")
        if not why:
            return
        reasons = ", ".join(f"{n} {status}" for status, n in sorted(why.items()))
        log.warning("LLM gave no pre-label for %d of %d tasks of project %s (%s; deadline %.1f s, endpoint %s): "
                    "the other models answer them", sum(why.values()), len(outcomes), project or "-", reasons,
                    deadline, self._where)

    # ----- jobs ------------------------------------------------------------------------------------------

    def _key(
        self,
        plan: ConfigPlan,
        task: dict[str, Any],
        instructions: str,
        examples: list[tuple[dict[str, Any], list[dict[str, Any]]]],
    ) -> str:
        ex = [(t.get("data", t), r) for t, r in examples]
        return cache_key(
            self.settings.model, PROMPT_VERSION, plan.config, task.get("data", {}), instructions, ex,
            sorted(self.settings.redact),
        )

    def _from_cache(self, task: dict[str, Any], hit: dict[str, Any]) -> TaskOutcome:
        if hit.get("invalid"):
            return TaskOutcome(task.get("id"), "invalid", problems=hit.get("problems", {}))
        pred = {"result": hit["result"], "score": hit["score"], "model_version": hit["model_version"]}
        return TaskOutcome(task.get("id"), "cached", pred, score_source=hit.get("score_source", ""))

    def _submit(self, job: _Job) -> Future[TaskOutcome]:
        # A task still running from an earlier request (past its deadline) is joined, not asked again.
        with self._lock:
            fut = self._inflight.get(job.key)
            if fut is not None:
                return fut
            fut = self._pool.submit(self._run, job)
            self._inflight[job.key] = fut

        def done(_: Future[TaskOutcome], key: str = job.key) -> None:
            with self._lock:
                self._inflight.pop(key, None)

        fut.add_done_callback(done)
        return fut

    def _run(self, job: _Job) -> TaskOutcome:
        outcome = TaskOutcome(job.task.get("id"), "error")
        if self.endpoint.paused(time.monotonic()):  # queued before the breaker opened
            outcome.status = "paused"
            self._count("paused_tasks")
            return outcome
        try:
            self._label(job, outcome)
            self.endpoint.answered()
        except BudgetExceeded:
            outcome.status = "budget"
            self._count("budget_exceeded")
        except Exception as exc:  # one bad task must not take the batch down
            outcome.status = "error"
            self._count("errors")
            log.warning(
                "LLM pre-label failed for task %s: %s", job.task.get("id"), exc,
                exc_info=log.isEnabledFor(logging.DEBUG),
            )
            if self._outage(exc):
                s = self.settings
                opening = self.endpoint.failed(time.monotonic(), s.breaker_failures, s.breaker_cooldown_s)
                if opening:
                    self._count("breaker_opened")
                    log.warning("%s failed %d tasks in a row: no LLM calls for %.0f s, the other models answer "
                                "meanwhile", self._where, self.endpoint.failures, s.breaker_cooldown_s)
                if opening == 1:
                    _tell_outage(Outage(self._where, s.model, s.breaker_failures, s.breaker_cooldown_s))
        return outcome

    @staticmethod
    def _outage(exc: Exception) -> bool:
        """An error that says the endpoint is down or overloaded, not that this one request was wrong."""
        if isinstance(exc, openai.APIConnectionError | openai.RateLimitError):  # timeouts are connection errors
            return True
        return isinstance(exc, openai.APIStatusError) and exc.status_code >= 500

    def _label(self, job: _Job, outcome: TaskOutcome) -> None:
        s = self.settings
        plan = job.plan
        redaction = Redaction(s.redact)
        data = job.task.get("data", {})
        values = plan.object_values(data)
        texts = {o.name: v for o in plan.objects if o.kind == "text" and isinstance(v := values.get(o.name), str)}
        sent_values = redaction.mask_data(values)
        examples = []
        for ex_task, ex_result in job.examples:
            ex_values = redaction.mask_data(plan.object_values(ex_task.get("data", ex_task)))
            examples.append((ex_values, redaction.mask_data(plan.answer_from_result(ex_result))))
        instructions = redaction.mask(job.instructions)
        if redaction.count:
            self._count("redacted_values", redaction.count)

        def messages_for(mode: str) -> list[dict[str, Any]]:
            return build_messages(
                plan,
                sent_values,
                instructions=instructions,
                examples=examples,
                schema_in_prompt=mode == "prompt",
                vision=s.vision,
            )

        def parse(content: str | None, mode: str) -> ParsedAnswer | None:
            if content is None:
                return None
            try:
                answer = json.loads(content) if mode != "prompt" else extract_json(content)
            except (ValueError, json.JSONDecodeError):
                try:
                    answer = extract_json(content)
                except ValueError:
                    return None
            return plan.parse_answer(answer, texts, restore=redaction.restore, occurrences=s.ner_occurrences)

        want_logprobs = s.logprobs and self.endpoint.logprobs is not False
        schema = plan.json_schema()
        response, mode = self._complete(
            job.project, messages_for, schema, n=1, temperature=0.0, logprobs=want_logprobs, outcome=outcome
        )
        choice = response.choices[0]
        content = choice.message.content
        parsed = parse(content, mode)
        lp_content = getattr(getattr(choice, "logprobs", None), "content", None)
        if want_logprobs and self.endpoint.logprobs is None:
            self.endpoint.logprobs = bool(lp_content)
            if not lp_content:
                self._log_once(f"nologprobs:{s.base_url}", "%s returns no logprobs: scoring by agreement of %d "
                               "samples", self._where, s.samples, level=logging.INFO)
        if parsed is None or not self._usable(parsed):
            self._invalid(job, outcome, parsed)
            return
        if lp_content:
            score = logprob_confidence(content or "", lp_content, plan, parsed)
            outcome.score_source = "logprobs"
        elif s.samples > 1:
            answers = self._samples(job.project, messages_for, schema, s.samples - 1, outcome)
            agree = sum(1 for a in answers if (p := parse(a, mode)) is not None and p.values == parsed.values)
            score = (1 + agree) / s.samples
            outcome.score_source = "samples"
        else:
            # Nothing to measure confidence with: 0.5 says "unknown" rather than pretending.
            score = 0.5
            outcome.score_source = "none"
            self._count("unscored")
        for name, n in parsed.problems.items():
            self._count(f"dropped_{name}", n)
        outcome.problems = dict(parsed.problems)
        score = round(min(max(score, 0.0), 1.0), 6)
        prediction = {"result": parsed.regions, "score": score, "model_version": s.model_version}
        outcome.prediction = prediction
        outcome.status = "ok"
        self.cache.set(
            job.key,
            {
                **prediction,
                "score_source": outcome.score_source,
                "usage": {"prompt_tokens": outcome.prompt_tokens, "completion_tokens": outcome.completion_tokens},
                "cost_usd": outcome.cost_usd,
            },
            s.cache_ttl_s,
        )

    @staticmethod
    def _usable(parsed: ParsedAnswer) -> bool:
        # An answer with no valid region is only acceptable when nothing was wrong with it (e.g. no entities).
        return bool(parsed.regions) or not parsed.problems

    def _invalid(self, job: _Job, outcome: TaskOutcome, parsed: ParsedAnswer | None) -> None:
        outcome.status = "invalid"
        problems = dict(parsed.problems) if parsed is not None else {"unparseable": 1}
        outcome.problems = problems
        self._count("invalid_answers")
        for name, n in problems.items():
            self._count(f"dropped_{name}", n)
        # Remembered for a while so the same task is not re-asked (at temperature 0 the answer would repeat).
        self.cache.set(job.key, {"invalid": True, "problems": problems}, self.settings.invalid_ttl_s)

    def _samples(
        self,
        project: str,
        messages_for: Callable[[str], list[dict[str, Any]]],
        schema: dict[str, Any],
        k: int,
        outcome: TaskOutcome,
    ) -> list[str | None]:
        """``k`` answers at the sampling temperature: one request with ``n=k`` where honoured, else k requests."""
        t = self.settings.sample_temperature
        answers: list[str | None] = []
        if self.endpoint.n_choices is not False:
            response, _ = self._complete(project, messages_for, schema, n=k, temperature=t, logprobs=False,
                                         outcome=outcome)
            answers = [c.message.content for c in response.choices]
            if k > 1 and self.endpoint.n_choices is None:
                self.endpoint.n_choices = len(answers) >= k
        while len(answers) < k:
            response, _ = self._complete(project, messages_for, schema, n=1, temperature=t, logprobs=False,
                                         outcome=outcome)
            answers.append(response.choices[0].message.content)
        return answers[:k]

    # ----- calls -----------------------------------------------------------------------------------------

    def _estimate_tokens(self, messages: list[dict[str, Any]], n: int) -> int:
        chars = sum(len(m["content"]) if isinstance(m["content"], str) else len(json.dumps(m["content"]))
                    for m in messages)
        return chars // 4 + 16 * len(messages) + self.settings.max_tokens * n

    def _cost(self, prompt_tokens: int, completion_tokens: int) -> float:
        s = self.settings
        return (prompt_tokens * s.price_in + completion_tokens * s.price_out) / 1e6

    def _complete(
        self,
        project: str,
        messages_for: Callable[[str], list[dict[str, Any]]],
        schema: dict[str, Any],
        *,
        n: int,
        temperature: float,
        logprobs: bool,
        outcome: TaskOutcome,
    ) -> tuple[Any, str]:
        """One chat completion in the endpoint's structured-output mode, discovering that mode when unknown."""
        s = self.settings
        state = self.endpoint
        probing = s.mode == "auto" and state.mode is None
        # While the mode is unknown one thread probes and the others wait (a few seconds at most, in case the
        # probe itself is slow), so a fresh llama.cpp server sees one refused json_schema request, not one per
        # worker.
        locked = state.lock.acquire(timeout=PROBE_WAIT_S) if probing else False
        if locked and state.mode is not None:  # another thread found the mode meanwhile: no need to hold on
            state.lock.release()
            locked = False
        try:
            modes = [s.mode] if s.mode != "auto" else state.candidates(time.monotonic())
            last_error: Exception | None = None
            refused_5xx: list[str] = []  # modes marked refused in this call on a server error
            for mode in modes:
                messages = messages_for(mode)
                try:
                    try:
                        response = self._create(project, messages, mode, schema, n, temperature, logprobs,
                                                outcome, probing=s.mode == "auto" and state.mode is None)
                    except openai.APIStatusError as exc:
                        # Some servers reject the logprobs parameter itself: ask once more without it.
                        if not (logprobs and state.logprobs is None and exc.status_code in (400, 422)):
                            raise
                        response = self._create(project, messages, mode, schema, n, temperature, False,
                                                outcome, probing=s.mode == "auto" and state.mode is None)
                        state.logprobs = False
                        log.info("%s rejects logprobs; scoring by agreement of samples", self._where)
                except openai.APIStatusError as exc:
                    if s.mode == "auto" and state.mode is None and mode != "prompt" and self._refusal(exc):
                        state.refused[mode] = time.monotonic()
                        if exc.status_code >= 500:
                            refused_5xx.append(mode)
                        self._count("mode_fallbacks")
                        log.info("%s refused response_format %s (HTTP %s); trying the next mode",
                                 self._where, mode, exc.status_code)
                        last_error = exc
                        continue
                    self._forget_refusals(refused_5xx)
                    raise
                except Exception:
                    self._forget_refusals(refused_5xx)
                    raise
                if s.mode == "auto" and state.mode != mode:
                    state.mode = mode
                    log.info("%s answers in structured-output mode %s", self._where, mode)
                return response, mode
            self._forget_refusals(refused_5xx)
            raise last_error or RuntimeError("no structured-output mode left")
        finally:
            if locked:
                state.lock.release()

    def _forget_refusals(self, modes: list[str]) -> None:
        # The next mode failed too: the server errors were an outage, not refusals of response_format. Left
        # standing they would keep a recovered endpoint in prompt mode for REFUSAL_TTL_S.
        for mode in modes:
            self.endpoint.refused.pop(mode, None)
        if modes:
            self._count("outage_probes")
            log.info("%s failed in every mode: an outage, not a refusal; the modes are probed again next time",
                     self._where)

    @staticmethod
    def _refusal(exc: openai.APIStatusError) -> bool:
        # llama.cpp answers 500 to json_schema; OpenAI-style servers say 400/422; some 404/501 unknown params.
        return exc.status_code in (400, 404, 415, 422, 500, 501)

    def _request(self, mode: str, messages: list[dict[str, Any]], n: int, temperature: float,
                 logprobs: bool, schema: dict[str, Any]) -> dict[str, Any]:
        kwargs: dict[str, Any] = {
            "model": self.settings.model,
            "messages": messages,
            "temperature": temperature,
            "max_tokens": self.settings.max_tokens,
        }
        if n > 1:
            kwargs["n"] = n
        if logprobs:
            # llama.cpp's server only returns logprobs when top_logprobs is set; the alternatives also let a
            # choice's probability be normalised over the allowed options.
            kwargs["logprobs"] = True
            kwargs["top_logprobs"] = TOP_LOGPROBS
        if mode == "json_schema":
            kwargs["response_format"] = {
                "type": "json_schema",
                "json_schema": {"name": "prelabel", "schema": schema, "strict": True},
            }
        elif mode == "json_object":
            # llama.cpp's own extension: json_object plus a schema it compiles into a grammar.
            kwargs["response_format"] = {"type": "json_object", "schema": schema}
        return kwargs

    def _create(
        self,
        project: str,
        messages: list[dict[str, Any]],
        mode: str,
        schema: dict[str, Any],
        n: int,
        temperature: float,
        logprobs: bool,
        outcome: TaskOutcome,
        *,
        probing: bool,
    ) -> Any:
        """The request with budget, rate limits and retries; records tokens and cost."""
        s = self.settings
        kwargs = self._request(mode, messages, n, temperature, logprobs, schema)
        estimate = self._estimate_tokens(messages, n)
        est_cost = self._cost(estimate - s.max_tokens * n, s.max_tokens * n)
        # Reserve the worst-case cost before calling so concurrent workers cannot overshoot the cap together.
        reserved = 0.0
        if s.budget_usd > 0:
            total = self.cache.add_spend(project, est_cost)
            reserved = est_cost
            if total > s.budget_usd:
                self.cache.add_spend(project, -est_cost)
                self._log_once(f"budget:{project}", "LLM budget of $%.2f for project %s is used up: no more model "
                               "calls for it", s.budget_usd, project)
                raise BudgetExceeded(project)
        attempt = 0
        try:
            while True:
                self.limiter.acquire(estimate)
                try:
                    self._count("calls")
                    outcome.calls += 1
                    response = self.client.chat.completions.create(**kwargs)
                    break
                except (openai.RateLimitError, openai.InternalServerError, openai.APIConnectionError) as exc:
                    self.limiter.settle(estimate, 0)
                    status = getattr(exc, "status_code", None)
                    # A mode probe gets one quick retry on 5xx: a refusal repeats at once, an outage usually
                    # does not. Rate limits and network errors get the full policy.
                    quick = probing and isinstance(exc, openai.InternalServerError)
                    limit = min(1, s.max_retries) if quick else s.max_retries
                    if attempt >= limit or (quick and status == 501):
                        raise
                    delay = self._backoff(attempt, exc, short=quick)
                    self._count("retries")
                    log.info("LLM call failed (%s), retry %d in %.2fs", status or type(exc).__name__,
                             attempt + 1, delay)
                    self._sleep(delay)
                    attempt += 1
                except openai.APIStatusError:
                    self.limiter.settle(estimate, 0)
                    raise
        except Exception:
            if reserved:
                self.cache.add_spend(project, -reserved)
            raise
        usage = getattr(response, "usage", None)
        pt = int(getattr(usage, "prompt_tokens", 0) or 0)
        ct = int(getattr(usage, "completion_tokens", 0) or 0)
        self.limiter.settle(estimate, pt + ct if usage else estimate)
        cost = self._cost(pt, ct)
        if reserved or cost:
            self.cache.add_spend(project, cost - reserved)
        outcome.prompt_tokens += pt
        outcome.completion_tokens += ct
        outcome.cost_usd += cost
        with self._lock:
            self._counters["prompt_tokens"] += pt
            self._counters["completion_tokens"] += ct
            self._spent[project] = self._spent.get(project, 0.0) + cost
        return response

    def _backoff(self, attempt: int, exc: Exception, *, short: bool) -> float:
        s = self.settings
        response = getattr(exc, "response", None)
        retry_after = None
        if response is not None:
            raw = response.headers.get("retry-after-ms")
            if raw:
                with contextlib.suppress(ValueError):
                    retry_after = float(raw) / 1000
            raw = response.headers.get("retry-after")
            if retry_after is None and raw:
                with contextlib.suppress(ValueError):
                    retry_after = float(raw)
        if retry_after is not None and 0 <= retry_after <= s.backoff_max_s:
            return retry_after
        base = 0.1 if short else s.backoff_base_s
        # Full jitter keeps concurrent workers from retrying in lockstep.
        return min(s.backoff_max_s, base * 2**attempt) * (0.5 + random.random() / 2)
