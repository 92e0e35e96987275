"""A project's Dawid–Skene fit: the model, the fitted result the services read, and where they read it.

:class:`SemiSupervisedDawidSkene` is Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates
using the EM algorithm", Applied Statistics 28(1), with gold as known truths (clamped posteriors), empirical-Bayes
worker priors centred on the pooled crowd (Raykar et al. 2010, "Learning from crowds", JMLR 11) and a guard
against the label-flipped solution; :class:`ProjectFit` is one fitted project as stored in Redis
(``Keys.truth_fit``); :func:`load_fit` is how scoring, the ledger and routing read it (cached for a couple of
seconds per process). The refit job that produces it is :mod:`qa_hooks.refit`, whose docstring says what uses it.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import redis

from core.keys import Keys
from qa_hooks.truth import MIN_PROBABILITY, label_posterior

__all__ = [
    "FitSettings",
    "ProjectFit",
    "SemiSupervisedDawidSkene",
    "clear_fit_cache",
    "load_fit",
    "one_coin_confusion",
    "refit_due",
    "stored_fit",
]

# A fit whose answers on gold tasks trail majority vote's by more than this is taken as a flipped solution.
GOLD_SLACK = 0.05
# How long a process reuses a project's fit before it asks Redis whether a newer one was stored.
CACHE_S = 2.0


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.clip(matrix, MIN_PROBABILITY, None)
    return matrix / matrix.sum(axis=-1, keepdims=True)


def one_coin_confusion(n_classes: int, accuracy: float) -> np.ndarray:
    """Confusion matrix of a worker who is right with ``accuracy`` and spreads errors evenly."""
    off = (1.0 - accuracy) / (n_classes - 1)
    matrix = np.full((n_classes, n_classes), off)
    np.fill_diagonal(matrix, accuracy)
    return matrix


def refit_due(n_labels: int, labels_at_fit: int, every: int, fraction: float) -> bool:
    """Whether a project (or a replay) with ``n_labels`` labels, last fitted at ``labels_at_fit``, is due.

    Due after ``every`` new labels, and once the project is large after ``fraction`` of the labels it had at the
    last fit, whichever is more: a fit costs time proportional to the labels, so the cost per label stays bounded.
    """
    return n_labels - labels_at_fit >= max(every, math.ceil(fraction * labels_at_fit))


@dataclass(frozen=True)
class FitSettings:
    """The refit's model and priors (one setting for every project; chosen on the crowd sets in bench/overlap.py).

    ``prior_accuracy``: the accuracy of the prior worker; ``base_strength``: pseudo-labels per true class of the
    pooled crowd's prior; ``worker_strength``: pseudo-labels per true class pulling a worker towards the crowd;
    ``class_strength``: pseudo-tasks per class of the class prior; ``model``: ``confusion`` (a matrix per
    worker) or ``one_coin`` (one accuracy); ``max_iter``/``tol``: EM rounds at most, and the largest change of
    any posterior below which EM stops.
    """

    prior_accuracy: float = 0.7
    base_strength: float = 10.0
    worker_strength: float = 2.0
    class_strength: float = 50.0
    model: str = "confusion"
    max_iter: int = 50
    tol: float = 1e-4

    def __post_init__(self) -> None:
        if self.model not in ("confusion", "one_coin"):
            raise ValueError(f"model must be 'confusion' or 'one_coin', got {self.model!r}")
        if self.base_strength <= 0 or self.worker_strength <= 0 or self.class_strength <= 0:
            raise ValueError("prior strengths must be positive")
        if self.max_iter < 1 or self.tol < 0:
            raise ValueError("max_iter >= 1 and tol >= 0 are required")


class SemiSupervisedDawidSkene:
    """Dawid & Skene (1979) EM with gold clamped, empirical-Bayes worker priors and a flip guard (module doc).

    Works on integer codes: ``fit(task, worker, label, n_tasks=, n_workers=, gold=, init=)`` with ``gold`` a
    mapping task code -> class code and ``init`` a warm start ``(log_conf, pooled_log_conf, log_prior)`` (the
    first ``len(log_conf)`` workers; later ones start at the pooled crowd). Fitted attributes:

    ``log_conf_`` (workers × K × K, log P(given | true)), ``pooled_log_conf_`` (K × K), ``log_prior_`` (K),
    ``posteriors_`` (tasks × K, gold clamped), ``counts_`` (workers × K × K expected counts), ``n_iter_``,
    ``restarted_`` (whether the flip guard restarted EM from the vote shares).
    """

    def __init__(self, n_classes: int, settings: FitSettings | None = None) -> None:
        if n_classes < 2:
            raise ValueError(f"need at least 2 classes, got {n_classes}")
        self.n_classes = n_classes
        self.settings = settings or FitSettings()
        if not 1.0 / n_classes < self.settings.prior_accuracy < 1.0:
            raise ValueError(f"prior_accuracy must be above chance (1/{n_classes}) and below 1")
        self.base_ = one_coin_confusion(n_classes, self.settings.prior_accuracy)

    # -- EM steps on arrays --------------------------------------------------------------------------------

    def _e_step(self, t: np.ndarray, w: np.ndarray, y: np.ndarray, n_tasks: int) -> np.ndarray:
        """Unnormalised log posterior over the true class per task, (tasks, K)."""
        k = self.n_classes
        log_post = np.empty((n_tasks, k))
        for c in range(k):
            log_post[:, c] = np.bincount(t, weights=self.log_conf_[w, c, y], minlength=n_tasks)
        return log_post + self.log_prior_

    @staticmethod
    def _softmax(log_p: np.ndarray) -> np.ndarray:
        p = np.exp(log_p - log_p.max(axis=-1, keepdims=True))
        return p / p.sum(axis=-1, keepdims=True)

    def _clamped(self, log_post: np.ndarray, gold: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        post = self._softmax(log_post)
        if len(gold[0]):
            post[gold[0]] = np.eye(self.n_classes)[gold[1]]
        return post

    def _m_step(self, task_post: np.ndarray, t: np.ndarray, w: np.ndarray, y: np.ndarray, n_workers: int,
                informative: np.ndarray) -> None:
        k, s = self.n_classes, self.settings
        label_post = task_post[t] * informative[t][:, None]
        flat = w * k + y
        counts = np.empty((n_workers, k, k))
        for c in range(k):
            counts[:, c, :] = np.bincount(flat, weights=label_post[:, c], minlength=n_workers * k).reshape(n_workers, k)
        self.counts_ = counts
        if s.model == "one_coin":
            correct = np.einsum("wcc->w", counts)
            total = counts.sum(axis=(1, 2))
            pop_acc = (correct.sum() + s.base_strength * s.prior_accuracy) / (total.sum() + s.base_strength)
            strength = s.worker_strength * k  # one accuracy shares all the per-class pseudo-labels
            acc = np.clip((correct + strength * pop_acc) / (total + strength), 1.0 / k + 1e-3, 1.0 - MIN_PROBABILITY)
            off = (1.0 - acc) / (k - 1)
            conf = np.repeat(off[:, None, None], k, axis=1).repeat(k, axis=2)
            conf[:, np.arange(k), np.arange(k)] = acc[:, None]
            self.pooled_log_conf_ = np.log(one_coin_confusion(k, float(pop_acc)))
        else:
            pooled = counts.sum(axis=0) + s.base_strength * self.base_
            pop = pooled / pooled.sum(axis=1, keepdims=True)
            conf = counts + s.worker_strength * pop[None, :, :]
            conf /= conf.sum(axis=2, keepdims=True)
            self.pooled_log_conf_ = np.log(_normalise_rows(pop))
        self.log_conf_ = np.log(_normalise_rows(conf))
        class_counts = (task_post * informative[:, None]).sum(axis=0) + s.class_strength
        self.log_prior_ = np.log(class_counts / class_counts.sum())

    def _run(self, t: np.ndarray, w: np.ndarray, y: np.ndarray, n_tasks: int, n_workers: int,
             gold: tuple[np.ndarray, np.ndarray], informative: np.ndarray, max_iter: int) -> np.ndarray:
        post = self._clamped(self._e_step(t, w, y, n_tasks), gold)
        self.n_iter_ = 0
        for _ in range(max_iter):
            self.n_iter_ += 1
            self._m_step(post, t, w, y, n_workers, informative)
            new = self._clamped(self._e_step(t, w, y, n_tasks), gold)
            change = float(np.abs(new - post).max()) if new.size else 0.0
            post = new
            if change <= self.settings.tol:
                break
        return post

    def _votes(self, t: np.ndarray, y: np.ndarray, n_tasks: int) -> np.ndarray:
        votes = np.zeros((n_tasks, self.n_classes))
        np.add.at(votes, (t, y), 1.0)
        return votes

    def _looks_flipped(self, t: np.ndarray, y: np.ndarray, n_tasks: int, gold: tuple[np.ndarray, np.ndarray],
                       informative: np.ndarray) -> bool:
        """The checks against the label-flipped solution (module doc)."""
        pop = self.pooled_log_conf_
        if not np.all(np.diag(pop) >= pop.max(axis=1) - 1e-12):
            return True
        votes = self._votes(t, y, n_tasks)
        labelled = informative & (votes.sum(axis=1) > 0)
        if labelled.any():
            fitted = self.posteriors_[labelled].argmax(axis=1)
            top = votes[labelled].max(axis=1)
            agrees = votes[labelled][np.arange(int(labelled.sum())), fitted] >= top
            if agrees.mean() < 0.5:
                return True
        gold_tasks, gold_classes = gold
        if len(gold_tasks):
            has_votes = votes[gold_tasks].sum(axis=1) > 0
            if has_votes.sum() >= 5:
                g, cls = gold_tasks[has_votes], gold_classes[has_votes]
                unclamped = self.unclamped_[g].argmax(axis=1)
                majority = votes[g].argmax(axis=1)
                if np.mean(unclamped == cls) < np.mean(majority == cls) - GOLD_SLACK:
                    return True
        return False

    def fit(self, task: np.ndarray, worker: np.ndarray, label: np.ndarray, *, n_tasks: int, n_workers: int,
            gold: Mapping[int, int] | None = None,
            init: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None,
            max_iter: int | None = None) -> SemiSupervisedDawidSkene:
        k = self.n_classes
        t, w, y = (np.asarray(a, dtype=np.int64) for a in (task, worker, label))
        if not len(t) == len(w) == len(y):
            raise ValueError("task, worker and label must have one entry per label")
        if len(y) and (y.min() < 0 or y.max() >= k):
            raise ValueError(f"label codes must be in [0, {k})")
        gold = dict(gold or {})
        gold_arrays = (np.fromiter(gold.keys(), dtype=np.int64, count=len(gold)),
                       np.fromiter(gold.values(), dtype=np.int64, count=len(gold)))
        iterations = max_iter or self.settings.max_iter
        informative = np.bincount(t, minlength=n_tasks) >= 2
        informative[gold_arrays[0]] = True
        if init is None:
            self.log_conf_ = np.broadcast_to(np.log(self.base_), (n_workers, k, k)).copy()
            self.pooled_log_conf_ = np.log(self.base_)
            self.log_prior_ = np.full(k, -math.log(k))
        else:
            log_conf, pooled, log_prior = init
            fresh = max(n_workers - len(log_conf), 0)
            self.log_conf_ = np.concatenate([np.asarray(log_conf)[:n_workers],
                                             np.broadcast_to(pooled, (fresh, k, k))])
            self.pooled_log_conf_, self.log_prior_ = np.asarray(pooled).copy(), np.asarray(log_prior).copy()
        self.restarted_ = False
        self.posteriors_ = self._run(t, w, y, n_tasks, n_workers, gold_arrays, informative, iterations)
        self.unclamped_ = self._softmax(self._e_step(t, w, y, n_tasks))
        if self._looks_flipped(t, y, n_tasks, gold_arrays, informative):
            # EM slid towards the mirror solution: restart from the plain vote shares (the paper's start).
            votes = self._votes(t, y, n_tasks)
            shares = (votes + 0.1) / (votes + 0.1).sum(axis=1, keepdims=True)
            if len(gold_arrays[0]):
                shares[gold_arrays[0]] = np.eye(k)[gold_arrays[1]]
            self._m_step(shares, t, w, y, n_workers, informative)
            self.posteriors_ = self._run(t, w, y, n_tasks, n_workers, gold_arrays, informative,
                                         max(iterations, 2 * self.settings.max_iter))
            self.unclamped_ = self._softmax(self._e_step(t, w, y, n_tasks))
            self.restarted_ = True
        # Counts under the final posteriors (what reliability and the one_option signal read).
        flat = w * k + y
        counts = np.empty((n_workers, k, k))
        for c in range(k):
            counts[:, c, :] = np.bincount(flat, weights=self.posteriors_[t, c], minlength=n_workers * k).reshape(
                n_workers, k)
        self.counts_ = counts
        return self


@dataclass(frozen=True)
class ProjectFit:
    """A project's stored refit: what the services read (module doc).

    ``confusion[w]`` is annotator ``workers[w]``'s ``P(given | true)``; ``counts[w]`` their expected
    (true, given) label counts under the fit; ``pooled`` the crowd's confusion, the model of an annotator the fit
    has not seen; ``prior`` the class prior.
    """

    classes: tuple[str, ...]
    workers: tuple[str, ...]
    confusion: np.ndarray
    counts: np.ndarray
    pooled: np.ndarray
    prior: np.ndarray
    n_labels: int = 0
    n_tasks: int = 0
    n_gold: int = 0
    iterations: int = 0
    restarted: bool = False
    seconds: float = 0.0
    fitted_at: float = 0.0
    version: int = 0
    index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "index", {w: i for i, w in enumerate(self.workers)})
        # Per class code, P(that label | each true class) as plain floats: what label_posterior takes per label.
        object.__setattr__(self, "_columns", np.swapaxes(self.confusion, 1, 2).tolist())
        object.__setattr__(self, "_pooled_columns", self.pooled.T.tolist())
        object.__setattr__(self, "_class_index", {c: i for i, c in enumerate(self.classes)})
        object.__setattr__(self, "_prior", self.prior.tolist())

    @classmethod
    def from_model(cls, model: SemiSupervisedDawidSkene, classes: Sequence[str], workers: Sequence[str],
                   **info: Any) -> ProjectFit:
        return cls(tuple(str(c) for c in classes), tuple(str(w) for w in workers), np.exp(model.log_conf_),
                   model.counts_, np.exp(model.pooled_log_conf_), np.exp(model.log_prior_), **info)

    @property
    def class_prior(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.prior, strict=True)}

    def confusion_of(self, worker: Any) -> np.ndarray:
        """``P(given | true)`` of an annotator; the pooled crowd's for one the fit has not seen."""
        w = self.index.get(str(worker))
        return self.confusion[w] if w is not None else self.pooled

    def labels_of(self, worker: Any) -> float:
        w = self.index.get(str(worker))
        return float(self.counts[w].sum()) if w is not None else 0.0

    def warm_start(self, workers: Sequence[str]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The ``init`` of a new fit over ``workers`` (in its order; new ones at the pooled crowd)."""
        log_conf = np.log(np.stack([self.confusion_of(w) for w in workers])) if workers else \
            np.zeros((0, len(self.classes), len(self.classes)))
        return log_conf, np.log(self.pooled), np.log(self.prior)

    def posterior_array(self, labels: Iterable[tuple[Any, str]], prior: np.ndarray | None = None) -> np.ndarray:
        """Posterior over the classes from ``(annotator, label)`` pairs under this fit (labels outside the
        classes are ignored); ``prior`` defaults to the fit's class prior."""
        index, columns = self._class_index, []
        for worker, label in labels:
            j = index.get(str(label))
            if j is not None:
                w = self.index.get(str(worker))
                columns.append(self._pooled_columns[j] if w is None else self._columns[w][j])
        return label_posterior(columns, self._prior if prior is None else prior)

    def posterior(self, labels: Iterable[tuple[Any, str]]) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.posterior_array(labels), strict=True)}

    def accuracy(self, worker: Any, alpha: float, beta: float) -> tuple[float, float] | None:
        """Beta(alpha + expected correct labels, beta + expected wrong ones) of an annotator, or None."""
        w = self.index.get(str(worker))
        if w is None:
            return None
        correct = float(np.trace(self.counts[w]))
        return alpha + correct, beta + float(self.counts[w].sum()) - correct

    def confusion_counts(self, worker: Any) -> dict[str, dict[str, float]]:
        """An annotator's expected counts as ``true -> given -> count`` (what ``Reliability.confusion`` holds)."""
        w = self.index.get(str(worker))
        if w is None:
            return {}
        return {t: {g: round(float(self.counts[w, i, j]), 6) for j, g in enumerate(self.classes)
                    if self.counts[w, i, j] > 1e-9}
                for i, t in enumerate(self.classes) if self.counts[w, i].sum() > 1e-9}

    # -- storage ------------------------------------------------------------------------------------------

    def to_json(self) -> str:
        return json.dumps({
            "classes": self.classes, "workers": self.workers, "confusion": np.round(self.confusion, 6).tolist(),
            "counts": np.round(self.counts, 4).tolist(), "pooled": self.pooled.tolist(), "prior": self.prior.tolist(),
            "n_labels": self.n_labels, "n_tasks": self.n_tasks, "n_gold": self.n_gold, "iterations": self.iterations,
            "restarted": self.restarted, "seconds": self.seconds, "fitted_at": self.fitted_at,
        }, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes, version: int = 0) -> ProjectFit:
        data = json.loads(raw)
        k = len(data["classes"])
        return cls(tuple(data["classes"]), tuple(data["workers"]),
                   np.asarray(data["confusion"], dtype=float).reshape(-1, k, k),
                   np.asarray(data["counts"], dtype=float).reshape(-1, k, k),
                   np.asarray(data["pooled"], dtype=float), np.asarray(data["prior"], dtype=float),
                   int(data["n_labels"]), int(data["n_tasks"]), int(data["n_gold"]), int(data["iterations"]),
                   bool(data["restarted"]), float(data["seconds"]), float(data["fitted_at"]), version)



# -- where the services read it --------------------------------------------------------------------------------


def stored_fit(connection: redis.Redis, prefix: str, project: int) -> ProjectFit | None:
    """The project's stored fit, read from Redis now (None before the first refit)."""
    version, raw = connection.hmget(Keys(prefix).truth_fit(project), "version", "model")
    if raw is None:
        return None
    return ProjectFit.from_json(raw, int(version or 0))


_cache: dict[tuple[Any, str, int], tuple[float, ProjectFit | None]] = {}


def _connection_id(connection: redis.Redis) -> Any:
    kwargs = connection.connection_pool.connection_kwargs
    return kwargs.get("host"), kwargs.get("port"), kwargs.get("db"), kwargs.get("path")


def load_fit(connection: redis.Redis, prefix: str, project: int, max_age_s: float = CACHE_S) -> ProjectFit | None:
    """The project's fit as this process last read it, asking Redis again after ``max_age_s`` (the version is
    read first, the model only when it changed); a failing Redis read keeps the last fit (or none)."""
    key = (_connection_id(connection), prefix, int(project))
    now = time.monotonic()
    cached = _cache.get(key)
    if cached is not None and now - cached[0] < max_age_s:
        return cached[1]
    fit = cached[1] if cached else None
    version = connection.hget(Keys(prefix).truth_fit(project), "version")
    if version is None:
        fit = None
    elif fit is None or fit.version != int(version):
        fit = stored_fit(connection, prefix, project)
    _cache[key] = (now, fit)
    return fit


def clear_fit_cache() -> None:
    """Forget every fit this process read (tests; a process that changed fits behind the cache's back)."""
    _cache.clear()
