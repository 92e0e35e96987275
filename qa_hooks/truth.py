"""Batch truth inference: turn many noisy crowd labels per task into one label per task.

Every aggregator takes a *label table*: a :class:`pandas.DataFrame` with one row per label and the
columns ``task``, ``worker`` and ``label`` (any hashable values; extra columns are ignored; a worker
who labelled a task twice counts twice). Every aggregator returns a DataFrame indexed by task (index
name ``task``) with two columns:

``label``
    the inferred label, with the same values (and, where pandas keeps it, dtype) as the input labels;
``confidence``
    a number in ``[0, 1]`` whose meaning depends on the method (vote share, weight share, posterior).

Tasks, workers and classes are listed in sorted order when their values can be sorted, otherwise in
order of first appearance. Ties are broken deterministically in favour of the class listed first,
i.e. the smallest label.

Methods
-------
* :func:`majority_vote` / :class:`MajorityVote`: the most frequent label per task.
* :func:`weighted_vote` / :class:`WeightedVote`: each label counts with its worker's weight, for
  example the log-odds weight ``log((K - 1) p / (1 - p))`` of a worker with accuracy ``p`` over ``K``
  classes, which is the optimal weight for independent "one-coin" workers (Nitzan & Paroush 1982,
  "Optimal Decision Rules in Uncertain Dichotomous Choice Situations"; Li & Yu 2014, "Error Rate
  Bounds and Iterative Weighted Majority Voting for Crowdsourcing"). See :func:`log_odds_weights`.
* :func:`dawid_skene` / :class:`DawidSkene`: the latent-class model of Dawid & Skene (1979),
  "Maximum Likelihood Estimation of Observer Error-Rates Using the EM Algorithm", Journal of the
  Royal Statistical Society C 28(1):20-28, fitted by EM with Dirichlet smoothing (a MAP estimate).
* :func:`label_posterior`: that model's posterior for one task given its workers' confusion matrices,
  the one naive-Bayes combination that live scoring, the stopping rule and the benchmarks all call.

This module is pure computation: it reads and writes nothing.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Hashable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import pandas as pd

from qa_hooks.label_table import COLUMNS, check_columns, factorize

__all__ = [
    "COLUMNS",
    "DawidSkene",
    "MajorityVote",
    "WeightedVote",
    "dawid_skene",
    "label_posterior",
    "log_odds_weights",
    "majority_vote",
    "weighted_vote",
]



# ---------------------------------------------------------------------------------------------------
# Encoding
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Encoded:
    """A label table encoded to integer arrays once, shared by all the algorithms."""

    task: np.ndarray  # (L,) task code of each label
    worker: np.ndarray  # (L,) worker code of each label
    label: np.ndarray  # (L,) class code of each label
    tasks: pd.Index
    workers: pd.Index
    classes: pd.Index

    @property
    def n_tasks(self) -> int:
        return len(self.tasks)

    @property
    def n_workers(self) -> int:
        return len(self.workers)

    @property
    def n_classes(self) -> int:
        return len(self.classes)


def _encode(table: pd.DataFrame) -> _Encoded:
    """Validate a (task, worker, label) table and encode each column to integer codes."""
    check_columns(table)
    if table.empty:
        raise ValueError("label table is empty: there is nothing to aggregate")
    for column in COLUMNS:
        if table[column].isna().any():
            raise ValueError(f"label table has missing values in column {column!r}")
    task, tasks = factorize(table["task"])
    worker, workers = factorize(table["worker"])
    label, classes = factorize(table["label"])
    tasks = tasks.rename("task")
    return _Encoded(task, worker, label, tasks, workers.rename("worker"), classes.rename("label"))


def _class_scores(enc: _Encoded, weights: np.ndarray | None = None) -> np.ndarray:
    """(tasks × classes) sum of label weights (counts when ``weights`` is None)."""
    flat = np.bincount(
        enc.task * enc.n_classes + enc.label, weights=weights, minlength=enc.n_tasks * enc.n_classes
    )
    return flat.reshape(enc.n_tasks, enc.n_classes).astype(float, copy=False)


def _result(enc: _Encoded, winner: np.ndarray, confidence: np.ndarray) -> pd.DataFrame:
    """The public output: ``label`` and ``confidence`` indexed by task."""
    labels = enc.classes.take(winner)
    return pd.DataFrame(
        {"label": np.asarray(labels), "confidence": np.clip(confidence, 0.0, 1.0)}, index=enc.tasks
    ).astype({"label": enc.classes.dtype})


def _vote(enc: _Encoded, scores: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Winning class per row (first, i.e. smallest, class among ties) and its share of the row total."""
    winner = scores.argmax(axis=1)
    best = scores[np.arange(enc.n_tasks), winner]
    total = scores.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        share = np.where(total > 0, best / total, 0.0)
    return winner, share


# ---------------------------------------------------------------------------------------------------
# Majority vote
# ---------------------------------------------------------------------------------------------------


class _Aggregator:
    """What every method here shares: ``fit(table)`` sets ``result_``; ``predict()`` returns it."""

    def fit(self, table: pd.DataFrame) -> _Aggregator:
        raise NotImplementedError

    def predict(self) -> pd.DataFrame:
        """``label`` and ``confidence`` by task, from the last :meth:`fit`."""
        return _fitted(self).copy()

    def fit_predict(self, table: pd.DataFrame) -> pd.DataFrame:
        return self.fit(table).predict()


class MajorityVote(_Aggregator):
    """Majority vote: each task gets its most frequent label.

    ``confidence`` is the winning label's share of the task's labels. Ties go to the class listed
    first (the smallest label when labels are sortable).

    Attributes after :meth:`fit`: ``probas_`` (tasks × classes DataFrame of vote shares),
    ``labels_`` and ``confidence_`` (Series by task), ``classes_``.
    """

    def fit(self, table: pd.DataFrame) -> MajorityVote:
        enc = _encode(table)
        counts = _class_scores(enc)
        winner, share = _vote(enc, counts)
        self.classes_ = enc.classes
        self.probas_ = pd.DataFrame(
            counts / counts.sum(axis=1, keepdims=True), index=enc.tasks, columns=enc.classes
        )
        self.result_ = _result(enc, winner, share)
        self.labels_ = self.result_["label"]
        self.confidence_ = self.result_["confidence"]
        return self



def majority_vote(table: pd.DataFrame) -> pd.DataFrame:
    """Most frequent label per task; ``confidence`` is its vote share. Ties go to the smallest label."""
    return MajorityVote().fit_predict(table)


# ---------------------------------------------------------------------------------------------------
# Weighted vote
# ---------------------------------------------------------------------------------------------------


def _weight_array(enc: _Encoded, weights: Mapping[Hashable, float], default: float | None) -> np.ndarray:
    """Per-worker weight vector aligned with ``enc.workers``; validated."""
    if not isinstance(weights, Mapping | pd.Series):
        raise ValueError(f"weights must be a mapping worker -> weight, got {type(weights).__name__}")
    lookup = weights.to_dict() if isinstance(weights, pd.Series) else dict(weights)
    values = []
    absent = []
    for worker in enc.workers:
        if worker in lookup:
            values.append(lookup[worker])
        elif default is not None:
            values.append(default)
        else:
            absent.append(worker)
    if absent:
        shown = ", ".join(repr(w) for w in absent[:5]) + (" ..." if len(absent) > 5 else "")
        raise ValueError(f"no weight for {len(absent)} worker(s): {shown} (pass default= to fill them)")
    try:
        array = np.asarray(values, dtype=float)
    except (TypeError, ValueError) as exc:
        raise ValueError(f"weights must be numbers: {exc}") from exc
    if not np.isfinite(array).all():
        raise ValueError("weights must be finite")
    if (array < 0).any():
        raise ValueError("weights must be >= 0 (clip negative log-odds to 0; see log_odds_weights)")
    return array


class WeightedVote(_Aggregator):
    """Weighted majority vote: each label counts with its worker's weight.

    ``confidence`` is the winning class's share of the task's total weight. A task whose labels all
    carry zero weight falls back to plain majority vote (``confidence`` = vote share). Ties go to the
    class listed first.

    Args:
        weights: mapping (or Series) worker -> finite weight >= 0, e.g. from :func:`log_odds_weights`
            or :meth:`DawidSkene.worker_weights`.
        default: weight for workers missing from ``weights``; when None (default) a missing worker
            raises ValueError.
    """

    def __init__(self, weights: Mapping[Hashable, float], default: float | None = None) -> None:
        self.weights = weights
        self.default = default

    def fit(self, table: pd.DataFrame) -> WeightedVote:
        enc = _encode(table)
        per_worker = _weight_array(enc, self.weights, self.default)
        scores = _class_scores(enc, per_worker[enc.worker])
        winner, share = _vote(enc, scores)
        unweighted = scores.sum(axis=1) <= 0
        if unweighted.any():
            fallback_winner, fallback_share = _vote(enc, _class_scores(enc))
            winner = np.where(unweighted, fallback_winner, winner)
            share = np.where(unweighted, fallback_share, share)
        self.classes_ = enc.classes
        self.result_ = _result(enc, winner, share)
        self.labels_ = self.result_["label"]
        self.confidence_ = self.result_["confidence"]
        return self



def weighted_vote(
    table: pd.DataFrame, weights: Mapping[Hashable, float], default: float | None = None
) -> pd.DataFrame:
    """Weighted majority vote; ``confidence`` is the winner's normalised weight share."""
    return WeightedVote(weights, default=default).fit_predict(table)


def log_odds_weights(
    accuracy: Mapping[Hashable, float], n_classes: int, eps: float = 1e-3
) -> dict[Hashable, float]:
    """Voting weight ``max(0, log((K - 1) p / (1 - p)))`` per worker from accuracy ``p`` over K classes.

    This is the optimal weight for independent workers who are right with probability ``p`` and
    otherwise pick a wrong class uniformly (Nitzan & Paroush 1982; Li & Yu 2014). Accuracies are
    clipped to ``[eps, 1 - eps]`` so perfect workers get a large but finite weight; workers no better
    than chance (``p <= 1/K``) get weight 0. With fewer than two classes every weight is 1.
    """
    if not 0 < eps < 0.5:
        raise ValueError("eps must be in (0, 0.5)")
    if n_classes < 2:
        return dict.fromkeys(accuracy, 1.0)
    weights: dict[Hashable, float] = {}
    for worker, p in dict(accuracy).items():
        p = float(p)
        if not 0.0 <= p <= 1.0:
            raise ValueError(f"accuracy of worker {worker!r} is {p}, outside [0, 1]")
        p = min(max(p, eps), 1.0 - eps)
        weights[worker] = max(0.0, math.log((n_classes - 1) * p / (1.0 - p)))
    return weights


# ---------------------------------------------------------------------------------------------------
# One task's posterior
# ---------------------------------------------------------------------------------------------------

# Floor on a confusion entry: one absurd label must not veto a class forever (log 0).
MIN_PROBABILITY = 1e-4
_TINY = float(np.finfo(float).tiny)


def label_posterior(columns: Sequence[Sequence[float]] | np.ndarray, prior: Sequence[float] | np.ndarray) -> np.ndarray:
    """Posterior over the K classes of one task from its labels (Dawid & Skene 1979, the E-step).

    ``columns`` holds one row of K numbers per label: ``P(that label | true class k)`` from its worker's
    confusion matrix (the column of the reported class); ``prior`` the K class priors. The labels are
    independent given the class, so the posterior is ``prior * prod(columns)``, normalised (in logs;
    entries are floored at :data:`MIN_PROBABILITY`). No labels: the prior, normalised.

    Plain floats, not array operations: a task has a handful of labels and classes, and this runs once per
    annotator of every scored task, where numpy's per-call overhead would cost more than the arithmetic.
    """
    log, floor = math.log, MIN_PROBABILITY
    log_post = [log(max(p, _TINY)) for p in prior]
    for column in columns:
        for c, x in enumerate(column):
            log_post[c] += log(x if x > floor else floor)
    top = max(log_post)
    weights = [math.exp(v - top) for v in log_post]
    total = sum(weights)
    return np.array(weights) / total


# ---------------------------------------------------------------------------------------------------
# Dawid-Skene
# ---------------------------------------------------------------------------------------------------


class DawidSkene(_Aggregator):
    """Dawid & Skene (1979) latent-class model fitted by EM, with Dirichlet smoothing.

    Dawid, A. P. & Skene, A. M. (1979). "Maximum Likelihood Estimation of Observer Error-Rates Using
    the EM Algorithm". Journal of the Royal Statistical Society, Series C, 28(1), 20-28.

    Each task ``i`` has an unknown true class ``z_i`` drawn from class priors ``rho``; worker ``w``
    reports class ``l`` for a task of class ``k`` with probability ``pi[w, k, l]`` (the worker's
    confusion matrix), independently of other labels. EM alternates:

    * E-step: ``log P(z_i = k | labels) = log rho_k + sum over labels (w, l) of task i of
      log pi[w, k, l]`` (up to a constant), accumulated for all labels at once with one bincount, then
      normalised per task with log-sum-exp;
    * M-step: ``pi[w, k, l]`` proportional to the posterior mass of class ``k`` on the tasks where
      ``w`` said ``l`` (one bincount), plus Dirichlet pseudo-counts; ``rho`` likewise.

    The pseudo-counts (Dirichlet concentration minus one) make this a MAP estimate and keep rarely
    seen workers and classes away from 0/1 probabilities, which would otherwise let one label veto a
    class: each confusion row gets ``diag_prior`` on its diagonal and ``off_diag_prior`` elsewhere (a
    weak "workers beat chance" prior worth a fraction of one label, so it hardly moves a worker with
    a real history), and the class prior gets ``class_prior`` per class. The defaults were chosen
    once, identically for every data set, on the public benchmark sets in ``bench/truth.py``;
    accuracy is flat for diagonal 0.1-0.3 and off-diagonal 0.02-0.05. EM starts from the
    majority-vote shares (as in the paper) and stops when the MAP objective (log-likelihood plus
    log-prior) improves by less than ``tol`` relative to its size, or after ``max_iter`` rounds.

    Attributes after :meth:`fit`:
        posteriors_: tasks × classes DataFrame of ``P(z_i = k | labels)``.
        priors_: Series of class priors ``rho``.
        confusions_: dict worker -> K×K DataFrame (index: true class, columns: reported class).
        worker_accuracy_: Series worker -> expected share of the worker's labels that are correct
            under the posterior (with one pseudo-label right and one wrong).
        log_likelihood_: marginal log-likelihood of the labels at the final parameters.
        n_iter_: EM rounds run; converged_: whether the tolerance was reached before ``max_iter``.
        labels_, confidence_: Series by task (``confidence`` = posterior of the chosen label).
    """

    def __init__(
        self,
        max_iter: int = 100,
        tol: float = 1e-6,
        diag_prior: float = 0.2,
        off_diag_prior: float = 0.05,
        class_prior: float = 1.0,
    ) -> None:
        if not isinstance(max_iter, int | np.integer) or max_iter < 1:
            raise ValueError(f"max_iter must be an integer >= 1, got {max_iter!r}")
        for name, value in (
            ("tol", tol),
            ("diag_prior", diag_prior),
            ("off_diag_prior", off_diag_prior),
            ("class_prior", class_prior),
        ):
            if not (isinstance(value, numbers.Real) and math.isfinite(value) and value >= 0):
                raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
        self.max_iter = int(max_iter)
        self.tol = float(tol)
        self.diag_prior = float(diag_prior)
        self.off_diag_prior = float(off_diag_prior)
        self.class_prior = float(class_prior)

    # -- EM pieces, all on integer-encoded arrays ------------------------------------------------
    #
    # Arrays are class-major so that every reduction over the (few) classes runs across long rows:
    # posteriors ``post[k, i]`` (K, N); confusions ``pi[k, w, l]`` = P(worker w reports l | class k).
    # ``pair = w * K + l`` codes each label's (worker, reported class), so ``pi.reshape(K, W * K)``
    # is looked up by ``pair`` and the per-label scatter of either step is one bincount over K * L.

    def _m_step(
        self, enc: _Encoded, m_index: np.ndarray, post: np.ndarray, pseudo: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray]:
        """Confusions ``pi`` (K, W, K) and priors ``rho`` (K,) from the current posteriors (MAP)."""
        k = enc.n_classes
        # counts[k, w, l] = posterior mass of class k on the tasks where worker w reported l.
        flat = np.bincount(m_index, weights=post[:, enc.task].ravel(), minlength=k * enc.n_workers * k)
        counts = flat.reshape(k, enc.n_workers, k) + pseudo[:, None, :]
        row_mass = counts.sum(axis=2, keepdims=True)
        # A row whose mass is zero or subnormal (possible only without pseudo-counts) holds no usable evidence:
        # below the float's ``tiny`` gradual underflow has already dropped significant bits, so ratios within
        # the row are noise, and dividing by a floored mass would leave the row summing to less than 1. Such a
        # row is taken as uniform, the limit of the MAP row under a symmetric Dirichlet prior as its
        # concentration goes to 0: it says nothing about the worker, so it cannot move any posterior.
        usable = row_mass >= np.finfo(float).tiny
        pi = np.where(usable, counts / np.where(usable, row_mass, 1.0), 1.0 / k)
        mass = post.sum(axis=1) + self.class_prior
        rho = mass / mass.sum()
        return pi, rho

    @staticmethod
    def _e_step(
        enc: _Encoded, pair: np.ndarray, e_index: np.ndarray, pi: np.ndarray, rho: np.ndarray
    ) -> tuple[np.ndarray, float]:
        """Posteriors (K, N) and the marginal log-likelihood of all labels."""
        k = enc.n_classes
        tiny = np.finfo(float).tiny
        log_pi = np.log(np.maximum(pi, tiny)).reshape(k, -1)  # [k, w * K + l]
        flat = np.bincount(e_index, weights=log_pi[:, pair].ravel(), minlength=k * enc.n_tasks)
        joint = flat.reshape(k, enc.n_tasks) + np.log(np.maximum(rho, tiny))[:, None]
        top = joint.max(axis=0)
        norm = top + np.log(np.exp(joint - top).sum(axis=0))
        return np.exp(joint - norm), float(norm.sum())

    def _objective(self, log_likelihood: float, pi: np.ndarray, rho: np.ndarray, pseudo: np.ndarray) -> float:
        """MAP objective: log-likelihood plus the log Dirichlet priors (up to constants)."""
        tiny = np.finfo(float).tiny
        return (
            log_likelihood
            + float((pseudo[:, None, :] * np.log(np.maximum(pi, tiny))).sum())
            + self.class_prior * float(np.log(np.maximum(rho, tiny)).sum())
        )

    # -- public API ------------------------------------------------------------------------------

    def fit(self, table: pd.DataFrame) -> DawidSkene:
        enc = _encode(table)
        k = enc.n_classes
        classes = np.arange(k)[:, None]
        pair = enc.worker * k + enc.label
        m_index = (classes * (enc.n_workers * k) + pair).ravel()  # -> counts[k, w, l]
        e_index = (classes * enc.n_tasks + enc.task).ravel()  # -> joint[k, i]
        pseudo = np.full((k, k), self.off_diag_prior)
        np.fill_diagonal(pseudo, self.diag_prior)

        counts = _class_scores(enc)
        post = (counts / counts.sum(axis=1, keepdims=True)).T.copy()  # majority-vote initialisation
        previous = -np.inf
        converged = False
        n_iter = 0
        log_likelihood = -np.inf
        pi = np.empty((k, enc.n_workers, k))
        rho = np.empty(k)
        for n_iter in range(1, self.max_iter + 1):  # noqa: B007 - n_iter is reported after the loop
            pi, rho = self._m_step(enc, m_index, post, pseudo)
            post, log_likelihood = self._e_step(enc, pair, e_index, pi, rho)
            objective = self._objective(log_likelihood, pi, rho, pseudo)
            if abs(objective - previous) <= self.tol * max(1.0, abs(objective)):
                converged = True
                break
            previous = objective

        posterior = post.T
        pi = pi.transpose(1, 0, 2)  # -> [w, true, reported]
        winner = posterior.argmax(axis=1)
        self.classes_ = enc.classes
        self.n_iter_ = n_iter
        self.converged_ = converged
        self.log_likelihood_ = log_likelihood
        self.posteriors_ = pd.DataFrame(posterior, index=enc.tasks, columns=enc.classes)
        self.priors_ = pd.Series(rho, index=enc.classes, name="prior")
        true_index = enc.classes.rename("true")
        reported = enc.classes.rename("reported")
        self.confusions_ = {
            worker: pd.DataFrame(pi[w], index=true_index, columns=reported)
            for w, worker in enumerate(enc.workers)
        }
        correct = np.bincount(enc.worker, weights=posterior[enc.task, enc.label], minlength=enc.n_workers)
        given = np.bincount(enc.worker, minlength=enc.n_workers)
        self.worker_accuracy_ = pd.Series((correct + 1.0) / (given + 2.0), index=enc.workers, name="accuracy")
        self.result_ = _result(enc, winner, posterior[np.arange(enc.n_tasks), winner])
        self.labels_ = self.result_["label"]
        self.confidence_ = self.result_["confidence"]
        return self

    def worker_weights(self) -> dict[Hashable, float]:
        """Log-odds voting weights from :attr:`worker_accuracy_`, for :func:`weighted_vote`."""
        _fitted(self)
        return log_odds_weights(self.worker_accuracy_.to_dict(), len(self.classes_))


def dawid_skene(
    table: pd.DataFrame,
    max_iter: int = 100,
    tol: float = 1e-6,
    diag_prior: float = 0.2,
    off_diag_prior: float = 0.05,
    class_prior: float = 1.0,
) -> pd.DataFrame:
    """Dawid & Skene (1979) EM truth inference; ``confidence`` is the chosen label's posterior.

    See :class:`DawidSkene` for the model, the smoothing priors and the stopping rule.
    """
    model = DawidSkene(
        max_iter=max_iter,
        tol=tol,
        diag_prior=diag_prior,
        off_diag_prior=off_diag_prior,
        class_prior=class_prior,
    )
    return model.fit_predict(table)


def _fitted(model: _Aggregator) -> pd.DataFrame:
    result = getattr(model, "result_", None)
    if result is None:
        raise ValueError(f"{type(model).__name__} is not fitted yet: call fit(table) first")
    return result
