"""Embedded classifier for Choices configs: MiniLM embeddings + logistic regression, no LLM involved.

Trained per project on (task, label) pairs the caller picks (gold answers and confident consensus labels).
A task becomes its text's embedding, or for two-text configs (premise/hypothesis) the NLI-style block
[p, h, p*h, |p-h|], plus the hand-made features of ``features.py``; every column is standardised and a
strongly L2-regularised LogisticRegression is fitted on top.

Probabilities. With at least ``calibrate_min_per_class`` examples in every class the regression is wrapped
in scikit-learn's CalibratedClassifierCV (Platt/sigmoid, 3 shuffled folds, one final model). On RTE, where
MiniLM carries little entailment signal (5-fold accuracy ≈ 0.575), plain LR is over-confident (mean confidence
0.70, log loss 0.76, worse than a coin's 0.693) and the calibrated model is not (mean confidence 0.565, log
loss 0.688, same accuracy); on a learnable problem calibration changes little. Below that size there is too
little data to calibrate on, and the plain (regularised) LR probabilities are returned. Multi-label configs
get one binary regression per choice (one-vs-rest), never calibrated.

Too little data (fewer than ``min_examples`` usable examples or fewer than two classes) leaves the model
untrained: ``fit`` returns False, ``skip_reason`` says why, and predicting raises ``NotTrainedError`` so the
caller falls back (zero-shot or LLM pre-labels).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from sklearn.base import clone
from sklearn.calibration import CalibratedClassifierCV
from sklearn.linear_model import LogisticRegression
from sklearn.model_selection import StratifiedKFold
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import StandardScaler

from ml_backend.artifacts import Provenance
from ml_backend.features import (
    ChoiceControl,
    Embedder,
    NotTrainedError,
    TaskSchema,
    feature_matrix,
    fingerprint,
    task_embedding,
    task_schema,
    task_texts,
)

Label = str | Sequence[str]
KIND = "classifier"


@dataclass(frozen=True)
class ChoicePrediction:
    """Chosen value(s), the model's confidence in that choice, and every choice's probability."""

    choices: tuple[str, ...]
    score: float
    proba: dict[str, float]


def _labels_of(label: Label) -> list[str]:
    # A Label Studio choices value is a list; a bare string is accepted for convenience.
    if isinstance(label, str):
        return [label]
    return [str(v) for v in label]


class EmbeddingClassifier:
    """Per-project classifier for one Choices control (the first one unless ``control`` names another)."""

    def __init__(
        self,
        label_config: str,
        control: str | None = None,
        *,
        min_examples: int = 10,
        C: float = 0.005,
        calibrate_min_per_class: int = 20,
        embedder: Embedder | None = None,
        provenance: Provenance | None = None,
    ) -> None:
        schema: TaskSchema = task_schema(label_config)
        chosen: ChoiceControl | None = schema.control
        if control is not None:
            chosen = next((c for c in schema.choice_controls if c.name == control), None)
        if chosen is None:
            raise ValueError(f"label config has no Choices control{f' named {control!r}' if control else ''}")
        self.label_config = label_config
        # The project and config it is trained for (artifacts.mismatch checks it before the model answers).
        self.provenance = provenance or Provenance.of(label_config)
        self.control = chosen
        self.fields = schema.fields
        self.min_examples = min_examples
        self.C = C
        self.calibrate_min_per_class = calibrate_min_per_class
        self._embedder = embedder
        # Choices with value="$options" have no fixed list: the classes come from the training labels.
        self.classes: tuple[str, ...] = chosen.choices
        self.generation = 0
        self.data_hash = "untrained"
        self.trained = False
        self.calibrated = False
        self.skip_reason: str | None = "not fitted yet"
        self.n_train = 0
        self.class_counts: dict[str, int] = {}
        self._model: Any = None
        self._columns: list[int] = []

    # -- versioning ---------------------------------------------------------------------------------
    @property
    def multiple(self) -> bool:
        return self.control.multiple

    @property
    def model_version(self) -> str:
        """Changes on every successful fit: generation counter plus a hash of the training data."""
        return f"crowdgate-clf-{self.generation}-{self.data_hash}"

    # -- pickling: a custom embedder (tests) is process-local --------------------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_embedder"] = None
        return state

    # -- training ------------------------------------------------------------------------------------
    def _matrix(self, tasks: Sequence[Mapping[str, Any]]) -> np.ndarray:
        texts = [task_texts(task, self.fields) for task in tasks]
        return np.hstack([task_embedding(texts, self._embedder), feature_matrix(texts)])

    def _base(self) -> Pipeline:
        return make_pipeline(StandardScaler(), LogisticRegression(C=self.C, max_iter=2000))

    def fit(self, tasks: Sequence[Mapping[str, Any]], labels: Sequence[Label]) -> bool:
        """Train on tasks (Label Studio tasks or their ``data``) and their labels; False if refused.

        A refused fit leaves a previously trained model (and its version) untouched.
        """
        if len(tasks) != len(labels):
            raise ValueError("tasks and labels differ in length")
        known = set(self.control.choices)
        rows: list[int] = []
        targets: list[list[str]] = []
        for i, label in enumerate(labels):
            values = [v for v in _labels_of(label) if not known or v in known]
            # Labels outside the config (renamed choices, stale exports) are dropped, not guessed at.
            if values or (self.multiple and label is not None and not _labels_of(label)):
                rows.append(i)
                targets.append(values)
        classes = self.control.choices or tuple(sorted({v for t in targets for v in t}))
        counts = Counter(v for t in targets for v in (t if self.multiple else t[:1]))
        if len(rows) < self.min_examples:
            self.skip_reason = f"{len(rows)} usable examples, need {self.min_examples}"
            return False
        if self.multiple:
            if not any(0 < counts.get(c, 0) < len(rows) for c in classes):
                self.skip_reason = "no choice is both picked and not picked"
                return False
        elif len(counts) < 2:
            self.skip_reason = f"{len(counts)} class(es) in the data, need 2"
            return False

        X = self._matrix([tasks[i] for i in rows])
        if self.multiple:
            model: Any = self._fit_multilabel(X, targets, classes)
            calibrated = False
        else:
            model, calibrated, columns = self._fit_single(X, [t[0] for t in targets], classes, counts)
            self._columns = columns

        self.classes = classes
        self._model = model
        self.calibrated = calibrated
        self.trained = True
        self.skip_reason = None
        self.n_train = len(rows)
        self.class_counts = dict(counts)
        self.generation += 1
        texts = [task_texts(tasks[i], self.fields) for i in rows]
        self.data_hash = fingerprint(self.control.name, classes, self.C, texts, targets)
        return True

    def _fit_single(
        self, X: np.ndarray, y_labels: list[str], classes: tuple[str, ...], counts: Counter[str]
    ) -> tuple[Any, bool, list[int]]:
        index = {c: i for i, c in enumerate(classes)}
        y = np.array([index[v] for v in y_labels])
        # 3-fold calibration needs at least 3 examples of every class whatever the setting says.
        calibrate = min(counts.values()) >= max(self.calibrate_min_per_class, 3)
        model: Any = self._base()
        if calibrate:
            # ensemble=False: one regression on all the data, sigmoid fitted on its out-of-fold scores.
            # Shuffled folds: exports are often sorted (RTE's gold drifts from 75 % to 3 % "1" along the
            # file), and unshuffled folds then teach the calibrator to flip the scores.
            folds = StratifiedKFold(3, shuffle=True, random_state=0)
            model = CalibratedClassifierCV(model, method="sigmoid", cv=folds, ensemble=False)
        model.fit(X, y)
        return model, calibrate, [int(c) for c in model.classes_]

    def _fit_multilabel(self, X: np.ndarray, targets: list[list[str]], classes: tuple[str, ...]) -> list[Any]:
        per_choice: list[Any] = []
        base = self._base()
        for choice in classes:
            y = np.array([choice in t for t in targets], dtype=int)
            if 0 < y.sum() < len(y):
                per_choice.append(clone(base).fit(X, y))
            else:
                # Always (or never) picked in the data: its observed rate is all we know.
                per_choice.append(float(y.mean()))
        return per_choice

    # -- prediction ----------------------------------------------------------------------------------
    def predict_proba(self, tasks: Sequence[Mapping[str, Any]]) -> np.ndarray:
        """(n_tasks, n_classes) probabilities in ``classes`` order.

        Single choice: rows sum to 1 (classes never seen in training get 0). Multi-label: each column is
        the independent probability that the choice applies.
        """
        if not self.trained:
            raise NotTrainedError(self.skip_reason or "not trained")
        if not tasks:
            return np.zeros((0, len(self.classes)))
        X = self._matrix(tasks)
        out = np.zeros((len(tasks), len(self.classes)))
        if self.multiple:
            for j, model in enumerate(self._model):
                out[:, j] = model if isinstance(model, float) else model.predict_proba(X)[:, 1]
        else:
            out[:, self._columns] = self._model.predict_proba(X)
        return np.clip(out, 0.0, 1.0)

    def predict(self, tasks: Sequence[Mapping[str, Any]], threshold: float = 0.5) -> list[ChoicePrediction]:
        """Best choice per task (multi-label: every choice at or above ``threshold``).

        ``score`` is the probability of the chosen value; for multi-label the mean confidence over choices
        in the pick/no-pick decision.
        """
        proba = self.predict_proba(tasks)
        predictions = []
        for row in proba:
            by_class = {c: round(float(p), 4) for c, p in zip(self.classes, row, strict=True)}
            if self.multiple:
                chosen = tuple(c for c, p in zip(self.classes, row, strict=True) if p >= threshold)
                score = float(np.mean(np.maximum(row, 1.0 - row)))
            else:
                best = int(row.argmax())
                chosen, score = (self.classes[best],), float(row[best])
            predictions.append(ChoicePrediction(choices=chosen, score=round(score, 4), proba=by_class))
        return predictions
