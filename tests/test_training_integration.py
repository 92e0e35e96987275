"""Training through the real path: Label Studio's train button -> /webhook -> RQ -> a worker -> new predictions."""

from __future__ import annotations

import os

import pytest
from rq import Queue, SimpleWorker

from ml_backend import artifacts
from ml_backend.labeling import choice_region
from ml_backend.training import DIFFICULTY_FIELD
from scripts.seed import Seeder, label_config
from scripts.services import start_web
from tests.conftest import wait_for
from tests.state_isolation import use_environ

pytestmark = pytest.mark.integration
GOOD = ["lovely", "wonderful", "superb", "delightful", "brilliant"]
BAD = ["awful", "dreadful", "tedious", "terrible", "boring"]


def test_start_training_trains_a_classifier_that_then_pre_labels(labelstudio, redis_service, redis_conn, log_dir,
                                                                  tmp_path, monkeypatch):
    env = {"REDIS_URL": redis_service.url, "CROWDGATE_KEY_PREFIX": "tr", "CROWDGATE_MODEL_DIR": str(tmp_path),
           "LABEL_STUDIO_URL": labelstudio.url, "LABEL_STUDIO_API_KEY": labelstudio.token,
           "CROWDGATE_WEBHOOK_SECRET": "x"}
    settings = use_environ(monkeypatch, env)  # the in-test worker runs the job with the same settings
    web = start_web({**os.environ, **env}, log_dir)
    try:
        seeder = Seeder(labelstudio.url, labelstudio.token)
        config = label_config("text_classification")
        project = seeder.create_project("training run", config)
        texts = [(f"a {w} film with {v} acting", "Positive") for w in GOOD for v in GOOD] + \
                [(f"a {w} film with {v} acting", "Negative") for w in BAD for v in BAD]
        task_ids = seeder.import_tasks(project, [{"data": {"text": t}} for t, _ in texts])
        users = list(seeder.create_users([f"t{i}@crowdgate.test" for i in range(3)]).values())
        for task, (_, label) in zip(task_ids, texts, strict=True):
            # two annotators agree, the third agrees on most tasks: consensus labels and some disagreement
            wrong = "Negative" if label == "Positive" else "Positive"
            for k, user in enumerate(users):
                given = wrong if k == 2 and task % 4 == 0 else label
                seeder.annotate(task, user, [choice_region(config, "sentiment", [given])])
        backend = seeder.connect_ml_backend(project, web.url)

        seeder.train_ml_backend(backend)  # Label Studio's "Start training" button
        queue = Queue(settings.ml_queue, connection=redis_conn)
        wait_for(lambda: queue.count == 1, what="the training job")
        SimpleWorker([queue], connection=redis_conn).work(burst=True)  # a real RQ worker, in this process
        job = queue.fetch_job(queue.finished_job_registry.get_job_ids()[0])
        report = job.return_value()
        unanimous = sum(1 for task in task_ids if task % 4)  # 2-of-3 tasks are below the 0.75 agreement bar
        assert report["training_labels"] == unanimous and report["classifier"].startswith("crowdgate-clf-")
        # The saved classifier belongs to this Label Studio's project (the uid it sends the backend) and config.
        classifier = artifacts.latest(project, "classifier", root=tmp_path)
        assert classifier.model_version == report["classifier"]
        assert classifier.provenance == artifacts.Provenance.of(config, seeder.project(project), labelstudio.url)
        assert classifier.provenance.project_uid.startswith(f"{project}.")

        seeder.retrieve_predictions(project)
        predictions = wait_for(lambda: (p := seeder.predictions(project)) and len(p) >= len(texts) and p,
                               what="predictions")
        assert {p["model_version"] for p in predictions} == {report["classifier"]}
        right = sum(p["result"][0]["value"]["choices"][0] == label
                    for p in predictions for t, (_, label) in zip(task_ids, texts, strict=True) if p["task"] == t)
        assert right >= 0.9 * len(texts)

        if "difficulty" in report:
            [task] = seeder.tasks(project, ids=task_ids[:1])
            assert 0.0 <= task["data"][DIFFICULTY_FIELD] <= 1.0
            assert redis_conn.hlen(f"tr:p:{project}:difficulty") == len(texts)
            difficulty = artifacts.latest(project, "difficulty", root=tmp_path)
            assert difficulty.provenance == classifier.provenance
        else:
            assert report["difficulty_skipped"]
    finally:
        web.stop()
