"""Embedded classifier (real MiniLM on a toy sentiment set, a hashed bag-of-words double elsewhere),
label-config parsing, and versioned artifacts on disk."""

from __future__ import annotations

import hashlib
import itertools
import random
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pytest

from ml_backend import artifacts, features
from ml_backend.classifier import EmbeddingClassifier
from ml_backend.features import NotTrainedError, task_schema, task_texts
from tests.state_isolation import use_settings

SENTIMENT = (
    '<View><Text name="text" value="$text"/>'
    '<Choices name="sentiment" toName="text" choice="single">'
    '<Choice value="Positive"/><Choice value="Negative"/><Choice value="Neutral"/></Choices></View>'
)
PAIR = (
    '<View><Text name="premise" value="$text"/><Text name="hyp" value="$hypothesis"/>'
    '<Choices name="label" toName="premise"><Choice value="1"/><Choice value="0"/></Choices></View>'
)
TOPICS = (
    '<View><HyperText name="page" value="$html"/>'
    '<Choices name="topics" toName="page" choice="multiple">'
    '<Choice value="food"/><Choice value="travel"/><Choice value="sport"/></Choices></View>'
)

POSITIVE = ["good", "great", "wonderful", "excellent", "lovely", "superb", "delightful", "brilliant"]
NEGATIVE = ["bad", "awful", "terrible", "horrible", "poor", "dreadful", "disgusting", "miserable"]
THINGS = ["movie", "acting", "plot", "food", "service", "hotel", "music", "book"]


def hashed_embedder(texts: Sequence[str]) -> np.ndarray:
    """Fast deterministic stand-in for MiniLM: a sum of per-word pseudo-random unit vectors."""
    rows = []
    for text in texts:
        vector = np.zeros(384)
        for word in re.findall(r"\w+", text.lower()):
            seed = int.from_bytes(hashlib.sha256(word.encode()).digest()[:4], "little")
            vector += np.random.default_rng(seed).standard_normal(384)
        rows.append(vector / (np.linalg.norm(vector) or 1.0))
    return np.asarray(rows, dtype=np.float32)


def sentiment_set(templates: Sequence[str]) -> tuple[list[dict], list[list[str]]]:
    tasks, labels = [], []
    for template, thing in itertools.product(templates, THINGS):
        for words, label in ((POSITIVE, "Positive"), (NEGATIVE, "Negative")):
            for word in words:
                tasks.append({"data": {"text": template.format(thing=thing, word=word)}})
                labels.append([label])
    return tasks, labels


@pytest.fixture(scope="module")
def minilm_classifier() -> EmbeddingClassifier:
    tasks, labels = sentiment_set(["the {thing} was {word}"])
    model = EmbeddingClassifier(SENTIMENT)
    assert model.fit(tasks, labels), model.skip_reason
    return model


def test_task_schema_finds_text_fields_and_controls():
    schema = task_schema(PAIR)
    assert schema.fields == ("text", "hypothesis")
    assert schema.control is not None and schema.control.choices == ("1", "0")
    topics = task_schema(TOPICS)
    assert topics.fields == ("html",) and topics.control is not None and topics.control.multiple
    assert task_texts({"data": {"html": "<p>Hello&amp; <b>bye</b></p>"}}, topics.fields) == ["Hello& bye"]
    assert task_texts({"text": "bare data dict"}, ("text", "hypothesis")) == ["bare data dict", ""]
    # The shipped RTE config: Header tags are not data, and aliases are what results carry.
    rte = task_schema((Path(__file__).resolve().parents[1] / "label_configs" / "rte" / "config.xml").read_text())
    assert rte.fields == ("text", "hypothesis")
    assert rte.control is not None and rte.control.choices == ("1", "0") and not rte.control.multiple


def test_custom_embedder_bypasses_the_shared_cache():
    before = len(features.DEFAULT_CACHE)
    vectors = features.embed_texts(["a text only the test double has seen"], hashed_embedder)
    assert vectors.shape == (1, 384) and vectors.dtype == np.float32
    assert len(features.DEFAULT_CACHE) == before


def test_learns_separable_sentiment_with_calibrated_probabilities(minilm_classifier: EmbeddingClassifier):
    model = minilm_classifier
    assert model.trained and model.calibrated  # 64 examples per class: enough to calibrate
    held_out = [
        ("an excellent concert, truly great", "Positive"),
        ("the staff were wonderful and lovely", "Positive"),
        ("a horrible, dreadful experience", "Negative"),
        ("the meal was awful and the room terrible", "Negative"),
    ]
    proba = model.predict_proba([{"data": {"text": t}} for t, _ in held_out])
    assert proba.shape == (4, 3)
    assert np.all((proba >= 0) & (proba <= 1))
    assert np.allclose(proba.sum(axis=1), 1.0)
    assert np.all(proba[:, 2] == 0)  # "Neutral" never seen in training
    predictions = model.predict([{"data": {"text": t}} for t, _ in held_out])
    assert [p.choices[0] for p in predictions] == [label for _, label in held_out]
    assert all(0.5 < p.score <= 1.0 for p in predictions)


def test_random_labels_give_modest_confidence():
    # No signal: calibrated probabilities should stay near the base rate instead of claiming certainty.
    rng = random.Random(3)
    tasks = [{"text": " ".join(rng.sample(THINGS + POSITIVE + NEGATIVE, 4))} for _ in range(120)]
    labels = [rng.choice(["Positive", "Negative"]) for _ in tasks]
    model = EmbeddingClassifier(SENTIMENT, embedder=hashed_embedder)
    assert model.fit(tasks[:90], labels[:90])
    assert model.calibrated
    confidence = model.predict_proba(tasks[90:]).max(axis=1)
    assert confidence.mean() < 0.75


def test_too_little_data_is_refused_and_keeps_previous_model():
    model = EmbeddingClassifier(SENTIMENT, embedder=hashed_embedder, min_examples=10)
    assert not model.fit([{"text": "good"}] * 5, ["Positive"] * 5)
    assert "usable examples" in (model.skip_reason or "")
    assert not model.fit([{"text": f"good {i}"} for i in range(20)], ["Positive"] * 20)
    assert "class" in (model.skip_reason or "")
    # Labels outside the config do not count.
    assert not model.fit([{"text": f"x {i}"} for i in range(20)], ["Positive", "Mixed"] * 10)
    with pytest.raises(NotTrainedError):
        model.predict_proba([{"text": "good"}])

    tasks, labels = sentiment_set(["the {thing} was {word}"])
    assert model.fit(tasks, labels)
    version = model.model_version
    assert not model.fit(tasks[:3], labels[:3])
    assert model.trained and model.model_version == version


def test_small_data_uses_plain_logistic_probabilities():
    tasks, labels = sentiment_set(["the {thing} was {word}"])
    model = EmbeddingClassifier(SENTIMENT, embedder=hashed_embedder)
    assert model.fit(tasks[:12] + tasks[-12:], labels[:12] + labels[-12:])
    assert not model.calibrated
    proba = model.predict_proba(tasks[20:30])
    assert np.allclose(proba.sum(axis=1), 1.0)


def test_versions_change_on_every_retraining():
    tasks, labels = sentiment_set(["the {thing} was {word}"])
    model = EmbeddingClassifier(SENTIMENT, embedder=hashed_embedder)
    untrained = model.model_version
    model.fit(tasks, labels)
    first = model.model_version
    model.fit(tasks, labels)  # same data: the counter still moves
    second = model.model_version
    model.fit(tasks[:-10], labels[:-10])
    third = model.model_version
    assert len({untrained, first, second, third}) == 4
    assert first.split("-")[-1] == second.split("-")[-1] != third.split("-")[-1]


def test_pair_config_uses_both_texts():
    tasks = [
        {"text": f"The {t} opened in Paris.", "hypothesis": h}
        for t in THINGS
        for h in ("It opened in Paris.", "It closed in Berlin.")
    ] * 2
    labels = ["1", "0"] * (len(tasks) // 2)
    model = EmbeddingClassifier(PAIR, embedder=hashed_embedder)
    assert model.fit(tasks, labels)
    assert model.classes == ("1", "0")
    picks = [p.choices[0] for p in model.predict(tasks[:4])]
    assert picks == ["1", "0", "1", "0"]


def test_multilabel_one_vs_rest():
    rng = random.Random(0)
    vocab = {"food": ["pizza", "pasta", "bread"], "travel": ["train", "flight", "hotel"], "sport": ["goal", "match"]}
    tasks, labels = [], []
    for _ in range(80):
        topics = [t for t in ("food", "travel") if rng.random() < 0.5]  # "sport" is never picked
        words = [rng.choice(vocab[t]) for t in topics] + ["today"]
        tasks.append({"data": {"html": f"<p>{' '.join(words)}</p>"}})
        labels.append(topics)
    model = EmbeddingClassifier(TOPICS, embedder=hashed_embedder)
    assert model.fit(tasks, labels)
    proba = model.predict_proba([{"html": "pizza and a flight"}, {"html": "today"}])
    assert proba.shape == (2, 3)
    assert proba[0, 0] > 0.5 and proba[0, 1] > 0.5 and proba[0, 2] == 0.0
    assert proba[1, 0] < 0.5 and proba[1, 1] < 0.5
    assert model.predict([{"html": "pasta today"}])[0].choices == ("food",)


def test_artifacts_round_trip_latest_and_pruning(tmp_path, monkeypatch):
    use_settings(monkeypatch, model_dir=str(tmp_path / "models"))
    tasks, labels = sentiment_set(["the {thing} was {word}"])
    model = EmbeddingClassifier(SENTIMENT, embedder=hashed_embedder)
    assert artifacts.latest(7, "classifier") is None
    saved = []
    for round_ in range(4):
        model.fit(tasks[round_:], labels[round_:])
        path = artifacts.save(7, "classifier", model, keep=3)
        assert path.is_relative_to(tmp_path / "models" / "7" / "classifier")
        saved.append(model.model_version)
    assert artifacts.versions(7, "classifier") == saved[1:]
    assert artifacts.latest_version(7, "classifier") == saved[-1]
    loaded = artifacts.latest(7, "classifier")
    assert loaded.model_version == saved[-1]
    # The custom embedder is not pickled; give it back to predict offline in the test.
    loaded._embedder = hashed_embedder
    assert np.allclose(loaded.predict_proba(tasks[:5]), model.predict_proba(tasks[:5]))
    assert artifacts.load(7, "classifier", saved[1]).model_version == saved[1]
    with pytest.raises(KeyError):
        artifacts.load(7, "classifier", saved[0])
    # Saving a version again keeps one copy of it, as the newest.
    artifacts.save(7, "classifier", {"any": "object"}, version=saved[1], keep=3)
    assert artifacts.versions(7, "classifier") == [saved[2], saved[3], saved[1]]
    assert artifacts.latest(7, "classifier") == {"any": "object"}
    # Projects and kinds are separate namespaces; odd project names are made path-safe.
    artifacts.save("2.1795321032/../x", "difficulty", {"v": 1}, version="v1")
    assert artifacts.versions("2.1795321032/../x", "difficulty") == ["v1"]
    assert artifacts.latest(7, "difficulty") is None
