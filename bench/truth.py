"""Benchmark crowdgate's truth inference against gold and against crowd-kit, on the real crowd sets.

Run from the repository root::

    python bench/truth.py [--repeats 3] [--sets rte,temp,...]

Prints one JSON line per (data set, method) with our accuracy and time next to crowd-kit's
``MajorityVote`` / ``DawidSkene(n_iter=100)`` run in the same process, and crowdgate's per-project refit
(``qa_hooks.fit``) without gold and with 10 % of the gold clamped (scored on the other 90 %) (crowd-kit is a
benchmark-only oracle: ``pip install -r requirements-bench.txt``; when it cannot be imported its fields are null and
the line says why). Times are the best of ``--repeats`` runs of a full fit from the label DataFrame.
Sets that are not on this machine, and the numeric ``emotion`` set (categorical methods do not
apply), get a ``"skipped"`` line. The first line describes the environment.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

REPO_ROOT = Path(__file__).resolve().parents[1]
if str(REPO_ROOT) not in sys.path:
    sys.path.insert(0, str(REPO_ROOT))

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from qa_hooks.fit import SemiSupervisedDawidSkene  # noqa: E402
from qa_hooks.truth import DawidSkene, majority_vote, weighted_vote  # noqa: E402
from scripts.crowd_sets import available, dataset_dir, load_gold, load_labels  # noqa: E402

SETS = ("rte", "temp", "wsd", "dog", "bluebird", "face", "product", "emotion")
# Sets whose labels are numbers on a scale rather than classes (see the data README).
NUMERIC = {"emotion": "numeric 0-100 scores: majority vote / Dawid-Skene are categorical methods"}

try:
    import crowdkit
    from crowdkit.aggregation import DawidSkene as CrowdKitDawidSkene
    from crowdkit.aggregation import MajorityVote as CrowdKitMajorityVote

    CROWDKIT_NOTE = f"crowd-kit {version('crowd-kit')} ({Path(crowdkit.__file__).parent})"
except Exception as exc:  # any import failure just disables the oracle
    CrowdKitDawidSkene = CrowdKitMajorityVote = None
    CROWDKIT_NOTE = f"crowd-kit not importable ({type(exc).__name__}: {exc}); its fields are null"


def emit(record: dict[str, Any]) -> None:
    print(json.dumps(record), flush=True)


def best_time(func: Callable[[], Any], repeats: int) -> tuple[Any, float]:
    """Result of ``func`` and the best wall time over ``repeats`` runs."""
    best = float("inf")
    result = None
    for _ in range(repeats):
        start = time.perf_counter()
        result = func()
        best = min(best, time.perf_counter() - start)
    return result, best


def accuracy(labels: pd.Series, gold: pd.Series) -> float:
    """Share of gold tasks whose inferred label equals gold (a task without labels counts as wrong)."""
    return round(float((labels.reindex(gold.index) == gold).mean()), 4)


def bench_set(name: str, repeats: int) -> None:
    if not available(name):
        emit({"dataset": name, "skipped": "not on this machine (set CROWDGATE_CROWD_DATA)"})
        return
    if name in NUMERIC:
        emit({"dataset": name, "skipped": NUMERIC[name]})
        return
    labels, gold = load_labels(name), load_gold(name)
    size = {"labels": len(labels), "tasks": labels["task"].nunique(), "workers": labels["worker"].nunique()}

    def line(
        method: str, ours: pd.Series, seconds: float, oracle: Callable[[], pd.Series] | None, **extra: Any
    ) -> dict[str, Any]:
        record: dict[str, Any] = {
            "dataset": name,
            "method": method,
            "accuracy": accuracy(ours, gold),
            "crowdkit_accuracy": None,
            "seconds": round(seconds, 4),
            "crowdkit_seconds": None,
        }
        if oracle is not None:
            theirs, their_seconds = best_time(oracle, repeats)
            record["crowdkit_accuracy"] = accuracy(theirs, gold)
            record["crowdkit_seconds"] = round(their_seconds, 4)
            record["speedup"] = round(their_seconds / seconds, 1)
        note = extra.pop("note", None)
        if note is None and CrowdKitDawidSkene is None:
            note = CROWDKIT_NOTE
        record.update(size)
        record.update(extra)
        if note is not None:
            record["note"] = note
        return record

    mv, mv_seconds = best_time(lambda: majority_vote(labels), repeats)
    emit(
        line(
            "majority_vote",
            mv["label"],
            mv_seconds,
            None if CrowdKitMajorityVote is None else lambda: CrowdKitMajorityVote().fit_predict(labels),
        )
    )

    model, ds_seconds = best_time(lambda: DawidSkene().fit(labels), repeats)
    emit(
        line(
            "dawid_skene",
            model.labels_,
            ds_seconds,
            None
            if CrowdKitDawidSkene is None
            else lambda: CrowdKitDawidSkene(n_iter=100).fit_predict(labels),
            n_iter=model.n_iter_,
            converged=model.converged_,
        )
    )

    # crowdgate's refit (qa_hooks.fit, what the worker runs per project): unsupervised, then with 10 % gold.
    t, tasks = pd.factorize(labels["task"], sort=True)
    w, workers = pd.factorize(labels["worker"], sort=True)
    y, classes = pd.factorize(labels["label"], sort=True)
    task_index = pd.Index(tasks)

    def refit(gold_items: np.ndarray | None = None) -> pd.Series:
        known = {} if gold_items is None else {int(task_index.get_loc(i)): int(classes.get_loc(gold[i]))
                                              for i in gold_items if gold[i] in classes}
        fitted = SemiSupervisedDawidSkene(len(classes)).fit(t, w, y, n_tasks=len(tasks), n_workers=len(workers),
                                                             gold=known)
        return pd.Series(classes[fitted.posteriors_.argmax(axis=1)], index=task_index)

    ours, refit_seconds = best_time(refit, repeats)
    emit(line("crowdgate_refit", ours, refit_seconds, None, note="qa_hooks.fit.SemiSupervisedDawidSkene, no gold"))
    revealed = np.random.default_rng(0).permutation(gold.index.intersection(task_index).to_numpy())
    revealed = revealed[: len(revealed) // 10]
    held_out = gold.drop(revealed)
    ours, refit_seconds = best_time(lambda: refit(revealed), repeats)
    record = line("crowdgate_refit_gold_10pct", ours, refit_seconds, None,
                  note="10 % of the gold clamped; accuracy on the other 90 % (accuracy_all: on all gold)")
    record["accuracy_all"] = record["accuracy"]
    record["accuracy"] = accuracy(ours, held_out)
    emit(record)

    weights = model.worker_weights()
    wv, wv_seconds = best_time(lambda: weighted_vote(labels, weights), repeats)
    emit(
        line(
            "weighted_vote",
            wv["label"],
            wv_seconds,
            None,
            note="weights: log-odds of Dawid-Skene expected worker accuracy (DS fit time not included); "
            "no crowd-kit counterpart run",
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3, help="timed runs per method; the best counts")
    parser.add_argument("--sets", default=",".join(SETS), help="comma-separated data sets")
    args = parser.parse_args(argv)
    emit(
        {
            "environment": {
                "python": sys.executable,
                "python_version": platform.python_version(),
                "numpy": np.__version__,
                "pandas": pd.__version__,
                "crowd_kit": version("crowd-kit") if CrowdKitDawidSkene is not None else None,
                "crowdkit_note": CROWDKIT_NOTE,
                "external_data": str(dataset_dir("product") or "absent"),
            }
        }
    )
    for name in args.sets.split(","):
        bench_set(name.strip(), max(1, args.repeats))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
