"""Batch inter-annotator agreement: how far gig annotators agree with each other, and beyond chance.

Every table metric takes a *label table*: a :class:`pandas.DataFrame` with one row per label and the
columns ``task``, ``worker`` and ``label`` (extra columns are ignored). Labels may be strings or numbers.
Missing data is the normal case: not every worker labels every task, and rows whose label is missing
(NaN/None) are dropped. Agreement is between workers, so each worker gives a task at most one label: a
repeated (task, worker) pair raises :class:`ValueError` (deduplicate first, e.g.
``table.drop_duplicates(["task", "worker"], keep="last")``). A task is *pairable* when it has at least
two labels; other tasks carry no agreement information and are left out. An empty table, or one without
a pairable task where the metric needs one, raises :class:`ValueError`.

Chance-corrected coefficients (kappa, alpha) are 0/0 when the data hold a single category (or value):
they return ``nan`` then, as scikit-learn's ``cohen_kappa_score`` does; percent agreement is 1.0.

Public API
----------
* :func:`cohen_kappa` ``(a, b) -> float``: Cohen's kappa of two equal-length label sequences.
* :func:`fleiss_kappa` ``(table) -> float``: Fleiss' kappa; :func:`fleiss_kappa_from_counts` takes a
  tasks × categories count array instead, and :func:`category_counts` builds that array from a table.
* :func:`krippendorff_alpha` ``(table, level="nominal", order=None) -> float``: Krippendorff's alpha
  for nominal, ordinal, interval or ratio data, with missing data.
* :func:`percent_agreement` ``(table) -> float``: mean over pairable tasks of the share of agreeing
  label pairs.
* :func:`pairwise_kappa` ``(table, min_shared=10) -> DataFrame``: Cohen's kappa of every worker pair
  sharing at least ``min_shared`` tasks (columns ``worker_a``, ``worker_b``, ``shared``, ``kappa``).
* :func:`agreement_matrix` ``(table) -> DataFrame``: worker × worker percent agreement on shared
  tasks (NaN where none are shared, and on the diagonal).
* :func:`by_group` ``(table, groups, metric) -> DataFrame``: a table metric per annotator group
  (cohort, region, tier...) plus the percent agreement between workers of different groups.
* :func:`weighted_kappa` ``(a, b, weights="linear", order=None) -> float``: Cohen's weighted kappa of two
  annotators on ordered categories (linear or quadratic disagreement weights).
* :func:`scott_pi` ``(a, b) -> float``: Scott's pi of two annotators (one pooled chance distribution).
* :func:`gwet_ac1` ``(table) -> float``: Gwet's AC1 for many raters, robust when one class dominates.
* :func:`posterior_entropy` ``(posteriors) -> Series``: per-task uncertainty, the entropy of a truth
  inference's posterior (e.g. ``DawidSkene.posteriors_``).

Counts are built with :func:`numpy.bincount` into dense tasks × categories matrices (``scipy.sparse``
past :data:`_DENSE_LIMIT` cells) and pair statistics come from matrix products, so no Python loop runs
over tasks or worker pairs, only over categories.

This module is pure computation: it reads and writes nothing.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Hashable, Iterable, Mapping
from dataclasses import dataclass
from typing import Literal, TypeAlias, get_args

import numpy as np
import numpy.typing as npt
import pandas as pd
from scipy import sparse

from qa_hooks.label_table import COLUMNS, check_columns, factorize

__all__ = [
    "COLUMNS",
    "CROSS_GROUP",
    "Level",
    "TableMetric",
    "agreement_matrix",
    "by_group",
    "category_counts",
    "cohen_kappa",
    "fleiss_kappa",
    "fleiss_kappa_from_counts",
    "gwet_ac1",
    "krippendorff_alpha",
    "pairwise_kappa",
    "percent_agreement",
    "posterior_entropy",
    "scott_pi",
    "weighted_kappa",
]

#: ``group`` value of the row of :func:`by_group` that compares workers across groups.
CROSS_GROUP = "<cross-group>"

Level = Literal["nominal", "ordinal", "interval", "ratio"]
TableMetric: TypeAlias = Callable[[pd.DataFrame], float]
_Counts: TypeAlias = "np.ndarray | sparse.csr_matrix"

# Count matrices with more cells than this go sparse (2**22 float64 cells = 32 MiB dense).
_DENSE_LIMIT = 1 << 22


# ---------------------------------------------------------------------------------------------------
# Encoding and counting
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Coded:
    """A validated label table, encoded once to integer codes."""

    rows: pd.DataFrame  # the kept rows (label present), columns COLUMNS
    task: np.ndarray  # (L,) task code of each label
    worker: np.ndarray  # (L,) worker code of each label
    label: np.ndarray  # (L,) category code of each label
    tasks: pd.Index
    workers: pd.Index
    labels: pd.Index


def _encode(table: pd.DataFrame) -> _Coded:
    """Validate a (task, worker, label) table, drop rows without a label, and encode it."""
    check_columns(table)
    rows = table.loc[table["label"].notna().to_numpy(), list(COLUMNS)]
    if rows.empty:
        raise ValueError("label table is empty: no row has a label")
    if rows["task"].isna().any() or rows["worker"].isna().any():
        raise ValueError("label table has missing task or worker ids")
    task, tasks = factorize(rows["task"])
    worker, workers = factorize(rows["worker"])
    label, labels = factorize(rows["label"])
    if pd.Index(task * len(workers) + worker).has_duplicates:
        raise ValueError(
            "a worker labelled the same task more than once; keep one label per (task, worker), "
            "e.g. table.drop_duplicates(['task', 'worker'], keep='last')"
        )
    return _Coded(rows, task, worker, label, tasks.rename("task"), workers.rename("worker"), labels.rename("label"))


def _count_matrix(rows: np.ndarray, cols: np.ndarray, n_rows: int, n_cols: int) -> _Counts:
    """n_rows × n_cols float matrix counting the (row, col) pairs; sparse when dense would be large."""
    if n_rows * n_cols <= _DENSE_LIMIT:
        flat = np.bincount(rows * n_cols + cols, minlength=n_rows * n_cols)
        return flat.reshape(n_rows, n_cols).astype(np.float64)
    return sparse.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_rows, n_cols))


def _dense(matrix: _Counts) -> np.ndarray:
    return matrix.toarray() if sparse.issparse(matrix) else np.asarray(matrix)


def _row_sums(matrix: _Counts) -> np.ndarray:
    return np.asarray(matrix.sum(axis=1), dtype=np.float64).ravel()


def _row_square_sums(matrix: _Counts) -> np.ndarray:
    squared = matrix.multiply(matrix) if sparse.issparse(matrix) else matrix * matrix
    return _row_sums(squared)


def _col_sums(matrix: _Counts, weights: np.ndarray | None = None) -> np.ndarray:
    """Column sums, each row weighted by ``weights`` when given."""
    if weights is None:
        return np.asarray(matrix.sum(axis=0), dtype=np.float64).ravel()
    return np.asarray(matrix.T @ weights, dtype=np.float64).ravel()


def _gram(left: _Counts, right: _Counts) -> np.ndarray:
    """``left @ right.T`` as a dense array."""
    return _dense(left @ right.T)


def _pairable(counts: _Counts) -> _Counts:
    """Rows (tasks) of a tasks × categories count matrix with at least two labels."""
    keep = _row_sums(counts) >= 2
    if not keep.any():
        raise ValueError("no task has two or more labels, so there is no agreement to measure")
    return counts[keep]


def _task_category_counts(coded: _Coded) -> _Counts:
    return _count_matrix(coded.task, coded.label, len(coded.tasks), len(coded.labels))


# ---------------------------------------------------------------------------------------------------
# Cohen's kappa
# ---------------------------------------------------------------------------------------------------


def _kappa(n: np.ndarray, agree: np.ndarray, chance: np.ndarray) -> np.ndarray:
    """Cohen's kappa from the number of items ``n``, agreeing items ``agree`` and ``chance`` = Σ_c r_c s_c.

    Arranged as 1 - observed / expected disagreement like scikit-learn, so both round alike. The
    expected disagreement n - chance / n is exactly 0 only when both raters used one and the same
    category (otherwise it is at least 1), where kappa is undefined and NaN.
    """
    n, agree, chance = (np.asarray(x, dtype=np.float64) for x in (n, agree, chance))
    expected = n - chance / np.where(n > 0, n, 1.0)
    ratio = np.full(expected.shape, np.nan)
    np.divide(n - agree, expected, out=ratio, where=expected > 0)
    return 1.0 - ratio


def cohen_kappa(a: Iterable[Hashable], b: Iterable[Hashable]) -> float:
    """Cohen's kappa of two annotators who labelled the same items, in the same order.

    Cohen, J. (1960). "A Coefficient of Agreement for Nominal Scales". Educational and Psychological
    Measurement 20(1):37-46. kappa = (p_o - p_e) / (1 - p_e), where p_o is the share of items on which
    the two agree and p_e = Σ_c (share of a's labels in c)(share of b's labels in c). Equals
    ``sklearn.metrics.cohen_kappa_score(a, b)``; NaN when both used a single, common category.

    Raises ValueError for empty or unequal-length inputs, or missing labels.
    """
    left = pd.Series(list(a), dtype=object)
    right = pd.Series(list(b), dtype=object)
    if len(left) != len(right):
        raise ValueError(f"cohen_kappa needs two equal-length sequences, got {len(left)} and {len(right)}")
    if len(left) == 0:
        raise ValueError("cohen_kappa needs at least one labelled item")
    if left.isna().any() or right.isna().any():
        raise ValueError("cohen_kappa inputs contain missing labels")
    codes, uniques = factorize(pd.concat([left, right], ignore_index=True))
    n_cat = len(uniques)
    code_a, code_b = codes[: len(left)], codes[len(left) :]
    confusion = np.bincount(code_a * n_cat + code_b, minlength=n_cat * n_cat).reshape(n_cat, n_cat)
    chance = confusion.sum(axis=1) @ confusion.sum(axis=0)
    return float(_kappa(np.array(len(left)), np.trace(confusion), chance))


# ---------------------------------------------------------------------------------------------------
# Percent agreement and Fleiss' kappa
# ---------------------------------------------------------------------------------------------------


def _task_agreement(counts: _Counts) -> np.ndarray:
    """Share of agreeing label pairs per task: Σ_j n_ij (n_ij - 1) / (n_i (n_i - 1)) (Fleiss's P_i)."""
    n = _row_sums(counts)
    return (_row_square_sums(counts) - n) / (n * (n - 1.0))


def percent_agreement(table: pd.DataFrame) -> float:
    """Mean over pairable tasks of the share of label pairs that agree (no chance correction).

    This is the observed agreement P-bar of Fleiss (1971), "Measuring Nominal Scale Agreement Among Many
    Raters", Psychological Bulletin 76(5):378-382, with each task using its own number of labels.
    """
    return float(_task_agreement(_pairable(_task_category_counts(_encode(table)))).mean())


def _fleiss(counts: _Counts) -> float:
    """Fleiss' kappa of a count matrix whose rows all hold two or more labels."""
    p_bar = _task_agreement(counts).mean()
    p_cat = _col_sums(counts) / _row_sums(counts).sum()
    if np.count_nonzero(p_cat) < 2:  # one category only: chance agreement is 1, kappa is 0/0
        return float("nan")
    p_e = (p_cat * p_cat).sum()
    return float((p_bar - p_e) / (1.0 - p_e))


def fleiss_kappa_from_counts(counts: npt.ArrayLike) -> float:
    """Fleiss' kappa of a tasks × categories array of label counts (see :func:`fleiss_kappa`).

    The input is what ``statsmodels.stats.inter_rater.aggregate_raters`` returns. Rows with fewer than
    two labels are dropped.
    """
    array = np.asarray(counts, dtype=np.float64)
    if array.ndim != 2 or array.size == 0:
        raise ValueError("counts must be a non-empty 2-D tasks × categories array")
    if not np.isfinite(array).all() or (array < 0).any() or (array != np.round(array)).any():
        raise ValueError("counts must be non-negative whole numbers")
    return _fleiss(_pairable(array))


def fleiss_kappa(table: pd.DataFrame) -> float:
    """Fleiss' kappa for many raters on nominal labels.

    Fleiss, J. L. (1971). "Measuring Nominal Scale Agreement Among Many Raters". Psychological
    Bulletin 76(5):378-382. kappa = (P-bar - P_e) / (1 - P_e) with P-bar the mean per-task agreement
    P_i = Σ_j n_ij (n_ij - 1) / (n_i (n_i - 1)) and P_e = Σ_j p_j², p_j the share of category j among
    all labels. Tasks with fewer than two labels are dropped.

    Fleiss assumes the same number of raters n on every task (``statsmodels``' ``fleiss_kappa``
    asserts it). When the counts differ we keep Fleiss' formulas and let each task use its own count:
    P_i divides by that task's n_i (n_i - 1), and p_j pools all labels of the kept tasks, so a task
    with more labels weighs more in P_e. With equal counts this is exactly Fleiss (1971).
    """
    return _fleiss(_pairable(_task_category_counts(_encode(table))))


def category_counts(table: pd.DataFrame) -> pd.DataFrame:
    """Dense tasks × categories table of label counts (all tasks, even those with a single label)."""
    coded = _encode(table)
    counts = _dense(_task_category_counts(coded)).astype(np.int64)
    return pd.DataFrame(counts, index=coded.tasks, columns=coded.labels)


# ---------------------------------------------------------------------------------------------------
# Krippendorff's alpha
# ---------------------------------------------------------------------------------------------------


def _alpha_values(coded: _Coded, level: Level, order: Iterable[Hashable] | None) -> tuple[np.ndarray, np.ndarray]:
    """The value domain (ascending for non-nominal levels) and each label's index into it."""
    if order is not None:
        if level != "ordinal":
            raise ValueError("order= applies to level='ordinal' only")
        ranking = pd.Index(list(order))
        if ranking.has_duplicates:
            raise ValueError("order= lists a label twice")
        position = ranking.get_indexer(coded.labels)
        if (position < 0).any():
            raise ValueError(f"labels missing from order=: {list(coded.labels[position < 0][:5])}")
        return np.arange(len(ranking), dtype=np.float64), position[coded.label]
    if level == "nominal":
        return np.arange(len(coded.labels), dtype=np.float64), coded.label
    try:
        numeric = pd.to_numeric(pd.Series(coded.labels, dtype=object)).to_numpy(dtype=np.float64)
    except (TypeError, ValueError) as error:
        raise ValueError(f"level={level!r} needs numeric labels (or order= for ordinal labels)") from error
    # Labels such as 1 and "1" are distinct categories but the same number.
    values, inverse = np.unique(numeric, return_inverse=True)
    return values, inverse[coded.label]


def _coincidences(counts: _Counts, weight: np.ndarray) -> np.ndarray:
    """Coincidence matrix o_ck = Σ_u n_uc (n_uk - [c = k]) / (m_u - 1), with ``weight`` = 1 / (m_u - 1).

    A unit's labels are paired with each other but not with themselves, hence the diagonal correction.
    """
    weighted = sparse.diags(weight) @ counts if sparse.issparse(counts) else counts * weight[:, None]
    coincidences = _dense(counts.T @ weighted)
    coincidences[np.diag_indices_from(coincidences)] -= _col_sums(weighted)
    return coincidences


def _distances(level: Level, values: np.ndarray, n_v: np.ndarray) -> np.ndarray:
    """Squared difference function delta²_ck of Krippendorff (2011) for each pair of values."""
    if level == "nominal":
        return 1.0 - np.eye(values.size)
    if level == "ordinal":
        # Σ_{g=c..k} n_g - (n_c + n_k) / 2 is the gap between the mid-ranks cumsum(n) - n / 2.
        mid_rank = np.cumsum(n_v) - n_v / 2.0
        return (mid_rank[:, None] - mid_rank[None, :]) ** 2
    difference = values[:, None] - values[None, :]
    if level == "interval":
        return difference**2
    total = values[:, None] + values[None, :]
    return np.divide(difference, total, out=np.zeros_like(difference), where=total != 0) ** 2


def krippendorff_alpha(table: pd.DataFrame, level: Level = "nominal", order: Iterable[Hashable] | None = None) -> float:
    """Krippendorff's alpha reliability coefficient, with missing data.

    Krippendorff, K. (2004). "Content Analysis: An Introduction to Its Methodology", 2nd ed., ch. 11;
    Krippendorff, K. (2011). "Computing Krippendorff's Alpha-Reliability". alpha = 1 - D_o / D_e with
    D_o ∝ Σ_ck o_ck delta²_ck over the coincidence matrix o of pairable values and
    D_e ∝ Σ_ck n_c n_k delta²_ck / (n - 1). Tasks with fewer than two labels are not pairable.

    ``level`` picks delta²: ``"nominal"`` (any labels), ``"ordinal"`` (rank by numeric value, or by
    ``order``, a list of all labels from lowest to highest), ``"interval"`` or ``"ratio"`` (numeric
    labels). Equals ``krippendorff.alpha(reliability_data=..., level_of_measurement=level)``; NaN where
    that package refuses a single value (no variation: D_e = 0).
    """
    if level not in get_args(Level):
        raise ValueError(f"level must be one of {get_args(Level)}, got {level!r}")
    coded = _encode(table)
    values, value_code = _alpha_values(coded, level, order)
    counts = _count_matrix(coded.task, value_code, len(coded.tasks), values.size)
    m = _row_sums(counts)
    pairable = m >= 2
    if not pairable.any():
        raise ValueError("no task has two or more labels, so there is no agreement to measure")
    weight = np.zeros_like(m)
    weight[pairable] = 1.0 / (m[pairable] - 1.0)
    observed = _coincidences(counts, weight)
    n_v = _col_sums(counts, pairable.astype(np.float64))  # = observed.sum(0), but in exact integers
    if np.count_nonzero(n_v) < 2:
        return float("nan")
    delta = _distances(level, values, n_v)
    expected = (np.outer(n_v, n_v) * delta).sum() / (n_v.sum() - 1.0)
    if expected <= 0:  # possible for ratio data made of v and -v only
        return float("nan")
    return float(1.0 - (observed * delta).sum() / expected)


# ---------------------------------------------------------------------------------------------------
# Worker pairs
# ---------------------------------------------------------------------------------------------------


def _pair_stats(coded: _Coded, with_chance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Worker × worker arrays over the tasks both workers labelled.

    shared[a, b]: the number of such tasks; agree[a, b]: those where they gave the same label;
    chance[a, b] = Σ_c (how often a said c) (how often b said c) on them, Cohen's chance term (zeros
    unless ``with_chance``). Built from worker × task one-hot matrices, one product per category.
    """
    n_workers, n_tasks = len(coded.workers), len(coded.tasks)
    presence = _count_matrix(coded.worker, coded.task, n_workers, n_tasks)
    shared = _gram(presence, presence)
    agree = np.zeros_like(shared)
    chance = np.zeros_like(shared)
    by_label = np.argsort(coded.label, kind="stable")
    bounds = np.searchsorted(coded.label[by_label], np.arange(len(coded.labels) + 1))
    for start, stop in itertools.pairwise(bounds):
        rows = by_label[start:stop]
        said = _count_matrix(coded.worker[rows], coded.task[rows], n_workers, n_tasks)
        agree += _gram(said, said)
        if with_chance:
            said_on_shared = _gram(said, presence)  # [a, b]: tasks shared with b where a said c
            chance += said_on_shared * said_on_shared.T
    return shared, agree, chance


def pairwise_kappa(table: pd.DataFrame, min_shared: int = 10) -> pd.DataFrame:
    """Cohen's (1960) kappa for every pair of workers with at least ``min_shared`` shared tasks.

    Each pair's kappa uses only the tasks both labelled and equals ``cohen_kappa`` on them. Returns one
    row per pair (worker_a before worker_b in sorted order) with columns ``worker_a``, ``worker_b``,
    ``shared`` (the number of shared tasks) and ``kappa`` (NaN where the pair used a single, common
    category); empty when no pair qualifies.
    """
    if min_shared < 1:
        raise ValueError("min_shared must be at least 1")
    coded = _encode(table)
    shared, agree, chance = _pair_stats(coded, with_chance=True)
    first, second = np.triu_indices(len(coded.workers), k=1)
    keep = shared[first, second] >= min_shared
    first, second = first[keep], second[keep]
    n = shared[first, second]
    return pd.DataFrame(
        {
            "worker_a": coded.workers.take(first).to_numpy(),
            "worker_b": coded.workers.take(second).to_numpy(),
            "shared": n.astype(np.int64),
            "kappa": _kappa(n, agree[first, second], chance[first, second]),
        }
    )


def agreement_matrix(table: pd.DataFrame) -> pd.DataFrame:
    """Worker × worker share of shared tasks on which the two gave the same label.

    NaN where two workers share no task. The diagonal is NaN too (a worker is not a pair with itself),
    so a row's mean is that worker's mean agreement with the others.
    """
    coded = _encode(table)
    shared, agree, _ = _pair_stats(coded, with_chance=False)
    share = np.full(shared.shape, np.nan)
    np.divide(agree, shared, out=share, where=shared > 0)
    np.fill_diagonal(share, np.nan)
    return pd.DataFrame(share, index=coded.workers.rename("worker_a"), columns=coded.workers.rename("worker_b"))


# ---------------------------------------------------------------------------------------------------
# Groups of workers
# ---------------------------------------------------------------------------------------------------


def _cross_group_agreement(coded: _Coded, group: np.ndarray, n_groups: int) -> tuple[float, int, int]:
    """Mean over tasks of the share of agreeing label pairs between workers of different groups.

    Per task, agreeing cross pairs = Σ_c (n_c² - Σ_g n_gc²) / 2 and all cross pairs =
    (m² - Σ_g m_g²) / 2. Returns (value, tasks with a cross pair, labels on those tasks).
    """
    n_tasks, n_labels = len(coded.tasks), len(coded.labels)
    by_label = _count_matrix(coded.task, coded.label, n_tasks, n_labels)
    by_group_label = _count_matrix(coded.task, group * n_labels + coded.label, n_tasks, n_groups * n_labels)
    by_group_only = _count_matrix(coded.task, group, n_tasks, n_groups)
    m = _row_sums(by_group_only)
    agreeing = (_row_square_sums(by_label) - _row_square_sums(by_group_label)) / 2.0
    pairs = (m * m - _row_square_sums(by_group_only)) / 2.0
    crossed = pairs > 0
    if not crossed.any():
        return float("nan"), 0, 0
    return float((agreeing[crossed] / pairs[crossed]).mean()), int(crossed.sum()), int(m[crossed].sum())


def _metric_name(metric: TableMetric) -> str:
    # functools.partial objects carry the wrapped function in .func
    function = getattr(metric, "func", metric)
    return str(getattr(function, "__name__", repr(metric)))


def by_group(
    table: pd.DataFrame,
    groups: Mapping[Hashable, Hashable] | pd.Series,
    metric: TableMetric | str = "percent_agreement",
) -> pd.DataFrame:
    """A table metric disaggregated by an annotator attribute, to show agreement gaps between groups.

    ``groups`` maps every worker in the table to a group (cohort, region, tier...); ``metric`` is one of
    this module's table metrics, by function (e.g. ``functools.partial(krippendorff_alpha,
    level="ordinal")``) or by name (``"percent_agreement"``, ``"fleiss_kappa"``,
    ``"krippendorff_alpha"``).

    Returns one row per group, the metric computed on that group's labels only (NaN where the group has
    no pairable task), then a row with ``group`` = :data:`CROSS_GROUP`: the percent agreement of label
    pairs from workers of *different* groups, averaged over tasks like :func:`percent_agreement`.
    Within-group agreement well above the cross-group row means the groups label differently.
    Columns: ``group``, ``metric``, ``value``, ``workers``, ``tasks`` (pairable tasks used),
    ``labels`` (labels on those tasks).
    """
    if isinstance(metric, str):
        if metric not in _NAMED_METRICS:
            raise ValueError(f"unknown metric {metric!r}; use one of {sorted(_NAMED_METRICS)} or a function")
        function, name = _NAMED_METRICS[metric], metric
    else:
        function, name = metric, _metric_name(metric)
    coded = _encode(table)
    lookup = groups if isinstance(groups, pd.Series) else pd.Series(dict(groups), dtype=object)
    worker_group = lookup.reindex(coded.workers)
    if worker_group.isna().any():
        unknown = list(coded.workers[worker_group.isna().to_numpy()][:5])
        raise ValueError(f"groups has no group for worker(s) {unknown}")
    group_of_worker, group_names = factorize(worker_group)
    group = group_of_worker[coded.worker]

    records = []
    for code, name_of_group in enumerate(group_names):
        mine = group == code
        labels_per_task = np.bincount(coded.task[mine], minlength=len(coded.tasks))
        pairable = labels_per_task >= 2
        try:
            value = float(function(coded.rows.loc[mine]))
        except ValueError:  # no pairable task within this group
            value = float("nan")
        records.append(
            {
                "group": name_of_group,
                "metric": name,
                "value": value,
                "workers": int(np.count_nonzero(group_of_worker == code)),
                "tasks": int(pairable.sum()),
                "labels": int(labels_per_task[pairable].sum()),
            }
        )
    cross, cross_tasks, cross_labels = _cross_group_agreement(coded, group, len(group_names))
    records.append(
        {
            "group": CROSS_GROUP,
            "metric": "percent_agreement",
            "value": cross,
            "workers": len(coded.workers),
            "tasks": cross_tasks,
            "labels": cross_labels,
        }
    )
    return pd.DataFrame.from_records(records, columns=["group", "metric", "value", "workers", "tasks", "labels"])


_NAMED_METRICS: dict[str, TableMetric] = {
    "percent_agreement": percent_agreement,
    "fleiss_kappa": fleiss_kappa,
    "krippendorff_alpha": krippendorff_alpha,
}


# ---------------------------------------------------------------------------------------------------
# Weighted kappa, Scott's pi, Gwet's AC1, posterior entropy
# ---------------------------------------------------------------------------------------------------


def _two_raters(a: Iterable[Hashable], b: Iterable[Hashable], name: str,
                order: Iterable[Hashable] | None = None) -> tuple[np.ndarray, int]:
    """The two raters' K × K confusion counts (categories sorted, or in ``order``) and their number of items."""
    left = pd.Series(list(a), dtype=object)
    right = pd.Series(list(b), dtype=object)
    if len(left) != len(right):
        raise ValueError(f"{name} needs two equal-length sequences, got {len(left)} and {len(right)}")
    if len(left) == 0:
        raise ValueError(f"{name} needs at least one labelled item")
    if left.isna().any() or right.isna().any():
        raise ValueError(f"{name} inputs contain missing labels")
    both = pd.concat([left, right], ignore_index=True)
    if order is None:
        codes, uniques = factorize(both)
        n_cat = len(uniques)
    else:
        categories = list(order)
        index = {c: i for i, c in enumerate(categories)}
        unknown = sorted({str(v) for v in both if v not in index})
        if unknown:
            raise ValueError(f"{name}: labels {unknown} are not in order={categories}")
        codes, n_cat = np.array([index[v] for v in both], dtype=np.intp), len(categories)
    code_a, code_b = codes[: len(left)], codes[len(left):]
    confusion = np.bincount(code_a * n_cat + code_b, minlength=n_cat * n_cat).reshape(n_cat, n_cat)
    return confusion.astype(float), len(left)


def weighted_kappa(a: Iterable[Hashable], b: Iterable[Hashable], weights: Literal["linear", "quadratic"] = "linear",
                   order: Iterable[Hashable] | None = None) -> float:
    """Cohen's weighted kappa of two annotators on ordered categories.

    Cohen, J. (1968). "Weighted kappa: Nominal scale agreement with provision for scaled disagreement or partial
    credit". Psychological Bulletin 70(4):213-220. kappa_w = 1 - Σ w_ij o_ij / Σ w_ij e_ij, with o the observed
    and e the chance (product of the margins) joint distribution and disagreement weights ``|i - j|``
    (linear) or ``(i - j)²`` (quadratic) over the categories' ranks: sorted, or as listed in ``order`` (e.g.
    ``["low", "mid", "high"]``). Equals ``sklearn.metrics.cohen_kappa_score(a, b, weights=...)``; NaN when
    chance disagreement is 0 (one category only).
    """
    if weights not in ("linear", "quadratic"):
        raise ValueError(f"weights must be 'linear' or 'quadratic', got {weights!r}")
    confusion, n = _two_raters(a, b, "weighted_kappa", order)
    k = confusion.shape[0]
    ranks = np.arange(k, dtype=float)
    distance = np.abs(ranks[:, None] - ranks[None, :])
    w = distance if weights == "linear" else distance**2
    expected = np.outer(confusion.sum(axis=1), confusion.sum(axis=0)) / n
    chance = float((w * expected).sum())
    if chance == 0.0:
        return float("nan")
    return 1.0 - float((w * confusion).sum()) / chance


def scott_pi(a: Iterable[Hashable], b: Iterable[Hashable]) -> float:
    """Scott's pi of two annotators who labelled the same items, in the same order.

    Scott, W. A. (1955). "Reliability of content analysis: The case of nominal scale coding". Public Opinion
    Quarterly 19(3):321-325. pi = (p_o - p_e) / (1 - p_e) with p_e = Σ_c π_c², π_c the share of category c
    among *both* annotators' labels pooled (Cohen's kappa uses the product of each one's own shares). For two
    raters this is Fleiss' kappa. NaN when only one category occurs.
    """
    confusion, n = _two_raters(a, b, "scott_pi")
    observed = float(np.trace(confusion)) / n
    pooled = (confusion.sum(axis=0) + confusion.sum(axis=1)) / (2.0 * n)
    chance = float((pooled**2).sum())
    if chance >= 1.0:
        return float("nan")
    return (observed - chance) / (1.0 - chance)


def gwet_ac1(table: pd.DataFrame) -> float:
    """Gwet's AC1 for many raters on nominal labels, with missing data.

    Gwet, K. L. (2008). "Computing inter-rater reliability and its variance in the presence of high agreement".
    British Journal of Mathematical and Statistical Psychology 61(1):29-48. AC1 = (p_a - p_e) / (1 - p_e) with
    p_a the mean over pairable tasks of Σ_k r_ik (r_ik - 1) / (r_i (r_i - 1)) (as Fleiss' P-bar), and chance
    agreement p_e = Σ_k π_k (1 - π_k) / (K - 1), π_k the mean over tasks of each task's share r_ik / r_i of
    category k. Unlike kappa's p_e, this chance term shrinks when one category dominates, so a crowd that
    agrees on a skewed label set is not scored near 0 (the kappa paradox of Feinstein & Cicchetti 1990).
    K is the number of categories that occur; NaN when only one does.
    """
    coded = _encode(table)
    counts = _dense(_pairable(_task_category_counts(coded)))
    if counts.shape[0] == 0:
        raise ValueError("gwet_ac1 needs at least one task with two or more labels")
    present = counts.sum(axis=0) > 0
    counts = counts[:, present]
    k = counts.shape[1]
    if k < 2:
        return float("nan")
    n = counts.sum(axis=1)
    p_a = float(((counts * (counts - 1.0)).sum(axis=1) / (n * (n - 1.0))).mean())
    pi = (counts / n[:, None]).mean(axis=0)
    p_e = float((pi * (1.0 - pi)).sum()) / (k - 1)
    return (p_a - p_e) / (1.0 - p_e)


def posterior_entropy(posteriors: pd.DataFrame | npt.ArrayLike, base: float | None = None) -> pd.Series:
    """Per-task uncertainty: the Shannon entropy of each row of a tasks × classes posterior (in nats, or in
    ``base``), as crowd-kit's ``Entropy`` uncertainty measures a task's label distribution. 0 for a certain
    task, ``log K`` for a uniform one. Rows must be probability distributions."""
    frame = posteriors if isinstance(posteriors, pd.DataFrame) else pd.DataFrame(np.asarray(posteriors, dtype=float))
    values = frame.to_numpy(dtype=float)
    if values.ndim != 2 or values.shape[1] < 1:
        raise ValueError("posteriors must be a tasks × classes array")
    if (values < 0).any() or not np.allclose(values.sum(axis=1), 1.0, atol=1e-6):
        raise ValueError("each row of posteriors must be a probability distribution")
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(values > 0, values * np.log(values), 0.0)
    entropy = -terms.sum(axis=1)
    if base is not None:
        entropy = entropy / np.log(base)
    return pd.Series(entropy, index=frame.index, name="entropy")
