"""Unit tests of the LLM pre-labeller's parts: rate limiter, cache, ECE, parsing, spans, project pre-labelling."""

from __future__ import annotations

import copy
import math
import uuid
from types import SimpleNamespace
from typing import Any

import pytest

from core.labelstudio import LabelStudioError
from ml_backend.bulk import prelabel_project
from ml_backend.cache import MemoryCache, RedisCache, cache_key
from ml_backend.confidence import expected_calibration_error, logprob_confidence
from ml_backend.llm import LLMPredictor, LLMSettings, extract_json
from ml_backend.ratelimit import RateLimiter, TokenBucket
from ml_backend.structured import build_plan, locate_spans
from tests.fake_labelstudio import FakeLabelStudio
from tests.openai_stub import OpenAIStub
from tests.test_llm import NER, RTE, SENTIMENT, TAXONOMY, sentiment_answer


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0
        self.slept: list[float] = []

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.slept.append(seconds)
        self.now += seconds


# ----- rate limiter ----------------------------------------------------------------------------------------------


def test_token_bucket_allows_a_minute_of_burst_then_paces() -> None:
    clock = FakeClock()
    bucket = TokenBucket(60, clock=clock, sleep=clock.sleep)  # 1 per second
    for _ in range(60):
        assert bucket.acquire(1)
    assert clock.slept == []
    assert bucket.acquire(1)
    assert sum(clock.slept) == pytest.approx(1.0)
    assert bucket.try_acquire(1) == pytest.approx(1.0)  # the next one is a second away
    assert not bucket.acquire(5, timeout=2.0)  # would need 5 s


def test_token_bucket_adjust_and_oversized_requests() -> None:
    clock = FakeClock()
    bucket = TokenBucket(600, clock=clock, sleep=clock.sleep)  # 10 per second, capacity 600
    assert bucket.acquire(100)
    bucket.adjust(400)  # the call used 400 more than estimated
    assert bucket.level == pytest.approx(100)
    bucket.adjust(-50)
    assert bucket.level == pytest.approx(150)
    # Bigger than the whole bucket: waits until full, then goes through (no deadlock).
    assert bucket.acquire(1000)
    assert clock.now == pytest.approx(45.0)
    assert bucket.level == pytest.approx(-400)


def test_unlimited_bucket_never_waits() -> None:
    bucket = TokenBucket(0)
    assert bucket.unlimited and all(bucket.acquire(10**6) for _ in range(100))


def test_rate_limiter_requests_and_tokens() -> None:
    clock = FakeClock()
    limiter = RateLimiter(rpm=120, tpm=1200, clock=clock, sleep=clock.sleep)
    for _ in range(3):
        assert limiter.acquire(400)
    assert clock.slept == []
    assert limiter.acquire(400)  # the token bucket is empty: 400 tokens at 20/s
    assert sum(clock.slept) == pytest.approx(20.0)
    limiter.settle(400, 100)  # it used less: 300 back
    assert limiter.tokens.level == pytest.approx(300)


def test_predictor_respects_requests_per_minute() -> None:
    clock = FakeClock()
    with OpenAIStub(sentiment_answer) as stub:
        settings = LLMSettings(base_url=stub.base_url, model=f"m-{uuid.uuid4().hex[:6]}", rpm=2, samples=1,
                               concurrency=1, mode="json_schema")
        p = LLMPredictor(settings, cache=MemoryCache())
        p.limiter = RateLimiter(rpm=2, clock=clock, sleep=clock.sleep)
        out = p.predict([{"id": i, "data": {"text": f"good {i}"}} for i in range(4)], SENTIMENT)
    assert all(o is not None for o in out)
    # 2 at once, then one every 30 s.
    assert sum(clock.slept) == pytest.approx(60.0)


# ----- cache -----------------------------------------------------------------------------------------------------


def test_cache_key_is_stable_and_sensitive() -> None:
    a = cache_key("m", "1", "<View/>", {"text": "x", "b": 2})
    assert a == cache_key("m", "1", "<View/>", {"b": 2, "text": "x"})
    assert a != cache_key("m", "2", "<View/>", {"text": "x", "b": 2})
    assert a != cache_key("m", "1", "<View/>", {"text": "y", "b": 2})


def test_memory_cache_ttl_and_spend() -> None:
    clock = FakeClock()
    cache = MemoryCache(clock=clock)
    cache.set("k", {"v": 1}, ttl_s=10)
    assert cache.get("k") == {"v": 1}
    clock.now = 11
    assert cache.get("k") is None
    assert cache.add_spend("p", 0.25) == pytest.approx(0.25)
    assert cache.add_spend("p", 0.5) == pytest.approx(0.75)
    assert cache.spend("p") == pytest.approx(0.75) and cache.spend("other") == 0.0


def test_redis_cache(redis_service: Any) -> None:
    cache = RedisCache.from_url(redis_service.url, prefix=f"t-{uuid.uuid4().hex[:6]}")
    assert cache.get("k") is None
    cache.set("k", {"result": [], "score": 0.5}, ttl_s=0.2)
    assert cache.get("k") == {"result": [], "score": 0.5}
    # under crowdgate's common prefix (core.keys); sub-second TTLs round up, never to "forever"
    assert cache.client.ttl(f"{cache.prefix}:llm:answer:k") == 1
    assert cache.keys.llm_answer("k") == f"{cache.prefix}:llm:answer:k"
    assert cache.add_spend("p", 0.1) == pytest.approx(0.1)
    assert cache.add_spend("p", 0.2) == pytest.approx(0.3)
    assert cache.spend("p") == pytest.approx(0.3)
    assert float(cache.client.get(f"{cache.prefix}:llm:spend:p")) == pytest.approx(0.3)


# ----- calibration -------------------------------------------------------------------------------------------------


def test_expected_calibration_error() -> None:
    assert expected_calibration_error([], []) == 0.0
    # Perfectly calibrated: 80% right at confidence 0.8.
    assert expected_calibration_error([0.8] * 10, [1] * 8 + [0] * 2) == pytest.approx(0.0)
    # Over-confident: always 1.0 but right half the time.
    assert expected_calibration_error([1.0] * 4, [1, 0, 1, 0]) == pytest.approx(0.5)
    # Two bins: |0.25 - 0.2| * 0.5 + |1.0 - 0.9| * 0.5
    ece = expected_calibration_error([0.2, 0.2, 0.2, 0.2, 0.9, 0.9, 0.9, 0.9], [1, 0, 0, 0, 1, 1, 1, 1])
    assert ece == pytest.approx(0.05 * 0.5 + 0.1 * 0.5)
    with pytest.raises(ValueError):
        expected_calibration_error([0.5], [1, 0])


# ----- parsing -------------------------------------------------------------------------------------------------------


def test_extract_json_from_chatty_answers() -> None:
    assert extract_json('{"a": 1}') == {"a": 1}
    assert extract_json('Sure!\n```json\n{"a": [1, 2]}\n```') == {"a": [1, 2]}
    assert extract_json('The answer is {"a": "b"} as requested {x}') == {"a": "b"}
    with pytest.raises(ValueError):
        extract_json("no json here")


def test_locate_spans() -> None:
    text = "The USA and the US. us army, New  York and new york."
    assert locate_spans(text, "US") == [(16, 18)]  # not inside "USA"
    assert locate_spans(text, "us") == [(20, 22)]  # exact case first
    assert locate_spans(text, "Us") == [(16, 18), (20, 22)]  # then any case
    assert locate_spans(text, "New York") == [(29, 38), (43, 51)]  # whitespace-tolerant, any case
    assert locate_spans(text, "New York", occurrences="first") == [(29, 38)]
    assert locate_spans(text, "Boston") == []
    assert locate_spans(text, "  ") == []
    assert locate_spans("(c) 2024", "(c)") == [(0, 3)]


def test_logprob_confidence_per_control_minimum() -> None:
    cfg = """<View><Text name="text" value="$text"/>
      <Choices name="a" toName="text"><Choice value="Yes"/><Choice value="No"/></Choices>
      <Choices name="b" toName="text"><Choice value="Red"/><Choice value="Blue"/></Choices></View>"""
    plan = build_plan(cfg)
    content = '{"a": "Yes", "b": "Blue"}'
    parsed = plan.parse_answer({"a": "Yes", "b": "Blue"}, {"text": "t"})
    pieces = ['{"', "a", '":', ' "', "Yes", '",', ' "', "b", '":', ' "', "Bl", "ue", '"}']
    assert "".join(pieces) == content
    lps = {"Yes": -0.1, "Bl": -1.0, "ue": -0.2}
    tokens = [SimpleNamespace(token=t, logprob=lps.get(t, -0.001)) for t in pieces]
    # "Blue" is two tokens: their joint probability; the answer's score is the weaker control.
    assert logprob_confidence(content, tokens, plan, parsed) == pytest.approx(math.exp(-1.2))


def test_logprob_confidence_with_pre_grammar_logprobs() -> None:
    # llama.cpp-like: logprobs from before the grammar, so forced tokens look unlikely; the option split is
    # on the "Ent"/"No" token, and the lead quote shares that token.
    plan = build_plan(RTE)
    content = '{"entailment": "No entailment"}'
    parsed = plan.parse_answer({"entailment": "No entailment"}, {"text": "t"})
    alt = SimpleNamespace
    tokens = [
        alt(token='{"', logprob=-5.0, top_logprobs=[alt(token="Yes", logprob=-0.1)]),
        alt(token="entailment", logprob=-3.0, top_logprobs=[]),
        alt(token='":', logprob=-0.1, top_logprobs=[]),
        alt(token=' "No', logprob=-1.2, top_logprobs=[
            alt(token=' "No', logprob=-1.2), alt(token=' "Ent', logprob=-0.9), alt(token="1", logprob=-0.5)]),
        alt(token=" entailment", logprob=-0.05, top_logprobs=[
            alt(token=" entailment", logprob=-0.05), alt(token=" ent", logprob=-1.0), alt(token='"', logprob=-2)]),
        alt(token='"}', logprob=-0.01, top_logprobs=[]),
    ]
    assert "".join(t.token for t in tokens) == content
    conf = logprob_confidence(content, tokens, plan, parsed)
    assert conf == pytest.approx(math.exp(-1.2) / (math.exp(-1.2) + math.exp(-0.9)))


def test_logprob_confidence_when_the_listed_alternatives_are_cut_off() -> None:
    plan = build_plan(SENTIMENT)
    content = '{"sentiment": "Positive"}'
    parsed = plan.parse_answer({"sentiment": "Positive"}, {"text": "t"})
    alt = SimpleNamespace
    # Five alternatives listed (the request's top_logprobs), none of them another option: Negative and
    # Neutral may each still hold up to the smallest listed probability.
    top = [alt(token=t, logprob=v) for t, v in
           [("Positive", -0.2), ("Pos", -2.0), ("Good", -2.5), ("Yes", -3.0), ("Great", -4.0)]]
    tokens = [alt(token='{"sentiment": "', logprob=-0.01, top_logprobs=[]),
              alt(token="Positive", logprob=-0.2, top_logprobs=top),
              alt(token='"}', logprob=-0.01, top_logprobs=[])]
    conf = logprob_confidence(content, tokens, plan, parsed)
    chosen, pos, floor = math.exp(-0.2), math.exp(-2.0), math.exp(-4.0)
    assert conf == pytest.approx((chosen + pos) / (chosen + pos + 2 * floor))


def test_taxonomy_and_ner_parsing_rejects_bad_values() -> None:
    plan = build_plan(TAXONOMY)
    bad = plan.parse_answer({"taxonomy": ["Home / Phones"]}, {"text": "t"})
    assert bad.regions == [] and bad.problems["invalid_value"] == 1
    plan = build_plan(NER)
    parsed = plan.parse_answer(
        {"label": [{"text": "Bob", "label": "PER"}, {"text": "Bob", "label": "ALIEN"}, "junk"]}, {"text": "Bob ran"}
    )
    assert [r["value"]["start"] for r in parsed.regions] == [0]
    assert parsed.problems["invalid_span"] == 2


def test_answer_from_result_round_trip() -> None:
    plan = build_plan(NER)
    result = [
        {"from_name": "label", "to_name": "text", "type": "labels",
         "value": {"start": 0, "end": 3, "text": "Bob", "labels": ["PER"]}},
    ]
    assert plan.answer_from_result(result) == {"label": [{"text": "Bob", "label": "PER"}]}
    assert plan.answer_from_result([]) == {"label": []}


# ----- project pre-labelling through the Label Studio adapter (fake client) -----------------------------------------


class BulkLabelStudio(FakeLabelStudio):
    """The shared fake holding project 3 (sentiment, with an expert instruction) and ``tasks``; writing a
    prediction for ``fail_task`` fails as a Label Studio 500 would."""

    def __init__(self, tasks: list[dict[str, Any]], fail_task: int | None = None) -> None:
        super().__init__()
        self.add_project(3, SENTIMENT, expert_instruction="Be strict.")
        for t in copy.deepcopy(tasks):
            self.add_task(3, t["data"], task=t["id"])
            self.tasks[t["id"]]["predictions"] = t["predictions"]
        self.fail_task = fail_task

    def create_prediction(self, task: int, result: list[dict[str, Any]], score: float | None = None,
                          model_version: str | None = None) -> int:
        if task == self.fail_task:
            raise LabelStudioError("POST", "/api/predictions/", 500, "injected failure")
        return super().create_prediction(task, result, score, model_version)


def test_prelabel_project_writes_predictions_in_batches() -> None:
    with OpenAIStub(sentiment_answer) as stub:
        p = LLMPredictor(LLMSettings(base_url=stub.base_url, model=f"m-{uuid.uuid4().hex[:6]}", samples=1),
                         cache=MemoryCache())
        tasks = [{"id": i, "data": {"text": "good" if i % 2 else "bad"}, "predictions": []} for i in range(1, 8)]
        tasks[0]["predictions"] = [{"model_version": p.model_version, "result": []}]  # done by an earlier run
        tasks[1]["predictions"] = [{"model_version": "other-model", "result": []}]
        ls = BulkLabelStudio(tasks, fail_task=5)
        progress: list[tuple[int, int]] = []
        counts = prelabel_project(ls, 3, p, batch_size=4, progress=lambda d, t: progress.append((d, t)))
        assert counts == {"tasks": 7, "predicted": 6, "written": 5, "skipped": 1, "failed": 1}
        assert progress == [(0, 6), (4, 6), (6, 6)]
        assert ls.tasks.listings == [(3, None)]
        assert sorted(w[1] for w in ls.written("create_prediction")) == [2, 3, 4, 6, 7]
        first = ls.tasks[3]["predictions"][-1]
        assert first["task"] == 3 and first["result"][0]["value"]["choices"] == ["Positive"]
        assert first["model_version"] == p.model_version and 0 <= first["score"] <= 1
        # The project's expert_instruction went into the prompt.
        assert "Be strict." in stub.requests[0]["messages"][0]["content"]
        # Selected tasks only, read in one listing (fetching a single task would make Label Studio call the
        # backend's /predict itself, one task at a time).
        ls2 = BulkLabelStudio(tasks)
        counts = prelabel_project(ls2, 3, p, task_ids=[2, 3], label_config=SENTIMENT, instructions="")
        assert counts["written"] == 2 and counts["tasks"] == 2 and ls2.tasks.listings == [(3, [2, 3])]


def test_number_control_bounds() -> None:
    plan = build_plan('<View><Text name="t" value="$t"/><Number name="n" toName="t" min="0" max="10"/></View>')
    assert plan.json_schema()["properties"]["n"] == {"type": "number", "minimum": 0.0, "maximum": 10.0}
    assert plan.parse_answer({"n": 3}, {"t": "x"}).regions[0]["value"] == {"number": 3}
    assert plan.parse_answer({"n": 11}, {"t": "x"}).problems["invalid_value"] == 1
    unbounded = build_plan('<View><Text name="t" value="$t"/><Number name="n" toName="t"/></View>')
    assert unbounded.json_schema()["properties"]["n"] == {"type": "number"}
