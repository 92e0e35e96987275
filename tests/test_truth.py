"""Tests for qa_hooks.truth: majority vote, weighted vote and Dawid-Skene truth inference."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from qa_hooks.truth import (
    DawidSkene,
    MajorityVote,
    WeightedVote,
    dawid_skene,
    log_odds_weights,
    majority_vote,
    weighted_vote,
)
from scripts.crowd_sets import available, load_gold, load_labels

METHODS = {
    "majority_vote": majority_vote,
    "weighted_vote": lambda table: weighted_vote(table, {}, default=1.0),
    "dawid_skene": dawid_skene,
}


def table(rows: list[tuple[object, object, object]]) -> pd.DataFrame:
    return pd.DataFrame(rows, columns=["task", "worker", "label"])


SMALL = table(
    [
        ("t1", "ann", "cat"),
        ("t1", "bob", "cat"),
        ("t1", "cy", "dog"),
        ("t2", "ann", "dog"),
        ("t3", "bob", "dog"),
        ("t3", "cy", "cat"),
    ]
)


Crowd = tuple[pd.DataFrame, pd.Series, dict[str, np.ndarray]]


def synthetic_crowd(seed: int = 7, n_tasks: int = 400) -> Crowd:
    """Three classes; three reliable experts outvoted by four workers with a strong bias to class 0.

    Every worker labels every task, so majority vote follows the biased majority whenever the experts
    disagree with it, while Dawid-Skene learns that the biased workers carry little information.
    """
    rng = np.random.default_rng(seed)
    k = 3
    truth = rng.choice(k, size=n_tasks, p=[0.4, 0.3, 0.3])
    expert = np.full((k, k), 0.1 / (k - 1)) + np.eye(k) * (0.9 - 0.1 / (k - 1))
    biased = np.array([[0.9, 0.05, 0.05], [0.7, 0.25, 0.05], [0.7, 0.05, 0.25]])
    confusions = {f"expert{i}": expert for i in range(3)} | {f"biased{i}": biased for i in range(4)}
    rows = []
    for worker, matrix in confusions.items():
        for task, true_class in enumerate(truth):
            rows.append((f"task{task:04d}", worker, int(rng.choice(k, p=matrix[true_class]))))
    gold = pd.Series(truth, index=[f"task{t:04d}" for t in range(n_tasks)])
    return table(rows), gold, confusions


def accuracy(result: pd.DataFrame, gold: pd.Series) -> float:
    return float((result["label"].reindex(gold.index) == gold).mean())


# --- majority vote -----------------------------------------------------------------------------------


def test_majority_vote_hand_checked() -> None:
    result = majority_vote(SMALL)
    assert list(result.index) == ["t1", "t2", "t3"]
    assert result.loc["t1", "label"] == "cat"
    assert result.loc["t1", "confidence"] == pytest.approx(2 / 3)
    assert result.loc["t2", "label"] == "dog"
    assert result.loc["t2", "confidence"] == 1.0
    # t3 is a 1-1 tie: the smallest label wins, with half the votes.
    assert result.loc["t3", "label"] == "cat"
    assert result.loc["t3", "confidence"] == 0.5


def test_majority_vote_ties_go_to_smallest_label_whatever_the_row_order() -> None:
    rows = [("a", "w1", 3), ("a", "w2", 1), ("a", "w3", 2), ("b", "w1", 2), ("b", "w2", 1)]
    for order in (rows, rows[::-1]):
        result = majority_vote(table(order))
        assert result.loc["a", "label"] == 1
        assert result.loc["a", "confidence"] == pytest.approx(1 / 3)
        assert result.loc["b", "label"] == 1


def test_majority_vote_class_exposes_shares() -> None:
    model = MajorityVote().fit(SMALL)
    assert model.probas_.loc["t1", "cat"] == pytest.approx(2 / 3)
    assert np.allclose(model.probas_.sum(axis=1), 1.0)
    pd.testing.assert_frame_equal(model.predict(), majority_vote(SMALL))


def test_duplicate_labels_count_and_extra_columns_are_ignored() -> None:
    frame = table([("a", "w1", "x"), ("a", "w1", "x"), ("a", "w2", "y")]).assign(lead_time=[1.0, 2.0, 3.0])
    result = majority_vote(frame)
    assert result.loc["a", "label"] == "x"
    assert result.loc["a", "confidence"] == pytest.approx(2 / 3)


# --- weighted vote -----------------------------------------------------------------------------------


def test_weighted_vote_hand_checked() -> None:
    result = weighted_vote(SMALL, {"ann": 3.0, "bob": 1.0, "cy": 1.0})
    assert result.loc["t1", "label"] == "cat"
    assert result.loc["t1", "confidence"] == pytest.approx(4 / 5)
    # t3: bob (1) says dog, cy (1) says cat -> tie, smallest label.
    assert result.loc["t3", "label"] == "cat"
    heavy_cy = weighted_vote(SMALL, {"ann": 1.0, "bob": 1.0, "cy": 5.0})
    assert heavy_cy.loc["t1", "label"] == "dog"
    assert heavy_cy.loc["t1", "confidence"] == pytest.approx(5 / 7)
    assert heavy_cy.loc["t3", "confidence"] == pytest.approx(5 / 6)


def test_weighted_vote_accepts_series_and_default_weight() -> None:
    weights = pd.Series({"ann": 2.0})
    result = weighted_vote(SMALL, weights, default=0.5)
    assert result.loc["t1", "label"] == "cat"
    assert result.loc["t1", "confidence"] == pytest.approx(2.5 / 3.0)


def test_weighted_vote_zero_weight_task_falls_back_to_majority_vote() -> None:
    result = weighted_vote(SMALL, {"ann": 0.0, "bob": 0.0, "cy": 0.0})
    pd.testing.assert_frame_equal(result, majority_vote(SMALL))
    partly = weighted_vote(SMALL, {"ann": 1.0, "bob": 0.0, "cy": 0.0})
    assert partly.loc["t1", "label"] == "cat"
    assert partly.loc["t1", "confidence"] == 1.0
    assert partly.loc["t3", "confidence"] == 0.5  # no weight at all on t3: plain vote share


@pytest.mark.parametrize(
    ("weights", "message"),
    [
        ({"ann": 1.0, "bob": 1.0}, "no weight for 1 worker"),
        ({"ann": 1.0, "bob": -1.0, "cy": 1.0}, ">= 0"),
        ({"ann": 1.0, "bob": math.inf, "cy": 1.0}, "finite"),
        ({"ann": 1.0, "bob": "heavy", "cy": 1.0}, "numbers"),
        ([1.0, 2.0, 3.0], "mapping"),
    ],
)
def test_weighted_vote_rejects_bad_weights(weights: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        weighted_vote(SMALL, weights)  # type: ignore[arg-type]


def test_log_odds_weights() -> None:
    weights = log_odds_weights({"good": 0.75, "coin": 0.5, "bad": 0.2, "perfect": 1.0}, n_classes=2)
    assert weights["good"] == pytest.approx(math.log(3))
    assert weights["coin"] == 0.0
    assert weights["bad"] == 0.0
    assert math.isfinite(weights["perfect"]) and weights["perfect"] > weights["good"]
    # With 4 classes chance is 1/4, so 0.5 accuracy is informative: log(3 * 0.5 / 0.5).
    assert log_odds_weights({"w": 0.5}, n_classes=4)["w"] == pytest.approx(math.log(3))
    assert log_odds_weights({"w": 0.9}, n_classes=1) == {"w": 1.0}
    with pytest.raises(ValueError, match="outside"):
        log_odds_weights({"w": 1.5}, n_classes=2)


# --- Dawid-Skene -------------------------------------------------------------------------------------


def test_dawid_skene_unanimous_tasks_are_confident() -> None:
    rows = [(f"t{i}", w, "yes" if i % 2 else "no") for i in range(20) for w in ("a", "b", "c")]
    result = dawid_skene(table(rows))
    assert (result["label"] == ["yes" if int(t[1:]) % 2 else "no" for t in result.index]).all()
    assert (result["confidence"] > 0.99).all()


def test_dawid_skene_beats_majority_vote_on_synthetic_crowd() -> None:
    labels, gold, confusions = synthetic_crowd()
    mv_accuracy = accuracy(majority_vote(labels), gold)
    model = DawidSkene().fit(labels)
    ds_accuracy = accuracy(model.predict(), gold)
    assert ds_accuracy > 0.9
    assert ds_accuracy > mv_accuracy + 0.1
    # The recovered confusion matrices are close to the ones that generated the labels.
    for worker in ("expert0", "biased0"):
        recovered = model.confusions_[worker].to_numpy()
        assert np.abs(recovered - confusions[worker]).max() < 0.12, worker
    # Class priors near the generating 0.4 / 0.3 / 0.3.
    assert np.allclose(model.priors_.to_numpy(), [0.4, 0.3, 0.3], atol=0.06)
    # Expected accuracy separates experts from biased workers; weights from it beat majority vote too.
    assert model.worker_accuracy_["expert1"] > 0.8 > 0.6 > model.worker_accuracy_["biased1"]
    weights = model.worker_weights()
    assert weights["expert2"] > weights["biased2"] >= 0.0
    assert accuracy(weighted_vote(labels, weights), gold) > mv_accuracy + 0.1


def test_dawid_skene_fitted_attributes() -> None:
    labels, _, _ = synthetic_crowd(seed=3, n_tasks=60)
    model = DawidSkene(max_iter=50).fit(labels)
    k = 3
    assert list(model.classes_) == [0, 1, 2]
    assert model.posteriors_.shape == (60, k)
    assert np.allclose(model.posteriors_.sum(axis=1), 1.0)
    assert set(model.confusions_) == set(labels["worker"])
    for matrix in model.confusions_.values():
        assert matrix.shape == (k, k)
        assert list(matrix.index) == list(matrix.columns) == [0, 1, 2]
        assert np.allclose(matrix.sum(axis=1), 1.0)
        assert (matrix.to_numpy() > 0).all()  # smoothing keeps every entry positive
    assert model.priors_.sum() == pytest.approx(1.0)
    assert 1 <= model.n_iter_ <= 50
    assert isinstance(model.converged_, bool) and model.converged_
    assert math.isfinite(model.log_likelihood_) and model.log_likelihood_ < 0
    chosen = model.posteriors_.to_numpy().max(axis=1)
    assert np.allclose(model.predict()["confidence"].to_numpy(), chosen)


def test_dawid_skene_stops_at_max_iter() -> None:
    labels, _, _ = synthetic_crowd(seed=5, n_tasks=50)
    model = DawidSkene(max_iter=1, tol=0.0).fit(labels)
    assert model.n_iter_ == 1
    assert model.converged_ is False


def test_dawid_skene_without_smoothing_still_works() -> None:
    labels, gold, _ = synthetic_crowd(seed=11, n_tasks=200)
    result = dawid_skene(labels, diag_prior=0.0, off_diag_prior=0.0, class_prior=0.0)
    assert result["confidence"].between(0, 1).all()
    assert accuracy(result, gold) > 0.9


def test_dawid_skene_without_smoothing_keeps_every_confusion_row_normalised() -> None:
    # With no pseudo-counts the lonely worker's "true b" row gets a subnormal posterior mass (about 3e-309);
    # flooring that mass at the float's tiny left the row summing to 0.25.
    rows = [(0, "w0", "a"), (0, "lonely", "a"), (1, "w0", "b"), (1, "other", "a")]
    model = DawidSkene(diag_prior=0.0, off_diag_prior=0.0, class_prior=0.0).fit(table(rows))
    for worker, confusion in model.confusions_.items():
        assert np.allclose(confusion.to_numpy().sum(axis=1), 1.0), worker
    assert np.isfinite(model.posteriors_.to_numpy()).all()


def test_dawid_skene_single_worker_returns_their_labels() -> None:
    rows = [("a", "solo", "x"), ("b", "solo", "y"), ("c", "solo", "x"), ("d", "solo", "z")]
    result = dawid_skene(table(rows))
    assert list(result["label"]) == ["x", "y", "x", "z"]
    assert (result["confidence"] > 0.5).all()


def test_single_class_is_certain() -> None:
    for method in METHODS.values():
        result = method(table([("a", "w1", "x"), ("b", "w2", "x"), ("b", "w1", "x")]))
        assert list(result["label"]) == ["x", "x"]
        assert np.allclose(result["confidence"], 1.0)


def test_dawid_skene_is_independent_of_row_order() -> None:
    labels, _, _ = synthetic_crowd(seed=2, n_tasks=80)
    shuffled = labels.sample(frac=1.0, random_state=0)
    first = dawid_skene(labels)
    second = dawid_skene(shuffled)
    assert (first["label"] == second["label"]).all()
    assert np.allclose(first["confidence"], second["confidence"])


# --- output contract shared by all methods -----------------------------------------------------------


@pytest.mark.parametrize("name", sorted(METHODS))
def test_output_contract(name: str) -> None:
    labels, _, _ = synthetic_crowd(seed=1, n_tasks=40)
    labels = labels.sample(frac=0.7, random_state=1)  # uneven numbers of labels per task
    result = METHODS[name](labels)
    assert list(result.columns) == ["label", "confidence"]
    assert result.index.name == "task"
    assert list(result.index) == sorted(labels["task"].unique())
    assert result["confidence"].between(0.0, 1.0).all()
    assert set(result["label"]) <= set(labels["label"])


@pytest.mark.parametrize("name", sorted(METHODS))
def test_string_and_int_labels_give_the_same_answer(name: str) -> None:
    labels, _, _ = synthetic_crowd(seed=4, n_tasks=40)
    as_int = METHODS[name](labels)
    as_str = METHODS[name](labels.assign(label=labels["label"].map({0: "a", 1: "b", 2: "c"})))
    assert as_int["label"].dtype.kind == "i"
    assert (as_int["label"].map({0: "a", 1: "b", 2: "c"}) == as_str["label"]).all()
    assert np.allclose(as_int["confidence"], as_str["confidence"])


@pytest.mark.parametrize("name", sorted(METHODS))
@pytest.mark.parametrize(
    ("bad", "message"),
    [
        ([("a", "w", "x")], "DataFrame"),
        (pd.DataFrame({"task": ["a"], "label": ["x"]}), r"lacks column\(s\) \['worker'\]"),
        (pd.DataFrame(columns=["task", "worker", "label"]), "empty"),
        (pd.DataFrame({"task": ["a", "b"], "worker": ["w", None], "label": ["x", "y"]}), "missing values"),
        (pd.DataFrame({"task": ["a", "b"], "worker": ["w", "w"], "label": ["x", np.nan]}), "missing values"),
    ],
)
def test_invalid_tables_raise_value_error(name: str, bad: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        METHODS[name](bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "kwargs",
    [{"max_iter": 0}, {"max_iter": 2.5}, {"tol": -1.0}, {"diag_prior": -0.1}, {"class_prior": math.nan}],
)
def test_invalid_dawid_skene_settings(kwargs: dict[str, float]) -> None:
    with pytest.raises(ValueError):
        DawidSkene(**kwargs)  # type: ignore[arg-type]


@pytest.mark.parametrize("model", [MajorityVote(), WeightedVote({}), DawidSkene()])
def test_predict_before_fit_raises(model: MajorityVote | WeightedVote | DawidSkene) -> None:
    with pytest.raises(ValueError, match="not fitted"):
        model.predict()
    if isinstance(model, DawidSkene):
        with pytest.raises(ValueError, match="not fitted"):
            model.worker_weights()


# --- real data -----------------------------------------------------------------------------------------


@pytest.mark.skipif(not available("rte"), reason="shipped RTE set missing from data/crowd")
def test_rte_accuracy() -> None:
    labels, gold = load_labels("rte"), load_gold("rte")
    assert accuracy(majority_vote(labels), gold) > 0.9
    assert accuracy(dawid_skene(labels), gold) >= 0.9275  # crowd-kit 1.4.2 DawidSkene: 742/800


@pytest.mark.skipif(not available("rte"), reason="shipped RTE set missing from data/crowd")
def test_rte_matches_crowdkit_oracle() -> None:
    aggregation = pytest.importorskip(
        "crowdkit.aggregation",
        reason="crowd-kit is a benchmark-only oracle (pip install -r requirements-bench.txt)",
    )
    labels, gold = load_labels("rte"), load_gold("rte")
    oracle = aggregation.DawidSkene(n_iter=100).fit_predict(labels)
    oracle_accuracy = float((oracle.reindex(gold.index) == gold).mean())
    ours = dawid_skene(labels)
    assert accuracy(ours, gold) >= oracle_accuracy
    agreement = float((ours["label"] == oracle.reindex(ours.index)).mean())
    assert agreement > 0.98
