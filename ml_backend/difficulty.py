"""Task difficulty in [0, 1] from text (and optional early signals), learnt from finished tasks.

Targets come from finished tasks' labels: ``disagreement`` (1 − share of the majority label), ``entropy``
(normalised entropy of the label distribution) or ``missed_gold`` (share of workers who missed gold).

The regressor is a ridge regression (regularisation picked by leave-one-out, ``RidgeCV``) on:
- for two-text tasks, the lexical-overlap features of ``features.py`` (new content words, new capitalised
  words, bigram overlap...); for one-text tasks, length features;
- the MiniLM embedding of each text;
- optional named per-task ``signals`` known before the crowd finishes (the LLM's confidence, the
  disagreement among the first annotations...), standardised; missing values are imputed with the
  training mean.
Text alone predicts difficulty weakly (RTE: 5-fold Spearman ≈ 0.1, see bench/difficulty.py), so the
predictions stay close to the project's mean difficulty unless signals carry more.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import RidgeCV

from ml_backend.artifacts import Provenance
from ml_backend.features import (
    LENGTH_FEATURE_NAMES,
    PAIR_FEATURE_NAMES,
    Embedder,
    NotTrainedError,
    as_pair,
    embed_texts,
    fingerprint,
    length_features,
    pair_features,
    task_schema,
    task_texts,
)

KIND = "difficulty"
ALPHAS = tuple(float(a) for a in np.logspace(0, 4, 9))


# -- observed difficulty of finished tasks ------------------------------------------------------------


def disagreement(labels: Sequence[Hashable]) -> float:
    """1 − share of the most common label (0 when everyone agrees)."""
    if not labels:
        return 0.0
    return 1.0 - Counter(labels).most_common(1)[0][1] / len(labels)


def label_entropy(labels: Sequence[Hashable], n_classes: int | None = None) -> float:
    """Entropy of the label distribution, divided by its maximum so it lies in [0, 1]."""
    counts = Counter(labels)
    k = max(n_classes or len(counts), 2)
    total = sum(counts.values())
    if not total:
        return 0.0
    h = -sum(c / total * math.log(c / total) for c in counts.values())
    return h / math.log(k)


def missed_gold(labels: Sequence[Hashable], gold: Hashable) -> float:
    """Share of labels that differ from the gold answer."""
    return sum(label != gold for label in labels) / len(labels) if labels else 0.0


# -- model --------------------------------------------------------------------------------------------


class DifficultyModel:
    """Ridge regressor from a task (and optional signals) to its expected difficulty in [0, 1]."""

    def __init__(self, label_config: str, *, min_examples: int = 30, embedder: Embedder | None = None,
                 provenance: Provenance | None = None) -> None:
        self.label_config = label_config
        # The project and config it is trained for (artifacts.mismatch checks it before the model answers).
        self.provenance = provenance or Provenance.of(label_config)
        self.fields = task_schema(label_config).fields
        self.pair = len(self.fields) >= 2
        self.min_examples = min_examples
        self._embedder = embedder
        self.signal_names: tuple[str, ...] = ()
        self.generation = 0
        self.data_hash = "untrained"
        self.trained = False
        self.skip_reason: str | None = "not fitted yet"
        self.n_train = 0
        self.mean_difficulty = 0.0
        self.alpha = 0.0
        self._feature_mean = np.zeros(0)
        self._feature_scale = np.ones(0)
        self._signal_mean = np.zeros(0)
        self._signal_scale = np.ones(0)
        self._ridge: RidgeCV | None = None

    @property
    def model_version(self) -> str:
        return f"crowdgate-difficulty-{self.generation}-{self.data_hash}"

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_embedder"] = None
        return state

    # -- design matrix -------------------------------------------------------------------------------
    def _hand_features(self, texts: list[list[str]]) -> np.ndarray:
        if self.pair:
            # On RTE the length features only add noise to the overlap ones for pair tasks.
            return np.vstack([pair_features(*as_pair(t)) for t in texts])
        return np.vstack([length_features(t) for t in texts])

    def _embeddings(self, texts: list[list[str]]) -> np.ndarray:
        width = 2 if self.pair else 1
        flat = [part for t in texts for part in (as_pair(t) if self.pair else (t[0] if t else "",))]
        vectors = embed_texts(flat, self._embedder)
        return vectors.reshape(len(texts), width * vectors.shape[1])

    def _signals(self, signals: Sequence[Mapping[str, float | None]] | None, n: int) -> np.ndarray:
        out = np.full((n, len(self.signal_names)), np.nan)
        if signals is not None:
            if len(signals) != n:
                raise ValueError("signals and tasks differ in length")
            for i, row in enumerate(signals):
                for j, name in enumerate(self.signal_names):
                    value = row.get(name)
                    if value is not None and math.isfinite(float(value)):
                        out[i, j] = float(value)
        return out

    def _design(
        self, tasks: Sequence[Mapping[str, Any]], signals: Sequence[Mapping[str, float | None]] | None
    ) -> np.ndarray:
        texts = [task_texts(task, self.fields) for task in tasks]
        hand = (self._hand_features(texts) - self._feature_mean) / self._feature_scale
        raw = self._signals(signals, len(tasks))
        raw = np.where(np.isnan(raw), self._signal_mean, raw)
        sig = (raw - self._signal_mean) / self._signal_scale
        return np.hstack([hand, sig, self._embeddings(texts)])

    # -- training / prediction -----------------------------------------------------------------------
    def fit(
        self,
        tasks: Sequence[Mapping[str, Any]],
        difficulty: Sequence[float],
        signals: Sequence[Mapping[str, float | None]] | None = None,
    ) -> bool:
        """Fit on finished tasks and their observed difficulty (each in [0, 1]); False if refused.

        ``signals``: one mapping per task (e.g. ``{"llm_confidence": 0.8}``); the names seen here are the
        ones used at prediction time. A refused fit leaves a previous model untouched.
        """
        if len(tasks) != len(difficulty):
            raise ValueError("tasks and difficulty differ in length")
        y = np.asarray(difficulty, dtype=float)
        keep = np.isfinite(y)
        if keep.sum() < self.min_examples:
            self.skip_reason = f"{int(keep.sum())} finished tasks, need {self.min_examples}"
            return False
        if np.ptp(y[keep]) == 0:
            self.skip_reason = "every finished task has the same difficulty"
            return False
        rows = np.flatnonzero(keep)
        tasks = [tasks[i] for i in rows]
        y = np.clip(y[keep], 0.0, 1.0)
        sig_rows = [signals[i] for i in rows] if signals is not None else None

        names = sorted({k for row in sig_rows or () for k in row}) if sig_rows else []
        texts = [task_texts(task, self.fields) for task in tasks]
        hand = self._hand_features(texts)
        previous = self.__dict__.copy()
        self.signal_names = tuple(names)
        raw = self._signals(sig_rows, len(tasks))
        # A signal absent everywhere is dropped rather than imputed from nothing.
        present = ~np.all(np.isnan(raw), axis=0)
        self.signal_names = tuple(n for n, ok in zip(names, present, strict=True) if ok)
        raw = raw[:, present]
        self._feature_mean, self._feature_scale = hand.mean(axis=0), _scale(hand)
        self._signal_mean = np.nanmean(raw, axis=0) if raw.shape[1] else np.zeros(0)
        filled = np.where(np.isnan(raw), self._signal_mean, raw)
        self._signal_scale = _scale(filled)
        try:
            X = self._design(tasks, sig_rows)
            ridge = RidgeCV(alphas=ALPHAS).fit(X, y)
        except Exception:
            self.__dict__.update(previous)
            raise

        self._ridge = ridge
        self.alpha = float(ridge.alpha_)
        self.mean_difficulty = float(y.mean())
        self.trained = True
        self.skip_reason = None
        self.n_train = len(tasks)
        self.generation += 1
        self.data_hash = fingerprint(self.fields, texts, [round(v, 6) for v in y], sig_rows)
        return True

    def predict(
        self,
        tasks: Sequence[Mapping[str, Any]],
        signals: Sequence[Mapping[str, float | None]] | None = None,
    ) -> np.ndarray:
        """Expected difficulty per task, clipped to [0, 1]."""
        if not self.trained or self._ridge is None:
            raise NotTrainedError(self.skip_reason or "not trained")
        if not tasks:
            return np.zeros(0)
        return np.clip(self._ridge.predict(self._design(tasks, signals)), 0.0, 1.0)

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Names of the hand-made and signal columns (the embedding columns follow them)."""
        hand = PAIR_FEATURE_NAMES if self.pair else LENGTH_FEATURE_NAMES
        return tuple(hand) + self.signal_names


def _scale(matrix: np.ndarray) -> np.ndarray:
    if not matrix.shape[1]:
        return np.ones(0)
    std = matrix.std(axis=0)
    return np.where(std > 1e-12, std, 1.0)
