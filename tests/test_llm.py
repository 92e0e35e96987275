"""End-to-end tests of the LLM pre-labeller: the real ``openai`` client over HTTP against tests/openai_stub.py."""

from __future__ import annotations

import json
import math
import re
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import pytest

from core.settings import Settings
from ml_backend.cache import MemoryCache
from ml_backend.llm import LLMPredictor, LLMSettings, endpoint_state
from tests.openai_stub import OpenAIStub, last_user_text

CONFIGS = Path(__file__).resolve().parents[1] / "label_configs"

SENTIMENT = """<View>
  <Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/>
  </Choices>
</View>"""
MULTI = """<View><Text name="text" value="$text"/>
  <Choices name="topics" toName="text" choice="multiple">
    <Choice value="Politics"/><Choice value="Sports"/><Choice value="Technology"/>
  </Choices></View>"""
NER = """<View>
  <Labels name="label" toName="text"><Label value="PER" hint="Person"/><Label value="ORG"/><Label value="LOC"/></Labels>
  <Text name="text" value="$text"/>
</View>"""
RATING = """<View><Text name="text" value="$text"/>
  <Rating name="rating" toName="text" maxRating="5"/></View>"""
PAIRWISE = """<View><Text name="prompt" value="$prompt"/>
  <Text name="left" value="$left"/><Text name="right" value="$right"/>
  <Pairwise name="preference" toName="left,right"/></View>"""
SUMMARY = """<View><Text name="text" value="$text"/>
  <TextArea name="summary" toName="text" rows="4" maxSubmissions="1"/></View>"""
TAXONOMY = """<View><Text name="text" value="$text"/>
  <Taxonomy name="taxonomy" toName="text">
    <Choice value="Electronics">
      <Choice value="Phones"/><Choice value="Audio"><Choice value="Headphones"/></Choice>
    </Choice>
    <Choice value="Home"><Choice value="Kitchen"/></Choice>
  </Taxonomy></View>"""
RTE = """<View>
  <Text name="text" value="$text"/><Text name="hypothesis" value="$hypothesis"/>
  <Choices name="entailment" toName="text" choice="single">
    <Choice value="Entailment" alias="1"/><Choice value="No entailment" alias="0"/>
  </Choices></View>"""
IMAGE = """<View><Image name="image" value="$image"/>
  <Choices name="animal" toName="image"><Choice value="Cat"/><Choice value="Dog"/></Choices></View>"""


def config(name: str, inline: str) -> str:
    """The shared label config when it is there, else the inline one (same control names)."""
    path = CONFIGS / name / "config.xml"
    return path.read_text() if path.is_file() else inline


def item_text(body: dict[str, Any], name: str) -> str:
    m = re.search(rf"<{name}>\n(.*?)\n</{name}>", last_user_text(body), re.DOTALL)
    return m.group(1) if m else ""


def make(stub: OpenAIStub, cache: Any = None, **overrides: Any) -> LLMPredictor:
    # A unique model name per test: endpoint capabilities are remembered per (base URL, model) in-process.
    fields: dict[str, Any] = {"concurrency": 4, "backoff_base_s": 0.01, "deadline_s": 20, "samples": 1}
    fields.update(overrides)
    settings = LLMSettings(base_url=stub.base_url, model=f"stub-{uuid.uuid4().hex[:8]}", **fields)
    return LLMPredictor(settings, cache=cache if cache is not None else MemoryCache())


def tasks_of(*datas: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"id": i + 1, "data": d} for i, d in enumerate(datas)]


# ----- each config type end to end ---------------------------------------------------------------------


def sentiment_answer(body: dict[str, Any]) -> dict[str, Any]:
    text = item_text(body, "text").lower()
    return {"sentiment": "Positive" if "good" in text else "Negative" if "bad" in text else "Neutral"}


def test_single_choice_end_to_end_with_logprob_score() -> None:
    # The chosen option's token gets log-probability -0.4 ("Positive") or -0.001; the server lists one other
    # option beside it.
    def alternatives(token: str, content: str) -> list[tuple[str, float]]:
        return {"Positive": [("Negative", -1.0)], "Negative": [("Positive", -3.0)]}.get(token, [])

    with OpenAIStub(sentiment_answer, logprobs=True, logprob=lambda t, c: -0.4 if t == "Positive" else -0.001,
                    alternatives=alternatives) as stub:
        p = make(stub)
        out = p.predict(tasks_of({"text": "a good day"}, {"text": "so bad"}), config("text_classification",
                                                                                       SENTIMENT))
    assert [o["result"][0]["value"]["choices"] for o in out] == [["Positive"], ["Negative"]]
    assert out[0]["result"][0]["from_name"] == "sentiment" and out[0]["result"][0]["to_name"] == "text"
    assert out[0]["score"] == pytest.approx(math.exp(-0.4) / (math.exp(-0.4) + math.exp(-1.0)), rel=1e-4)
    assert out[1]["score"] == pytest.approx(math.exp(-0.001) / (math.exp(-0.001) + math.exp(-3.0)), rel=1e-4)
    assert out[0]["model_version"] == f"llm:{p.settings.model}:p1"
    assert all(r["logprobs"] is True for r in stub.requests)
    # The prompt carries the config's options and the task text.
    system = stub.requests[0]["messages"][0]["content"]
    assert '"Positive"' in system and '"Neutral"' in system


def test_choice_score_is_normalised_over_the_allowed_options() -> None:
    # The server lists alternatives for the value token: two are options, "Maybe" is not (a grammar forbids it).
    def alternatives(token: str, content: str) -> list[tuple[str, float]]:
        return [("Maybe", -0.1), ("Negative", -1.5), ("Neutral", -3.0)] if token == "Positive" else []

    with OpenAIStub(sentiment_answer, logprobs=True, logprob=lambda t, c: -0.4 if t == "Positive" else -0.001,
                    alternatives=alternatives) as stub:
        out = make(stub).predict(tasks_of({"text": "good"}), SENTIMENT)
    expected = math.exp(-0.4) / (math.exp(-0.4) + math.exp(-1.5) + math.exp(-3.0))
    assert out[0]["score"] == pytest.approx(expected, rel=1e-4)
    assert stub.requests[0]["top_logprobs"] == 5


def test_multi_label_choices() -> None:
    with OpenAIStub(lambda b: {"topics": ["Politics", "Technology"]}) as stub:
        out = make(stub).predict(tasks_of({"text": "chips and votes"}), MULTI)
    assert out[0]["result"][0]["value"]["choices"] == ["Politics", "Technology"]
    schema = stub.requests[0]["response_format"]["json_schema"]["schema"]
    assert schema["properties"]["topics"]["type"] == "array"


def test_alias_choices_store_the_alias() -> None:
    with OpenAIStub(lambda b: {"entailment": "No entailment"}) as stub:
        out = make(stub).predict(tasks_of({"text": "T", "hypothesis": "H"}), RTE)
    assert out[0]["result"][0]["value"]["choices"] == ["0"]
    user = last_user_text(stub.requests[0])
    assert "<hypothesis>\nH\n</hypothesis>" in user  # the hypothesis is sent though no control points at it


def test_ner_spans_located_all_occurrences() -> None:
    text = "Ada Lovelace met Babbage in London. Later Ada Lovelace wrote notes."

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        return {"label": [
            {"text": "Ada Lovelace", "label": "PER"},
            {"text": "london", "label": "LOC"},  # case differs: still found
            {"text": "Paris", "label": "LOC"},  # not in the text: dropped and counted
        ]}

    with OpenAIStub(answer) as stub:
        p = make(stub)
        out = p.predict(tasks_of({"text": text}), config("ner", NER))
    values = sorted((r["value"]["start"], r["value"]["end"], r["value"]["labels"][0]) for r in out[0]["result"])
    assert values == [(0, 12, "PER"), (28, 34, "LOC"), (42, 54, "PER")]
    for r in out[0]["result"]:
        assert text[r["value"]["start"] : r["value"]["end"]] == r["value"]["text"]
    assert p.counters()["dropped_span_not_found"] == 1


def test_ner_first_occurrence_setting() -> None:
    with OpenAIStub(lambda b: {"label": [{"text": "Ada", "label": "PER"}]}) as stub:
        out = make(stub, ner_occurrences="first").predict(tasks_of({"text": "Ada and Ada"}), NER)
    assert [(r["value"]["start"], r["value"]["end"]) for r in out[0]["result"]] == [(0, 3)]


def test_ner_no_entities_is_a_valid_empty_result() -> None:
    with OpenAIStub(lambda b: {"label": []}) as stub:
        out = make(stub).predict(tasks_of({"text": "nothing here"}), NER)
    assert out[0] is not None and out[0]["result"] == []


def test_rating_pairwise_textarea_taxonomy() -> None:
    with OpenAIStub(lambda b: {"rating": 4}) as stub:
        out = make(stub).predict(tasks_of({"text": "a fine day"}), config("sentiment_rating", RATING))
    assert out[0]["result"][0]["value"] == {"rating": 4} and out[0]["result"][0]["type"] == "rating"

    with OpenAIStub(lambda b: {"preference": "right"}) as stub:
        out = make(stub).predict(tasks_of({"prompt": "q", "left": "a", "right": "b"}), config("pairwise", PAIRWISE))
    region = out[0]["result"][0]
    assert region["value"] == {"selected": "right"} and region["from_name"] == region["to_name"] == "preference"

    with OpenAIStub(lambda b: {"summary": "  Short summary.  "}) as stub:
        out = make(stub).predict(tasks_of({"text": "long text"}), config("text_summary", SUMMARY))
    assert out[0]["result"][0]["value"] == {"text": ["Short summary."]}

    with OpenAIStub(lambda b: {"taxonomy": ["Electronics / Audio / Headphones"]}) as stub:
        out = make(stub).predict(tasks_of({"text": "noise-cancelling cans"}), TAXONOMY)
    assert out[0]["result"][0]["value"] == {"taxonomy": [["Electronics", "Audio", "Headphones"]]}


def test_images_only_with_a_vision_model() -> None:
    with OpenAIStub(lambda b: {"animal": "Dog"}) as stub:
        p = make(stub)
        assert p.predict(tasks_of({"image": "http://x/1.jpg"}, {"image": "http://x/2.jpg"}), IMAGE) == [None, None]
        assert stub.calls == 0 and p.counters()["unsupported_tasks"] == 2

        out = make(stub, vision=True).predict(tasks_of({"image": "http://x/1.jpg"}), IMAGE)
    assert out[0]["result"][0]["value"] == {"choices": ["Dog"]}
    parts = stub.requests[-1]["messages"][-1]["content"]
    assert {"type": "image_url", "image_url": {"url": "http://x/1.jpg"}} in parts


def test_geometry_configs_get_no_prediction() -> None:
    bbox = config("image_bbox", '<View><Image name="image" value="$image"/><RectangleLabels name="label" '
                  'toName="image"><Label value="Car"/></RectangleLabels></View>')
    with OpenAIStub() as stub:
        assert make(stub, vision=True).predict(tasks_of({"image": "http://x/1.jpg"}), bbox) == [None]
        assert stub.calls == 0


def test_instructions_and_gold_examples_in_prompt() -> None:
    gold_task = {"id": 99, "data": {"text": "great stuff"}}
    gold_result = [{"from_name": "sentiment", "to_name": "text", "type": "choices", "value": {"choices": ["Positive"]}}]
    with OpenAIStub(sentiment_answer) as stub:
        make(stub).predict(tasks_of({"text": "meh"}), SENTIMENT, instructions="Sarcasm counts as Negative.",
                           examples=[(gold_task, gold_result)])
    messages = stub.requests[0]["messages"]
    assert "Sarcasm counts as Negative." in messages[0]["content"]
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert json.loads(messages[2]["content"]) == {"sentiment": "Positive"}
    assert "great stuff" in messages[1]["content"]


# ----- structured-output modes ---------------------------------------------------------------------------


def test_llama_cpp_style_refusal_falls_back_to_json_object_and_is_remembered() -> None:
    with OpenAIStub(sentiment_answer, refuse=("json_schema",), refuse_status=500) as stub:
        p = make(stub)
        out = p.predict(tasks_of(*[{"text": f"good {i}"} for i in range(6)]), SENTIMENT)
        assert all(o is not None for o in out)
        kinds = [r.get("response_format", {}).get("type") for r in stub.requests]
        # One probe (plus one quick retry, as a 500 could be an outage), then json_object for everything.
        assert kinds.count("json_schema") == 2
        assert kinds.count("json_object") == 6
        assert stub.requests[-1]["response_format"]["schema"]["properties"]["sentiment"]["enum"]
        assert p.counters()["mode_fallbacks"] == 1
        assert endpoint_state(stub.base_url, p.settings.model).mode == "json_object"

        # Another predictor for the same endpoint starts in the remembered mode.
        q = LLMPredictor(p.settings, cache=MemoryCache())
        before = len(stub.requests)
        q.predict(tasks_of({"text": "good again"}), SENTIMENT)
        assert [r["response_format"]["type"] for r in stub.requests[before:]] == ["json_object"]


def test_prompt_mode_when_both_structured_modes_are_refused() -> None:
    wrapper = "Sure! Here is the label:\n```json\n{json}\n```\nHope that helps."
    with OpenAIStub(sentiment_answer, refuse=("json_schema", "json_object"), refuse_status=400,
                    prompt_wrapper=wrapper) as stub:
        p = make(stub)
        out = p.predict(tasks_of({"text": "bad"}, {"text": "good"}), SENTIMENT)
        assert endpoint_state(stub.base_url, p.settings.model).mode == "prompt"
    assert [o["result"][0]["value"]["choices"][0] for o in out] == ["Negative", "Positive"]
    last = stub.requests[-1]
    assert "response_format" not in last
    assert "JSON Schema" in last["messages"][0]["content"]  # the schema is spelled out in prompt mode


def test_server_rejecting_logprobs_is_asked_without_them() -> None:
    with OpenAIStub(sentiment_answer, reject_params=("logprobs",)) as stub:
        p = make(stub, mode="json_schema", samples=3, concurrency=1)
        out = p.predict(tasks_of({"text": "good"}, {"text": "bad"}), SENTIMENT)
        assert all(o is not None for o in out)
        assert endpoint_state(stub.base_url, p.settings.model).logprobs is False
        # Only the first request carried logprobs; the others are scored by agreement.
        assert [bool(r.get("logprobs")) for r in stub.requests].count(True) == 1
        assert out[0]["score"] == pytest.approx(1.0)


def test_fixed_mode_is_not_probed() -> None:
    with OpenAIStub(sentiment_answer) as stub:
        make(stub, mode="json_object").predict(tasks_of({"text": "good"}), SENTIMENT)
    assert [r["response_format"]["type"] for r in stub.requests] == ["json_object"]


# ----- invalid answers -----------------------------------------------------------------------------------


def test_invalid_answers_are_dropped_and_counted() -> None:
    answers = {"a": {"sentiment": "Maybe"}, "b": "not json at all", "c": {"other": 1}, "d": {"sentiment": "Positive"}}

    def answer(body: dict[str, Any]) -> Any:
        return answers[item_text(body, "text")]

    with OpenAIStub(answer) as stub:
        p = make(stub)
        out = p.predict(tasks_of({"text": "a"}, {"text": "b"}, {"text": "c"}, {"text": "d"}), SENTIMENT)
        assert out[:3] == [None, None, None]
        assert out[3]["result"][0]["value"]["choices"] == ["Positive"]
        c = p.counters()
        assert c["invalid_answers"] == 3
        assert c["dropped_invalid_value"] == 1 and c["dropped_unparseable"] == 1 and c["dropped_missing_control"] == 1
        # An invalid answer is remembered too: asking again makes no call.
        calls = stub.calls
        assert p.predict(tasks_of({"text": "a"}), SENTIMENT) == [None]
        assert stub.calls == calls


def test_partly_invalid_answer_keeps_the_valid_part() -> None:
    cfg = """<View><Text name="text" value="$text"/>
      <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices>
      <Rating name="stars" toName="text" maxRating="5"/></View>"""
    with OpenAIStub(lambda b: {"sentiment": "Negative", "stars": 9}) as stub:
        p = make(stub)
        out = p.predict(tasks_of({"text": "x"}), cfg)
    assert [r["from_name"] for r in out[0]["result"]] == ["sentiment"]
    assert p.counters()["dropped_invalid_value"] == 1


# ----- cache -------------------------------------------------------------------------------------------------


def test_repeated_prediction_makes_no_model_call() -> None:
    with OpenAIStub(sentiment_answer, logprobs=True) as stub:
        p = make(stub)
        tasks = tasks_of({"text": "good"}, {"text": "bad"})
        first = p.predict(tasks, SENTIMENT)
        calls = stub.calls
        second = p.predict(tasks, SENTIMENT)
        assert stub.calls == calls
        assert [o["result"][0]["value"] for o in first] == [o["result"][0]["value"] for o in second]
        assert [o["score"] for o in first] == [o["score"] for o in second]
        assert p.counters()["cache_hits"] == 2
        # A changed instruction is a different prompt: a miss.
        p.predict(tasks[:1], SENTIMENT, instructions="new rule")
        assert stub.calls == calls + 1


def test_redis_cache_shared_between_predictors(redis_service: Any) -> None:
    from ml_backend.cache import RedisCache

    with OpenAIStub(sentiment_answer) as stub:
        cache = RedisCache.from_url(redis_service.url, prefix=f"test-{uuid.uuid4().hex[:6]}:")
        p = make(stub, cache=cache)
        p.predict(tasks_of({"text": "good"}), SENTIMENT)
        calls = stub.calls
        q = LLMPredictor(p.settings, cache=RedisCache.from_url(redis_service.url, prefix=cache.prefix))
        out = q.predict(tasks_of({"text": "good"}), SENTIMENT)
        assert out[0]["result"][0]["value"]["choices"] == ["Positive"]
        assert stub.calls == calls


# ----- retries, deadline, concurrency ------------------------------------------------------------------------


def test_retries_on_429_and_5xx() -> None:
    with OpenAIStub(sentiment_answer) as stub:
        p = make(stub, mode="json_schema")
        stub.fail_next(429, 500, 503, retry_after="0")
        out = p.predict(tasks_of({"text": "good"}), SENTIMENT)
    assert out[0]["result"][0]["value"]["choices"] == ["Positive"]
    assert stub.statuses == [429, 500, 503, 200]
    assert p.counters()["retries"] == 3


def test_rate_limit_during_mode_probe_gets_the_full_retry_policy() -> None:
    with OpenAIStub(sentiment_answer) as stub:
        p = make(stub)  # auto: the first call probes json_schema
        stub.fail_next(429, 429, 429, retry_after="0")
        out = p.predict(tasks_of({"text": "good"}), SENTIMENT)
        assert out[0] is not None and stub.statuses == [429, 429, 429, 200]
        assert p.counters().get("mode_fallbacks", 0) == 0
        assert endpoint_state(stub.base_url, p.settings.model).mode == "json_schema"


def test_retries_give_up_and_bad_requests_are_not_retried() -> None:
    with OpenAIStub(sentiment_answer) as stub:
        p = make(stub, mode="json_schema", max_retries=2, logprobs=False)
        stub.fail_next(500, 500, 500)
        assert p.predict(tasks_of({"text": "good"}), SENTIMENT) == [None]
        assert stub.statuses == [500, 500, 500]
        stub.fail_next(400)
        assert p.predict(tasks_of({"text": "bad"}), SENTIMENT) == [None]
        assert stub.statuses[-1] == 400 and stub.calls == 4
        assert p.counters()["errors"] == 2
        # Errors are not cached: the next request asks again and succeeds.
        assert p.predict(tasks_of({"text": "good"}), SENTIMENT)[0] is not None


def test_deadline_returns_partial_and_finishes_in_background() -> None:
    release = threading.Event()

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if "slow" in item_text(body, "text"):
            release.wait(10)
        return sentiment_answer(body)

    with OpenAIStub(answer) as stub:
        p = make(stub, mode="json_schema")
        tasks = tasks_of({"text": "good fast"}, {"text": "slow good"}, {"text": "bad fast"})
        out = p.predict(tasks, SENTIMENT, deadline_s=1.0)
        assert out[0] is not None and out[2] is not None and out[1] is None
        assert p.counters()["pending_at_deadline"] == 1
        # A request arriving while the slow task runs joins it instead of asking again.
        assert p.predict(tasks[1:2], SENTIMENT, deadline_s=0.2) == [None]
        release.set()
        for _ in range(200):
            if not p._inflight:
                break
            time.sleep(0.05)
        calls = stub.calls
        assert calls == 3
        again = p.predict(tasks, SENTIMENT, deadline_s=1.0)
        assert all(o is not None for o in again) and stub.calls == calls


def test_tasks_run_concurrently() -> None:
    with OpenAIStub(sentiment_answer, latency_s=0.2) as stub:
        p = make(stub, concurrency=8)
        out = p.predict(tasks_of(*[{"text": f"good {i}"} for i in range(16)]), SENTIMENT)
    assert all(o is not None for o in out)
    assert stub.peak_in_flight > 1


# ----- confidence by sampling, budget, usage ----------------------------------------------------------------------


def test_agreement_score_when_the_server_gives_no_logprobs() -> None:
    counter = {"n": 0}
    lock = threading.Lock()

    def answer(body: dict[str, Any]) -> dict[str, Any]:
        if body.get("temperature", 0) == 0:
            return {"sentiment": "Positive"}
        with lock:
            counter["n"] += 1
            k = counter["n"]
        return {"sentiment": "Positive" if k % 2 else "Negative"}  # sampled answers alternate

    for honour_n in (True, False):
        counter["n"] = 0
        with OpenAIStub(answer, logprobs=False, honour_n=honour_n) as stub:
            p = make(stub, samples=5, sample_temperature=0.8)
            detail = p.predict_detailed(tasks_of({"text": "x"}), SENTIMENT)[0]
            # greedy Positive + 4 samples, 2 of which agree
            assert detail.prediction["score"] == pytest.approx(3 / 5)
            assert detail.score_source == "samples"
            assert stub.calls == (2 if honour_n else 5)
            assert all(r["temperature"] == 0.8 for r in stub.requests[1:])


def test_budget_cap_stops_calls_per_project() -> None:
    with OpenAIStub(sentiment_answer) as stub:
        # $1000 per 1M prompt tokens: each call costs a few cents; the cap allows only a few calls.
        p = make(stub, price_in=1000.0, price_out=1000.0, budget_usd=0.5, concurrency=1, max_tokens=20)
        details = p.predict_detailed(tasks_of(*[{"text": f"good {i}"} for i in range(40)]), SENTIMENT,
                                     project="7")
        statuses = [d.status for d in details]
        assert "ok" in statuses and "budget" in statuses
        assert p.cache.spend("7") <= 0.5
        assert p.counters()["budget_exceeded"] == statuses.count("budget")
        ok = [d for d in details if d.status == "ok"]
        assert all(d.prompt_tokens > 0 and d.cost_usd > 0 for d in ok)
        assert p.cache.spend("7") == pytest.approx(sum(d.cost_usd for d in ok))
        assert p.project_cost("7") == pytest.approx(p.cache.spend("7"))
        calls = stub.calls
        # Another project has its own budget.
        assert p.predict(tasks_of({"text": "bad 1"}), SENTIMENT, project="8")[0] is not None
        assert stub.calls == calls + 1


def test_settings_from_env() -> None:
    env = {
        "OPENAI_BASE_URL": "https://api.example.com/v1",
        "OPENAI_API_KEY": "k",
        "CROWDGATE_LLM_MODEL": "m",
        "CROWDGATE_LLM_MODE": "json_object",
        "CROWDGATE_LLM_CONCURRENCY": "4",
        "CROWDGATE_LLM_RPM": "60",
        "CROWDGATE_LLM_TPM": "1000",
        "CROWDGATE_LLM_DEADLINE_S": "30",
        "CROWDGATE_LLM_SAMPLES": "5",
        "CROWDGATE_LLM_PRICE_IN": "0.15",
        "CROWDGATE_LLM_PRICE_OUT": "0.6",
        "CROWDGATE_LLM_BUDGET_USD": "10",
    }

    def llm(environ: dict[str, str]) -> LLMSettings:
        return LLMSettings.from_settings(Settings.from_env(environ))

    s = llm(env)
    assert (s.base_url, s.model, s.mode, s.concurrency, s.rpm, s.tpm) == (
        "https://api.example.com/v1", "m", "json_object", 4, 60, 1000)
    assert (s.deadline_s, s.samples, s.price_in, s.price_out, s.budget_usd) == (30, 5, 0.15, 0.6, 10)
    assert "email" in s.redact  # external endpoint: redaction on by default
    assert llm({"OPENAI_BASE_URL": "http://127.0.0.1:8080/v1"}).redact == ()
    assert llm({"CROWDGATE_REDACT": "email,card"}).redact == ("email", "card")
    assert llm({"CROWDGATE_REDACT": "off"}).redact == ()
    with pytest.raises(ValueError):
        llm({"CROWDGATE_LLM_MODE": "grammar"})
