"""Score one task's submissions against its gold answer and against each other (pure: no I/O).

For a task, given its live submissions, its gold result (if any) and what is known of each annotator's
reliability, :func:`score_task` computes

- every pair's similarity (``qa_hooks.similarity``), the task's agreement (mean pairwise) and its consensus;
- for each annotator, the task's *contribution* to their record: similarity to gold, soft correctness
  against their peers, raw agreement with peers, and a confusion-count update.

Once the project has a Dawid–Skene refit (:mod:`qa_hooks.refit`, passed as ``fit``), every label counts with its
annotator's fitted confusion matrix and the fit's class prior (an annotator new since the fit: the pooled crowd):
the task's consensus and confidence are that posterior, the refit's model applied to the task's labels now.
Before the first refit, peers are weighted by their own reliability in the one-coin model of Dawid & Skene
(1979): an annotator with accuracy ``r`` gives the true class with probability ``r`` and each other class with
``(1 - r) / (K - 1)``. Both go through :func:`qa_hooks.truth.label_posterior`. The soft correctness of an
annotator's label on a task is the posterior probability of that label given the *other* annotators' labels
alone, so nobody vouches for themselves. For configs that are not a single single-choice control (spans,
boxes, text, ...), soft correctness is the reliability-weighted mean similarity to the peers.

The caller stores the contributions per (task, annotator) and adds the difference to the annotator's
running totals, so rescoring a task replaces its old contribution instead of counting it twice.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from core.label_config import LabelConfig
from qa_hooks.events import Submission
from qa_hooks.similarity import compare_results
from qa_hooks.truth import label_posterior

if TYPE_CHECKING:
    from qa_hooks.fit import ProjectFit

# Annotators start at a Beta(3.5, 1.5) accuracy belief (mean 0.7): a crowd is better than chance, and
# without that, peers with no record would carry no weight and nobody's evidence could ever start.
PRIOR_ALPHA = 3.5
PRIOR_BETA = 1.5
# Consensus: enough of the annotators agree with the consensus answer (same label; for other configs a
# similarity to the medoid of at least MATCH).
CONSENSUS_THRESHOLD = 2 / 3
CONSENSUS_MATCH = 0.5
# Reliability is clipped away from 0 and 1 so one annotator can never decide a posterior alone.
_CLIP = (0.05, 0.98)


@dataclass(frozen=True)
class Categorical:
    """The config is one single-choice control: labels are categories and Dawid–Skene applies."""

    control: str
    classes: tuple[str, ...]


@lru_cache(maxsize=256)
def categorical(label_config: str) -> Categorical | None:
    """The config's one single-choice control, when that is all it asks for."""
    controls = LabelConfig.parse(label_config).controls
    if len(controls) != 1:
        return None
    control = controls[0]
    if control.type != "choices" or control.multiple or not control.labels:
        return None
    return Categorical(control.name, control.labels)


def label_of(result: Sequence[Mapping[str, Any]], control: str) -> str | None:
    """The single choice a result makes on ``control``, or None."""
    for region in result:
        if region.get("from_name") == control:
            choices = (region.get("value") or {}).get("choices") or []
            if len(choices) == 1:
                return str(choices[0])
    return None


def _plain(subs: Sequence[Submission], cat: Categorical) -> bool:
    """Every result is empty or one region of the control with at most one choice (the fast path's domain)."""
    for sub in subs:
        if len(sub.result) > 1:
            return False
        if sub.result:
            region = sub.result[0]
            if region.get("from_name") != cat.control or len((region.get("value") or {}).get("choices") or []) > 1:
                return False
    return True


@dataclass
class Contribution:
    """What one task adds to one annotator's record."""

    gold: float | None = None  # similarity to the gold answer
    peer: float | None = None  # soft correctness judged by reliability-weighted peers
    pair_sum: float = 0.0  # sum of raw similarities with each peer
    pair_n: int = 0
    confusion: dict[str, float] = field(default_factory=dict)  # "true\tgiven" -> count

    def to_dict(self) -> dict[str, Any]:
        return {"gold": self.gold, "peer": self.peer, "pair_sum": self.pair_sum, "pair_n": self.pair_n,
                "confusion": self.confusion}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Contribution:
        return cls(data.get("gold"), data.get("peer"), data.get("pair_sum", 0.0), data.get("pair_n", 0),
                   dict(data.get("confusion") or {}))


@dataclass
class TaskScore:
    agreement: float | None  # mean pairwise similarity, None with fewer than 2 submissions
    consensus: str | None  # categorical: the posterior's top label; else the medoid's unique_id
    confidence: float | None  # categorical: its posterior; else the medoid's mean similarity
    pairs: dict[tuple[str, str], float]
    contributions: dict[int, Contribution]  # annotator -> contribution
    posterior: dict[str, float] = field(default_factory=dict)
    consensus_share: float | None = None  # share of annotators who agree with the consensus
    consensus_reached: bool = False  # consensus_share >= the threshold, with 2 or more annotators


def reliability_mean(alpha: float, beta: float) -> float:
    return alpha / (alpha + beta)


def _one_coin_posterior(
    labels: Sequence[tuple[str, float]], classes: Sequence[str]
) -> dict[str, float]:
    """Posterior over classes from (label, reliability) votes under the one-coin model, uniform prior."""
    k = len(classes)
    index = {c: i for i, c in enumerate(classes)}
    columns = []
    for label, reliability in labels:
        r = min(max(reliability, _CLIP[0]), _CLIP[1])
        row = [(1.0 - r) / (k - 1)] * k
        row[index[label]] = r
        columns.append(row)
    post = label_posterior(columns, [1.0 / k] * k)
    return {c: float(p) for c, p in zip(classes, post, strict=True)}


def _posterior(labels: Sequence[tuple[int, str]], rel: Mapping[int, float], classes: Sequence[str],
               fit: ProjectFit | None) -> dict[str, float]:
    """The task's posterior from (annotator, label) pairs: the refit's model when there is one for these
    classes, else the one-coin model with the annotators' reliabilities."""
    if fit is not None and fit.classes == tuple(classes):
        return fit.posterior([(str(a), label) for a, label in labels])
    return _one_coin_posterior([(label, rel[a]) for a, label in labels], classes)


def score_task(
    submissions: Sequence[Submission],
    gold: Sequence[Mapping[str, Any]] | None,
    label_config: str,
    control_weights: Mapping[str, Any] | None,
    reliability: Mapping[int, float],
    consensus_threshold: float = CONSENSUS_THRESHOLD,
    fit: ProjectFit | None = None,
) -> TaskScore:
    """Score a task. ``reliability`` maps annotator -> current accuracy belief (missing: the prior mean);
    ``fit`` is the project's stored Dawid–Skene refit, if any (see the module docstring)."""
    prior = reliability_mean(PRIOR_ALPHA, PRIOR_BETA)
    # Gold annotations are the reference, not peers; skips are never compared. One (latest) per annotator.
    latest: dict[int, Submission] = {}
    for sub in submissions:
        if not sub.was_cancelled and not sub.ground_truth:
            kept = latest.get(sub.annotator)
            if kept is None or sub.updated_at >= kept.updated_at:
                latest[sub.annotator] = sub
    subs = list(latest.values())
    cat = categorical(label_config)
    contributions = {s.annotator: Contribution() for s in subs}

    if gold is not None:
        gold_label = label_of(gold, cat.control) if cat else None
        for sub in subs:
            contributions[sub.annotator].gold = compare_results(sub.result, gold, label_config, control_weights)
            if cat and gold_label is not None:
                given = label_of(sub.result, cat.control)
                if given is not None:
                    key = f"{gold_label}\t{given}"
                    contributions[sub.annotator].confusion[key] = contributions[sub.annotator].confusion.get(
                        key, 0.0) + 1.0

    pairs: dict[tuple[str, str], float] = {}
    sim: dict[tuple[int, int], float] = {}
    # One single-choice control: a pair agrees exactly when the labels are equal (an empty result has label
    # None, and two empty results agree), which is what compare_results computes, without its per-pair cost.
    fast = {s.unique_id: label_of(s.result, cat.control) for s in subs} if cat and _plain(subs, cat) else None
    for i, a in enumerate(subs):
        for b in subs[i + 1:]:
            if fast is not None:
                value = 1.0 if fast[a.unique_id] == fast[b.unique_id] else 0.0
            else:
                value = compare_results(a.result, b.result, label_config, control_weights)
                value = 0.0 if value is None else value
            pairs[(a.unique_id, b.unique_id)] = value
            sim[(a.annotator, b.annotator)] = sim[(b.annotator, a.annotator)] = value
            for member in (a, b):
                contributions[member.annotator].pair_sum += value
                contributions[member.annotator].pair_n += 1
    agreement = sum(pairs.values()) / len(pairs) if pairs else None
    rel = {s.annotator: reliability.get(s.annotator, prior) for s in subs}

    posterior: dict[str, float] = {}
    consensus: str | None = None
    confidence: float | None = None
    share: float | None = None
    if cat:
        given = {s.annotator: label_of(s.result, cat.control) for s in subs}
        votes = [(a, label) for a, label in given.items() if label in cat.classes]
        if votes:
            posterior = _posterior(votes, rel, cat.classes, fit)
            consensus = max(posterior, key=posterior.__getitem__)
            confidence = posterior[consensus]
            share = sum(1 for label in given.values() if label == consensus) / len(given)
        for sub in subs:
            mine = given[sub.annotator]
            peers = [(a, label) for a, label in given.items() if a != sub.annotator and label in cat.classes]
            if mine is None or mine not in cat.classes or not peers:
                continue
            q = _posterior(peers, rel, cat.classes, fit)
            contribution = contributions[sub.annotator]
            contribution.peer = q[mine]
            if gold is None:  # gold already gave a hard count for this task
                for true_class, p in q.items():
                    if p > 1e-6:
                        key = f"{true_class}\t{mine}"
                        contribution.confusion[key] = contribution.confusion.get(key, 0.0) + p
    elif len(subs) >= 2:
        medoid, best_score = subs[0], -1.0
        for sub in subs:
            others = [(sim[(sub.annotator, o.annotator)], rel[o.annotator]) for o in subs if o is not sub]
            weight = sum(w for _, w in others)
            contributions[sub.annotator].peer = sum(v * w for v, w in others) / weight if weight else None
            mean = sum(v for v, _ in others) / len(others)
            if mean > best_score:
                medoid, best_score = sub, mean
        consensus, confidence = medoid.unique_id, best_score
        agreeing = [o for o in subs if o is medoid or sim[(medoid.annotator, o.annotator)] >= CONSENSUS_MATCH]
        share = len(agreeing) / len(subs)

    reached = share is not None and len(subs) >= 2 and share >= consensus_threshold
    return TaskScore(agreement, consensus, confidence, pairs, contributions, posterior, share, reached)


def beta_interval(alpha: float, beta: float, mass: float = 0.9) -> tuple[float, float]:
    """Equal-tailed credible interval of a Beta(alpha, beta) posterior."""
    from scipy.stats import beta as beta_dist

    tail = (1.0 - mass) / 2.0
    low, high = beta_dist.ppf([tail, 1.0 - tail], alpha, beta)
    return float(low), float(high)
