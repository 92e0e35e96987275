"""Agreement metrics against scikit-learn, statsmodels and the krippendorff package as oracles."""

from __future__ import annotations

import functools
import itertools
import warnings
from collections import Counter

import krippendorff
import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa

from qa_hooks import agreement
from qa_hooks.agreement import (
    CROSS_GROUP,
    agreement_matrix,
    by_group,
    category_counts,
    cohen_kappa,
    fleiss_kappa,
    fleiss_kappa_from_counts,
    krippendorff_alpha,
    pairwise_kappa,
    percent_agreement,
)

TOL = 1e-9
SHAPES = [(12, 3), (80, 7), (400, 25)]  # (tasks, workers)


def random_labels(rng: np.random.Generator, n_tasks: int, n_workers: int, n_cats: int) -> np.ndarray:
    """tasks × workers codes in [0, n_cats): a hidden truth per task, workers of varying accuracy."""
    truth = rng.integers(n_cats, size=n_tasks)
    accuracy = rng.uniform(0.3, 0.95, size=n_workers)
    correct = rng.random((n_tasks, n_workers)) < accuracy
    return np.where(correct, truth[:, None], rng.integers(n_cats, size=(n_tasks, n_workers)))


def to_table(codes: np.ndarray, present: np.ndarray, strings: bool = False, offset: int = 0) -> pd.DataFrame:
    """Long label table from a tasks × workers code matrix and a mask of the cells that were labelled."""
    task, worker = np.nonzero(present)
    values = codes[task, worker]
    return pd.DataFrame(
        {
            "task": task,
            "worker": [f"w{w:02d}" for w in worker],
            "label": [f"c{v}" for v in values] if strings else values + offset,
        }
    )


def random_table(
    seed: int,
    n_tasks: int,
    n_workers: int,
    n_cats: int,
    missing: float,
    strings: bool = False,
    offset: int = 0,
) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    codes = random_labels(rng, n_tasks, n_workers, n_cats)
    return to_table(codes, rng.random((n_tasks, n_workers)) >= missing, strings, offset)


def reliability_data(table: pd.DataFrame) -> np.ndarray:
    """Workers × tasks matrix for ``krippendorff.alpha``: NaN (or "nan" for strings) where missing."""
    wide = table.pivot(index="worker", columns="task", values="label")
    if table["label"].map(lambda v: isinstance(v, str)).any():
        return wide.fillna("nan").to_numpy(dtype=str)
    return wide.to_numpy(dtype=float)


# ---------------------------------------------------------------------------------------------------
# Cohen's kappa
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("n_items", [5, 60, 700])
@pytest.mark.parametrize("strings", [False, True])
def test_cohen_kappa_matches_sklearn(seed: int, n_items: int, strings: bool) -> None:
    rng = np.random.default_rng(seed)
    codes = random_labels(rng, n_items, 2, n_cats=int(rng.integers(2, 7)))
    a, b = (list(codes[:, j]) for j in range(2))
    if strings:
        a, b = [f"c{x}" for x in a], [f"c{x}" for x in b]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # sklearn warns when kappa is undefined on tiny inputs
        expected = cohen_kappa_score(a, b)
    assert cohen_kappa(a, b) == pytest.approx(expected, abs=TOL, nan_ok=True)


def test_cohen_kappa_edges() -> None:
    assert np.isnan(cohen_kappa(["x"] * 4, ["x"] * 4))  # sklearn also gives nan here
    assert cohen_kappa([1, 2, 1, 2], [1, 2, 1, 2]) == 1.0
    with pytest.raises(ValueError, match="equal-length"):
        cohen_kappa([1, 2], [1])
    with pytest.raises(ValueError, match="at least one"):
        cohen_kappa([], [])
    with pytest.raises(ValueError, match="missing"):
        cohen_kappa([1, None], [1, 2])


# ---------------------------------------------------------------------------------------------------
# Fleiss' kappa
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(5))
@pytest.mark.parametrize(("n_tasks", "n_raters", "n_cats"), [(10, 2, 2), (50, 5, 3), (300, 12, 6)])
def test_fleiss_counts_match_statsmodels(seed: int, n_tasks: int, n_raters: int, n_cats: int) -> None:
    rng = np.random.default_rng(seed)
    counts = rng.multinomial(n_raters, rng.dirichlet(np.ones(n_cats)), size=n_tasks)
    assert fleiss_kappa_from_counts(counts) == pytest.approx(sm_fleiss_kappa(counts), abs=TOL)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize(("n_tasks", "n_workers", "per_task"), [(15, 4, 2), (120, 10, 6), (500, 30, 21)])
@pytest.mark.parametrize("strings", [False, True])
def test_fleiss_table_matches_statsmodels(
    seed: int, n_tasks: int, n_workers: int, per_task: int, strings: bool
) -> None:
    """Each task labelled by the same number of randomly chosen workers (missing data, equal counts)."""
    rng = np.random.default_rng(seed)
    codes = random_labels(rng, n_tasks, n_workers, n_cats=4)
    chosen = np.argsort(rng.random((n_tasks, n_workers)), axis=1)[:, :per_task]
    present = np.zeros((n_tasks, n_workers), dtype=bool)
    np.put_along_axis(present, chosen, True, axis=1)
    table = to_table(codes, present, strings).sample(frac=1.0, random_state=seed)
    ours = fleiss_kappa(table)
    # statsmodels' own aggregation of a tasks × raters array of the labels...
    per_task_labels = np.take_along_axis(codes, np.sort(chosen, axis=1), axis=1)
    counts, _ = aggregate_raters(per_task_labels)
    assert ours == pytest.approx(sm_fleiss_kappa(counts), abs=TOL)
    # ...and the very count table we build, fed to both
    shared_counts = category_counts(table).to_numpy()
    assert ours == pytest.approx(sm_fleiss_kappa(shared_counts), abs=TOL)
    assert fleiss_kappa_from_counts(shared_counts) == pytest.approx(sm_fleiss_kappa(shared_counts), abs=TOL)


def test_fleiss_drops_tasks_with_one_label() -> None:
    table = random_table(3, 60, 5, 3, missing=0.0)
    lonely = pd.DataFrame({"task": [1000, 1001], "worker": ["w00", "w01"], "label": [0, 2]})
    expected = sm_fleiss_kappa(category_counts(table).to_numpy())
    assert fleiss_kappa(pd.concat([table, lonely])) == pytest.approx(expected, abs=TOL)
    with_lonely = category_counts(pd.concat([table, lonely])).to_numpy()
    assert fleiss_kappa_from_counts(with_lonely) == pytest.approx(expected, abs=TOL)


def naive_fleiss_unequal(table: pd.DataFrame) -> float:
    """The documented generalisation, task by task: own n_i in P_i, category shares pooled."""
    per_task = [Counter(group["label"]) for _, group in table.groupby("task") if len(group) >= 2]
    p_bar = np.mean(
        [sum(c * (c - 1) for c in cnt.values()) / (sum(cnt.values()) * (sum(cnt.values()) - 1)) for cnt in per_task]
    )
    pooled = sum(per_task, Counter())
    total = sum(pooled.values())
    p_e = sum((c / total) ** 2 for c in pooled.values())
    return (p_bar - p_e) / (1 - p_e)


@pytest.mark.parametrize("seed", range(4))
def test_fleiss_unequal_counts_follow_documented_rule(seed: int) -> None:
    table = random_table(seed, 90, 8, 3, missing=0.5, strings=seed % 2 == 1)
    assert category_counts(table).sum(axis=1).nunique() > 1  # counts really differ
    assert fleiss_kappa(table) == pytest.approx(naive_fleiss_unequal(table), abs=TOL)


# ---------------------------------------------------------------------------------------------------
# Krippendorff's alpha
# ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("n_tasks", "n_workers"), SHAPES)
@pytest.mark.parametrize("missing", [0.0, 0.3, 0.6])
@pytest.mark.parametrize(
    ("level", "strings", "offset"),
    [
        ("nominal", False, 0),
        ("nominal", True, 0),
        ("ordinal", False, 1),
        ("interval", False, -2),
        ("ratio", False, 1),
    ],
)
def test_krippendorff_matches_package(
    seed: int, n_tasks: int, n_workers: int, missing: float, level: str, strings: bool, offset: int
) -> None:
    table = random_table(seed, n_tasks, n_workers, n_cats=5, missing=missing, strings=strings, offset=offset)
    expected = krippendorff.alpha(reliability_data=reliability_data(table), level_of_measurement=level)
    assert krippendorff_alpha(table, level=level) == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", range(3))
def test_krippendorff_interval_on_floats(seed: int) -> None:
    rng = np.random.default_rng(seed)
    codes = random_labels(rng, 150, 6, n_cats=9)
    table = to_table(codes, rng.random(codes.shape) >= 0.35)
    table["label"] = table["label"] * 0.37 + rng.normal(0, 0.05, len(table)).round(2)
    expected = krippendorff.alpha(reliability_data=reliability_data(table), level_of_measurement="interval")
    assert krippendorff_alpha(table, level="interval") == pytest.approx(expected, abs=TOL)


@pytest.mark.parametrize("seed", range(3))
def test_krippendorff_ordinal_strings_with_order(seed: int) -> None:
    scale = ["never", "rarely", "sometimes", "often", "always"]
    table = random_table(seed, 200, 9, n_cats=4, missing=0.4)  # scale[4] never used: it must not matter
    table["label"] = [scale[v] for v in table["label"]]
    expected = krippendorff.alpha(
        reliability_data=reliability_data(table), level_of_measurement="ordinal", value_domain=scale
    )
    assert krippendorff_alpha(table, level="ordinal", order=scale) == pytest.approx(expected, abs=TOL)


def test_krippendorff_paper_example() -> None:
    """Krippendorff (2011), "Computing Krippendorff's Alpha-Reliability": 4 observers, 12 units."""
    data = [
        [1, 2, 3, 3, 2, 1, 4, 1, 2, None, None, None],
        [1, 2, 3, 3, 2, 2, 4, 1, 2, 5, None, 3],
        [None, 3, 3, 3, 2, 3, 4, 2, 2, 5, 1, None],
        [1, 2, 3, 3, 2, 4, 4, 1, 2, 5, 1, None],
    ]
    table = pd.DataFrame(
        [(unit, observer, value) for observer, row in enumerate(data) for unit, value in enumerate(row)],
        columns=["task", "worker", "label"],
    )  # None labels are missing data and get dropped
    published = {"nominal": 0.743, "ordinal": 0.815, "interval": 0.849, "ratio": 0.797}
    for level, value in published.items():
        assert round(krippendorff_alpha(table, level=level), 3) == value


def test_krippendorff_input_errors() -> None:
    table = random_table(0, 20, 3, 3, missing=0.0, strings=True)
    with pytest.raises(ValueError, match="numeric"):
        krippendorff_alpha(table, level="interval")
    with pytest.raises(ValueError, match="level"):
        krippendorff_alpha(table, level="cardinal")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="missing from order"):
        krippendorff_alpha(table, level="ordinal", order=["c0", "c1"])
    with pytest.raises(ValueError, match="ordinal"):
        krippendorff_alpha(table, level="interval", order=["c0", "c1", "c2"])


# ---------------------------------------------------------------------------------------------------
# Percent agreement, pairs of workers
# ---------------------------------------------------------------------------------------------------


def naive_percent_agreement(table: pd.DataFrame) -> float:
    shares = []
    for _, group in table.groupby("task"):
        pairs = list(itertools.combinations(group["label"], 2))
        if pairs:
            shares.append(sum(x == y for x, y in pairs) / len(pairs))
    return float(np.mean(shares))


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize(("n_tasks", "n_workers"), SHAPES[:2])
def test_percent_agreement_naive(seed: int, n_tasks: int, n_workers: int) -> None:
    table = random_table(seed, n_tasks, n_workers, 3, missing=0.4, strings=seed == 1)
    assert percent_agreement(table) == pytest.approx(naive_percent_agreement(table), abs=TOL)


def shared_labels(table: pd.DataFrame, a: str, b: str) -> tuple[list, list]:
    wide = table.pivot(index="task", columns="worker", values="label")[[a, b]].dropna()
    return list(wide[a]), list(wide[b])


@pytest.mark.parametrize("seed", range(3))
@pytest.mark.parametrize("strings", [False, True])
def test_pairwise_kappa_matches_sklearn(seed: int, strings: bool) -> None:
    table = random_table(seed, 60, 7, 3, missing=0.55, strings=strings)
    result = pairwise_kappa(table, min_shared=12)
    workers = sorted(table["worker"].unique())
    expected_pairs = [(a, b) for a, b in itertools.combinations(workers, 2) if len(shared_labels(table, a, b)[0]) >= 12]
    assert list(zip(result["worker_a"], result["worker_b"], strict=True)) == expected_pairs
    assert 0 < len(expected_pairs) < len(workers) * (len(workers) - 1) // 2  # the filter bites
    for row in result.itertuples():
        left, right = shared_labels(table, row.worker_a, row.worker_b)
        assert row.shared == len(left)
        assert row.kappa == pytest.approx(cohen_kappa_score(left, right), abs=TOL)


def test_pairwise_kappa_columns_and_undefined() -> None:
    table = pd.DataFrame({"task": [1, 1, 2, 2], "worker": ["a", "b", "a", "b"], "label": ["x"] * 4})
    result = pairwise_kappa(table, min_shared=2)
    assert list(result.columns) == ["worker_a", "worker_b", "shared", "kappa"]
    assert np.isnan(result.loc[0, "kappa"])
    assert pairwise_kappa(table, min_shared=3).empty
    with pytest.raises(ValueError, match="min_shared"):
        pairwise_kappa(table, min_shared=0)


def test_agreement_matrix_against_naive_loop() -> None:
    table = random_table(11, 25, 6, 3, missing=0.5)
    # a worker who shares no task with anyone gives NaN rows and columns
    table = pd.concat([table, pd.DataFrame({"task": [999], "worker": ["loner"], "label": [1]})])
    labels = {(t, w): v for t, w, v in table[["task", "worker", "label"]].itertuples(index=False)}
    workers = sorted(table["worker"].unique())
    result = agreement_matrix(table)
    assert list(result.index) == workers and list(result.columns) == workers
    for a in workers:
        for b in workers:
            shared = [t for (t, w) in labels if w == a and (t, b) in labels]
            if a == b or not shared:
                assert np.isnan(result.loc[a, b])
            else:
                same = sum(labels[(t, a)] == labels[(t, b)] for t in shared)
                assert result.loc[a, b] == pytest.approx(same / len(shared), abs=TOL)


# ---------------------------------------------------------------------------------------------------
# Groups
# ---------------------------------------------------------------------------------------------------


def test_by_group_shows_bias_between_groups() -> None:
    """South workers call every cat a dog: each group agrees with itself, not with the other."""
    truth = ["cat"] * 10 + ["dog"] * 15 + ["bird"] * 15
    north, south = ["n1", "n2", "n3"], ["s1", "s2", "s3"]
    rows = [(t, w, label) for t, label in enumerate(truth) for w in north]
    rows += [(t, w, "dog" if label == "cat" else label) for t, label in enumerate(truth) for w in south]
    table = pd.DataFrame(rows, columns=["task", "worker", "label"])
    groups = {w: "north" for w in north} | {w: "south" for w in south}

    result = by_group(table, groups, percent_agreement).set_index("group")
    assert list(result.index) == ["north", "south", CROSS_GROUP]
    assert result.loc["north", "value"] == 1.0 and result.loc["south", "value"] == 1.0
    assert result.loc[CROSS_GROUP, "value"] == pytest.approx(30 / 40)  # cat tasks: no cross pair agrees
    assert result.loc["north", "workers"] == 3 and result.loc["north", "tasks"] == 40
    assert result.loc[CROSS_GROUP, "tasks"] == 40 and result.loc[CROSS_GROUP, "labels"] == 240
    assert percent_agreement(table) > result.loc[CROSS_GROUP, "value"]

    alpha = by_group(table, groups, functools.partial(krippendorff_alpha, level="nominal"))
    assert list(alpha["metric"]) == ["krippendorff_alpha"] * 2 + ["percent_agreement"]
    assert list(alpha["value"][:2]) == [1.0, 1.0]
    named = by_group(table, groups, "fleiss_kappa")
    assert named.loc[0, "value"] == pytest.approx(fleiss_kappa(table[table["worker"].isin(north)]))


def test_by_group_cross_row_against_naive_loop() -> None:
    table = random_table(5, 50, 9, 3, missing=0.4)
    groups = {f"w{w:02d}": ["a", "b", "c"][w % 3] for w in range(9)}
    shares = []
    for _, task in table.groupby("task"):
        pairs = [
            (x.label == y.label)
            for x, y in itertools.combinations(task.itertuples(), 2)
            if groups[x.worker] != groups[y.worker]
        ]
        if pairs:
            shares.append(np.mean(pairs))
    result = by_group(table, groups)
    assert result.iloc[-1]["value"] == pytest.approx(np.mean(shares), abs=TOL)
    for row in result.iloc[:-1].itertuples():
        mine = table[table["worker"].map(groups) == row.group]
        assert row.value == pytest.approx(percent_agreement(mine), abs=TOL)


def test_by_group_errors_and_empty_groups() -> None:
    table = pd.DataFrame({"task": [1, 1, 2], "worker": ["a", "b", "c"], "label": [0, 0, 1]})
    with pytest.raises(ValueError, match="no group"):
        by_group(table, {"a": "x", "b": "y"})
    with pytest.raises(ValueError, match="unknown metric"):
        by_group(table, {"a": "x", "b": "y", "c": "y"}, "accuracy")
    result = by_group(table, {"a": "x", "b": "y", "c": "y"})
    assert np.isnan(result.loc[0, "value"])  # group x has a single label: nothing to compare
    assert result.iloc[-1]["value"] == 1.0


# ---------------------------------------------------------------------------------------------------
# Edge cases shared by all table metrics
# ---------------------------------------------------------------------------------------------------

TABLE_METRICS = [
    percent_agreement,
    fleiss_kappa,
    krippendorff_alpha,
    functools.partial(krippendorff_alpha, level="ordinal"),
]


@pytest.mark.parametrize("metric", [*TABLE_METRICS, pairwise_kappa, agreement_matrix, category_counts])
def test_empty_table_raises(metric) -> None:
    with pytest.raises(ValueError, match="empty"):
        metric(pd.DataFrame({"task": [], "worker": [], "label": []}))
    with pytest.raises(ValueError, match="empty"):
        metric(pd.DataFrame({"task": [1], "worker": ["a"], "label": [None]}))
    with pytest.raises(ValueError, match="lacks column"):
        metric(pd.DataFrame({"task": [1], "label": ["x"]}))


@pytest.mark.parametrize("metric", TABLE_METRICS)
def test_no_pairable_task_raises(metric) -> None:
    table = pd.DataFrame({"task": [1, 2, 3], "worker": ["a", "b", "a"], "label": [1, 2, 1]})
    with pytest.raises(ValueError, match="two or more labels"):
        metric(table)


@pytest.mark.parametrize("metric", TABLE_METRICS)
def test_duplicate_label_raises(metric) -> None:
    table = pd.DataFrame({"task": [1, 1, 1], "worker": ["a", "b", "a"], "label": [1, 2, 1]})
    with pytest.raises(ValueError, match="more than once"):
        metric(table)


def test_single_category_everywhere() -> None:
    table = pd.DataFrame({"task": [1, 1, 2, 2, 2, 3], "worker": list("ababca"), "label": [7] * 6})
    assert percent_agreement(table) == 1.0
    assert np.isnan(fleiss_kappa(table))
    for level in ("nominal", "ordinal", "interval", "ratio"):
        assert np.isnan(krippendorff_alpha(table, level=level))
    assert agreement_matrix(table).loc["a", "b"] == 1.0


def test_missing_labels_and_lonely_tasks_are_ignored() -> None:
    table = random_table(2, 40, 5, 3, missing=0.3)
    noisy = pd.concat(
        [
            table,
            pd.DataFrame({"task": [500, 500, 501], "worker": ["w00", "w01", "w02"], "label": [np.nan, 1, 2]}),
        ]
    )
    for metric in TABLE_METRICS:
        assert metric(noisy) == pytest.approx(metric(table), abs=TOL)


def test_sparse_path_matches_dense(monkeypatch: pytest.MonkeyPatch) -> None:
    table = random_table(8, 150, 12, 4, missing=0.5, offset=1)
    groups = {f"w{w:02d}": w % 2 for w in range(12)}
    dense = [
        percent_agreement(table),
        fleiss_kappa(table),
        *(krippendorff_alpha(table, level=level) for level in ("nominal", "ordinal", "interval", "ratio")),
    ]
    frames = [pairwise_kappa(table, 5), agreement_matrix(table), by_group(table, groups)]
    monkeypatch.setattr(agreement, "_DENSE_LIMIT", 0)
    sparse_values = [
        percent_agreement(table),
        fleiss_kappa(table),
        *(krippendorff_alpha(table, level=level) for level in ("nominal", "ordinal", "interval", "ratio")),
    ]
    assert sparse_values == pytest.approx(dense, abs=TOL)
    pd.testing.assert_frame_equal(pairwise_kappa(table, 5), frames[0], atol=TOL)
    pd.testing.assert_frame_equal(agreement_matrix(table), frames[1], atol=TOL)
    pd.testing.assert_frame_equal(by_group(table, groups), frames[2], atol=TOL)
