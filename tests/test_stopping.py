"""Posterior stopping rule and the online worker-model estimator (routing/stopping.py)."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from routing.stopping import (
    MATCH_GRID,
    OnlineWorkerEstimator,
    WorkerModel,
    consensus_posterior,
    crowd_confusion,
    decide_stop,
    majority_accuracy,
    matched_threshold,
    prior_confusion,
)
from scripts.crowd_sets import load_gold, load_labels

# -- worker models -------------------------------------------------------------------------------------------


def _majority_by_sequences(confusion: np.ndarray, prior: np.ndarray, n: int) -> float:
    """Oracle for majority_accuracy: every one of the K**n label sequences, one by one."""
    k = len(prior)
    total = 0.0
    for seq in itertools.product(range(k), repeat=n):
        counts = np.bincount(seq, minlength=k)
        leaders = np.flatnonzero(counts == counts.max())
        for t in leaders:
            total += prior[t] * np.prod(confusion[t, list(seq)]) / len(leaders)
    return float(total)


def test_majority_accuracy_matches_the_binomial_and_every_sequence() -> None:
    p = 0.8
    assert majority_accuracy(prior_confusion(2, p), None, 5) == pytest.approx(
        sum(math.comb(5, i) * p**i * (1 - p) ** (5 - i) for i in range(3, 6)))
    assert majority_accuracy(prior_confusion(2, p), None, 2) == pytest.approx(p * p + 0.5 * 2 * p * (1 - p))
    assert majority_accuracy(prior_confusion(3, 0.6), None, 1) == pytest.approx(0.6)
    rng = np.random.default_rng(3)
    for k, n in ((2, 4), (3, 5), (4, 3), (4, 5)):
        confusion = rng.dirichlet(np.ones(k), size=k) + 2 * np.eye(k)
        confusion /= confusion.sum(axis=1, keepdims=True)
        prior = rng.dirichlet(np.ones(k))
        assert majority_accuracy(confusion, prior, n) == pytest.approx(_majority_by_sequences(confusion, prior, n))


def test_more_labels_help_a_crowd_better_than_chance() -> None:
    crowd = prior_confusion(4, 0.6)
    accuracies = [majority_accuracy(crowd, None, n) for n in (1, 3, 5, 7)]
    assert accuracies == sorted(accuracies) and accuracies[0] == pytest.approx(0.6)


def test_crowd_confusion_weighs_workers_by_their_labels() -> None:
    good, bad = WorkerModel.one_coin(0.9, 2, n_labels=30), WorkerModel.one_coin(0.6, 2, n_labels=10)
    assert crowd_confusion([good, bad])[0, 0] == pytest.approx((30 * 0.9 + 10 * 0.6) / 40)
    assert crowd_confusion([good, bad], weights=[1, 1])[0, 0] == pytest.approx(0.75)
    assert crowd_confusion([WorkerModel.one_coin(0.9, 2), WorkerModel.one_coin(0.7, 2)])[1, 1] == pytest.approx(0.8)
    with pytest.raises(ValueError, match="no worker models"):
        crowd_confusion([])
    with pytest.raises(ValueError, match="number of classes"):
        crowd_confusion([good, WorkerModel.one_coin(0.9, 3)])
    with pytest.raises(ValueError, match="one non-negative number per model"):
        crowd_confusion([good, bad], weights=[1])


def _replay_stop_rule(models: list[WorkerModel], threshold: float, tasks: int, seed: int) -> tuple[float, float]:
    """Oracle for matched_threshold's simulation: tasks one by one through consensus_posterior and decide_stop."""
    rng = np.random.default_rng(seed)
    classes = [str(c) for c in range(models[0].n_classes)]
    weights = np.array([m.n_labels for m in models]) / sum(m.n_labels for m in models)
    right = used = 0
    for _ in range(tasks):
        truth = int(rng.integers(len(classes)))
        labels: list[tuple[str, str]] = []
        for _ in range(10):
            w = int(rng.choice(len(models), p=weights))
            labels.append((str(w), classes[int(rng.choice(len(classes), p=models[w].confusion[truth]))]))
            votes = {c: sum(1 for _, lab in labels if lab == c) for c in classes}
            post = consensus_posterior(labels, {str(i): m for i, m in enumerate(models)}, classes)
            decision = decide_stop(post, votes, threshold=threshold, max_labels=10)
            if decision.stop:
                break
        right += decision.label == classes[truth]
        used += len(labels)
    return right / tasks, used / tasks


def test_matched_threshold_is_the_lowest_that_matches_the_fixed_overlap() -> None:
    crowd = [WorkerModel.one_coin(0.9, 2, 50), WorkerModel.one_coin(0.75, 2, 30), WorkerModel.one_coin(0.55, 2, 20)]
    matched = matched_threshold(crowd, None, overlap=5, tasks=4000)
    assert matched.fixed_overlap_accuracy == pytest.approx(majority_accuracy(crowd_confusion(crowd), None, 5))
    assert matched.accuracy >= matched.fixed_overlap_accuracy and 2.0 <= matched.labels_per_task < 5.0
    # The simulation agrees with replaying the rule task by task through the public functions.
    accuracy, labels = _replay_stop_rule(crowd, matched.threshold, 1500, seed=7)
    assert accuracy == pytest.approx(matched.accuracy, abs=0.03)
    assert labels == pytest.approx(matched.labels_per_task, abs=0.15)
    # One grid step lower would not have matched; a required lead asks for more.
    lower = MATCH_GRID[MATCH_GRID.index(matched.threshold) - 1]
    assert _replay_stop_rule(crowd, lower, 1500, seed=7)[0] <= matched.accuracy + 0.03
    stricter = matched_threshold(crowd, None, overlap=5, lead=0.03, tasks=4000)
    assert stricter.threshold > matched.threshold and stricter.accuracy >= stricter.fixed_overlap_accuracy + 0.03
    assert matched_threshold(crowd, None, overlap=5, tasks=4000) == matched  # deterministic


def test_matched_threshold_follows_the_crowd() -> None:
    weak = [WorkerModel.one_coin(0.6, 2, 10)] * 3
    strong = [WorkerModel.one_coin(0.85, 2, 10)] * 3
    # A fixed overlap of 5 is far less sure of a weak crowd's tasks, so matching it takes less certainty.
    assert matched_threshold(weak, None, overlap=5).threshold < matched_threshold(strong, None, overlap=5).threshold
    impossible = matched_threshold(strong, None, overlap=5, lead=0.5)
    assert impossible.threshold == MATCH_GRID[-1] and impossible.accuracy < impossible.fixed_overlap_accuracy + 0.5
    with pytest.raises(ValueError, match="lead"):
        matched_threshold(strong, None, overlap=5, lead=1.0)
    with pytest.raises(ValueError, match="no worker models"):
        matched_threshold([], None, overlap=5)
    with pytest.raises(ValueError, match="class_prior"):
        matched_threshold(strong, [1.0], overlap=5)
    with pytest.raises(ValueError, match="n_labels"):
        majority_accuracy(prior_confusion(2, 0.8), None, 0)


def test_prior_confusion_spreads_errors_evenly() -> None:
    m = prior_confusion(4, 0.7)
    assert np.allclose(m.sum(axis=1), 1.0)
    assert np.allclose(np.diag(m), 0.7) and np.isclose(m[0, 1], 0.1)


@pytest.mark.parametrize(("k", "acc"), [(1, 0.7), (2, 0.0), (2, 1.0), (3, 1.5)])
def test_prior_confusion_rejects_bad_arguments(k: int, acc: float) -> None:
    with pytest.raises(ValueError):
        prior_confusion(k, acc)


def test_worker_model_validation_and_accuracy() -> None:
    assert WorkerModel.one_coin(0.9, 2).accuracy == pytest.approx(0.9)
    assert WorkerModel(np.array([[0.8, 0.2], [0.4, 0.6]])).accuracy == pytest.approx(0.7)
    with pytest.raises(ValueError, match="square"):
        WorkerModel(np.ones((2, 3)) / 3)
    with pytest.raises(ValueError, match="probability"):
        WorkerModel(np.array([[0.5, 0.4], [0.5, 0.5]]))
    with pytest.raises(ValueError, match="probability"):
        WorkerModel(np.array([[1.2, -0.2], [0.5, 0.5]]))


# -- consensus posterior -------------------------------------------------------------------------------------


def test_two_agreeing_workers_naive_bayes() -> None:
    models = {"a": WorkerModel.one_coin(0.9, 2), "b": WorkerModel.one_coin(0.9, 2)}
    post = consensus_posterior([("a", "yes"), ("b", "yes")], models, ["no", "yes"])
    assert post["yes"] == pytest.approx(0.81 / 0.82)


def test_reliable_worker_outweighs_unreliable_one() -> None:
    models = {"pro": WorkerModel.one_coin(0.95, 2), "spam": WorkerModel.one_coin(0.55, 2)}
    post = consensus_posterior([("pro", "A"), ("spam", "B")], models, ["A", "B"])
    assert post["A"] > 0.9


def test_unknown_worker_uses_default_and_prior_applies() -> None:
    post = consensus_posterior([], {}, ["A", "B"], class_prior=[3, 1])
    assert post == pytest.approx({"A": 0.75, "B": 0.25})
    default = WorkerModel.one_coin(0.8, 2)
    post = consensus_posterior([("new", "B")], {}, ["A", "B"], default=default)
    assert post["B"] == pytest.approx(0.8)
    # Without a default an unknown worker is a one-coin 0.7 worker.
    assert consensus_posterior([("new", "B")], {}, ["A", "B"])["B"] == pytest.approx(0.7)


def test_confusion_matrix_captures_bias() -> None:
    # A worker who says B for everything carries no information when saying B.
    always_b = WorkerModel(np.array([[0.1, 0.9], [0.1, 0.9]]))
    post = consensus_posterior([("w", "B")], {"w": always_b}, ["A", "B"])
    assert post["B"] == pytest.approx(0.5)


def test_consensus_posterior_rejects_bad_input() -> None:
    with pytest.raises(ValueError, match="not one of the classes"):
        consensus_posterior([("w", "C")], {}, ["A", "B"])
    with pytest.raises(ValueError, match="3-class model"):
        consensus_posterior([("w", "A")], {"w": WorkerModel.one_coin(0.8, 3)}, ["A", "B"])
    with pytest.raises(ValueError, match="class_prior"):
        consensus_posterior([], {}, ["A", "B"], class_prior=[1, 0])
    with pytest.raises(ValueError, match="distinct"):
        consensus_posterior([], {}, ["A", "A"])


# -- stop rule -----------------------------------------------------------------------------------------------


def test_stop_rule_boundaries() -> None:
    post = {"A": 0.9, "B": 0.1}
    assert decide_stop(post, {"A": 2}, threshold=0.9).stop  # >= threshold
    assert not decide_stop({"A": 0.8999, "B": 0.1001}, {"A": 2}, threshold=0.9).stop
    assert not decide_stop(post, {"A": 1}, threshold=0.9, min_agreeing=1).stop  # below min_labels
    single = decide_stop(post, {"A": 1, "B": 1}, threshold=0.9)
    assert not single.stop and "only 1 label(s)" in single.reason
    assert decide_stop(post, {"A": 1, "B": 1}, threshold=0.9, min_agreeing=1).stop


def test_stop_rule_max_labels_stops_unconfident() -> None:
    d = decide_stop({"A": 0.6, "B": 0.4}, {"A": 3, "B": 2}, threshold=0.9, max_labels=5)
    assert d.stop and not d.confident and d.label == "A" and d.reason.startswith("maximum of 5 labels")
    ok = decide_stop({"A": 0.95, "B": 0.05}, {"A": 3}, threshold=0.9, max_labels=3)
    assert ok.stop and ok.confident
    with pytest.raises(ValueError, match="empty"):
        decide_stop({}, {}, threshold=0.9)


# -- online estimator ----------------------------------------------------------------------------------------


def simulate(seed: int = 0, n_tasks: int = 300) -> tuple[list[tuple[str, str, str]], dict[str, str]]:
    """A crowd of 8 good workers (0.9), 4 mediocre (0.7) and 4 spammers (0.5), 5 labels per task."""
    rng = np.random.default_rng(seed)
    accuracy = {f"good{i}": 0.9 for i in range(8)} | {f"mid{i}": 0.7 for i in range(4)}
    accuracy |= {f"spam{i}": 0.5 for i in range(4)}
    names = list(accuracy)
    truth = {f"t{i}": str(rng.integers(2)) for i in range(n_tasks)}
    stream = []
    for task, label in truth.items():
        for worker in rng.choice(names, 5, replace=False):
            right = rng.random() < accuracy[worker]
            stream.append((task, str(worker), label if right else str(1 - int(label))))
    order = rng.permutation(len(stream))
    return [stream[i] for i in order], truth


def test_cold_start_is_the_prior() -> None:
    est = OnlineWorkerEstimator(["A", "B", "C"], prior_accuracy=0.6)
    assert est.default_model().accuracy == pytest.approx(0.6)
    assert est.worker_model("nobody").accuracy == pytest.approx(0.6)
    assert est.task_posterior("unseen") == pytest.approx({"A": 1 / 3, "B": 1 / 3, "C": 1 / 3})
    assert est.task_labels("unseen") == [] and est.n_labels == 0


@pytest.mark.parametrize("model", ["confusion", "one_coin"])
def test_online_estimates_separate_good_workers_from_spammers(model: str) -> None:
    stream, truth = simulate()
    est = OnlineWorkerEstimator(["0", "1"], model=model)
    for task, worker, label in stream:
        est.observe(task, worker, label)
    est.refit(iterations=20)
    good = np.mean([est.worker_model(f"good{i}").accuracy for i in range(8)])
    spam = np.mean([est.worker_model(f"spam{i}").accuracy for i in range(4)])
    assert good > 0.85 and spam < 0.65
    assert est.worker_model("good0").n_labels > 0
    answers = {t: max(est.task_posterior(t).items(), key=lambda kv: kv[1])[0] for t in truth}
    weighted = np.mean([answers[t] == truth[t] for t in truth])
    votes: dict[str, list[int]] = {}
    for task, _, label in stream:
        votes.setdefault(task, []).append(int(label))
    majority = np.mean([str(int(np.mean(votes[t]) > 0.5)) == truth[t] for t in truth])
    assert weighted > 0.93 and weighted >= majority


def test_estimator_posterior_matches_the_pure_function() -> None:
    stream, _ = simulate(seed=1, n_tasks=60)
    est = OnlineWorkerEstimator(["0", "1"])
    for task, worker, label in stream:
        est.observe(task, worker, label)
    est.observe("fresh", "brand-new-worker", "1")  # a worker unseen at the last fit
    prior = list(est.class_prior.values())
    for task in ("t0", "t5", "fresh"):
        expected = consensus_posterior(
            est.task_labels(task), est.models(), est.classes, default=est.default_model(), class_prior=prior
        )
        assert est.task_posterior(task) == pytest.approx(expected)


def test_gold_clamps_its_task_and_teaches_worker_models() -> None:
    est = OnlineWorkerEstimator(["A", "B"])
    truth = {f"t{i}": "AB"[i % 2] for i in range(40)}
    # Two workers who always disagree: without gold nobody can tell who is right.
    for task, label in truth.items():
        est.observe(task, "liar", "B" if label == "A" else "A")
        est.observe(task, "honest", label)
    est.refit(iterations=10)
    assert abs(est.worker_model("honest").accuracy - est.worker_model("liar").accuracy) < 0.1
    for i in range(10):
        est.reveal_gold(f"t{i}", truth[f"t{i}"])
    est.reveal_gold("never-labelled", "B")
    est.refit(iterations=10)
    assert est.task_posterior("t0") == {"A": 1.0, "B": 0.0}
    assert est.task_posterior("never-labelled")["B"] == 1.0
    assert est.worker_model("honest").accuracy > est.worker_model("liar").accuracy + 0.3
    assert est.task_posterior("t30")[truth["t30"]] > 0.9  # the lesson carries over to tasks without gold


def test_mirror_solution_is_restarted_from_votes() -> None:
    stream, truth = simulate(seed=2, n_tasks=100)
    est = OnlineWorkerEstimator(["0", "1"], refit_every=10**6, refit_fraction=1.0)
    for task, worker, label in stream:
        est.observe(task, worker, label)
    # Force the label-swapped fit EM can slide into, then refit once.
    flipped = np.log(prior_confusion(2, 0.8))[:, ::-1]
    est._log_conf = np.broadcast_to(flipped, (*est._log_conf.shape[:1], 2, 2)).copy()
    est._pop_log_conf = flipped.copy()
    restarts = est.restarts
    est.refit(iterations=1)
    assert est.restarts == restarts + 1
    assert est.default_model().accuracy > 0.5
    right = np.mean([max(est.task_posterior(t).items(), key=lambda kv: kv[1])[0] == truth[t] for t in truth])
    assert right > 0.9


def test_single_label_tasks_do_not_collapse_the_class_prior() -> None:
    # Many tasks with one label each (all "B") carry no reliability information; the prior must stay sane.
    est = OnlineWorkerEstimator(["A", "B"])
    for i in range(300):
        est.observe(f"t{i}", f"w{i % 7}", "B")
    assert 0.3 < est.class_prior["B"] < 0.7


def test_estimator_rejects_bad_input() -> None:
    est = OnlineWorkerEstimator(["A", "B"])
    with pytest.raises(ValueError, match="not one of the classes"):
        est.observe("t", "w", "C")
    with pytest.raises(ValueError, match="not one of the classes"):
        est.reveal_gold("t", "C")
    for kwargs in (
        {"model": "glad"},
        {"prior_accuracy": 0.5},
        {"prior_accuracy": 1.0},
        {"worker_strength": 0.0},
        {"refit_every": 0},
        {"em_iterations": 0},
    ):
        with pytest.raises(ValueError):
            OnlineWorkerEstimator(["A", "B"], **kwargs)  # type: ignore[arg-type]


def test_replaying_a_real_crowd_reaches_dawid_skene_accuracy() -> None:
    """All 8,000 RTE labels streamed in random order: online fits end near a full Dawid–Skene fit (0.928)."""
    frame = load_labels("rte").sample(frac=1.0, random_state=0)
    gold = load_gold("rte")
    est = OnlineWorkerEstimator(sorted(set(frame["label"])))
    for task, worker, label in frame.itertuples(index=False):
        est.observe(task, worker, label)
    answers = {t: max(est.task_posterior(t).items(), key=lambda kv: kv[1])[0] for t in gold.index}
    assert np.mean([answers[t] == gold[t] for t in gold.index]) > 0.91
