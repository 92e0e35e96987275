"""The agreement metrics users expect beside the refit (qa_hooks/agreement.py): weighted kappa, Scott's pi,
Gwet's AC1 and per-task posterior entropy, each against its reference."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import entropy
from sklearn.metrics import cohen_kappa_score

from qa_hooks.agreement import cohen_kappa, fleiss_kappa, gwet_ac1, posterior_entropy, scott_pi, weighted_kappa
from qa_hooks.truth import DawidSkene

# The kappa paradox (Feinstein & Cicchetti 1990; the case Gwet 2008 built AC1 for): two raters agree on 118 of
# 125 items, nearly all "+", and kappa comes out below 0.
PARADOX = [("+", "+")] * 118 + [("+", "-")] * 5 + [("-", "+")] * 2


def paradox_table() -> pd.DataFrame:
    return pd.DataFrame([(i, rater, pair[r]) for i, pair in enumerate(PARADOX) for r, rater in enumerate("AB")],
                        columns=["task", "worker", "label"])


def test_weighted_kappa_is_scikit_learns() -> None:
    rng = np.random.default_rng(0)
    a = rng.integers(5, size=300)
    b = np.clip(a + rng.integers(-2, 3, size=300), 0, 4)
    for weights in ("linear", "quadratic"):
        assert weighted_kappa(a, b, weights) == pytest.approx(cohen_kappa_score(a, b, weights=weights))
    # Named ordered categories: the ranks come from ``order``, not from sorting the names.
    order = ["low", "mid", "high", "very high", "top"]
    named_a, named_b = [order[i] for i in a], [order[i] for i in b]
    assert weighted_kappa(named_a, named_b, "quadratic", order=order) == pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic"))
    assert weighted_kappa(named_a, named_b, "quadratic") != pytest.approx(
        cohen_kappa_score(a, b, weights="quadratic"))  # alphabetical ranks are another scale


def test_weighted_kappa_refuses_bad_input() -> None:
    with pytest.raises(ValueError, match="linear"):
        weighted_kappa([1, 2], [1, 2], "cubic")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="equal-length"):
        weighted_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="not in order"):
        weighted_kappa(["a"], ["b"], order=["a"])
    assert np.isnan(weighted_kappa([1, 1], [1, 1]))


def test_the_kappa_paradox_worked_through_by_hand() -> None:
    a, b = zip(*PARADOX, strict=True)
    n = 125
    p_o = 118 / n
    # Rater A says "+" 123 times, rater B 120 times.
    kappa_chance = (123 / n) * (120 / n) + (2 / n) * (5 / n)
    pooled_plus = (123 + 120) / (2 * n)
    pi_chance = pooled_plus**2 + (1 - pooled_plus) ** 2
    ac1_chance = 2 * pooled_plus * (1 - pooled_plus) / (2 - 1)  # Σ π_k (1 - π_k) / (K - 1)
    assert cohen_kappa(a, b) == pytest.approx((p_o - kappa_chance) / (1 - kappa_chance))
    assert scott_pi(a, b) == pytest.approx((p_o - pi_chance) / (1 - pi_chance))
    assert gwet_ac1(paradox_table()) == pytest.approx((p_o - ac1_chance) / (1 - ac1_chance))
    assert scott_pi(a, b) == pytest.approx(-0.0288, abs=1e-4)
    assert gwet_ac1(paradox_table()) == pytest.approx(0.9408, abs=1e-4)  # high agreement scores high


def test_scott_pi_is_fleiss_kappa_for_two_raters() -> None:
    rng = np.random.default_rng(1)
    a = rng.choice(list("xyz"), size=200, p=[0.6, 0.3, 0.1])
    b = np.where(rng.random(200) < 0.7, a, rng.choice(list("xyz"), size=200))
    rows = [(i, rater, v) for i, pair in enumerate(zip(a, b, strict=True))
            for rater, v in zip("AB", pair, strict=True)]
    table = pd.DataFrame(rows, columns=["task", "worker", "label"])
    assert scott_pi(a, b) == pytest.approx(fleiss_kappa(table))
    assert np.isnan(scott_pi(["x", "x"], ["x", "x"]))


def test_gwet_ac1_for_many_raters_with_missing_labels() -> None:
    # Three tasks, uneven raters; by hand from Gwet (2008)'s multi-rater formulas.
    table = pd.DataFrame([(1, "a", "y"), (1, "b", "y"), (1, "c", "n"), (2, "a", "n"), (2, "c", "n"),
                          (3, "b", "y"), (3, "c", "y"), (3, "d", "y"), (4, "a", "y")],
                         columns=["task", "worker", "label"])
    p_a = np.mean([2 / 6, 2 / 2, 6 / 6])  # Σ r_k (r_k - 1) / (r (r - 1)) per pairable task
    pi_yes = np.mean([2 / 3, 0 / 2, 3 / 3])  # task 4 has one label: not pairable
    p_e = 2 * pi_yes * (1 - pi_yes)
    assert gwet_ac1(table) == pytest.approx((p_a - p_e) / (1 - p_e))
    with pytest.raises(ValueError, match="two or more labels"):
        gwet_ac1(table[table["task"] == 4])
    assert np.isnan(gwet_ac1(table[table["label"] == "y"]))


def test_posterior_entropy_is_scipys() -> None:
    table = pd.DataFrame([(t, w, (t + (w == 2 and t % 3 == 0)) % 3) for t in range(30) for w in range(3)],
                         columns=["task", "worker", "label"])
    posteriors = DawidSkene().fit(table).posteriors_
    ours = posterior_entropy(posteriors)
    assert list(ours.index) == list(posteriors.index)
    assert ours.to_numpy() == pytest.approx(entropy(posteriors.to_numpy(), axis=1))
    assert posterior_entropy([[0.5, 0.5], [1.0, 0.0]], base=2).tolist() == pytest.approx([1.0, 0.0])
    with pytest.raises(ValueError, match="probability distribution"):
        posterior_entropy([[0.5, 0.6]])
