"""Reliability-weighted posterior stopping: when has a task got enough labels?

Each worker is modelled by a confusion matrix ``P(label | true class)`` (or its one-coin special case, one
accuracy spread evenly over the wrong classes). Labels on a task are combined as independent evidence — the
naive-Bayes combination of Dawid & Skene (1979), "Maximum likelihood estimation of observer error-rates using
the EM algorithm", Applied Statistics 28(1) — and the task stops once the leading class's posterior passes a
threshold (the adaptive-overlap idea of Sheng, Provost & Ipeirotis 2008, "Get another label?", KDD).

In the services the worker models are the project's stored Dawid–Skene refit (:mod:`qa_hooks.refit`,
:func:`models_from_fit`); :class:`OnlineWorkerEstimator` replays that same refit over a stream of labels (the
benchmark's path). The posterior of one task is :func:`qa_hooks.truth.label_posterior` everywhere.

The posteriors assume independent errors. Where hard items fool several workers alike (the dog crowd: two
agreeing labels are right 82% of the time, while even a Dawid–Skene fit on all its labels says 91%), they are
over-confident, so the threshold that reaches a target accuracy differs between crowds (bench/overlap.py).

Everything here is pure computation: no I/O and no randomness (the estimator times its fits, for diagnostics).
"""

from __future__ import annotations

import math
import time
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from core.settings import Settings
from qa_hooks.fit import FitSettings, ProjectFit, SemiSupervisedDawidSkene, refit_due
from qa_hooks.llm_annotator import human_votes, stop_inputs
from qa_hooks.truth import label_posterior

__all__ = [
    "MATCH_GRID",
    "MatchedThreshold",
    "OnlineWorkerEstimator",
    "StopDecision",
    "WorkerModel",
    "consensus_posterior",
    "crowd_confusion",
    "decide_stop",
    "decide_stop_with_llm",
    "majority_accuracy",
    "matched_threshold",
    "models_from_fit",
    "prior_confusion",
]

# Floor on any confusion entry: one absurd label must not veto a class forever (log 0).
_MIN_PROB = 1e-4


def _normalise_rows(matrix: np.ndarray) -> np.ndarray:
    matrix = np.clip(matrix, _MIN_PROB, None)
    return matrix / matrix.sum(axis=-1, keepdims=True)


def prior_confusion(n_classes: int, accuracy: float) -> np.ndarray:
    """Confusion matrix of a worker who is right with ``accuracy`` and spreads errors evenly."""
    if n_classes < 2:
        raise ValueError(f"need at least 2 classes, got {n_classes}")
    if not 0.0 < accuracy < 1.0:
        raise ValueError(f"accuracy must be in (0, 1), got {accuracy}")
    off = (1.0 - accuracy) / (n_classes - 1)
    matrix = np.full((n_classes, n_classes), off)
    np.fill_diagonal(matrix, accuracy)
    return matrix


@dataclass(frozen=True)
class WorkerModel:
    """One worker's ``P(given label j | true class i)`` as a row-stochastic matrix.

    ``n_labels`` is how many labels the estimate rests on (0 for the prior of an unknown worker).
    """

    confusion: np.ndarray
    n_labels: float = 0.0

    def __post_init__(self) -> None:
        matrix = np.asarray(self.confusion, dtype=float)
        if matrix.ndim != 2 or matrix.shape[0] != matrix.shape[1] or matrix.shape[0] < 2:
            raise ValueError(f"confusion must be a square K×K matrix with K >= 2, got shape {matrix.shape}")
        if np.any(matrix < 0) or not np.allclose(matrix.sum(axis=1), 1.0, atol=1e-6):
            raise ValueError("confusion rows must be probability distributions")
        object.__setattr__(self, "confusion", _normalise_rows(matrix))

    @classmethod
    def one_coin(cls, accuracy: float, n_classes: int, n_labels: float = 0.0) -> WorkerModel:
        """Model of a worker right with probability ``accuracy`` whatever the true class."""
        return cls(prior_confusion(n_classes, accuracy), n_labels)

    @property
    def n_classes(self) -> int:
        return int(self.confusion.shape[0])

    @property
    def accuracy(self) -> float:
        """Mean of the diagonal: the accuracy on a class-balanced set."""
        return float(np.mean(np.diag(self.confusion)))


def _class_prior(class_prior: Sequence[float] | None, k: int) -> np.ndarray:
    """``class_prior`` as a normalised array of ``k`` positive numbers (uniform when None)."""
    prior = np.full(k, 1.0 / k) if class_prior is None else np.asarray(class_prior, dtype=float)
    if prior.shape != (k,) or np.any(prior <= 0):
        raise ValueError(f"class_prior must be {k} positive numbers")
    return prior / prior.sum()


def _class_index(classes: Sequence[str]) -> dict[str, int]:
    index = {str(c): i for i, c in enumerate(classes)}
    if len(index) != len(classes) or len(index) < 2:
        raise ValueError(f"classes must be at least 2 distinct values, got {list(classes)}")
    return index


def consensus_posterior(
    labels: Iterable[tuple[str, str]],
    models: Mapping[str, WorkerModel],
    classes: Sequence[str],
    *,
    default: WorkerModel | None = None,
    class_prior: Sequence[float] | None = None,
) -> dict[str, float]:
    """Posterior over ``classes`` given ``(worker, label)`` pairs, Dawid & Skene (1979) naive Bayes.

    Workers missing from ``models`` use ``default`` (the prior of an unknown worker; a one-coin 0.7 worker
    when not given). ``class_prior`` defaults to uniform. Labels outside ``classes`` raise ``ValueError``.
    """
    index = _class_index(classes)
    k = len(index)
    fallback = default if default is not None else WorkerModel.one_coin(0.7, k)
    columns = []
    for worker, label in labels:
        if str(label) not in index:
            raise ValueError(f"label {label!r} is not one of the classes {list(index)}")
        model = models.get(worker, fallback)
        if model.n_classes != k:
            raise ValueError(f"worker {worker!r} has a {model.n_classes}-class model, expected {k}")
        columns.append(model.confusion[:, index[str(label)]])
    post = label_posterior(np.asarray(columns).reshape(-1, k), _class_prior(class_prior, k))
    return {c: float(p) for c, p in zip(index, post, strict=True)}


def _crowd(models: Sequence[WorkerModel], weights: Sequence[float] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """The workers' confusions stacked (workers × K × K) and their weights normalised to sum to 1 (default:
    each model's ``n_labels``; equal weights when every weight is 0)."""
    if not models:
        raise ValueError("no worker models")
    shapes = {m.confusion.shape for m in models}
    if len(shapes) != 1:
        raise ValueError(f"worker models disagree on the number of classes: {sorted(shapes)}")
    w = np.asarray([m.n_labels for m in models] if weights is None else weights, dtype=float)
    if w.shape != (len(models),) or np.any(w < 0):
        raise ValueError("weights must be one non-negative number per model")
    if w.sum() <= 0:
        w = np.ones(len(models))
    return np.stack([m.confusion for m in models]), w / w.sum()


def crowd_confusion(models: Sequence[WorkerModel], weights: Sequence[float] | None = None) -> np.ndarray:
    """The crowd's confusion matrix: worker confusions averaged with ``weights`` (default: each model's
    ``n_labels``, i.e. by activity — the worker who gives most labels is most likely to give the next one).

    Equal weights when every weight is 0 (no labels yet).
    """
    conf, w = _crowd(models, weights)
    return np.tensordot(w, conf, axes=1)


def _compositions(total: int, parts: int) -> Iterable[tuple[int, ...]]:
    """Every way to write ``total`` as an ordered sum of ``parts`` non-negative integers."""
    if parts == 1:
        yield (total,)
        return
    for first in range(total + 1):
        for rest in _compositions(total - first, parts - 1):
            yield (first, *rest)


def majority_accuracy(confusion: np.ndarray, class_prior: Sequence[float] | None, n_labels: int) -> float:
    """Probability that a plain majority vote of ``n_labels`` labels picks the true class, ties broken at random.

    Labels are independent draws from ``confusion`` (the crowd's ``P(label | true class)``, e.g.
    :func:`crowd_confusion`) given the true class drawn from ``class_prior`` (uniform when None): the accuracy
    a fixed overlap of ``n_labels`` would have on this crowd if its errors were independent. Exact
    enumeration of the multinomial outcomes (``C(n+K-1, K-1)`` of them).
    """
    matrix = _normalise_rows(np.asarray(confusion, dtype=float))
    k = matrix.shape[0]
    if matrix.shape != (k, k) or k < 2:
        raise ValueError(f"confusion must be a square K×K matrix with K >= 2, got shape {matrix.shape}")
    if n_labels < 1:
        raise ValueError(f"n_labels must be >= 1, got {n_labels}")
    prior = _class_prior(class_prior, k)
    log_fact = np.array([math.lgamma(i + 1) for i in range(n_labels + 1)])
    log_conf = np.log(matrix)
    accuracy = 0.0
    for counts in _compositions(n_labels, k):
        c = np.asarray(counts)
        leaders = np.flatnonzero(c == c.max())
        # P(counts | true class t) for each t whose class leads, each with a 1/len(leaders) share of the tie.
        log_multinomial = log_fact[n_labels] - log_fact[c].sum()
        for t in leaders:
            accuracy += prior[t] * math.exp(log_multinomial + float(c @ log_conf[t])) / len(leaders)
    return float(accuracy)


@dataclass(frozen=True)
class MatchedThreshold:
    """What :func:`matched_threshold` chose and why: the threshold, the fixed overlap's accuracy it was
    matched to, and the stop rule's accuracy and labels per task at that threshold, all under the crowd model."""

    threshold: float
    fixed_overlap_accuracy: float
    accuracy: float
    labels_per_task: float


MATCH_GRID = tuple(round(0.5 + 0.01 * i, 2) for i in range(50))  # 0.50 … 0.99


def matched_threshold(
    models: Sequence[WorkerModel],
    class_prior: Sequence[float] | None,
    *,
    overlap: int,
    lead: float = 0.0,
    min_labels: int = 2,
    min_agreeing: int = 2,
    max_labels: int = 10,
    tasks: int = 3000,
    seed: int = 0,
) -> MatchedThreshold:
    """The lowest posterior threshold at which the stop rule is as accurate as a fixed ``overlap`` on this crowd.

    Both sides are judged on the crowd's own model: ``tasks`` tasks are simulated, their true class drawn from
    ``class_prior`` (uniform when None) and their labels from workers drawn by activity (``n_labels``) with
    their confusion matrices. The fixed overlap's accuracy is :func:`majority_accuracy` of
    :func:`crowd_confusion`; the stop rule (:func:`decide_stop` with ``min_labels``, ``min_agreeing``,
    ``max_labels``) is replayed on the simulated tasks for every threshold on ``MATCH_GRID``, and the lowest
    one whose accuracy reaches the fixed overlap's plus ``lead`` wins (the highest when none does).

    Why simulate rather than pick a threshold near the target accuracy: a task stops at the first label that
    lifts its posterior over the threshold, and on a binary task two agreeing labels jump far past it, so the
    accuracy at a threshold depends on the crowd (how often labels agree, how strong each one is). The model
    is over-confident where errors are correlated (it assumes independence), but it is so on both sides of
    the comparison; ``lead`` covers what remains (bench/overlap.py). Deterministic for a given ``seed``.
    """
    if not 1 <= overlap <= 50 or not 1 <= min_labels <= max_labels or min_agreeing < 1:
        raise ValueError("need 1 <= overlap <= 50, 1 <= min_labels <= max_labels and min_agreeing >= 1")
    if not 0.0 <= lead < 1.0 or tasks < 1:
        raise ValueError(f"lead must be in [0, 1) and tasks >= 1, got {lead}, {tasks}")
    conf, activity = _crowd(models)
    k = conf.shape[1]
    prior = _class_prior(class_prior, k)
    target = majority_accuracy(np.tensordot(activity, conf, axes=1), prior, overlap) + lead

    rng = np.random.default_rng(seed)
    truth = rng.choice(k, size=tasks, p=prior)
    workers = rng.choice(len(models), size=(tasks, max_labels), p=activity)
    given = (np.cumsum(conf[workers, truth[:, None]], axis=-1) < rng.random((tasks, max_labels, 1))).sum(axis=-1)
    given = np.minimum(given, k - 1)
    # Posterior after each label (tasks × labels × classes), as consensus_posterior computes it.
    log_post = np.log(prior) + np.cumsum(np.log(conf[workers, :, given]), axis=1)
    post = np.exp(log_post - log_post.max(axis=-1, keepdims=True))
    post /= post.sum(axis=-1, keepdims=True)
    leader = post.argmax(axis=-1)
    confidence = post.max(axis=-1)
    votes = np.cumsum(np.eye(k, dtype=np.int64)[given], axis=1)
    agreeing = np.take_along_axis(votes, leader[..., None], axis=-1)[..., 0]
    enough = (np.arange(1, max_labels + 1) >= min_labels) & (agreeing >= min_agreeing)
    rows = np.arange(tasks)
    best = None
    for threshold in MATCH_GRID:
        stops = enough & (confidence >= threshold)
        stops[:, -1] = True  # out of labels: stop with the best answer
        at = stops.argmax(axis=1)
        accuracy = float(np.mean(leader[rows, at] == truth))
        best = MatchedThreshold(threshold, target - lead, accuracy, float(np.mean(at + 1)))
        if accuracy >= target:
            break
    assert best is not None
    return best


@dataclass(frozen=True)
class StopDecision:
    """Whether a task stops, its leading answer, that answer's posterior, and why.

    ``confident`` is False when the task stops only because it ran out of labels (``max_labels``).
    """

    stop: bool
    label: str
    confidence: float
    reason: str
    confident: bool = False


def decide_stop(
    posterior: Mapping[str, float],
    votes: Mapping[str, int],
    *,
    threshold: float,
    min_labels: int = 2,
    min_agreeing: int = 2,
    max_labels: int | None = None,
) -> StopDecision:
    """crowdgate's stop rule for one task.

    Stop once at least ``min_labels`` labels are in, the leading answer's posterior is >= ``threshold`` and
    at least ``min_agreeing`` labels give that answer (a single voice never settles a task, however trusted:
    online reliability estimates are noisy, and on the benchmark crowds one-against-one calls were the least
    accurate stops). Also stop, unconfident, at ``max_labels``. ``votes`` counts labels per answer.
    """
    if not posterior:
        raise ValueError("posterior is empty")
    n_labels = sum(votes.values())
    label, confidence = max(posterior.items(), key=lambda kv: kv[1])
    agreeing = votes.get(label, 0)
    if n_labels < min_labels:
        reason = f"{n_labels} of at least {min_labels} labels"
    elif confidence < threshold:
        reason = f"posterior {confidence:.3f} < {threshold}"
    elif agreeing < min_agreeing:
        reason = f"posterior {confidence:.3f} but only {agreeing} label(s) give it (< {min_agreeing})"
    else:
        reason = f"posterior {confidence:.3f} >= {threshold} with {agreeing} agreeing labels"
        return StopDecision(True, label, confidence, reason, confident=True)
    if max_labels is not None and n_labels >= max_labels:
        return StopDecision(True, label, confidence, f"maximum of {max_labels} labels reached; {reason}")
    return StopDecision(False, label, confidence, reason)


def decide_stop_with_llm(
    labels: Sequence[tuple[str, str]],
    models: Mapping[str, WorkerModel],
    classes: Sequence[str],
    *,
    threshold: float,
    counts_toward_stop: bool,
    llm_threshold: float,
    trusted: Container[str] | None = None,
    default: WorkerModel | None = None,
    class_prior: Sequence[float] | None = None,
    min_labels: int = 2,
    min_agreeing: int = 2,
    max_labels: int | None = None,
) -> StopDecision:
    """:func:`decide_stop` on a task whose ``labels`` may hold LLM pseudo-workers' answers (policy ``llm:``).

    The stop's inputs are :func:`qa_hooks.llm_annotator.stop_inputs`: without ``counts_toward_stop`` (or an LLM
    not in ``trusted``) the LLM is out of the posterior and the votes. When a stop needs the LLM's voice to reach
    ``min_agreeing`` ("one human agreeing with a calibrated LLM") the leading answer's posterior must also reach
    ``llm_threshold``. ``max_labels`` counts human labels only, as overlap does.
    """
    pairs, votes = stop_inputs(labels, counts_toward_stop, trusted)
    posterior = consensus_posterior(pairs, models, classes, default=default, class_prior=class_prior)
    humans = human_votes(labels)
    decision = decide_stop(posterior, votes, threshold=threshold, min_labels=min_labels, min_agreeing=min_agreeing)
    if decision.stop and humans.get(decision.label, 0) < min_agreeing and decision.confidence < llm_threshold:
        decision = StopDecision(False, decision.label, decision.confidence,
                                f"posterior {decision.confidence:.3f} < {llm_threshold} needed with the LLM's voice")
    n_humans = sum(humans.values())
    if not decision.stop and max_labels is not None and n_humans >= max_labels:
        return StopDecision(True, decision.label, decision.confidence,
                            f"maximum of {max_labels} labels reached; {decision.reason}")
    return decision


@dataclass
class _Growable:
    """Append-only int array with amortised growth (lists → numpy on every refit would be quadratic)."""

    data: np.ndarray = field(default_factory=lambda: np.zeros(256, dtype=np.int64))
    size: int = 0

    def append(self, value: int) -> None:
        if self.size == len(self.data):
            self.data = np.concatenate([self.data, np.zeros(len(self.data), dtype=np.int64)])
        self.data[self.size] = value
        self.size += 1

    def view(self) -> np.ndarray:
        return self.data[: self.size]


class OnlineWorkerEstimator:
    """Worker models learned from a stream of labels: the worker's per-project refit, replayed.

    The labels go into a buffer and every fit is :class:`qa_hooks.refit.SemiSupervisedDawidSkene` — the same
    model, priors and flip guard the worker's refit job runs on a project (``qa_hooks.refit``), warm-started
    from the previous fit, with gold passed to :meth:`reveal_gold` clamped — on the same schedule
    (:func:`qa_hooks.refit.refit_due` with ``refit_every`` and ``refit_fraction``, the product's
    ``CROWDGATE_REFIT_EVERY`` and ``CROWDGATE_REFIT_FRACTION`` by default). Between fits a task's posterior is
    the naive-Bayes combination of its labels under the last fit (workers new since then count as the pooled
    crowd), as the services compute it between refits. So a replay through this class (bench/overlap.py)
    measures the product's inference, not a stand-in.

    Cold start: before any fit every worker is a one-coin worker with ``prior_accuracy``. ``em_iterations``
    bounds the EM rounds of each fit (default: the refit's ``max_iter``, with its tolerance).
    """

    def __init__(
        self,
        classes: Sequence[str],
        *,
        model: str = "confusion",
        prior_accuracy: float = 0.7,
        base_strength: float = 10.0,
        worker_strength: float = 2.0,
        refit_every: int | None = None,
        refit_fraction: float | None = None,
        em_iterations: int | None = None,
        class_strength: float = 50.0,
    ) -> None:
        defaults = Settings()
        refit_every = defaults.refit_every if refit_every is None else refit_every
        refit_fraction = defaults.refit_fraction if refit_fraction is None else refit_fraction
        self.classes: tuple[str, ...] = tuple(str(c) for c in classes)
        self._class_index = _class_index(self.classes)
        self.n_classes = len(self.classes)
        if refit_every < 1 or not 0 <= refit_fraction <= 1 or (em_iterations is not None and em_iterations < 1):
            raise ValueError("refit_every >= 1, 0 <= refit_fraction <= 1 and em_iterations >= 1 are required")
        settings = FitSettings(prior_accuracy=prior_accuracy, base_strength=base_strength,
                               worker_strength=worker_strength, class_strength=class_strength, model=model)
        self._em = SemiSupervisedDawidSkene(self.n_classes, settings)  # validates the rest
        self.model = model
        self.refit_every = refit_every
        self.refit_fraction = refit_fraction
        self.em_iterations = em_iterations

        self._task_index: dict[str, int] = {}
        self._worker_index: dict[str, int] = {}
        self._tasks = _Growable()
        self._workers = _Growable()
        self._labels = _Growable()
        self._task_labels: list[list[tuple[int, int]]] = []
        self._gold: dict[int, int] = {}
        self._labels_at_fit = 0
        self._fitted = False
        self.restarts = 0  # how often a fit had to be restarted from the vote shares (diagnostics)
        self.fit_seconds = 0.0  # time spent fitting, all fits together (diagnostics)

        k = self.n_classes
        self._pop_log_conf = np.log(prior_confusion(k, prior_accuracy))
        self._log_conf = np.zeros((0, k, k))  # per worker index, as of the last fit
        self._log_prior = np.full(k, -math.log(k))
        self._counts = np.zeros(0)

    # -- stream -------------------------------------------------------------------------------------------

    @property
    def n_labels(self) -> int:
        return self._labels.size

    def observe(self, task: str, worker: str, label: str) -> None:
        """Add one label; refits when the stream has grown enough since the last fit."""
        if str(label) not in self._class_index:
            raise ValueError(f"label {label!r} is not one of the classes {list(self.classes)}")
        t = self._task_index.setdefault(task, len(self._task_index))
        if t == len(self._task_labels):
            self._task_labels.append([])
        w = self._worker_index.setdefault(worker, len(self._worker_index))
        y = self._class_index[str(label)]
        self._tasks.append(t)
        self._workers.append(w)
        self._labels.append(y)
        self._task_labels[t].append((w, y))
        if refit_due(self.n_labels, self._labels_at_fit, self.refit_every, self.refit_fraction):
            self.refit()

    def reveal_gold(self, task: str, label: str) -> None:
        """Record the known answer of ``task``: its posterior is clamped from the next fit on."""
        if str(label) not in self._class_index:
            raise ValueError(f"gold {label!r} is not one of the classes {list(self.classes)}")
        t = self._task_index.setdefault(task, len(self._task_index))
        if t == len(self._task_labels):
            self._task_labels.append([])
        self._gold[t] = self._class_index[str(label)]

    # -- fitting ------------------------------------------------------------------------------------------

    def refit(self, iterations: int | None = None) -> None:
        """Fit every label seen so far, warm-started from the last fit (the refit job's fit)."""
        started = time.perf_counter()
        em = self._em
        em.fit(self._tasks.view(), self._workers.view(), self._labels.view(), n_tasks=len(self._task_labels),
               n_workers=len(self._worker_index), gold=self._gold,
               init=(self._log_conf, self._pop_log_conf, self._log_prior),
               max_iter=iterations or self.em_iterations)
        self._log_conf, self._pop_log_conf, self._log_prior = em.log_conf_, em.pooled_log_conf_, em.log_prior_
        self._counts = np.bincount(self._workers.view(), minlength=len(self._worker_index)).astype(float)
        self.restarts += int(em.restarted_)
        self._labels_at_fit = self.n_labels
        self._fitted = True
        self.fit_seconds += time.perf_counter() - started

    # -- queries ------------------------------------------------------------------------------------------

    @property
    def class_prior(self) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, np.exp(self._log_prior), strict=True)}

    def _worker_conf(self, w: int) -> np.ndarray:
        return np.exp(self._log_conf[w] if w < self._log_conf.shape[0] else self._pop_log_conf)

    def default_model(self) -> WorkerModel:
        """The model of a worker not seen yet: the pooled crowd."""
        return WorkerModel(np.exp(self._pop_log_conf))

    def worker_model(self, worker: str) -> WorkerModel:
        """Current model of ``worker`` (the crowd prior when unseen or not fitted yet)."""
        w = self._worker_index.get(worker)
        if w is None:
            return self.default_model()
        n = float(np.count_nonzero(self._workers.view() == w))
        return WorkerModel(self._worker_conf(w), n)

    def models(self) -> dict[str, WorkerModel]:
        """Snapshot of every known worker's model (for :func:`consensus_posterior` on the decision side)."""
        counts = np.bincount(self._workers.view(), minlength=len(self._worker_index))
        return {name: WorkerModel(self._worker_conf(w), float(counts[w])) for name, w in self._worker_index.items()}

    def task_posterior_array(self, task: str) -> np.ndarray:
        """Posterior of ``task`` under the last fit, counting labels added since (the services' incremental
        update between refits)."""
        t = self._task_index.get(task)
        prior = np.exp(self._log_prior)
        if t is None:
            return prior / prior.sum()
        if t in self._gold:
            return np.eye(self.n_classes)[self._gold[t]]
        columns = np.array([self._worker_conf(w)[:, y] for w, y in self._task_labels[t]]).reshape(-1, self.n_classes)
        return label_posterior(columns, prior)

    def task_posterior(self, task: str) -> dict[str, float]:
        return {c: float(p) for c, p in zip(self.classes, self.task_posterior_array(task), strict=True)}

    def task_labels(self, task: str) -> list[tuple[str, str]]:
        """The ``(worker, label)`` pairs seen for ``task``."""
        t = self._task_index.get(task)
        if t is None:
            return []
        workers = list(self._worker_index)
        return [(workers[w], self.classes[y]) for w, y in self._task_labels[t]]


def models_from_fit(fit: ProjectFit, workers: Iterable[str] | None = None) -> dict[str, WorkerModel]:
    """The stop rule's worker models from a project's stored refit (``qa_hooks.refit``): each annotator's
    confusion matrix with the labels it rests on (``workers``: those, the pooled crowd for any the fit has not
    seen; default: everyone in the fit)."""
    names = list(fit.workers) if workers is None else [str(w) for w in workers]
    return {w: WorkerModel(fit.confusion_of(w), fit.labels_of(w)) for w in names}
