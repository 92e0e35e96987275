"""The LLM endpoint under faults (issue #14): down, slow, or failing every request.

crowdgate's real web app (gunicorn, started by ``scripts.services.start_web`` with the LLM settings in its
environment) pre-labels through an OpenAI-compatible endpoint that is (a) a closed port, (b) the stub of
tests/openai_stub.py slower than a short ``CROWDGATE_LLM_DEADLINE_S``, (c) answering 500 or 429 every time.
``/predict`` must answer 200 within the deadline plus a small margin (the first call may also load the
zero-shot model, so it is held to Label Studio's own 100 s), one result per task, in order, from the fallback
model, never a 5xx, and the web log must say what went wrong. No API key or basic-auth password may appear
in any log line, through good and failing calls.
"""

from __future__ import annotations

import os
import time
import uuid
from pathlib import Path

import pytest
import requests
from label_studio_sdk.label_interface import LabelInterface

from ml_backend.cache import MemoryCache
from ml_backend.llm import LLMPredictor, LLMSettings, endpoint_state
from ml_backend.zero_shot import MODEL_VERSION as ZERO_SHOT
from scripts.processes import free_port
from scripts.services import Service, start_web
from tests.conftest import wait_for
from tests.openai_stub import OpenAIStub

CONFIG = """<View><Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text" choice="single">
    <Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/>
  </Choices></View>"""
DEADLINE_S = 2.0
MARGIN_S = 3.0  # the fallback model, warm, answers a few tasks in well under a second; the rest is a busy CPU
LABEL_STUDIO_TIMEOUT_S = 100.0
OPENAI_KEY = "cgfault-openai-key-5d1e9a73"
ML_USER = "cgfault-ml-user"
ML_PASSWORD = "cgfault-ml-password-b04c62"
AUTH = (ML_USER, ML_PASSWORD)


def web_env(redis_url: str, base_url: str, model_dir: Path, **extra: str) -> dict[str, str]:
    return {**os.environ, "REDIS_URL": redis_url, "CROWDGATE_WEBHOOK_SECRET": "faults",
            "CROWDGATE_KEY_PREFIX": f"llmfault-{uuid.uuid4().hex[:8]}", "OPENAI_BASE_URL": base_url,
            "OPENAI_API_KEY": OPENAI_KEY, "CROWDGATE_LLM_MODEL": "stub-model",
            "CROWDGATE_LLM_DEADLINE_S": str(DEADLINE_S), "CROWDGATE_LLM_SAMPLES": "1",
            "CROWDGATE_ML_BASIC_AUTH_USER": ML_USER, "CROWDGATE_ML_BASIC_AUTH_PASSWORD": ML_PASSWORD,
            "CROWDGATE_MODEL_DIR": str(model_dir), **extra}


def predict(web: Service, texts: list[str], project: str = "7.1700000000") -> tuple[requests.Response, float]:
    tasks = [{"id": 100 + i, "data": {"text": t}} for i, t in enumerate(texts)]
    started = time.monotonic()
    reply = requests.post(f"{web.url}/predict", auth=AUTH, timeout=LABEL_STUDIO_TIMEOUT_S,
                          json={"tasks": tasks, "label_config": CONFIG, "project": project})
    return reply, time.monotonic() - started


def assert_fallback(reply: requests.Response, n: int) -> None:
    assert reply.status_code == 200, reply.text
    body = reply.json()
    results = body["results"]
    assert len(results) == n
    assert [r["model_version"] for r in results] == [ZERO_SHOT] * n
    assert body["model_version"] == ZERO_SHOT
    interface = LabelInterface(CONFIG)
    for r in results:
        assert r["result"], r  # zero-shot always picks an option for a Choices config
        assert interface.validate_prediction({"result": r["result"]}) is True
    # one per task, in order: each result's choice is the zero-shot answer for that task's own text
    choices = [r["result"][0]["value"]["choices"][0] for r in results]
    assert all(c in ("Positive", "Negative", "Neutral") for c in choices)


def fresh_texts(tag: str) -> list[str]:
    # new texts per call: nothing cached, nothing in flight from an earlier call
    return [f"What a wonderful day at the beach ({tag}).", f"The food was cold and awful ({tag}).",
            f"The train left at nine ({tag})."]


def log_text(web: Service) -> str:
    assert web.log_path is not None
    return web.log_path.read_text(errors="replace")


def assert_no_secret_logged(web: Service) -> None:
    text = log_text(web)
    for secret in (OPENAI_KEY, ML_PASSWORD):
        assert secret not in text, f"{secret!r} appears in {web.log_path}"


def assert_nothing_5xx(web: Service) -> None:
    # gunicorn's access log: '... "POST /predict HTTP/1.1" 200 ...'
    lines = [line for line in log_text(web).splitlines() if '"POST /predict' in line]
    assert lines, "the access log shows the predict calls"
    assert not [line for line in lines if '" 5' in line], lines


@pytest.fixture
def stub():
    with OpenAIStub(lambda body: {"sentiment": "Positive"}) as s:
        yield s


FAULTS = ["down", "slow", "500", "429"]
LOGGED = {"down": "Connection error", "slow": "pending", "500": "Error code: 500", "429": "Error code: 429"}


@pytest.mark.parametrize("fault", FAULTS)
def test_predict_answers_with_the_fallback_within_the_deadline(fault, stub, redis_service, tmp_path):
    if fault == "down":
        base_url = f"http://127.0.0.1:{free_port()}/v1"  # nothing listens there
    else:
        base_url = stub.base_url
        if fault == "slow":
            stub.latency_s = DEADLINE_S + 8
        else:
            stub.fail_always(int(fault), retry_after="1" if fault == "429" else None)
    web = start_web(web_env(redis_service.url, base_url, tmp_path / "models"), tmp_path, workers=1)
    try:
        # The first call also loads the zero-shot model: held to Label Studio's timeout.
        reply, took = predict(web, fresh_texts("first"))
        assert_fallback(reply, 3)
        assert took < LABEL_STUDIO_TIMEOUT_S
        for n in (1, 2):
            reply, took = predict(web, fresh_texts(f"call {n}"))
            assert_fallback(reply, 3)
            assert took < DEADLINE_S + MARGIN_S, took
            if fault == "slow":
                assert took >= DEADLINE_S * 0.9, took  # it waited for the LLM up to the deadline, no longer
            if fault == "500":
                assert took < DEADLINE_S, took  # the first call's errors paused the endpoint: no waiting at all
        # The failure is in the web log: the summary of each request, and the error itself once the calls give up.
        wait_for(lambda: LOGGED[fault] in log_text(web), timeout=30, what=f"{LOGGED[fault]!r} in the web log")
        assert "LLM gave no pre-label for 3 of 3 tasks" in log_text(web)
        if fault != "slow":  # an outage, not slowness: the breaker pauses calls to the endpoint
            wait_for(lambda: "failed 3 tasks in a row: no LLM calls for" in log_text(web), timeout=30,
                     what="the breaker in the web log")
        assert "Traceback" not in log_text(web)
        if fault != "down":
            assert stub.calls > 0
            assert all(h.get("authorization") == f"Bearer {OPENAI_KEY}" for h in stub.headers)
    finally:
        web.stop()
    assert_nothing_5xx(web)
    assert_no_secret_logged(web)


def test_no_key_or_password_in_the_log_through_good_and_failing_llm_calls(stub, redis_service, tmp_path):
    web = start_web(web_env(redis_service.url, stub.base_url, tmp_path / "models"), tmp_path, workers=1)
    try:
        reply, _ = predict(web, fresh_texts("good"))  # a good call: the LLM answers
        assert reply.status_code == 200
        assert all(r["model_version"].startswith("llm:stub-model:p") for r in reply.json()["results"])
        # 401 and 400 first: after the outages (500, 429) the breaker pauses calls and they would not be made
        for status in (401, 400, 500, 429):
            stub.fail_always(status, retry_after="0")
            reply, _ = predict(web, fresh_texts(f"failing {status}"))
            assert reply.status_code == 200 and len(reply.json()["results"]) == 3
        stub.fail_always(None)
        stub.latency_s = DEADLINE_S + 1
        assert predict(web, fresh_texts("slow"))[0].status_code == 200
        bad = requests.post(f"{web.url}/predict", auth=(ML_USER, ML_PASSWORD + "x"), timeout=10, json={})
        assert bad.status_code == 401
        wait_for(lambda: "Error code: 401" in log_text(web), timeout=30, what="the failing calls in the log")
    finally:
        web.stop()
    # the key really went to the endpoint, so its absence from the log means something
    assert {h.get("authorization") for h in stub.headers} == {f"Bearer {OPENAI_KEY}"}
    assert_no_secret_logged(web)


def test_an_outage_is_not_taken_for_a_refused_structured_output_mode(stub):
    """500 on every request while the mode is unknown once marked json_schema and json_object as refused for
    ten minutes, so the endpoint was used in prompt mode (schema only in the prompt) after it recovered."""
    model = f"stub-{uuid.uuid4().hex[:8]}"  # a fresh endpoint state
    settings = LLMSettings(base_url=stub.base_url, model=model, samples=1, backoff_base_s=0.01, max_retries=1)
    predictor = LLMPredictor(settings, cache=MemoryCache(), sleep=lambda s: None)
    stub.fail_always(500)
    [outcome] = predictor.predict_detailed([{"id": 1, "data": {"text": "down"}}], CONFIG, deadline_s=0)
    assert outcome.status == "error"
    assert endpoint_state(stub.base_url, model).refused == {}
    stub.fail_always(None)
    [outcome] = predictor.predict_detailed([{"id": 2, "data": {"text": "back up"}}], CONFIG, deadline_s=0)
    assert outcome.status == "ok"
    assert endpoint_state(stub.base_url, model).mode == "json_schema"
    assert stub.requests[-1]["response_format"]["type"] == "json_schema"
    predictor.close()


def test_an_endpoint_that_keeps_failing_is_paused_then_tried_again(stub):
    model = f"stub-{uuid.uuid4().hex[:8]}"
    settings = LLMSettings(base_url=stub.base_url, model=model, samples=1, max_retries=0, mode="json_schema",
                           breaker_failures=3, breaker_cooldown_s=1.0)
    predictor = LLMPredictor(settings, cache=MemoryCache(), sleep=lambda s: None)
    tasks = [{"id": i, "data": {"text": f"text {i}"}} for i in range(3)]
    stub.fail_always(503)
    assert [o.status for o in predictor.predict_detailed(tasks, CONFIG, deadline_s=0)] == ["error"] * 3
    calls = stub.calls
    started = time.monotonic()
    paused = predictor.predict_detailed([{"id": 9, "data": {"text": "more"}}], CONFIG, deadline_s=0)
    assert [o.status for o in paused] == ["paused"] and stub.calls == calls  # no call: answered at once
    assert time.monotonic() - started < 0.5
    assert predictor.counters()["breaker_opened"] == 1
    stub.fail_always(None)
    time.sleep(1.1)  # the cool-down is over: the endpoint is asked again, and an answer closes the breaker
    assert [o.status for o in predictor.predict_detailed(tasks, CONFIG, deadline_s=0)] == ["ok"] * 3
    assert endpoint_state(stub.base_url, model).failures == 0
    predictor.close()


def test_errors_of_one_request_do_not_pause_the_endpoint(stub):
    # a 400 says this request was wrong, not that the endpoint is down
    model = f"stub-{uuid.uuid4().hex[:8]}"
    predictor = LLMPredictor(LLMSettings(base_url=stub.base_url, model=model, samples=1, mode="json_schema"),
                             cache=MemoryCache())
    stub.fail_always(400)
    tasks = [{"id": i, "data": {"text": f"bad {i}"}} for i in range(5)]
    assert {o.status for o in predictor.predict_detailed(tasks, CONFIG, deadline_s=0)} == {"error"}
    stub.fail_always(None)
    assert predictor.predict_detailed([{"id": 9, "data": {"text": "good"}}], CONFIG, deadline_s=0)[0].status == "ok"
    predictor.close()


def test_a_real_refusal_is_still_remembered(stub):
    # llama.cpp's way: json_schema answered 500, json_object works; that refusal must stand.
    stub.refuse = {"json_schema"}
    model = f"stub-{uuid.uuid4().hex[:8]}"
    predictor = LLMPredictor(LLMSettings(base_url=stub.base_url, model=model, samples=1, backoff_base_s=0.01),
                             cache=MemoryCache(), sleep=lambda s: None)
    [outcome] = predictor.predict_detailed([{"id": 1, "data": {"text": "fine"}}], CONFIG, deadline_s=0)
    state = endpoint_state(stub.base_url, model)
    assert outcome.status == "ok" and state.mode == "json_object" and "json_schema" in state.refused
    predictor.close()


def test_log_lines_name_the_endpoint_without_its_credentials(caplog: pytest.LogCaptureFixture) -> None:
    from ml_backend.llm import shown_url

    assert shown_url("https://user:s3cret@llm.example.com:8443/v1?api-key=s3cret#x") == \
        "https://llm.example.com:8443/v1"
    assert shown_url("http://[::1]:8000/v1") == "http://[::1]:8000/v1"
    base = f"http://user:cgfault-in-url-secret@127.0.0.1:{free_port()}/v1?key=cgfault-in-url-secret"
    predictor = LLMPredictor(LLMSettings(base_url=base, model=f"m-{uuid.uuid4().hex[:6]}", max_retries=0),
                             cache=MemoryCache())
    with caplog.at_level("DEBUG"):
        outcomes = predictor.predict_detailed([{"id": 1, "data": {"text": "x"}}], CONFIG, deadline_s=0)
    assert outcomes[0].status == "error"
    assert "LLM gave no pre-label" in caplog.text
    assert "cgfault-in-url-secret" not in caplog.text
    predictor.close()
