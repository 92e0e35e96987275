"""Difficulty regressor, observed-difficulty targets and the hand-made text features."""

from __future__ import annotations

import copy
import random

import numpy as np
import pytest

from ml_backend import artifacts
from ml_backend.difficulty import DifficultyModel, disagreement, label_entropy, missed_gold
from ml_backend.features import FEATURE_NAMES, NotTrainedError, pair_features, text_features
from tests.fake_labelstudio import URL, FakeLabelStudio
from tests.state_isolation import use_settings
from tests.test_classifier import hashed_embedder

PAIR = (
    '<View><Text name="premise" value="$text"/><Text name="hyp" value="$hypothesis"/>'
    '<Choices name="label" toName="premise"><Choice value="1"/><Choice value="0"/></Choices></View>'
)
SINGLE = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="c" toName="text"><Choice value="a"/><Choice value="b"/></Choices></View>'
)
NAMES = ["Alice", "Boris", "Chen", "Dmitri", "Elena", "Farid", "Greta", "Hiro", "Ines", "Jonas"]
PLACES = ["Paris", "Lagos", "Lima", "Oslo", "Quito", "Seoul"]


def synthetic_pairs(n: int, seed: int) -> tuple[list[dict], np.ndarray]:
    """Hypotheses naming people absent from the premise are harder, plus noise."""
    rng = random.Random(seed)
    tasks, difficulty = [], []
    for _ in range(n):
        cast = rng.sample(NAMES, 3)
        place = rng.choice(PLACES)
        premise = f"{cast[0]} met {cast[1]} and {cast[2]} in {place} last spring."
        strangers = rng.randint(0, 2)
        named = rng.sample([x for x in NAMES if x not in cast], strangers) + cast[: 2 - strangers]
        hypothesis = f"{named[0]} met {named[1]} in {place}."
        tasks.append({"data": {"text": premise, "hypothesis": hypothesis}})
        difficulty.append(min(max(0.1 + 0.15 * strangers + rng.gauss(0, 0.05), 0.0), 1.0))
    return tasks, np.array(difficulty)


def test_observed_difficulty_targets():
    assert disagreement(["a", "a", "a"]) == 0.0
    assert disagreement(["a", "a", "b", "c"]) == pytest.approx(0.5)
    assert disagreement([]) == 0.0
    assert label_entropy(["a", "a"]) == 0.0
    assert label_entropy(["a", "b"]) == pytest.approx(1.0)
    assert label_entropy(["a", "b"], n_classes=4) == pytest.approx(0.5)
    assert missed_gold(["1", "0", "1", "1"], "1") == pytest.approx(0.25)


def test_pair_features_capture_lexical_overlap():
    names = dict(zip(FEATURE_NAMES[4:], pair_features("Alice met Boris in Paris.", "Alice met Boris."), strict=True))
    assert names["new_content_share"] == 0.0 and names["new_capitalised_count"] == 0.0
    assert names["bigram_overlap"] == 1.0
    novel = dict(
        zip(FEATURE_NAMES[4:], pair_features("Alice met Boris in Paris.", "Chen never met Dmitri."), strict=True)
    )
    assert novel["new_capitalised_count"] > 0 and novel["new_content_share"] > 0.5
    assert novel["bigram_overlap"] < 0.5 and novel["negation_mismatch"] == 1.0
    single = text_features(["just one text here"])
    assert single.shape == (len(FEATURE_NAMES),) and np.all(single[4:] == 0)


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_pairs(160, seed=1), synthetic_pairs(60, seed=2)


def test_fits_predicts_shapes_and_beats_a_constant(synthetic):
    (train_tasks, train_y), (test_tasks, test_y) = synthetic
    model = DifficultyModel(PAIR)  # real MiniLM embeddings
    assert model.fit(train_tasks, train_y)
    predicted = model.predict(test_tasks)
    assert predicted.shape == (len(test_tasks),)
    assert np.all((predicted >= 0) & (predicted <= 1))
    model_mse = float(np.mean((predicted - test_y) ** 2))
    constant_mse = float(np.mean((train_y.mean() - test_y) ** 2))
    assert model_mse < 0.5 * constant_mse
    assert np.corrcoef(predicted, test_y)[0, 1] > 0.7


def test_signals_are_used_and_imputed():
    rng = np.random.default_rng(0)
    tasks = [{"text": f"item number {i}"} for i in range(120)]
    confidence = rng.uniform(0, 1, len(tasks))
    y = np.clip(0.6 - 0.5 * confidence + rng.normal(0, 0.03, len(tasks)), 0, 1)
    signals = [{"llm_confidence": float(c)} for c in confidence]
    model = DifficultyModel(SINGLE, embedder=hashed_embedder)
    assert model.fit(tasks[:90], y[:90], signals[:90])
    assert model.signal_names == ("llm_confidence",)
    assert "llm_confidence" in model.feature_names
    predicted = model.predict(tasks[90:], signals[90:])
    assert np.corrcoef(predicted, y[90:])[0, 1] > 0.9
    # A missing signal falls back on its training mean: close to the average difficulty.
    blind = model.predict(tasks[90:92], [{}, {"llm_confidence": None}])
    assert np.allclose(blind, y[:90].mean(), atol=0.1)
    assert model.predict(tasks[90:92]).shape == (2,)


def test_too_little_data_and_versions(tmp_path, monkeypatch):
    model = DifficultyModel(PAIR, embedder=hashed_embedder, min_examples=30)
    with pytest.raises(NotTrainedError):
        model.predict([{"text": "a", "hypothesis": "b"}])
    tasks, y = synthetic_pairs(40, seed=5)
    assert not model.fit(tasks[:10], y[:10])
    assert "need 30" in (model.skip_reason or "")
    assert not model.fit(tasks, np.full(len(tasks), 0.2))
    assert not model.fit(tasks, np.full(len(tasks), np.nan))
    versions = set()
    for _ in range(2):
        assert model.fit(tasks, y)
        versions.add(model.model_version)
    assert len(versions) == 2 and model.generation == 2

    use_settings(monkeypatch, model_dir=str(tmp_path))
    artifacts.save("3", "difficulty", model)
    loaded = artifacts.latest("3", "difficulty")
    loaded._embedder = hashed_embedder
    assert loaded.model_version == model.model_version
    assert np.allclose(loaded.predict(tasks[:5]), model.predict(tasks[:5]))


def labelstudio_with(project: dict, tasks: list[dict]) -> FakeLabelStudio:
    """The shared fake holding ``project`` (its id, label config and creation time) and ``tasks``."""
    ls = FakeLabelStudio()
    ls.add_project(project["id"], project["label_config"], created_at=project["created_at"])
    for t in copy.deepcopy(tasks):
        ls.add_task(project["id"], t["data"], task=t["id"])
    return ls


def data_written(ls: FakeLabelStudio) -> dict[int, dict]:
    """task -> the data last written to it."""
    return {task: fields["data"] for _, task, fields in ls.written("patch_task") if "data" in fields}


def test_tasks_imported_after_training_get_a_difficulty_from_the_latest_model(tmp_path, redis_service, redis_conn):
    from rq import Queue

    from ml_backend.app import create_app
    from ml_backend.new_tasks import difficulty_job, predict_new_tasks
    from ml_backend.prelabeler import Prelabeler
    from ml_backend.training import DIFFICULTY_FIELD
    from tests.state_isolation import isolated_settings

    record = {"id": 4, "label_config": PAIR, "created_at": "2026-11-22T04:17:12.218819Z"}
    model = DifficultyModel(PAIR, embedder=hashed_embedder, min_examples=30,
                            provenance=artifacts.Provenance.of(PAIR, record, URL))
    tasks, y = synthetic_pairs(40, seed=2)
    assert model.fit(tasks, y)
    artifacts.save(4, "difficulty", model, root=tmp_path)

    # The import reaches the backend's /webhook, which queues the job (a project without a model gets none).
    settings = isolated_settings(redis_url=redis_service.url, key_prefix="t")
    app = create_app(settings, model=Prelabeler(model_root=tmp_path)).test_client()
    reply = app.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 4},
                                       "tasks": [{"id": 11}, {"id": 12}]})
    assert reply.status_code == 200 and reply.json["difficulty"]
    [job] = Queue(settings.ml_queue, connection=redis_conn).jobs
    assert job.func is difficulty_job and job.args == (4, [11, 12], "t")
    assert "difficulty" not in app.post("/webhook", json={"action": "TASKS_CREATED", "project": {"id": 5},
                                                          "tasks": [{"id": 13}]}).json

    new = [{"id": 11, "data": {"text": "Alice met Boris in Paris.", "hypothesis": "Alice met Boris."}},
           {"id": 12, "data": {"text": "Chen left Oslo.", "hypothesis": "Greta and Hiro arrived in Lima."}}]
    client = labelstudio_with(record, new)
    report = predict_new_tasks(4, [11, 12], client, "t", redis_conn, model_root=tmp_path)
    assert report["difficulty"] == model.model_version and report["difficulty_written"] == 2
    stored = {int(k): float(v) for k, v in redis_conn.hgetall("t:p:4:difficulty").items()}
    assert set(stored) == {11, 12} and all(0.0 <= v <= 1.0 for v in stored.values())
    for task in new:  # written like training writes it: the whole data, plus the field
        assert data_written(client)[task["id"]] == {**task["data"], DIFFICULTY_FIELD: round(stored[task["id"]], 4)}

    # The same project id in another Label Studio (another creation time) or another config: not used.
    other = labelstudio_with({**record, "created_at": "2027-01-01T00:00:00Z"}, new)
    assert "trained for Label Studio project" in predict_new_tasks(4, [11], other, "t", None, tmp_path)["skipped"]
    changed = labelstudio_with({**record, "label_config": SINGLE}, new)
    assert "label config" in predict_new_tasks(4, [11], changed, "t", None, tmp_path)["skipped"]
    assert not other.writes and not changed.writes
