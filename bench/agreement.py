"""Benchmark crowdgate's agreement metrics against the library oracles, timed in the same process.

Run from the repository root::

    python bench/agreement.py [--repeats 3] [--seed 0]

Random label tables (5 categories coded 1..5, workers of varying accuracy, 30% of cells missing) from
100 tasks × 5 workers up to 10,000 tasks × 50 workers. For each metric and size it prints one JSON line
``{"metric", "tasks", "workers", "ours_s", "ref_s", "max_abs_diff", "ref"}``: our time from the long
label table, the reference's time (best of ``--repeats``), the largest absolute difference between the
two results, and what the reference is. Fleiss' kappa uses tables where every task has the same number
of labels (70% of the workers), because statsmodels requires it. Percent agreement and the agreement
matrix have no library implementation, so their references are plain loops. BLAS runs on one thread
by default (``--blas-threads``): on a shared machine, multithreaded BLAS contending for cores makes the
matrix products' timings swing tenfold from run to run.
"""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time
import warnings
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import krippendorff
import numpy as np
import pandas as pd
from sklearn.metrics import cohen_kappa_score
from statsmodels.stats.inter_rater import aggregate_raters
from statsmodels.stats.inter_rater import fleiss_kappa as sm_fleiss_kappa
from threadpoolctl import threadpool_limits

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from qa_hooks import agreement

SIZES = [(100, 5), (1_000, 20), (10_000, 50)]
MISSING = 0.3
N_CATS = 5


def best_time(function: Callable[[], Any], repeats: int) -> tuple[float, Any]:
    """Shortest wall time of ``repeats`` calls (the machine is shared) and the last result."""
    best, result = float("inf"), None
    for _ in range(repeats):
        start = time.perf_counter()
        result = function()
        best = min(best, time.perf_counter() - start)
    return best, result


def random_codes(rng: np.random.Generator, n_tasks: int, n_workers: int) -> np.ndarray:
    """tasks × workers labels in 1..N_CATS: a hidden truth per task, workers of varying accuracy."""
    truth = rng.integers(N_CATS, size=n_tasks)
    accuracy = rng.uniform(0.3, 0.95, size=n_workers)
    correct = rng.random((n_tasks, n_workers)) < accuracy
    return 1 + np.where(correct, truth[:, None], rng.integers(N_CATS, size=(n_tasks, n_workers)))


def long_table(codes: np.ndarray, present: np.ndarray) -> pd.DataFrame:
    task, worker = np.nonzero(present)
    return pd.DataFrame({"task": task, "worker": worker, "label": codes[task, worker]})


def diff(ours: np.ndarray | float, ref: np.ndarray | float) -> float:
    """Largest absolute difference; inf when the NaN patterns differ."""
    ours, ref = np.asarray(ours, dtype=float), np.asarray(ref, dtype=float)
    if ours.shape != ref.shape or not np.array_equal(np.isnan(ours), np.isnan(ref)):
        return float("inf")
    both = ~np.isnan(ours)
    return float(np.abs(ours[both] - ref[both]).max()) if both.any() else 0.0


def naive_percent_agreement(per_task: list[np.ndarray]) -> float:
    shares = []
    for labels in per_task:
        m = len(labels)
        if m >= 2:
            shares.append(sum(c * (c - 1) for c in Counter(labels.tolist()).values()) / (m * (m - 1)))
    return float(np.mean(shares))


def loop_agreement_matrix(wide: np.ndarray) -> np.ndarray:
    """Worker × worker agreement with one vectorised comparison per pair (NaN = missing)."""
    n_workers = wide.shape[1]
    result = np.full((n_workers, n_workers), np.nan)
    for a, b in itertools.combinations(range(n_workers), 2):
        both = ~np.isnan(wide[:, a]) & ~np.isnan(wide[:, b])
        if both.any():
            result[a, b] = result[b, a] = np.mean(wide[both, a] == wide[both, b])
    return result


def sklearn_pairwise(wide: np.ndarray, min_shared: int) -> list[float]:
    kappas = []
    for a, b in itertools.combinations(range(wide.shape[1]), 2):
        both = ~np.isnan(wide[:, a]) & ~np.isnan(wide[:, b])
        if both.sum() >= min_shared:
            kappas.append(cohen_kappa_score(wide[both, a], wide[both, b]))
    return kappas


def emit(metric: str, n_tasks: int, n_workers: int, ours: tuple[float, Any], ref: tuple[float, Any], name: str):
    line = {
        "metric": metric,
        "tasks": n_tasks,
        "workers": n_workers,
        "ours_s": round(ours[0], 6),
        "ref_s": round(ref[0], 6),
        "max_abs_diff": diff(ours[1], ref[1]),
        "ref": name,
    }
    print(json.dumps(line), flush=True)


def run_size(n_tasks: int, n_workers: int, repeats: int, rng: np.random.Generator) -> None:
    codes = random_codes(rng, n_tasks, n_workers)
    present = rng.random((n_tasks, n_workers)) >= MISSING
    table = long_table(codes, present)
    wide = np.where(present, codes, np.nan)  # tasks × workers
    reliability = wide.T  # krippendorff wants workers × tasks

    a, b = codes[:, 0], codes[:, 1]
    emit(
        "cohen_kappa",
        n_tasks,
        2,
        best_time(lambda: agreement.cohen_kappa(a, b), repeats),
        best_time(lambda: cohen_kappa_score(a, b), repeats),
        "sklearn.metrics.cohen_kappa_score",
    )

    # Fleiss: every task labelled by the same number of workers, as statsmodels requires.
    per_task = max(2, round((1 - MISSING) * n_workers))
    chosen = np.sort(np.argsort(rng.random((n_tasks, n_workers)), axis=1)[:, :per_task], axis=1)
    equal = np.zeros_like(present)
    np.put_along_axis(equal, chosen, True, axis=1)
    equal_table = long_table(codes, equal)
    raters = np.take_along_axis(codes, chosen, axis=1)
    emit(
        "fleiss_kappa",
        n_tasks,
        n_workers,
        best_time(lambda: agreement.fleiss_kappa(equal_table), repeats),
        best_time(lambda: sm_fleiss_kappa(aggregate_raters(raters)[0]), repeats),
        "statsmodels aggregate_raters + fleiss_kappa",
    )

    for level in ("nominal", "ordinal", "interval"):
        emit(
            f"krippendorff_alpha[{level}]",
            n_tasks,
            n_workers,
            best_time(lambda level=level: agreement.krippendorff_alpha(table, level=level), repeats),
            best_time(
                lambda level=level: krippendorff.alpha(reliability_data=reliability, level_of_measurement=level),
                repeats,
            ),
            "krippendorff.alpha (reliability_data)",
        )

    task_labels = [row[~np.isnan(row)] for row in wide]
    emit(
        "percent_agreement",
        n_tasks,
        n_workers,
        best_time(lambda: agreement.percent_agreement(table), repeats),
        best_time(lambda: naive_percent_agreement(task_labels), repeats),
        "python loop over tasks (collections.Counter)",
    )

    ours = best_time(lambda: agreement.pairwise_kappa(table, min_shared=10), repeats)
    emit(
        "pairwise_kappa",
        n_tasks,
        n_workers,
        (ours[0], ours[1]["kappa"].to_numpy()),
        best_time(lambda: np.array(sklearn_pairwise(wide, 10)), 1),  # slow: once is enough
        "sklearn.metrics.cohen_kappa_score per pair",
    )

    ours = best_time(lambda: agreement.agreement_matrix(table), repeats)
    emit(
        "agreement_matrix",
        n_tasks,
        n_workers,
        (ours[0], ours[1].to_numpy()),
        best_time(lambda: loop_agreement_matrix(wide), repeats),
        "numpy loop over worker pairs",
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timing repeats, the best one counts")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--blas-threads", type=int, default=1, help="BLAS threads; 0 keeps the library default")
    args = parser.parse_args()
    rng = np.random.default_rng(args.seed)
    warnings.simplefilter("ignore")  # sklearn's undefined-kappa warnings on degenerate pairs
    with threadpool_limits(limits=args.blas_threads or None, user_api="blas"):
        for n_tasks, n_workers in SIZES:
            run_size(n_tasks, n_workers, args.repeats, rng)


if __name__ == "__main__":
    main()
