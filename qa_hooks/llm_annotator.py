"""The LLM as a member of the crowd in truth inference: its pseudo-worker, stored answers, calibration, stop inputs.

Each model + prompt version that pre-labels a project is one pseudo-worker, ``llm:<model>:<prompt_version>``
(:func:`llm_worker`). Its answers are stored per task when the ML backend returns a pre-label
(:func:`record_llm_answer`, ``Keys.llm_labels``) and enter the project's refit (:mod:`qa_hooks.refit`) as one more
annotator of :class:`qa_hooks.fit.SemiSupervisedDawidSkene`: its confusion matrix is learnt from gold and peers like
anyone's, so a weak model weighs little and a strong one much (Dawid & Skene 1979; the LLM-as-annotator framing of
Gilardi et al. 2023, "ChatGPT outperforms crowd workers for text-annotation tasks", PNAS 120(30)).

It is never a human label: :func:`human_votes` drops it from overlap, payment and agreement counts, and the policy's
``llm.counts_toward_stop`` decides whether its posterior contribution may let a task stop, once its learnt accuracy
reaches ``llm.min_accuracy`` (:func:`stop_inputs`, :func:`trusted_llms`).
Calibration against gold (:func:`calibration`): expected calibration error and the reliability-diagram bins
(Guo et al. 2017, "On calibration of modern neural networks", ICML), stored with the fit.
"""

from __future__ import annotations

import json
from collections.abc import Container, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import redis

from core.keys import Keys
from qa_hooks.scoring import categorical, label_of

__all__ = [
    "LLM_PREFIX",
    "Calibration",
    "LLMAnswer",
    "answers_from_predictions",
    "calibration",
    "calibrations",
    "human_votes",
    "is_llm_worker",
    "llm_worker",
    "read_llm_answers",
    "record_llm_answer",
    "record_predictions",
    "stop_inputs",
    "task_answers",
    "trusted_llms",
]

LLM_PREFIX = "llm:"


def llm_worker(model: str, prompt_version: str | int) -> str:
    """The pseudo-worker of one model and prompt version (``llm:<model>:<prompt_version>``)."""
    if not str(model).strip():
        raise ValueError("an LLM pseudo-worker needs a model name")
    return f"{LLM_PREFIX}{model}:{prompt_version}"


def is_llm_worker(worker: Any) -> bool:
    """Whether an annotator id is an LLM pseudo-worker (human annotators are Label Studio user ids)."""
    return str(worker).startswith(LLM_PREFIX)


@dataclass(frozen=True)
class LLMAnswer:
    """One pre-label's answer for a task: the pseudo-worker, its label and the model's confidence in it."""

    task: int
    worker: str
    label: str
    confidence: float | None = None


# -- storage (the ML backend writes, the refit reads) ---------------------------------------------------------


def record_llm_answer(connection: redis.Redis, prefix: str, project: int, answer: LLMAnswer) -> None:
    """Store a pre-label's answer (the latest per task and pseudo-worker wins)."""
    if answer.confidence is not None and not 0.0 <= answer.confidence <= 1.0:
        raise ValueError(f"confidence must be in [0, 1], got {answer.confidence}")
    connection.hset(Keys(prefix).llm_labels(project), f"{int(answer.task)}|{answer.worker}",
                    json.dumps({"label": answer.label, "confidence": answer.confidence}))


def answers_from_predictions(tasks: Sequence[Mapping[str, Any]], predictions: Sequence[Mapping[str, Any]],
                             label_config: str) -> list[LLMAnswer]:
    """The LLM answers among the ML backend's predictions (one per task, in order): those whose
    ``model_version`` is an LLM pseudo-worker and whose result makes one choice on the config's single control."""
    cat = categorical(label_config)
    if cat is None:
        return []
    answers = []
    for task, prediction in zip(tasks, predictions, strict=False):
        worker, task_id = str(prediction.get("model_version") or ""), task.get("id")
        if not is_llm_worker(worker) or not isinstance(task_id, int) or isinstance(task_id, bool):
            continue
        label = label_of(prediction.get("result") or [], cat.control)
        score = prediction.get("score")
        confidence = float(score) if isinstance(score, (int, float)) and 0.0 <= score <= 1.0 else None
        if label in cat.classes:
            answers.append(LLMAnswer(task_id, worker, label, confidence))
    return answers


def record_predictions(connection: redis.Redis, prefix: str, project: int, tasks: Sequence[Mapping[str, Any]],
                       predictions: Sequence[Mapping[str, Any]], label_config: str) -> int:
    """Store the LLM answers among a /predict's predictions in one round trip; returns how many."""
    answers = answers_from_predictions(tasks, predictions, label_config)
    if answers:
        pipe = connection.pipeline(transaction=False)
        for answer in answers:
            record_llm_answer(pipe, prefix, project, answer)  # type: ignore[arg-type]
        pipe.execute()
    return len(answers)


def read_llm_answers(connection: redis.Redis, prefix: str, project: int) -> list[LLMAnswer]:
    """Every stored LLM answer of a project; malformed entries are skipped (they never block a refit)."""
    answers = []
    for field, raw in connection.hgetall(Keys(prefix).llm_labels(project)).items():
        try:
            task, worker = field.decode().split("|", 1)
            data = json.loads(raw)
            confidence = data.get("confidence")
            answers.append(LLMAnswer(int(task), worker, str(data["label"]),
                                     None if confidence is None else float(confidence)))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return answers


def task_answers(connection: redis.Redis, prefix: str, project: int, task: int,
                 workers: Iterable[str]) -> list[LLMAnswer]:
    """The stored answers of ``workers`` (LLM pseudo-workers) for one task, in one round trip; malformed ones
    are skipped."""
    names = list(workers)
    if not names:
        return []
    answers = []
    raws = connection.hmget(Keys(prefix).llm_labels(project), [f"{int(task)}|{w}" for w in names])
    for worker, raw in zip(names, raws, strict=True):
        try:
            data = json.loads(raw) if raw is not None else None
            if data is not None:
                confidence = data.get("confidence")
                answers.append(LLMAnswer(int(task), worker, str(data["label"]),
                                         None if confidence is None else float(confidence)))
        except (ValueError, KeyError, TypeError, AttributeError):
            continue
    return answers


# -- never a human label -----------------------------------------------------------------------------------------


def human_votes(labels: Iterable[tuple[Any, str]]) -> dict[str, int]:
    """Labels per answer from humans only: what overlap, payment and agreement count."""
    votes: dict[str, int] = {}
    for worker, label in labels:
        if not is_llm_worker(worker):
            votes[str(label)] = votes.get(str(label), 0) + 1
    return votes


def trusted_llms(accuracies: Mapping[str, float], min_accuracy: float) -> frozenset[str]:
    """The LLM pseudo-workers whose learnt accuracy (from the refit: gold and peers) reaches ``min_accuracy``."""
    return frozenset(w for w, acc in accuracies.items() if is_llm_worker(w) and acc >= min_accuracy)


def stop_inputs(labels: Sequence[tuple[Any, str]], counts_toward_stop: bool,
                trusted: Container[str] | None = None) -> tuple[list[tuple[Any, str]], dict[str, int]]:
    """The ``(worker, label)`` pairs the stop rule's posterior combines and the votes it counts.

    ``counts_toward_stop`` False: the LLM is left out of both (its answers still shape everyone's confusion
    matrices through the refit). True: the answer of an LLM in ``trusted`` (None: any; see :func:`trusted_llms`)
    enters the posterior with its learnt confusion matrix and counts as one agreeing voice, so "one human agreeing
    with a calibrated LLM above the threshold" can stop a task; a weak LLM's voice must not stand in for a human's.
    """
    pairs = [(w, lb) for w, lb in labels
             if not is_llm_worker(w) or (counts_toward_stop and (trusted is None or str(w) in trusted))]
    votes: dict[str, int] = {}
    for _, label in pairs:
        votes[str(label)] = votes.get(str(label), 0) + 1
    return pairs, votes


# -- calibration against gold ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Calibration:
    """A pseudo-worker's calibration on gold: ``ece`` (expected calibration error), ``accuracy``, ``n`` and the
    reliability diagram's ``bins`` (lower edge, upper edge, count, mean confidence, accuracy; empty bins omitted)."""

    worker: str
    n: int
    accuracy: float
    ece: float
    bins: tuple[tuple[float, float, int, float, float], ...]

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def calibration(worker: str, confidences: Sequence[float], correct: Sequence[bool], n_bins: int = 10) -> Calibration:
    """Expected calibration error over ``n_bins`` equal-width confidence bins (Guo et al. 2017):
    ``sum_b |B_b|/n * |accuracy(B_b) - confidence(B_b)|``."""
    conf = np.clip(np.asarray(confidences, dtype=float), 0.0, 1.0)
    right = np.asarray(correct, dtype=bool)
    if conf.shape != right.shape:
        raise ValueError("confidences and correct need one entry per gold answer")
    if n_bins < 1:
        raise ValueError("n_bins must be >= 1")
    n = len(conf)
    if n == 0:
        return Calibration(worker, 0, 0.0, 0.0, ())
    edges = np.linspace(0.0, 1.0, n_bins + 1)
    which = np.minimum(np.searchsorted(edges, conf, side="right") - 1, n_bins - 1)
    bins, ece = [], 0.0
    for b in range(n_bins):
        members = which == b
        count = int(members.sum())
        if not count:
            continue
        mean_conf, acc = float(conf[members].mean()), float(right[members].mean())
        ece += count / n * abs(acc - mean_conf)
        bins.append((round(float(edges[b]), 4), round(float(edges[b + 1]), 4), count, round(mean_conf, 4),
                     round(acc, 4)))
    return Calibration(worker, n, round(float(right.mean()), 4), round(ece, 4), tuple(bins))


def calibrations(answers: Iterable[LLMAnswer], gold: Mapping[int, str], n_bins: int = 10) -> dict[str, Calibration]:
    """Per pseudo-worker, its calibration on the gold tasks it answered with a confidence."""
    per_worker: dict[str, tuple[list[float], list[bool]]] = {}
    for a in answers:
        if a.confidence is None or a.task not in gold:
            continue
        conf, right = per_worker.setdefault(a.worker, ([], []))
        conf.append(a.confidence)
        right.append(a.label == gold[a.task])
    return {w: calibration(w, c, r, n_bins) for w, (c, r) in sorted(per_worker.items())}
