"""The LLM as a member of the crowd: human labels per item and accuracy with and without an LLM pseudo-annotator.

Replays the real crowds (rte, temp, dog; ``scripts/crowd_sets.py``, ``$CROWDGATE_CROWD_DATA``) as bench/overlap.py
does (its ``load_crowd``, ``replay_crowdgate`` and ``dawid_skene_answers``, which run the product's refit
``qa_hooks.fit.SemiSupervisedDawidSkene`` through ``routing.stopping.OnlineWorkerEstimator`` and its stop rule
``routing.stopping.decide_stop``), once without an LLM (``none``) and once per simulated LLM.

The simulated LLM ``sim-<a>`` is a calibrated noisy oracle of accuracy ``a``: for each item it draws a confidence
``c ~ Beta(a * 20, (1 - a) * 20)`` (mean ``a``), clipped to ``[1/K, 0.999]``; it answers the gold class with
probability ``c`` and otherwise a class drawn uniformly among the K - 1 others, independently of the humans'
errors. So ``P(correct | c) = c`` (its confidence matches its accuracy) and its accuracy is about ``a`` (the
measured accuracy and expected calibration error, :func:`qa_hooks.llm_annotator.calibration` on the items'
gold, are on each line).

The LLM is the pseudo-annotator ``llm:sim-<a>:v1`` (:func:`qa_hooks.llm_annotator.llm_worker`): its answer is
every item's first label (a pre-label exists before any human opens the task), it enters the Dawid–Skene fit as
one more annotator whose confusion matrix is learnt from gold and peers, and it never counts as a human label:
``human_labels_per_item`` counts human labels only. Policies:

- ``fixed-3``, ``fixed-5``: the first 3 or 5 human labels (plus the LLM's answer) aggregated with crowdgate's
  Dawid–Skene (no gold), i.e. truth inference with and without the LLM as an annotator;
- ``crowdgate``: the default policy's stop rule (matched threshold, ``min_agreeing`` 2) with
  ``llm.counts_toward_stop: true``: the LLM's answer is in the stop rule's posterior and counts as one agreeing
  voice, so one human agreeing with a calibrated LLM above the threshold stops a task. ``--gold-share`` (default
  the policy's gold share) of items reveal their gold after they stop, so the LLM's matrix learns from gold too.

One JSON line per dataset, LLM and policy, means over seeds, with ``labels_saved_vs_fixed5`` (against fixed-5
without an LLM, measured in the same run) and whether the accuracy reaches that fixed-5's.

    python bench/llm_crowd.py [--seeds 3] [--datasets rte,temp,dog] [--llms none,sim-0.85,sim-0.55]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.overlap import (
    LEAD,
    MATCH_MIN_LABELS,
    MATCH_OVERLAP,
    MATCH_REFRESH,
    MAX_LABELS,
    MIN_AGREEING,
    MIN_LABELS,
    PRIOR_ACCURACY,
    THRESHOLD,
    WINDOW,
    Crowd,
    dawid_skene_answers,
    load_crowd,
)
from qa_hooks.llm_annotator import calibration, is_llm_worker, llm_worker, trusted_llms
from routing.policy import DEFAULT_POLICY
from routing.stopping import OnlineWorkerEstimator, decide_stop_with_llm, matched_threshold
from scripts.crowd_sets import available

CONFIDENCE_STRENGTH = 20.0  # Beta pseudo-counts of the simulated LLM's confidence: its spread around the accuracy
PROMPT_VERSION = "v1"


def simulated_llm(crowd: Crowd, accuracy: float, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Answers (class codes) and confidences of a calibrated noisy oracle of ``accuracy`` (module doc)."""
    k, n = len(crowd.classes), len(crowd.items)
    confidence = np.clip(rng.beta(accuracy * CONFIDENCE_STRENGTH, (1 - accuracy) * CONFIDENCE_STRENGTH, n),
                         1.0 / k, 0.999)
    correct = rng.random(n) < confidence
    wrong = (crowd.gold + rng.integers(1, k, n)) % k  # uniform among the other classes
    return np.where(correct, crowd.gold, wrong), confidence


def replay(crowd: Crowd, workers: list[np.ndarray], labels: list[np.ndarray], llm: tuple[str, np.ndarray] | None,
           rng: np.random.Generator, counts_toward_stop: bool, min_accuracy: float, llm_threshold: float,
           gold_share: float, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray]:
    """Human labels used per item and the answer at stop time, for one random arrival order.

    bench/overlap.py's interleaved replay of the default stop rule, with the LLM: its answer is observed when an
    item opens (pseudo-worker ``llm[0]``); the stop is :func:`routing.stopping.decide_stop_with_llm`
    (the LLM only with ``counts_toward_stop``, once :func:`trusted_llms` trusts it at ``min_accuracy``, and a stop
    needing its voice at ``llm_threshold``); the matched threshold is computed from the human annotators' models.
    """
    est = OnlineWorkerEstimator(crowd.classes, prior_accuracy=PRIOR_ACCURACY)
    n_items = len(crowd.items)
    used = np.zeros(n_items, dtype=int)
    answer = np.full(n_items, -1)
    queue = list(rng.permutation(n_items))
    gold_items = set(rng.choice(n_items, int(gold_share * n_items), replace=False).tolist())
    open_items: list[int] = []
    current: dict[str, object] = {"labels": -MATCH_REFRESH, "threshold": THRESHOLD, "trusted": frozenset()}

    def refresh() -> None:
        if est.n_labels - int(current["labels"]) < MATCH_REFRESH:  # type: ignore[call-overload]
            return
        models = est.models()
        humans = [m for w, m in models.items() if not is_llm_worker(w)]
        if sum(m.n_labels for m in humans) >= MATCH_MIN_LABELS:
            current["threshold"] = matched_threshold(
                humans, list(est.class_prior.values()), overlap=MATCH_OVERLAP, lead=LEAD, min_labels=MIN_LABELS,
                min_agreeing=MIN_AGREEING, max_labels=MAX_LABELS).threshold
        current["trusted"] = trusted_llms({w: m.accuracy for w, m in models.items()}, min_accuracy)
        current["labels"] = est.n_labels

    def stop(i: int) -> bool:
        refresh()
        item = crowd.items[i]
        decision = decide_stop_with_llm(
            est.task_labels(item), est.models(), crowd.classes, threshold=float(current["threshold"]),  # type: ignore
            counts_toward_stop=counts_toward_stop, llm_threshold=llm_threshold,
            trusted=current["trusted"], default=est.default_model(),  # type: ignore[arg-type]
            class_prior=list(est.class_prior.values()), min_labels=MIN_LABELS, min_agreeing=MIN_AGREEING,
            max_labels=min(len(labels[i]), MAX_LABELS))
        done = decision.stop  # past the human labels there are: stopped, unconfident, with the best answer
        if done:
            answer[i] = crowd.classes.index(decision.label)
            if i in gold_items:
                est.reveal_gold(item, crowd.classes[crowd.gold[i]])
        return done

    while queue or open_items:
        while queue and len(open_items) < window:
            i = queue.pop()
            if llm is not None:  # the pre-label exists before any human opens the task
                est.observe(crowd.items[i], llm[0], crowd.classes[llm[1][i]])
            open_items.append(i)
        slot = int(rng.integers(len(open_items)))
        i = open_items[slot]
        if used[i] < MIN_LABELS or not stop(i):
            est.observe(crowd.items[i], str(workers[i][used[i]]), crowd.classes[labels[i][used[i]]])
            used[i] += 1
            if not stop(i):
                continue
        open_items[slot] = open_items[-1]
        open_items.pop()
    return used, answer


def run_dataset(crowd: Crowd, llms: list[str], seeds: int, gold_share: float, min_accuracy: float,
                llm_threshold: float) -> list[dict[str, object]]:
    results: dict[tuple[str, str], list[tuple[float, float]]] = {}
    calibrations: dict[str, list[tuple[float, float]]] = {}
    for seed in range(seeds):
        rng = np.random.default_rng(seed)
        perms = [rng.permutation(len(lab)) for lab in crowd.labels]
        human_workers = [w[p] for w, p in zip(crowd.workers, perms, strict=True)]
        human_labels = [lab[p] for lab, p in zip(crowd.labels, perms, strict=True)]
        for llm in llms:
            if llm == "none":
                workers, labels, extra = human_workers, human_labels, 0
            else:
                accuracy = float(llm.removeprefix("sim-"))
                answers, confidence = simulated_llm(crowd, accuracy, np.random.default_rng(1_000 + seed))
                cal = calibration(llm, confidence, answers == crowd.gold)
                calibrations.setdefault(llm, []).append((cal.accuracy, cal.ece))
                name = llm_worker(llm, PROMPT_VERSION)
                workers = [np.concatenate([[name], w]) for w in human_workers]
                labels = [np.concatenate([[a], lab]) for a, lab in zip(answers, human_labels, strict=True)]
                extra = 1
            for policy, n in (("fixed-3", 3), ("fixed-5", 5)):
                counts = [min(n, len(lab) - extra) + extra for lab in labels]
                answer = dawid_skene_answers(crowd, workers, labels, counts)
                results.setdefault((llm, policy), []).append(
                    (float(np.mean(counts)) - extra, float(np.mean(answer == crowd.gold))))
            pseudo = None if llm == "none" else (llm_worker(llm, PROMPT_VERSION), answers)
            for counts_toward_stop in ((False,) if pseudo is None else (False, True)):
                order = np.random.default_rng(2_000 + seed)  # the same arrival order for every LLM and setting
                used, answer = replay(crowd, human_workers, human_labels, pseudo, order, counts_toward_stop,
                                      min_accuracy, llm_threshold, gold_share)
                results.setdefault((llm, f"crowdgate:{counts_toward_stop}"), []).append(
                    (float(used.mean()), float(np.mean(answer == crowd.gold))))
    f5_labels, f5_accuracy = np.mean(results[("none", "fixed-5")], axis=0) if ("none", "fixed-5") in results \
        else (None, None)
    lines: list[dict[str, object]] = []
    for (llm, policy), runs in results.items():
        per_item, accuracy = np.mean(runs, axis=0)
        policy, _, counts = policy.partition(":")
        line: dict[str, object] = {"dataset": crowd.name, "llm": llm, "policy": policy,
                                   "human_labels_per_item": round(float(per_item), 3),
                                   "accuracy": round(float(accuracy), 4), "seeds": seeds}
        if policy == "crowdgate":
            line["counts_toward_stop"] = counts == "True"
            line["min_accuracy"], line["llm_stop_threshold"] = min_accuracy, llm_threshold
        if f5_labels is not None:
            line["labels_saved_vs_fixed5"] = round(1.0 - float(per_item) / float(f5_labels), 4)
            line["accuracy_ge_fixed5"] = bool(accuracy >= f5_accuracy)
        if llm in calibrations:
            acc, ece = np.mean(calibrations[llm], axis=0)
            line["llm_accuracy"], line["llm_ece"] = round(float(acc), 4), round(float(ece), 4)
        lines.append(line)
    return lines


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=3, help="random arrival orders per dataset (default 3)")
    parser.add_argument("--datasets", default="rte,temp,dog")
    parser.add_argument("--llms", default="none,sim-0.85,sim-0.55")
    parser.add_argument("--gold-share", type=float, default=DEFAULT_POLICY.gold_share,
                        help=f"share of items whose gold is revealed after they stop ({DEFAULT_POLICY.gold_share})")
    parser.add_argument("--min-accuracy", type=float, default=DEFAULT_POLICY.llm.min_accuracy,
                        help=f"llm.min_accuracy ({DEFAULT_POLICY.llm.min_accuracy})")
    parser.add_argument("--llm-threshold", type=float, default=DEFAULT_POLICY.llm.stop_threshold,
                        help=f"llm.stop_threshold ({DEFAULT_POLICY.llm.stop_threshold})")
    args = parser.parse_args(argv)
    llms = [x.strip() for x in args.llms.split(",") if x.strip()]
    for llm in llms:
        if llm != "none" and not (llm.startswith("sim-") and 0 < float(llm.removeprefix("sim-")) < 1):
            parser.error(f"--llms: {llm!r} is neither 'none' nor 'sim-<accuracy>'")
    for name in [x.strip() for x in args.datasets.split(",") if x.strip()]:
        if not available(name):
            print(json.dumps({"dataset": name, "skipped": "crowd set not found (set CROWDGATE_CROWD_DATA)"}))
            continue
        start = time.perf_counter()
        for line in run_dataset(load_crowd(name), llms, args.seeds, args.gold_share, args.min_accuracy,
                                args.llm_threshold):
            print(json.dumps(line), flush=True)
        print(f"# {name}: {time.perf_counter() - start:.1f}s", file=sys.stderr)


if __name__ == "__main__":
    main()
